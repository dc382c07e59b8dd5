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
   (nothing is chosen with it), and per image and metric the worst case of the two attacks.
Every attack setting runs and is scored through `attacking.attack_scored`: an ensemble's
members each, per crop and metric the worst (the PSNR column from the member of the largest
MSE, the SSIM column from the member of the lowest SSIM), checked against random noise.
Every record (`records.Record`) is one (split, eps_rel, attack, setting, sigma_g) row with
per-image MSE / PSNR / SSIM on images de-normalized and clamped to [0, 1], their means and
standard errors, and the share of the MSE that is Monte-Carlo noise of the smoothed estimate.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from smoothrecon.attacks.setting import AttackSetting
from smoothrecon.attacks.threat import ThreatModel
from smoothrecon.config import Config
from smoothrecon.defenses.median import PercentileEstimator, predict_percentile_many
from smoothrecon.defenses.smoothing import (
    AdaptiveK,
    SmoothedEstimator,
    SmoothedOutput,
    mc_share,
    mc_share_fn,
    predict_adaptive,
    predict_many,
)
from smoothrecon.evaluation.attacking import (
    Attacked,
    Checking,
    PerSigma,
    Scored,
    Scoring,
    attack_scored,
    worst_through,
)
from smoothrecon.evaluation.check import judge, record_fields, worst_per_metric
from smoothrecon.evaluation.inputs import (
    METRICS,
    Forward,
    SplitInputs,
    clean_metrics,
    split_inputs,
    to_pixels,
)
from smoothrecon.evaluation.records import (
    NO_ATTACK,
    ON_F,
    ON_G,
    WORST,
    Condition,
    Record,
    choose_sigma,
    make_record,
    split_roles,
)
from smoothrecon.metrics import all_metrics
from smoothrecon.models.fold import fold_batchnorm
from smoothrecon.models.info import ModelInfo
from smoothrecon.models.normalization import Normalization
from smoothrecon.operators import Operator
from smoothrecon.util.distributed import map_batches
from smoothrecon.util.runtime import Runtime
from smoothrecon.util.seeds import derived_seed, make_generator

__all__ = [
    "EvalModel",
    "EvalSettings",
    "SplitInputs",
    "UnitResult",
    "clean_metrics",
    "evaluate_unit",
    "smoothed_metrics",
    "split_inputs",
]


@dataclass(frozen=True)
class EvalSettings:
    """Everything an evaluation depends on besides the model and its crops, built once."""

    eps_rels: tuple[float, ...]
    sigmas: tuple[float, ...]  # the sigma_g grid; (0.0,) evaluates without smoothing
    k: int | str  # noise draws of the smoothed estimate, or "auto" (adaptive, see below)
    attacks: Mapping[str, AttackSetting]  # setting name -> attack; the first chooses sigma_g*
    rs_pgd: bool = False  # also attack g at sigma_g* (and report the per-image worst case)
    rs_pgd_eps_rels: tuple[float, ...] = ()  # where RS-PGD runs; empty: every eps_rel > 0
    rs_pgd_spaces: tuple[str, ...] = ()  # the threat models it runs in; empty: all
    seed: int = 0
    batch_size: int = 64
    chunk_size: int = 0
    antithetic: bool = False
    n_samples: int = 0  # example images of the most textured reported crops (image grids)
    k_min: int = 8  # k = "auto": draws until mc_share <= mc_tolerance, within [k_min, k_max]
    k_max: int = 256
    mc_tolerance: float = 0.05
    # the attack on g per setting where it differs from the attack on f (the EOT study's
    # choice in a sweep); a setting not here attacks g with its own settings
    attacks_g: Mapping[str, AttackSetting] = field(default_factory=dict)

    def attack_on_g(self, setting: str) -> AttackSetting:
        """The attack on g of `setting`: attacks_g's entry, else the setting itself."""
        return self.attacks_g.get(setting, self.attacks[setting])

    @property
    def adaptive(self) -> AdaptiveK | None:
        """The stopping rule of k: 'auto', else None."""
        return AdaptiveK(self.k_min, self.k_max, self.mc_tolerance) if self.k == "auto" else None

    @property
    def fixed_k(self) -> int:
        """k as a number: the fixed k, or k_max (the most any estimate uses) for 'auto'."""
        return self.k_max if isinstance(self.k, str) else self.k

    @staticmethod
    def from_config(cfg: Config, attacks: Mapping[str, AttackSetting]) -> EvalSettings:
        return EvalSettings(
            eps_rels=tuple(cfg.evaluation.eps_rels),
            sigmas=tuple(cfg.smoothing.sigma_grid),
            k=cfg.smoothing.k,
            attacks=dict(attacks),
            rs_pgd=cfg.experiment.rs_pgd,
            rs_pgd_eps_rels=tuple(cfg.experiment.rs_pgd_eps_rels),
            rs_pgd_spaces=tuple(cfg.experiment.rs_pgd_spaces),
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

    def attacks_at(self, eps_rel: float) -> dict[str, AttackSetting]:
        """The settings run at eps_rel (at 0 there is no attack: the primary stands for all)."""
        return dict(self.attacks) if eps_rel > 0 else {self.primary: self.attacks[self.primary]}

    def attacks_g_at(self, eps_rel: float, setting: str = "") -> bool:
        """Whether RS-PGD attacks g at eps_rel (under `setting`, when given: its space)."""
        space = self.attacks[setting].space if setting else ""
        return (
            self.rs_pgd
            and eps_rel > 0
            and (not self.rs_pgd_eps_rels or eps_rel in self.rs_pgd_eps_rels)
            and (not space or not self.rs_pgd_spaces or space in self.rs_pgd_spaces)
        )

    def unit_fields(self, eps_rel: float) -> dict:
        """What a unit at eps_rel depends on, as JSON-able data (the key of its file)."""
        # shallow: asdict would deep-copy every attack object (a user's may hold a model)
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d.pop("eps_rels")
        d.pop("rs_pgd_eps_rels")
        spaces = d.pop("rs_pgd_spaces")
        if spaces:  # left out when empty: earlier unit keys stay valid
            d["rs_pgd_spaces"] = [
                k for k in self.attacks_at(eps_rel) if self.attacks_g_at(eps_rel, k)
            ]
        d["attacks"] = {k: v.describe() for k, v in self.attacks_at(eps_rel).items()}
        d["rs_pgd"] = self.attacks_g_at(eps_rel)
        if d["rs_pgd"]:  # the worst of the attacks on f and on g, per crop and metric
            d["worst"] = "per-metric"
        d.pop("attacks_g")
        if d["rs_pgd"] and self.attacks_g:
            d["attacks_g"] = {k: self.attack_on_g(k).describe() for k in self.attacks_at(eps_rel)}
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
    # smoothed outputs aggregate the draws by this percentile (median smoothing), None: mean
    percentile: float | None = None

    @property
    def space(self) -> Normalization:
        assert self.norm is not None, "the data's normalization is resolved before evaluating"
        return self.norm


@dataclass(frozen=True)
class Sampling:
    """How g_hat is estimated: k draws (common random numbers across sigmas, optionally
    antithetic), or adaptively (k_min, k_max, tolerance) when `adaptive` is set; with
    `percentile` the draws' p-percentile instead of their mean, always from k draws."""

    k: int
    chunk_size: int = 0
    antithetic: bool = False
    adaptive: AdaptiveK | None = None
    percentile: float | None = None

    def estimate(
        self, f: Forward, y: torch.Tensor, sigmas: Sequence[float], gen: torch.Generator
    ) -> dict[float, SmoothedOutput]:
        """The estimate at y (B, C, H, W) normalized for every sigma, with k draws (no
        adaptive k): the mean, or the percentile."""
        if self.percentile is None:
            args = (gen, self.chunk_size, self.antithetic)
            return predict_many(f, y, sigmas, self.k, *args, with_se=True)
        p, args = self.percentile, (gen, self.chunk_size, self.antithetic)
        return predict_percentile_many(f, y, sigmas, self.k, p, *args)

    def predict(
        self,
        f: Forward,
        y: torch.Tensor,
        x: torch.Tensor,
        norm: Normalization,
        sigmas: Sequence[float],
        gen: torch.Generator,
    ) -> dict[float, tuple[torch.Tensor, torch.Tensor, list[float]]]:
        """{sigma: (g_hat, se, k per image)} for y (B, C, H, W) normalized, targets x (B, C,
        H', W') in pixels (adaptive k stops on the Monte-Carlo share of their MSE)."""
        with torch.no_grad():
            if self.adaptive is None or self.percentile is not None:
                preds = self.estimate(f, y, sigmas, gen)
                b = y.shape[0]
                return {
                    s: (p.mean, _se(p.se), [float(self.k if s > 0 else 1)] * b)
                    for s, p in preds.items()
                }
            args = (self.adaptive, gen, self.chunk_size, self.antithetic)
            ada = predict_adaptive(f, y, sigmas, mc_share_fn(x, norm), *args)
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
        gen = make_generator(derived_seed(seed, start), data.y.device)
        preds = how.predict(forward, data.y[sl] + e[sl], data.x[sl], norm, sigmas, gen)
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


def _norm_stats(norm: torch.Tensor) -> dict[str, float]:
    """Mean, min and max of the per-crop perturbation norms (in the attacker's space)."""
    return {
        "e_norm_mean": float(norm.mean()),
        "e_norm_min": float(norm.min()),
        "e_norm_max": float(norm.max()),
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

    def sampling(self) -> Sampling:
        s, p = self.s, self.model.percentile
        return Sampling(s.fixed_k, s.chunk_size, s.antithetic, s.adaptive, p)

    def smoothed(
        self, data: SplitInputs, e: torch.Tensor, sigmas: Sequence[float], split: str
    ) -> dict[float, dict[str, list[float]]]:
        """Per-image metrics of g(y + e) for each sigma (`smoothed_metrics`, this unit's
        noise seed per split, so the same e always scores the same)."""
        noise_seed = derived_seed(self.s.seed, split, "noise")
        how, norm, bs = self.sampling(), self.model.space, self.s.batch_size
        per_sigma = smoothed_metrics(self.f, data, e, sigmas, how, norm, bs, noise_seed)
        for sigma, per in per_sigma.items():
            bad = sum(not math.isfinite(v) for v in per["mse"])
            if bad:
                raise ValueError(
                    f"model {self.model.info.model} returned non-finite values (NaN or Inf) on "
                    f"{bad} of {len(per['mse'])} {split} crops at sigma_g {sigma:g}, eps_rel "
                    f"{self.eps_rel:g}: nothing can be scored; fix the model's forward"
                )
        return per_sigma

    def score(self, cond: Condition, res: Scored, check_at: float) -> None:
        """One record per sigma of `res.per_sigma` (`cond` with that sigma); the check's
        random-reference fields where it was scored (`check_at`), and for an ensemble which
        member produced each metric (`worst_of`) and each member's own metrics (`by_member`)."""
        a = res.attacked
        for sigma, per_image in res.per_sigma.items():
            per_image = dict(per_image)
            mc, k_used = per_image.pop("mc_share"), per_image.pop("k")
            debiased = per_image.pop("mse_debiased")
            k_mean = sum(k_used) / len(k_used)
            row = dataclasses.replace(cond, sigma_g=sigma, k=round(k_mean) if sigma > 0 else 1)
            extra: dict[str, Any] = {
                "mc_share": sum(mc) / len(mc),
                "mc_share_median": float(torch.tensor(mc).median()),
                "mse_debiased": sum(debiased) / len(debiased),
                "k_mean": k_mean,
                "k_max_used": max(k_used),
                **_norm_stats(a.norm),
                **record_fields(res.check, sigma == check_at),
            }
            if res.worst_of and sigma == check_at:
                extra.update(worst_of=res.worst_of, by_member=res.by_member)
            self.records.append(make_record(self.model.info, row, per_image, **extra))

    def condition(self, data: SplitInputs, split: str, attack: str, setting: str) -> Condition:
        threat = self.threat(setting)
        eps = threat.eps(self.eps_rel, data.y.shape[1:])
        k = self.s.fixed_k
        return Condition(split, self.eps_rel, eps, attack, setting, 0.0, k, threat.space)

    def scoring(self, data: SplitInputs, split: str, sigmas: Sequence[float], at: float):
        """Scoring at `sigmas` through g (f at 0), checked at sigma `at`."""

        def score(e: torch.Tensor, which: Sequence[float]) -> PerSigma:
            return self.smoothed(data, e, which, split)

        return Scoring(score, tuple(sigmas), at)

    def checking(self, cfg: AttackSetting, seed: int, setting: str) -> Checking:
        bs, norm = self.s.batch_size, self.model.space
        return Checking(cfg, seed, self.threat(setting), self.eps_rel, bs, norm)

    def attack_g(self, data: SplitInputs, split: str, setting: str, on_f: Scored) -> None:
        """RS-PGD: the attack on g of `setting` (`EvalSettings.attack_on_g`) at sigma_g*
        (the one sigma of on_f.per_sigma) with k_attack draws (EOT), checked like the attack
        on f; then per crop and metric the worse of the two attacks. A percentile-smoothed
        model is attacked through the mean of the draws and through their percentile, per crop
        and metric the worse (`attacking.worst_through`)."""
        (sigma,) = on_f.per_sigma
        cfg, seed = self.s.attack_on_g(setting), self.s.seed
        k, chunk, p = cfg.eot.k_attack, self.s.chunk_size, self.model.percentile
        estimators = {"mean": SmoothedEstimator(self.f, sigma, k, chunk)}
        if p is not None:
            estimators["percentile"] = PercentileEstimator(self.f, sigma, k, p, chunk)
        how = self.checking(cfg, derived_seed(seed, split, setting, "rs"), setting)
        scoring = self.scoring(data, split, [sigma], sigma)
        results = {
            name: attack_scored(
                g.with_noise(cfg.eot.noise, derived_seed(seed, split, setting, "eot")),
                data,
                how,
                scoring,
            )
            for name, g in estimators.items()
        }
        res = results["mean"] if p is None else worst_through(results, sigma)
        self.score(self.condition(data, split, ON_G, setting), res, sigma)
        both, _ = worst_per_metric([on_f.per_sigma[sigma], res.per_image])
        worst_per = {m: both[m] for m in METRICS}
        both_bad = on_f.attacked.grad_bad & res.attacked.grad_bad  # no gradient for either
        w_check = judge(worst_per, res.random, both_bad)
        assert res.check is not None and on_f.check is not None
        w_check = dataclasses.replace(
            w_check, gradient_free=res.check.gradient_free or on_f.check.gradient_free
        )
        worst = dataclasses.replace(self.condition(data, split, WORST, setting), sigma_g=sigma)
        extra = record_fields(w_check, True)
        self.records.append(make_record(self.model.info, worst, worst_per, **extra))

    def attack_f(self, split: str, data: SplitInputs, setting: str) -> Scored:
        """The attack of `setting` on f, scored through g at every sigma of the grid and
        checked at sigma_g = 0; at eps_rel 0, no attack."""
        sigmas = self.s.sigmas
        if self.eps_rel == 0:
            zeros = torch.zeros_like(data.y)
            none = torch.zeros(data.y.shape[0], device=data.y.device)
            per_sigma = self.smoothed(data, zeros, sigmas, split)
            unattacked = Attacked(zeros, none, none, zeros, none.bool())
            return Scored(unattacked, None, per_sigma, {}, {}, {}, {})
        how = self.checking(
            self.s.attacks[setting], derived_seed(self.s.seed, split, setting), setting
        )
        return attack_scored(self.f, data, how, self.scoring(data, split, sigmas, 0.0))

    def run_split(self, split: str, data: SplitInputs, roles: tuple[str, str]) -> None:
        reported, chosen_on = roles
        for setting in self.s.attacks_at(self.eps_rel):
            on_f = self.attack_f(split, data, setting)
            kind = ON_F if self.eps_rel > 0 else NO_ATTACK
            self.score(self.condition(data, split, kind, setting), on_f, 0.0)
            chosen = choose_sigma(self.records, chosen_on, self.eps_rel, setting)
            assert chosen is not None, "the selection split is evaluated first"
            if split == reported and setting == self.s.primary and self.s.n_samples:
                self.samples.update(_samples(self, data, on_f.attacked.e, chosen))
            if split == reported and chosen > 0 and self.s.attacks_g_at(self.eps_rel, setting):
                at_chosen = on_f._replace(per_sigma={chosen: on_f.per_sigma[chosen]})
                self.attack_g(data, split, setting, at_chosen)


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
    `space` is "measurement". Every record says what ran (`runtime.describe()`).
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
    ran = runtime.describe()
    for r in unit.records:
        r["runtime"] = ran
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
        gen = make_generator(derived_seed(unit.s.seed, "samples"), data.y.device)
        how = dataclasses.replace(unit.sampling(), chunk_size=0, antithetic=False)
        out = how.estimate(unit.f, y_adv, [sigma], gen)[sigma].mean
    return {
        "input": to_pixels(data.y[sl], norm).cpu(),
        "perturbed": to_pixels(y_adv, norm).cpu(),
        "output": to_pixels(out, norm).cpu(),
        "truth": data.x[sl].cpu(),
        "sigma_g": torch.tensor([sigma]),
    }
