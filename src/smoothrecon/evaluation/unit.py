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
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import torch

from smoothrecon.attacks.gradient_free import SPSA
from smoothrecon.attacks.protocol import Attack
from smoothrecon.attacks.setting import AttackSetting
from smoothrecon.attacks.threat import (
    SpaceAttack,
    ThreatModel,
    run_attack,
    same_norm_noise,
)
from smoothrecon.config import Config
from smoothrecon.defenses.smoothing import (
    AdaptiveK,
    SmoothedEstimator,
    mc_share,
    mc_share_fn,
    predict_adaptive,
    predict_many,
)
from smoothrecon.evaluation.check import AttackCheck, judge, record_fields, worse_per_crop
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
    "Attacked",
    "Checked",
    "Checking",
    "EvalModel",
    "EvalSettings",
    "SplitInputs",
    "UnitResult",
    "attack",
    "batched_attack",
    "check_attack",
    "clean_metrics",
    "evaluate_unit",
    "smoothed_metrics",
    "split_inputs",
    "worst_case",
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

    @property
    def space(self) -> Normalization:
        assert self.norm is not None, "the data's normalization is resolved before evaluating"
        return self.norm


class Attacked(NamedTuple):
    """An attack on a batch or split: e (B, C, H, W) the network-input perturbation (add it
    to y) whatever space the attacker perturbed; loss (B,); norm (B,) ||e|| measured in the
    attacker's own space (the measurement for a measurement-space attack); e_random
    (B, C, H, W): random noise of the same norm in the same space (the reference the attack
    must beat, `attack_check`); grad_bad (B,) bool: the first gradient was zero or not
    finite."""

    e: torch.Tensor
    loss: torch.Tensor
    norm: torch.Tensor
    e_random: torch.Tensor
    grad_bad: torch.Tensor


def attack(
    forward: Forward,
    y: torch.Tensor,
    target: torch.Tensor,
    eps_rel: float,
    setting: AttackSetting,
    seed: int,
    threat: ThreatModel | None = None,
) -> Attacked:
    """The attack of `setting` on `forward` in the threat's space (the network input by
    default) at eps = eps_rel * sqrt(d in that space), with random noise of the same norm
    beside it."""
    return _run(forward, (y, target), eps_rel, setting.attack, (seed, seed), threat)


def gradient_free_attack(
    forward: Forward,
    y: torch.Tensor,
    target: torch.Tensor,
    eps_rel: float,
    setting: AttackSetting,
    seed: int,
    threat: ThreatModel | None = None,
) -> Attacked:
    """The gradient-free check (`gradient_free.SPSA`, setting.fallback_queries forwards per
    crop) in the threat's space: what an attack reaches without autograd's gradients."""
    threat = threat or ThreatModel()
    # a step near the estimate's expected cosine with the gradient, sqrt(K / (K + d)): a
    # larger fixed step wanders around the optimum in high dimension (gradient_free.SPSA)
    k, d = SPSA().directions, threat.count(y.shape[1:])
    step = min(0.25, 2 * math.sqrt(k / (k + d)))
    spsa = SPSA(queries=setting.fallback_queries, directions=k, step_factor=step)
    seeds = (derived_seed(seed, "gradient-free"), seed)
    return _run(forward, (y, target), eps_rel, spsa, seeds, threat)


def _run(
    forward: Forward,
    data: tuple[torch.Tensor, torch.Tensor],
    eps_rel: float,
    how: Attack,
    seeds: tuple[int, int],
    threat: ThreatModel | None,
) -> Attacked:
    """`how` on (y, target) in the threat's space; seeds = (of its generator, of the random
    noise beside it)."""
    threat = threat or ThreatModel()
    y, target = data
    gen = make_generator(seeds[0], y.device)
    res = run_attack(forward, y, target, threat, eps_rel, how, gen)
    return _attacked(res, threat, y, seeds[1])


def _attacked(res: SpaceAttack, threat: ThreatModel, y: torch.Tensor, seed: int) -> Attacked:
    if res.eps == 0:
        zeros = torch.zeros(y.shape[0], device=y.device)
        return Attacked(res.e, zeros, zeros, res.e, zeros.bool())
    norm = res.norm.detach()
    e_random = same_norm_noise(
        threat, y, norm, make_generator(derived_seed(seed, "random"), y.device)
    )
    assert res.run is not None
    bad = res.run.grad_bad if res.run.grad_bad is not None else torch.zeros_like(norm).bool()
    return Attacked(res.e.detach(), res.loss.detach(), norm, e_random, bad)


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
        gen = make_generator(derived_seed(seed, start), data.y.device)
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


def aimed(
    forward: Forward, data: SplitInputs, setting: AttackSetting, norm: Normalization
) -> tuple[Forward, SplitInputs]:
    """What an attack aims at: the model's outputs against the model-space targets, or for an
    attack that `wants_pixels` (the SSIM loss) the outputs de-normalized and clamped to
    [0, 1], as the metrics see them, against the pixel truth."""
    if not getattr(setting.attack, "wants_pixels", False):
        return forward, data

    def pixels(z: torch.Tensor) -> torch.Tensor:
        return to_pixels(forward(z), norm)

    return pixels, SplitInputs(data.y, data.x, data.x)


def batched_attack(
    forward: Forward,
    data: SplitInputs,
    eps_rel: float,
    setting: AttackSetting,
    batch_size: int,
    seed: int,
    threat: ThreatModel | None = None,
    how: Callable[..., Attacked] = attack,
) -> Attacked:
    """`attack` (or another attack function of its signature, `how`) over a whole split in
    batches (shared across ranks)."""

    def batch(start: int) -> Attacked:
        sl = slice(start, start + batch_size)
        y, target = data.y[sl], data.target[sl]
        return how(forward, y, target, eps_rel, setting, derived_seed(seed, start), threat)

    parts = map_batches(data.y.shape[0], batch_size, batch)
    return Attacked(*(torch.cat([p[i] for p in parts]) for i in range(len(Attacked._fields))))


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

    def sampling(self) -> Sampling:
        s = self.s
        return Sampling(s.fixed_k, s.chunk_size, s.antithetic, s.adaptive)

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

    def score(
        self,
        data: SplitInputs,
        a: Attacked,
        cond: Condition,
        check: tuple[AttackCheck | None, float],
        per_sigma: dict[float, dict[str, list[float]]],
    ) -> None:
        """One record per sigma of `per_sigma` (metrics of g(y + a.e), `cond` with that
        sigma); check = (the attack's check, the sigma its random reference was scored at)."""
        for sigma, per_image in per_sigma.items():
            per_image = dict(per_image)
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
                **record_fields(check[0], sigma == check[1]),
            }
            self.records.append(make_record(self.model.info, row, per_image, **extra))

    def condition(self, data: SplitInputs, split: str, attack: str, setting: str) -> Condition:
        threat = self.threat(setting)
        eps = threat.eps(self.eps_rel, data.y.shape[1:])
        k = self.s.fixed_k
        return Condition(split, self.eps_rel, eps, attack, setting, 0.0, k, threat.space)

    def attack_g(
        self, data: SplitInputs, split: str, setting: str, sigma: float, on_f: tuple
    ) -> None:
        """RS-PGD: the attack on g of `setting` (`EvalSettings.attack_on_g`) at sigma_g* with
        k_attack draws (EOT), checked like the attack on f, then the per-image worse of the
        two attacks. on_f: (per-image metrics of the attack on f through g, its check, its
        grad_bad (B,))."""
        cfg, seed = self.s.attack_on_g(setting), self.s.seed
        g = SmoothedEstimator(self.f, sigma, cfg.eot.k_attack, self.s.chunk_size)
        forward = g.with_noise(cfg.eot.noise, derived_seed(seed, split, setting, "eot"))
        rs_seed = derived_seed(seed, split, setting, "rs")
        threat = self.threat(setting)
        bs = self.s.batch_size
        forward, target = aimed(forward, data, cfg, self.model.space)
        a = batched_attack(forward, target, self.eps_rel, cfg, bs, rs_seed, threat)

        def scorer(e: torch.Tensor) -> dict[str, list[float]]:
            return self.smoothed(data, e, [sigma], split)[sigma]

        res = check_attack(
            forward, target, a, Checking(cfg, rs_seed, threat, scorer, self.eps_rel, bs)
        )
        cond = self.condition(data, split, ON_G, setting)
        self.score(data, res.attacked, cond, (res.check, sigma), {sigma: res.per_image})
        worst_per = worst_case(on_f[0], res.per_image)
        both_bad = on_f[2] & res.attacked.grad_bad  # no gradient for either attack
        w_check = judge(worst_per, res.random, both_bad)
        w_check = dataclasses.replace(
            w_check, gradient_free=res.check.gradient_free or on_f[1].gradient_free
        )
        worst = dataclasses.replace(self.condition(data, split, WORST, setting), sigma_g=sigma)
        extra = record_fields(w_check, True)
        self.records.append(make_record(self.model.info, worst, worst_per, **extra))

    def attack_f(self, split: str, data: SplitInputs, setting: str) -> tuple[Attacked, Checked]:
        """The attack of `setting` on f, checked at sigma_g = 0."""
        cfg = self.s.attacks[setting]
        seed = derived_seed(self.s.seed, split, setting)
        threat = self.threat(setting)
        bs = self.s.batch_size
        forward, target = aimed(self.f, data, cfg, self.model.space)
        a = batched_attack(forward, target, self.eps_rel, cfg, bs, seed, threat)

        def scorer(e: torch.Tensor) -> dict[str, list[float]]:
            return self.smoothed(data, e, [0.0], split)[0.0]

        how = Checking(cfg, seed, threat, scorer, self.eps_rel, bs)
        res = check_attack(forward, target, a, how)
        return res.attacked, res

    def run_split(self, split: str, data: SplitInputs, roles: tuple[str, str]) -> None:
        reported, chosen_on = roles
        for setting in self.s.attacks_at(self.eps_rel):
            if self.eps_rel > 0:
                on_f, res = self.attack_f(split, data, setting)
                check: AttackCheck | None = res.check
            else:
                zeros = torch.zeros_like(data.y)
                none = torch.zeros(data.y.shape[0], device=data.y.device)
                on_f, check = Attacked(zeros, none, none, zeros, none.bool()), None
            kind = ON_F if self.eps_rel > 0 else NO_ATTACK
            per_sigma = self.smoothed(data, on_f.e, self.s.sigmas, split)
            cond = self.condition(data, split, kind, setting)
            self.score(data, on_f, cond, (check, 0.0), per_sigma)
            chosen = choose_sigma(self.records, chosen_on, self.eps_rel, setting)
            assert chosen is not None, "the selection split is evaluated first"
            if split == reported and setting == self.s.primary and self.s.n_samples:
                self.samples.update(_samples(self, data, on_f.e, chosen))
            if split == reported and chosen > 0 and self.s.attacks_g_at(self.eps_rel, setting):
                assert check is not None
                self.attack_g(
                    data, split, setting, chosen, (per_sigma[chosen], check, on_f.grad_bad)
                )


@dataclass(frozen=True)
class Checking:
    """How to judge one attack: its settings, seed and threat model (for the gradient-free
    attack), scorer(e) -> per-image metrics of the attacked forward at y + e, the attack's
    eps_rel and the crops per batch."""

    cfg: AttackSetting
    seed: int
    threat: ThreatModel
    scorer: Callable[[torch.Tensor], dict[str, list[float]]]
    eps_rel: float
    batch_size: int


class Checked(NamedTuple):
    """An attack after its check: the perturbations (per crop the worse of the attack and the
    gradient-free one when it failed), the check, per-image metrics under it and under random
    noise of its norm."""

    attacked: Attacked
    check: AttackCheck
    per_image: dict[str, list[float]]
    random: dict[str, list[float]]


def check_attack(forward: Forward, data: SplitInputs, a: Attacked, how: Checking) -> Checked:
    """The attack `a` on `forward` judged against random noise of its norm (`attack_check`);
    a failed one is backed by the gradient-free attack, per crop the worse of the two."""
    per, rnd = how.scorer(a.e), how.scorer(a.e_random)
    check = judge(per, rnd, a.grad_bad)
    if not check.attack_failed:
        return Checked(a, check, per, rnd)
    args = (how.eps_rel, how.cfg, how.batch_size, how.seed, how.threat)
    gf = batched_attack(forward, data, *args, how=gradient_free_attack)
    pick = worse_per_crop(per["mse"], how.scorer(gf.e)["mse"]).to(a.e.device)
    merged = Attacked(*(_where(pick, u, t) for t, u in zip(a, gf, strict=True)))
    check = dataclasses.replace(check, gradient_free=True)
    return Checked(merged, check, how.scorer(merged.e), rnd)


def _where(pick: torch.Tensor, b: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """Per sample b where pick (B,) else a."""
    return torch.where(pick.view(-1, *([1] * (a.dim() - 1))), b, a)


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
    `space` is "measurement".
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
        gen = make_generator(derived_seed(unit.s.seed, "samples"), data.y.device)
        out = predict_many(unit.f, y_adv, [sigma], unit.s.fixed_k, gen)[sigma].mean
    return {
        "input": to_pixels(data.y[sl], norm).cpu(),
        "perturbed": to_pixels(y_adv, norm).cpu(),
        "output": to_pixels(out, norm).cpu(),
        "truth": data.x[sl].cpu(),
        "sigma_g": torch.tensor([sigma]),
    }
