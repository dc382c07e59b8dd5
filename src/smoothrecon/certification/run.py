"""The certificate's driver: a certified PSNR beside the PSNR an attack reaches.

For every crop of a split and every eps_rel (eps = sqrt(d) eps_rel and the noise std sigma_g
both in the model-input, normalized, space; everything else in pixel space [0, 1]):
  psnr_certified  `certify.certify` at y: no ||e|| <= eps brings the method's estimate below
                  it (G(y + e) for pixel and loss, the center-smoothed z(y + e) for center,
                  the p-percentile output for median), with probability >= 1 - alpha over
                  the Monte-Carlo samples;
  psnr_attacked   the EOT attack on G at the same eps: the config's attack (attack.*, every
                  field: steps, step size, starts, iterate kept, k_attack draws per step, fixed
                  or fresh noise; in a sweep the attack on g its EOT study chose), its loss on
                  G's pixel-space output, then the method's estimate at y + e from n fresh
                  draws; for the median method also the attack through the percentile of the
                  draws, per crop the one leaving the lower PSNR (`attack_surrogate`);
  psnr_clean      the estimate at y from the certificate's own n draws.
A certificate is a lower bound and an attack an upper bound, so psnr_certified <= psnr_attacked
on every record (`certified_le_attacked`). psnr_attacked is itself a Monte-Carlo estimate:
`psnr_attacked_upper` is the best PSNR of any image inside the estimate's joint confidence interval
(probability >= 1 - alpha), so only psnr_certified > psnr_attacked_upper is a violation beyond
Monte-Carlo noise (a bug in the bound or in the estimate).

Records append to <out>/certificates.jsonl; a rerun skips every (image, eps_rel, method) there
with the same settings `key`. Seeds depend on the batch's first image, so a rerun of the same
settings reproduces the same numbers.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from smoothrecon.attacks.pgd import eps_from_rel
from smoothrecon.attacks.protocol import describe_attack, solver_of
from smoothrecon.attacks.setting import AttackSetting, setting_from_config
from smoothrecon.certification.bounds import Bound, identity_worst_mse, psnr_from_mse
from smoothrecon.certification.certify import (
    METHODS,
    AnyCertificate,
    CenterCertificate,
    CertificateRecord,
    CertifySettings,
    MedianCertificate,
    Method,
    PixelCertificate,
    certify,
    known_method,
    methods_of,
)
from smoothrecon.config import AttackConfig, Config
from smoothrecon.defenses.median import PercentileEstimator
from smoothrecon.defenses.smoothing import SmoothedEstimator
from smoothrecon.errors import UserError
from smoothrecon.evaluation.inputs import SplitInputs, split_inputs
from smoothrecon.evaluation.unit import EvalModel
from smoothrecon.metrics import mean_and_ci
from smoothrecon.models.normalization import Normalization
from smoothrecon.operators import Operator
from smoothrecon.util.io import (
    append_jsonl,
    atomic_write_json,
    atomic_write_text,
    read_jsonl,
    run_lock,
    short_hash,
)
from smoothrecon.util.progress import bar as progress_bar
from smoothrecon.util.runtime import Runtime, config_yaml, resolved_precision
from smoothrecon.util.seeds import derived_seed, make_generator

Forward = Callable[[torch.Tensor], torch.Tensor]
RECORDS = "certificates.jsonl"
# the estimate each method's attacked PSNR is measured on: the loss certificate bounds G
ATTACKED_AS = {"pixel": "pixel", "center": "center", "median": "median", "loss": "pixel"}


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise UserError(message)


@dataclass(frozen=True)
class CertifyRunSettings:
    """What a certification run computes; built once (from the config by `from_config`).

    sigma_g: noise std of G in the model-input space; eps_rels: eps = sqrt(d) eps_rel there.
    n: samples of the certificate (center smoothing: per set, n_select = n) and of the attacked
    estimate; alpha: failure probability per image, method and eps_rel; method: a key of
    `certify.METHODS` (pixel, center, median, loss, both, all); percentile: the median
    method's level; attack: the attack on G (k_attack draws; the median method also attacks
    through the percentile itself, per crop the worse); batch_size: crops per certificate.
    """

    sigma_g: float
    eps_rels: tuple[float, ...]
    n: int = 2000
    alpha: float = 0.001
    method: Method = "pixel"
    percentile: float = 0.5
    attack: AttackSetting = field(default_factory=lambda: setting_from_config(AttackConfig()))
    bound: Bound = "both"
    seed: int = 1234
    batch_size: int = 8
    chunk_size: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "eps_rels", tuple(float(e) for e in self.eps_rels))
        s = self
        _check(
            math.isfinite(s.sigma_g) and s.sigma_g > 0,
            f"sigma_g = {s.sigma_g} must be a number > 0 (the noise std of G, model-input space)",
        )
        _check(
            bool(s.eps_rels) and all(0 <= e <= 1 for e in s.eps_rels),
            f"eps_rel values must lie in [0, 1], got {list(s.eps_rels)}",
        )
        _check(int(s.n) == s.n and s.n >= 2, f"n = {s.n} must be an integer >= 2")
        _check(0 < s.alpha < 1, f"alpha = {s.alpha} must lie in (0, 1)")
        _check(
            known_method(s.method),
            f"method '{s.method}' is not one of {', '.join(METHODS)} (or methods joined by +)",
        )
        _check(0 < s.percentile < 1, f"percentile = {s.percentile} must lie in (0, 1)")
        _check(s.batch_size >= 1, f"batch_size = {s.batch_size} must be >= 1")
        try:
            self.certify_settings((0.0,), s.method)
        except ValueError as exc:
            raise UserError(f"{exc}; use the pixel method or a larger n") from None

    def with_config(
        self, cfg: Config, attack: AttackSetting | None = None, progress: bool = True
    ) -> CertifyRunSettings:
        """These settings with the config's seed, chunk size and attack (or `attack`), aimed
        at the MSE alone (`AttackSetting.on_mse`): a certificate bounds the MSE, and an SSIM
        member of an ensemble would aim at another metric; `progress`: show a progress bar."""
        return dataclasses.replace(
            self,
            attack=(attack or setting_from_config(cfg.attack)).on_mse(),
            seed=cfg.evaluation.seed,
            chunk_size=cfg.smoothing.chunk_size,
            progress=progress,
        )

    @property
    def methods(self) -> tuple[str, ...]:
        """The methods certified: METHODS[method], or the parts of "pixel+median" etc."""
        return methods_of(self.method)

    def certify_settings(self, eps: tuple[float, ...], method: str) -> CertifySettings:
        return CertifySettings(
            sigma=self.sigma_g,
            eps=eps,
            n=self.n,
            alpha=self.alpha,
            method=method,  # type: ignore[arg-type]
            bound=self.bound,
            n_select=self.n,
            percentile=self.percentile,
            chunk_size=self.chunk_size,
        )

    def key_fields(self) -> dict[str, Any]:
        """What every record depends on besides its eps_rel and method."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for name in ("eps_rels", "method", "progress", "chunk_size"):
            d.pop(name)
        if d["percentile"] == 0.5:  # the default leaves earlier keys valid
            d.pop("percentile")
        d["attack"] = self.attack.describe()
        return d


def bounded_smoothed(
    f: Forward,
    norm: Normalization,
    sigma: float,
    k: int,
    seed: int,
    chunk: int = 0,
    noise: str = "fixed",
    percentile: float | None = None,
) -> Forward:
    """G_hat with k draws, held fixed across calls or fresh each call (`noise`, as the attack
    on g says): y (normalized) -> (B, C, H, W) pixel space, mean_j clamp(denormalize(f(y +
    sigma z_j)), 0, 1) (each sample clamped, as G); with `percentile`, their p-percentile."""

    def p(z: torch.Tensor) -> torch.Tensor:
        return norm.denormalize(f(z)).clamp(0, 1)

    if percentile is None:
        return SmoothedEstimator(p, sigma, k, chunk).with_noise(noise, seed)
    return PercentileEstimator(p, sigma, k, percentile, chunk).with_noise(noise, seed)


def _mse_lower(lo: torch.Tensor, hi: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """(B,) smallest MSE against x of any image inside the joint interval [lo, hi]."""
    x64 = x.double()
    gap = (lo - x64).clamp_min(0) + (x64 - hi).clamp_min(0)
    return gap.pow(2).flatten(1).mean(1)


@dataclass
class _Batch:
    """One batch of crops: inputs (y normalized, x pixel), their indices and photo names."""

    y: torch.Tensor
    x: torch.Tensor
    images: list[int]
    photos: list[str]


def _worse(
    a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Per crop the attacked fields of the lower PSNR of two attacks, and (B,) bool: b won."""
    b_won = b["psnr"] < a["psnr"]
    pick = {k: torch.where(b_won, b[k], a[k]) for k in a}
    return pick, b_won


def _clean(c: AnyCertificate, x: torch.Tensor, i: int, j: int) -> dict[str, Any]:
    """Record fields of the certificate at y for image i and radius j."""
    mse_clean = float((c.estimate[i].double() - x[i].double()).pow(2).mean())
    center = c if isinstance(c, CenterCertificate) else None
    return {
        "mse_certified": float(c.mse_upper[i, j]),
        "psnr_certified": float(c.psnr_lower[i, j]),
        "mse_clean": mse_clean,
        "psnr_clean": float(c.psnr_clean[i]),
        "abstained": bool(center.abstained[i]) if center else False,
        "radius_out": float(center.radius[i, j]) if center else math.nan,
    }


@dataclass(frozen=True)
class Certifier:
    """What every batch of a run shares: f (normalized input -> normalized output), its
    normalization and the run's settings; certifies and attacks one batch at a time."""

    f: Forward
    norm: Normalization
    s: CertifyRunSettings

    def attack_g(
        self, y: torch.Tensor, x: torch.Tensor, eps: float, seed: int, surrogate: str = "mean"
    ) -> torch.Tensor:
        """The EOT attack on G at eps: e (B, C, H, W) in the model-input space, ||e_i|| <=
        eps, maximizing ||G_hat(y + e) - x||^2 with x in pixel space; surrogate "percentile"
        attacks the p-percentile of the k_attack draws instead of their mean."""
        if eps == 0:
            return torch.zeros_like(y)
        s, a = self.s, self.s.attack
        k, noise = a.eot.k_attack, a.eot.noise
        p = s.percentile if surrogate == "percentile" else None
        eot_seed = derived_seed(seed, "eot")
        forward = bounded_smoothed(
            self.f, self.norm, s.sigma_g, k, eot_seed, s.chunk_size, noise, p
        )
        gen = make_generator(derived_seed(seed, "start"), y.device)
        return solver_of(a.attack)(forward, y, x, eps, gen, None).e.detach()

    def attacked(
        self, b: _Batch, e: torch.Tensor, methods: Sequence[str], seed: int
    ) -> dict[str, dict[str, torch.Tensor]]:
        """Per method, (B,) mse / psnr / upper / abstained of its smoothed output at y + e
        (the loss method's: G, as the pixel method's); upper: the best PSNR inside the
        estimate's Monte-Carlo confidence interval (center: the estimate itself)."""
        gen = make_generator(derived_seed(seed, "attacked"), b.y.device)
        measured = "+".join(sorted({ATTACKED_AS[m] for m in methods}))
        at = certify(
            self.f, b.y + e, b.x, self.norm, self.s.certify_settings((0.0,), measured), gen
        )
        out = {}
        for method, c in at.by_method().items():
            mse = (c.estimate.double() - b.x.double()).pow(2).flatten(1).mean(1)
            if isinstance(c, CenterCertificate):
                upper, abstained = c.psnr_center, c.abstained
            else:
                assert isinstance(c, PixelCertificate | MedianCertificate)
                upper = psnr_from_mse(_mse_lower(c.lo, c.hi, b.x))
                abstained = torch.zeros_like(mse, dtype=torch.bool)
            out[method] = {"mse": mse, "psnr": c.psnr_clean, "upper": upper, "abstained": abstained}
        return {m: out[ATTACKED_AS[m]] for m in methods}

    def attack_all(
        self, b: _Batch, methods: list[str], eps: float, seed: int
    ) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, torch.Tensor]]:
        """The attacked fields per method at eps and each method's perturbations (B, C, H,
        W): the EOT attack through the mean; for the median method also through the
        percentile, per crop the one that leaves the lower PSNR (its field
        "surrogate_percentile" says which)."""
        with torch.enable_grad():
            e = self.attack_g(b.y, b.x, eps, seed)
        with torch.no_grad():
            att = self.attacked(b, e, methods, seed)
        es = {m: e for m in methods}
        if "median" in methods:
            with torch.enable_grad():
                e_p = self.attack_g(b.y, b.x, eps, seed, surrogate="percentile")
            with torch.no_grad():
                other = self.attacked(b, e_p, ["median"], seed)["median"]
            att["median"], won = _worse(att["median"], other)
            att["median"]["surrogate_percentile"] = won
            es["median"] = torch.where(won[:, None, None, None], e_p, e)
        return att, es

    def batch(
        self, b: _Batch, pending: dict[float, list[str]], base: dict[str, Any]
    ) -> list[CertificateRecord]:
        """Records of one batch for the pending {eps_rel: methods}: one certificate at y for
        all radii, then per eps_rel the attack on G and the smoothed output at y + e."""
        s, norm = self.s, self.norm
        seed = derived_seed(s.seed, base["split"], b.images[0])
        eps_rels = sorted(pending)
        eps = tuple(eps_from_rel(e, b.y.shape[1:]) for e in eps_rels)
        methods = "+".join(sorted({m for ms in pending.values() for m in ms}))
        start = time.perf_counter()
        gen = make_generator(derived_seed(seed, "certify"), b.y.device)
        by_method = certify(
            self.f, b.y, b.x, norm, s.certify_settings(eps, methods), gen
        ).by_method()
        seconds_certify = (time.perf_counter() - start) / len(b.images)
        gray = psnr_from_mse((b.x.double() - 0.5).pow(2).flatten(1).mean(1))
        r = norm.denormalize(b.y) - b.x  # the back-projection's own error (bilinear for SR)
        rows: list[CertificateRecord] = []
        for j, eps_rel in enumerate(eps_rels):
            baseline = psnr_from_mse(identity_worst_mse(r, norm.std, eps[j]))
            start = time.perf_counter()
            att, es = self.attack_all(b, pending[eps_rel], eps[j], derived_seed(seed, eps_rel))
            seconds_attack = (time.perf_counter() - start) / len(b.images)
            for method in pending[eps_rel]:
                fields = {**base, "eps_rel": eps_rel, "eps": eps[j], "method": method}
                for i, image in enumerate(b.images):
                    row = {
                        **fields,
                        "image": image,
                        "photo": b.photos[i],
                        **_clean(by_method[method], b.x, i, j),
                        **_attacked_fields(att[method], i, method, s.percentile),
                        "psnr_gray": float(gray[i]),
                        "psnr_backprojection_worst": float(baseline[i]),
                        "e_norm": float(es[method][i].norm()),
                        "seconds_certify": seconds_certify,
                        "seconds_attack": seconds_attack,
                    }
                    rows.append(_checked(row))
        return rows


def _attacked_fields(
    a: dict[str, torch.Tensor], i: int, method: str, percentile: float
) -> dict[str, Any]:
    """Record fields of crop i's attacked estimate (the median method's also its percentile
    and the surrogate whose attack won)."""
    row: dict[str, Any] = {
        "mse_attacked": float(a["mse"][i]),
        "psnr_attacked": float(a["psnr"][i]),
        "psnr_attacked_upper": float(a["upper"][i]),
        "abstained_attacked": bool(a["abstained"][i]),
    }
    if method == "median":
        row["percentile"] = percentile
        row["attack_surrogate"] = "percentile" if bool(a["surrogate_percentile"][i]) else "mean"
    return row


def _checked(row: CertificateRecord) -> CertificateRecord:
    """Adds `vacuous` (nothing certified above a mid-gray image) and the invariant's two
    checks: `certified_le_attacked` (point estimate) and `violation` (beyond the attacked
    estimate's Monte-Carlo confidence); None where center smoothing abstained."""
    cert = row["psnr_certified"]
    row["vacuous"] = not cert >= row["psnr_gray"]  # NaN (abstained): nothing certified
    if row["abstained"] or row["abstained_attacked"]:
        row["certified_le_attacked"] = row["violation"] = None
    else:
        row["certified_le_attacked"] = bool(cert <= row["psnr_attacked"])
        row["violation"] = bool(cert > row["psnr_attacked_upper"])
    return row


def _batches(data: SplitInputs, photos: list[str], size: int) -> list[_Batch]:
    n = data.y.shape[0]
    return [
        _Batch(
            data.y[i : i + size],
            data.x[i : i + size],
            list(range(i, min(i + size, n))),
            photos[i : i + size],
        )
        for i in range(0, n, size)
    ]


def _pending(
    b: _Batch, s: CertifyRunSettings, done: set[tuple[int, float, str]]
) -> dict[float, list[str]]:
    out: dict[float, list[str]] = {}
    for eps_rel in s.eps_rels:
        todo = [m for m in s.methods if any((i, eps_rel, m) not in done for i in b.images)]
        if todo:
            out[eps_rel] = todo
    return out


def run_key(model: EvalModel, cfg: Config, split: str, s: CertifyRunSettings) -> str:
    """A hash of everything a record depends on besides its eps_rel and method."""
    fields = {
        "model": model.key,
        "norm": model.space.to_dict(),
        "data": cfg.to_dict()["data"],
        "operator": cfg.to_dict()["operator"],
        # bf16 autocast computes another f ("auto" resolved for this machine)
        "precision": resolved_precision(cfg.runtime),
        "split": split,
        **s.key_fields(),
    }
    return short_hash(fields, 16)


def _attack_fields(setting: AttackSetting) -> dict[str, Any]:
    """What a certificate record says of the attack on G: its name, PGD's step settings (when
    it is PGD, or an ensemble whose members all share them) and its EOT."""
    d = describe_attack(setting.attack)
    if d.get("kind") == "ensemble":
        members = d["members"]
        d = {k: v for k, v in members[0].items() if all(m.get(k) == v for m in members)}
    keys = ("steps", "step_factor", "restarts", "keep")
    return {
        "attack": setting.name,
        **{f"attack_{k}": d[k] for k in keys if k in d},
        "attack_noise": setting.eot.noise,
        "k_attack": setting.eot.k_attack,
    }


@dataclass(frozen=True)
class CertifySplit:
    """The crops a run certifies: their inputs, photo names (one per crop) and split name."""

    data: SplitInputs
    photos: list[str]
    name: str


def certify_split(
    model: EvalModel,
    split: CertifySplit,
    s: CertifyRunSettings,
    out: Path,
    runtime: Runtime,
    key: str,
) -> list[CertificateRecord]:
    """Certify and attack every crop of `split` at every eps_rel and method of `s`, appending
    to out/certificates.jsonl and skipping what it holds under `key`. Returns the records of
    this key (old and new), in file order."""
    path = out / RECORDS
    done = {(r["image"], r["eps_rel"], r["method"]) for r in read_jsonl(path) if r["key"] == key}
    module = model.module.eval()
    for prm in module.parameters():
        prm.requires_grad_(False)
    certifier = Certifier(runtime.forward(module), model.space, s)
    base = {
        "key": key,
        "model": model.info.model,
        "model_key": model.key,
        "mode": model.info.mode,
        "sigma_f": model.info.value if model.info.mode == "gaussian" else 0.0,
        "input_space": model.info.input_space,
        "split": split.name,
        "sigma_g": s.sigma_g,
        "n": s.n,
        "alpha": s.alpha,
        "bound": s.bound,
        **_attack_fields(s.attack),
        "runtime": runtime.describe(),
    }
    units = [(b, _pending(b, s, done)) for b in _batches(split.data, split.photos, s.batch_size)]
    total = sum(len(b.images) * len(p) for b, p in units)
    skipped = len(split.photos) * len(s.eps_rels) - total
    if skipped:
        print(f"resuming: {skipped} of {len(split.photos) * len(s.eps_rels)} (crop, eps_rel) done")
    bar: Any = progress_bar(total=total, desc="certify", unit="crop x eps", disable=not s.progress)
    with bar:
        for b, pending in units:
            if not pending:
                continue
            rows = certifier.batch(b, pending, base)
            rows = [r for r in rows if (r["image"], r["eps_rel"], r["method"]) not in done]
            append_jsonl(path, rows)
            bar.update(len(b.images) * len(pending))
    return [r for r in read_jsonl(path) if r["key"] == key]


def summary_lines(records: Sequence[CertificateRecord]) -> list[str]:
    """Per (method, eps_rel): mean certified / attacked / clean PSNR, share vacuous, seconds per
    crop, and the invariant psnr_certified <= psnr_attacked."""
    lines = []
    groups: dict[tuple[str, float], list[CertificateRecord]] = {}
    for r in records:
        groups.setdefault((r["method"], r["eps_rel"]), []).append(r)
    for (method, eps_rel), rows in sorted(groups.items()):
        ok = [r for r in rows if r["certified_le_attacked"] is not None]
        cert = [r["psnr_certified"] for r in ok]
        sec = sum(r["seconds_certify"] + r["seconds_attack"] for r in rows) / len(rows)
        abst = sum(bool(r["abstained"]) for r in rows)
        lines.append(
            f"eps_rel {eps_rel:g} {method}: certified {_mean(cert)} dB, attacked "
            f"{_mean([r['psnr_attacked'] for r in rows])} dB, clean "
            f"{_mean([r['psnr_clean'] for r in rows])} dB, vacuous "
            f"{sum(r['vacuous'] for r in rows) / len(rows):.0%}"
            + (f", abstained {abst}/{len(rows)}" if method == "center" else "")
            + f"  ({len(rows)} crops, {sec:.1f} s/crop)"
        )
    return lines


def _mean(values: list[float]) -> str:
    return f"{mean_and_ci(values)[0]:.2f}" if values else "n/a"


def invariant_line(records: Sequence[CertificateRecord]) -> str:
    """The invariant psnr_certified <= psnr_attacked over every checked record, stated."""
    checked = [r for r in records if r["certified_le_attacked"] is not None]
    held = sum(r["certified_le_attacked"] for r in checked)
    beyond = sum(r["violation"] for r in checked)
    text = (
        f"psnr_certified <= psnr_attacked on {held} of {len(checked)} records "
        f"({len(records) - len(checked)} abstained, not checked)"
    )
    if held < len(checked):
        text += f"; {beyond} beyond the attacked estimate's Monte-Carlo confidence" + (
            " (a bug in the bound or the estimate)" if beyond else " (Monte-Carlo noise)"
        )
    return text


def certify_model(
    model: EvalModel,
    cfg: Config,
    split: str,
    s: CertifyRunSettings,
    out: str | Path,
    operator: Operator | None = None,
    verbose: bool = True,
) -> list[CertificateRecord]:
    """Certify `model` on the crops of `split` ("val", "test" or "all") of cfg.data; records
    in out/certificates.jsonl (this run's settings in out/certify.json, config.yaml)."""
    from smoothrecon.data import prepare_data
    from smoothrecon.models.own import check_output_shape
    from smoothrecon.operators import build_operator

    out = Path(out)
    with run_lock(out):
        runtime = Runtime.from_config(cfg.runtime)
        data = prepare_data(cfg.data, progress=s.progress, purpose="evaluate")
        crops = data.eval_set(split)
        if len(crops) == 0:
            raise UserError(
                f"the {split} split of '{cfg.data.source}' holds no crops; use --split all to "
                f"certify every photo of a folder"
            )
        module = runtime.prepare_model(model.module)
        model = dataclasses.replace(model, module=module, norm=model.norm or data.normalization)
        check_output_shape(module, (3, cfg.data.crop_size, cfg.data.crop_size), model.info.model)
        op = operator or build_operator(cfg.operator)
        inputs = split_inputs(crops.x, op, model.space, runtime)
        key = run_key(model, cfg, split, s)
        settings = {"key": key, "model": model.info.model, "split": split, **s.key_fields()}
        atomic_write_json(out / "certify.json", settings | {"eps_rels": list(s.eps_rels)})
        atomic_write_text(out / "config.yaml", config_yaml(cfg))
        rows = certify_split(
            model, CertifySplit(inputs, crops.photo_names, split), s, out, runtime, key
        )
    mine = [r for r in rows if r["eps_rel"] in s.eps_rels and r["method"] in s.methods]
    if verbose:
        for line in [*summary_lines(mine), invariant_line(mine)]:
            print(line)
    return mine
