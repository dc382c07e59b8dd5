"""Evaluate a model under attack, with and without smoothing, into records (section 4.4).

Protocol of one unit (one model at one eps_rel), the same for `reproduce`, `evaluate` and the
Python API:
1. selection split ("val" when evaluated): attack the base model f once per attack setting
   ("Vanilla PGD"), then evaluate the smoothed g for every sigma_g of the grid on the same
   perturbed inputs (common random numbers);
2. sigma_g* = `records.choose_sigma` on the selection split (the thesis chose on the test set;
   we never look at test data to choose);
3. reported split: the same attacks and grid (the report shows the test-set oracle beside
   sigma_g*, from the same records);
4. with `rs_pgd`, the white-box attack on g at sigma_g* ("RS-PGD", EOT) on the reported split
   (nothing is chosen with it), and the per-image worst case of the two attacks.
Every record (`records.Record`) is one (split, eps_rel, attack, setting, sigma_g) row with
per-image MSE / PSNR / SSIM on images de-normalized and clamped to [0, 1], their means and
standard errors, and the share of the MSE that is Monte-Carlo noise of the smoothed estimate.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import torch

from smoothrecon.config import AttackConfig, Config
from smoothrecon.data.normalization import Normalization
from smoothrecon.distributed import map_batches
from smoothrecon.inputs import METRICS, Forward, SplitInputs, clean_metrics, split_inputs, to_pixels
from smoothrecon.metrics import all_metrics
from smoothrecon.models.fold import fold_batchnorm
from smoothrecon.operators import Operator
from smoothrecon.records import Condition, ModelInfo, Record, choose_sigma, make_record, split_roles
from smoothrecon.runtime import Runtime
from smoothrecon.smoothing import (
    AdaptiveK,
    SmoothedEstimator,
    make_generator,
    mc_share,
    mc_share_fn,
    predict_adaptive,
    predict_many,
)
from smoothrecon.threat import ThreatModel, pgd_in_space

__all__ = [
    "Attacked",
    "EvalModel",
    "EvalSettings",
    "SplitInputs",
    "UnitResult",
    "attack",
    "batched_attack",
    "clean_metrics",
    "evaluate_unit",
    "smoothed_metrics",
    "split_inputs",
    "worst_case",
]


def _seed(*parts: object) -> int:
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:6], "little")


@dataclass(frozen=True)
class EvalSettings:
    """Everything an evaluation depends on besides the model and its crops, built once."""

    eps_rels: tuple[float, ...]
    sigmas: tuple[float, ...]  # the sigma_g grid; (0.0,) evaluates without smoothing
    k: int | str  # noise draws of the smoothed estimate, or "auto" (adaptive, see below)
    attacks: Mapping[str, AttackConfig]  # setting name -> attack; the first chooses sigma_g*
    rs_pgd: bool = False  # also attack g at sigma_g* (and report the per-image worst case)
    rs_pgd_eps_rels: tuple[float, ...] = ()  # where RS-PGD runs; empty: every eps_rel > 0
    seed: int = 0
    batch_size: int = 64
    chunk_size: int = 0
    antithetic: bool = False
    n_samples: int = 0  # example images of the most textured reported crops (image grids)
    k_min: int = 8  # k = "auto": draws until mc_share <= mc_tolerance, within [k_min, k_max]
    k_max: int = 256
    mc_tolerance: float = 0.05

    @property
    def adaptive(self) -> AdaptiveK | None:
        """The stopping rule of k: 'auto', else None."""
        return AdaptiveK(self.k_min, self.k_max, self.mc_tolerance) if self.k == "auto" else None

    @property
    def fixed_k(self) -> int:
        """k as a number: the fixed k, or k_max (the most any estimate uses) for 'auto'."""
        return self.k_max if isinstance(self.k, str) else self.k

    @staticmethod
    def from_config(cfg: Config, attacks: Mapping[str, AttackConfig]) -> EvalSettings:
        return EvalSettings(
            eps_rels=tuple(cfg.evaluation.eps_rels),
            sigmas=tuple(cfg.smoothing.sigma_grid),
            k=cfg.smoothing.k,
            attacks=dict(attacks),
            rs_pgd=cfg.experiment.rs_pgd,
            rs_pgd_eps_rels=tuple(cfg.experiment.rs_pgd_eps_rels),
            seed=cfg.evaluation.seed,
            batch_size=cfg.evaluation.batch_size,
            chunk_size=cfg.smoothing.chunk_size,
            antithetic=cfg.smoothing.antithetic,
            n_samples=cfg.experiment.image_grid_count,
            k_min=cfg.smoothing.k_min,
            k_max=cfg.smoothing.k_max,
            mc_tolerance=cfg.smoothing.mc_tolerance,
        )

    @property
    def primary(self) -> str:
        return next(iter(self.attacks))

    def attacks_at(self, eps_rel: float) -> dict[str, AttackConfig]:
        """The settings run at eps_rel (at 0 there is no attack: the primary stands for all)."""
        return dict(self.attacks) if eps_rel > 0 else {self.primary: self.attacks[self.primary]}

    def attacks_g_at(self, eps_rel: float) -> bool:
        return (
            self.rs_pgd
            and eps_rel > 0
            and (not self.rs_pgd_eps_rels or eps_rel in self.rs_pgd_eps_rels)
        )

    def unit_fields(self, eps_rel: float) -> dict:
        """What a unit at eps_rel depends on, as JSON-able data (the key of its file)."""
        d = dataclasses.asdict(self)
        d.pop("eps_rels")
        d.pop("rs_pgd_eps_rels")
        d["attacks"] = {k: dataclasses.asdict(v) for k, v in self.attacks_at(eps_rel).items()}
        d["rs_pgd"] = self.attacks_g_at(eps_rel)
        return {"eps_rel": eps_rel, **d}


@dataclass
class EvalModel:
    """A model to evaluate: the module, its record fields and the normalization of its input
    space (mean 0, std 1 for a model on pixel-space images; None until resolved to the data's
    own statistics, for the baselines)."""

    module: torch.nn.Module
    info: ModelInfo
    norm: Normalization | None
    key: str  # identifies the weights (and code) in unit file keys

    @property
    def space(self) -> Normalization:
        assert self.norm is not None, "the data's normalization is resolved before evaluating"
        return self.norm


class Attacked(NamedTuple):
    """An attack on a batch or split: e (B, C, H, W) the network-input perturbation (add it
    to y) whatever space the attacker perturbed; loss (B,); norm (B,) ||e|| measured in the
    attacker's own space (the measurement for a measurement-space attack)."""

    e: torch.Tensor
    loss: torch.Tensor
    norm: torch.Tensor


def attack(
    forward: Forward,
    y: torch.Tensor,
    target: torch.Tensor,
    eps_rel: float,
    cfg: AttackConfig,
    seed: int,
    threat: ThreatModel | None = None,
) -> Attacked:
    """The L2 PGD of `cfg` on `forward` in the threat's space (the network input by default)
    at eps = eps_rel * sqrt(d in that space)."""
    gen = make_generator(seed, y.device)
    res = pgd_in_space(forward, y, target, threat or ThreatModel(), eps_rel, cfg, gen)
    if res.eps == 0:
        zeros = torch.zeros(y.shape[0], device=y.device)
        return Attacked(res.e, zeros, zeros)
    return Attacked(res.e.detach(), res.loss.detach(), res.norm.detach())


@dataclass(frozen=True)
class Sampling:
    """How g_hat is estimated: k draws (common random numbers across sigmas, optionally
    antithetic), or adaptively (k_min, k_max, tolerance) when `adaptive` is set."""

    k: int
    chunk_size: int = 0
    antithetic: bool = False
    adaptive: AdaptiveK | None = None


def _predict(
    forward: Forward,
    y: torch.Tensor,
    x: torch.Tensor,
    sigmas: Sequence[float],
    how: Sampling,
    norm: Normalization,
    gen: torch.Generator,
) -> dict[float, tuple[torch.Tensor, torch.Tensor, list[float]]]:
    """{sigma: (g_hat, se, k per image)} for y (B, C, H, W) normalized, targets x in pixels."""
    with torch.no_grad():
        if how.adaptive is None:
            preds = predict_many(
                forward, y, sigmas, how.k, gen, how.chunk_size, how.antithetic, with_se=True
            )
            return {
                s: (p.mean, _se(p.se), [float(how.k if s > 0 else 1)] * y.shape[0])
                for s, p in preds.items()
            }
        ada = predict_adaptive(
            forward,
            y,
            sigmas,
            mc_share_fn(x, norm),
            how.adaptive,
            gen,
            how.chunk_size,
            how.antithetic,
        )
        return {s: (p.mean, p.se, p.k.float().tolist()) for s, p in ada.items()}


def _se(se: torch.Tensor | None) -> torch.Tensor:
    assert se is not None
    return se


def smoothed_metrics(
    forward: Forward,
    data: SplitInputs,
    e: torch.Tensor,
    sigmas: Sequence[float],
    how: Sampling | int,
    norm: Normalization,
    batch_size: int,
    seed: int,
) -> dict[float, dict[str, list[float]]]:
    """Per-image metrics of g_hat(y + e) for every sigma (common random numbers), plus
    'mc_share' (the share of each image's MSE that is Monte-Carlo variance of g_hat), 'k' (the
    draws used) and 'mse_debiased' (the MSE of the exact g: the MSE less that variance)."""

    if isinstance(how, int):
        how = Sampling(how)

    def batch(start: int) -> dict[float, dict[str, list[float]]]:
        assert isinstance(how, Sampling)
        sl = slice(start, start + batch_size)
        gen = make_generator(_seed(seed, start), data.y.device)
        preds = _predict(forward, data.y[sl] + e[sl], data.x[sl], sigmas, how, norm, gen)
        res = {}
        for s, (mean, se, k_used) in preds.items():
            metrics = all_metrics(to_pixels(mean, norm), data.x[sl])
            mc = mc_share(mean, se, data.x[sl], norm)
            res[s] = {
                **{m: v.tolist() for m, v in metrics.items()},
                "mc_share": mc.tolist(),
                "k": k_used,
                "mse_debiased": (metrics["mse"] * (1 - mc)).tolist(),
            }
        return res

    keys = (*METRICS, "mc_share", "k", "mse_debiased")
    out: dict[float, dict[str, list[float]]] = {s: {m: [] for m in keys} for s in sigmas}
    for part in map_batches(data.y.shape[0], batch_size, batch):
        for s, per in part.items():
            for m, values in per.items():
                out[s][m].extend(values)
    return out


def batched_attack(
    forward: Forward,
    data: SplitInputs,
    eps_rel: float,
    cfg: AttackConfig,
    batch_size: int,
    seed: int,
    threat: ThreatModel | None = None,
) -> Attacked:
    """`attack` over a whole split in batches (shared across ranks)."""

    def batch(start: int) -> Attacked:
        sl = slice(start, start + batch_size)
        y, target = data.y[sl], data.target[sl]
        return attack(forward, y, target, eps_rel, cfg, _seed(seed, start), threat)

    parts = map_batches(data.y.shape[0], batch_size, batch)
    return Attacked(*(torch.cat([p[i] for p in parts]) for i in range(3)))


def _norm_stats(norm: torch.Tensor) -> dict[str, float]:
    """Mean, min and max of the per-crop perturbation norms (in the attacker's space)."""
    return {
        "e_norm_mean": float(norm.mean()),
        "e_norm_min": float(norm.min()),
        "e_norm_max": float(norm.max()),
    }


def worst_case(a: dict[str, list[float]], b: dict[str, list[float]]) -> dict[str, list[float]]:
    """Per image, the metrics of whichever attack gave the larger MSE."""
    pick = [ma >= mb for ma, mb in zip(a["mse"], b["mse"], strict=True)]
    return {
        m: [va if p else vb for p, va, vb in zip(pick, a[m], b[m], strict=True)] for m in METRICS
    }


@dataclass
class UnitResult:
    """Records of one (model, eps_rel) unit and example images of its first reported crops."""

    records: list[Record]
    samples: dict[str, torch.Tensor]


@dataclass
class _Unit:
    """The state of one unit while it runs: the model's forward, its settings, its records."""

    f: Forward
    model: EvalModel
    eps_rel: float
    s: EvalSettings
    operator: Operator | None = None  # needed by measurement-space attacks
    records: list[Record] = field(default_factory=list)
    samples: dict[str, torch.Tensor] = field(default_factory=dict)

    def threat(self, setting: str) -> ThreatModel:
        """The threat model of `setting`: its attack.space, in the model's input units."""
        space = self.s.attacks[setting].space
        if space == "measurement" and self.operator is None:
            raise ValueError("a measurement-space attack needs the operator")
        return ThreatModel.build(space, self.operator, self.model.space, self.model.space)

    def score(
        self, data: SplitInputs, a: Attacked, sigmas: Sequence[float], cond: Condition
    ) -> dict[float, dict[str, list[float]]]:
        """Metrics of g(y + a.e) per sigma; one record each (`cond` with that sigma)."""
        s = self.s
        how = Sampling(s.fixed_k, s.chunk_size, s.antithetic, s.adaptive)
        noise_seed = _seed(s.seed, cond.split, "noise")
        per_sigma = smoothed_metrics(
            self.f, data, a.e, sigmas, how, self.model.space, s.batch_size, noise_seed
        )
        for sigma, per_image in per_sigma.items():
            mc, k_used = per_image.pop("mc_share"), per_image.pop("k")
            debiased = per_image.pop("mse_debiased")
            k_mean = sum(k_used) / len(k_used)
            row = dataclasses.replace(cond, sigma_g=sigma, k=round(k_mean) if sigma > 0 else 1)
            extra = {
                "mc_share": sum(mc) / len(mc),
                "mc_share_median": float(torch.tensor(mc).median()),
                "mse_debiased": sum(debiased) / len(debiased),
                "k_mean": k_mean,
                "k_max_used": max(k_used),
                **_norm_stats(a.norm),
            }
            self.records.append(make_record(self.model.info, row, per_image, **extra))
        return per_sigma

    def condition(self, data: SplitInputs, split: str, attack: str, setting: str) -> Condition:
        threat = self.threat(setting)
        eps = threat.eps(self.eps_rel, data.y.shape[1:])
        k = self.s.fixed_k
        return Condition(split, self.eps_rel, eps, attack, setting, 0.0, k, threat.space)

    def attack_g(
        self, data: SplitInputs, split: str, setting: str, sigma: float, on_f: dict
    ) -> None:
        """RS-PGD: the attack of `setting` on g at sigma_g* with k_attack draws (EOT), then
        the per-image worse of the two attacks."""
        cfg, seed = self.s.attacks[setting], self.s.seed
        g = SmoothedEstimator(self.f, sigma, cfg.k_attack, self.s.chunk_size)
        forward = g.with_noise(cfg.noise, _seed(seed, split, setting, "eot"))
        rs_seed = _seed(seed, split, setting, "rs")
        threat = self.threat(setting)
        on_g_attack = batched_attack(
            forward, data, self.eps_rel, cfg, self.s.batch_size, rs_seed, threat
        )
        cond = self.condition(data, split, "pgd_g", setting)
        on_g = self.score(data, on_g_attack, [sigma], cond)
        worst = dataclasses.replace(self.condition(data, split, "worst", setting), sigma_g=sigma)
        self.records.append(make_record(self.model.info, worst, worst_case(on_f, on_g[sigma])))

    def run_split(self, split: str, data: SplitInputs, roles: tuple[str, str]) -> None:
        reported, chosen_on = roles
        for setting, cfg in self.s.attacks_at(self.eps_rel).items():
            seed = _seed(self.s.seed, split, setting)
            threat = self.threat(setting)
            on_f = batched_attack(self.f, data, self.eps_rel, cfg, self.s.batch_size, seed, threat)
            kind = "pgd_f" if self.eps_rel > 0 else "none"
            per_sigma = self.score(
                data, on_f, self.s.sigmas, self.condition(data, split, kind, setting)
            )
            chosen = choose_sigma(self.records, chosen_on, self.eps_rel, setting)
            assert chosen is not None, "the selection split is evaluated first"
            if split == reported and setting == self.s.primary and self.s.n_samples:
                self.samples.update(_samples(self, data, on_f.e, chosen))
            if split == reported and chosen > 0 and self.s.attacks_g_at(self.eps_rel):
                self.attack_g(data, split, setting, chosen, per_sigma[chosen])


def evaluate_unit(
    model: EvalModel,
    inputs: dict[str, SplitInputs],
    eps_rel: float,
    settings: EvalSettings,
    runtime: Runtime,
    operator: Operator | None = None,
) -> UnitResult:
    """The protocol of this module's docstring for one model at one eps_rel.

    `inputs` maps split names to crops in the model's input space; the selection split (val,
    when present) must come before the reported one. `operator` is needed by attacks whose
    `space` is "measurement" (issue 17).
    """
    module = model.module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    splits = [s for s, d in inputs.items() if d.y.shape[0]]
    assert splits, "no crops to evaluate"
    roles = split_roles(splits)
    assert splits.index(roles[1]) <= splits.index(roles[0]), "selection split must come first"
    unit = _Unit(runtime.forward(fold_batchnorm(module)), model, eps_rel, settings, operator)
    for split in splits:
        unit.run_split(split, inputs[split], roles)
    return UnitResult(unit.records, unit.samples)


def most_textured(x: torch.Tensor, n: int) -> torch.Tensor:
    """Indices (ascending) of the n crops of x (B, C, H, W) with the largest mean squared
    finite-difference gradient: the crops where reconstructions differ, not flat sky."""
    energy = x.diff(dim=-1).square().mean(dim=(1, 2, 3)) + x.diff(dim=-2).square().mean(
        dim=(1, 2, 3)
    )
    return energy.topk(min(n, x.shape[0])).indices.sort().values


def _samples(
    unit: _Unit, data: SplitInputs, e: torch.Tensor, sigma: float
) -> dict[str, torch.Tensor]:
    """Pixel-space images of the n most textured crops (the same crops for every model of the
    same data): input, perturbed input, output, truth."""
    sl = most_textured(data.x, unit.s.n_samples)
    norm = unit.model.space
    with torch.no_grad():
        y_adv = data.y[sl] + e[sl]
        gen = make_generator(_seed(unit.s.seed, "samples"), data.y.device)
        out = predict_many(unit.f, y_adv, [sigma], unit.s.fixed_k, gen)[sigma].mean
    return {
        "input": to_pixels(data.y[sl], norm).cpu(),
        "perturbed": to_pixels(y_adv, norm).cpu(),
        "output": to_pixels(out, norm).cpu(),
        "truth": data.x[sl].cpu(),
        "sigma_g": torch.tensor([sigma]),
    }
