"""One attack setting on one split, scored the way the report reads it.

`attack_scored` is the one path from an `AttackSetting` to per-image metrics, for the attack on
f, the attack on g (EOT) and the `attack` command alike:
1. every member of the setting's attack runs (`protocol.members_of`: an ensemble's members,
   else the attack itself), each aimed at what it maximizes (`aimed`: the model's outputs, or
   for the SSIM loss the outputs in pixels as the metrics see them);
2. each member's perturbations are scored through what is reported (`Scoring`: f, or g at
   each sigma_g), and per crop and metric the worst counts (`check.worst_per_metric`): the
   PSNR column is the member of the largest MSE, the SSIM column the member of the lowest
   SSIM (AutoAttack's per-sample rule on the metric we report). The record says which member
   produced each column, on how many crops;
3. the result is judged against random noise of the first member's norm (`check.judge`); a
   failed attack is joined by the gradient-free one (`gradient_free.SPSA`), and step 2
   repeats with it as one more member.
A single attack (not an ensemble) is its own one member: nothing changes for it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch

from smoothrecon.attacks.gradient_free import SPSA
from smoothrecon.attacks.protocol import Attack, members_of
from smoothrecon.attacks.setting import AttackSetting
from smoothrecon.attacks.threat import SpaceAttack, ThreatModel, run_attack, same_norm_noise
from smoothrecon.evaluation.check import AttackCheck, judge, worst_per_metric
from smoothrecon.evaluation.inputs import Forward, SplitInputs, to_pixels
from smoothrecon.models.normalization import Normalization
from smoothrecon.util.distributed import map_batches
from smoothrecon.util.seeds import derived_seed, make_generator

# per sigma_g, per-image metrics (mse, psnr, ssim and the smoothing's own fields)
PerSigma = dict[float, dict[str, list[float]]]
GRADIENT_FREE = "gradient-free"  # the name of SPSA's column when it joins a failed attack


class Attacked(NamedTuple):
    """An attack on a batch or split: e (B, C, H, W) the network-input perturbation (add it
    to y) whatever space the attacker perturbed; loss (B,); norm (B,) ||e|| measured in the
    attacker's own space (the measurement for a measurement-space attack); e_random
    (B, C, H, W): random noise of the same norm in the same space (the reference the attack
    must beat, `check.judge`); grad_bad (B,) bool: the first gradient was zero or not
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


def aimed(
    forward: Forward, data: SplitInputs, attack: Attack, norm: Normalization
) -> tuple[Forward, SplitInputs]:
    """What `attack` aims at: the model's outputs against the model-space targets, or for an
    attack that `wants_pixels` (the SSIM loss) the outputs de-normalized and clamped to
    [0, 1], as the metrics see them, against the pixel truth."""
    if not getattr(attack, "wants_pixels", False):
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


@dataclass(frozen=True)
class Checking:
    """How to run one attack setting on a split: the setting, its seed and threat model, its
    eps_rel, the crops per batch and the model's normalization (for what `aimed` aims at)."""

    cfg: AttackSetting
    seed: int
    threat: ThreatModel
    eps_rel: float
    batch_size: int
    norm: Normalization


@dataclass(frozen=True)
class Scoring:
    """How perturbations are scored: score(e, sigmas) -> per sigma per-image metrics of the
    reported model at y + e; the sigmas recorded; the sigma the random reference is scored at
    (`check_at`: 0 for the attack on f, sigma_g* for the attack on g)."""

    score: Callable[[torch.Tensor, Sequence[float]], PerSigma]
    sigmas: tuple[float, ...]
    check_at: float

    def all_sigmas(self) -> list[float]:
        return sorted({*self.sigmas, self.check_at})


class Scored(NamedTuple):
    """An attack setting after scoring: `attacked` (per crop the member perturbation of the
    largest MSE where it was checked; the first member's random reference), its check, per
    sigma of the scoring the per-image metrics (per crop and metric the worst member), the
    per-image metrics where it was checked, under it and under random noise, `worst_of`
    ({metric: {member: share of crops}} where it was checked) and `by_member` ({member:
    {"psnr": [...], "ssim": [...]}} each member's own per-image metrics there); both empty for
    a single attack."""

    attacked: Attacked
    check: AttackCheck | None  # None: no attack (eps_rel 0)
    per_sigma: PerSigma
    per_image: dict[str, list[float]]
    random: dict[str, list[float]]
    worst_of: dict[str, dict[str, float]]
    by_member: dict[str, dict[str, list[float]]]


def attack_scored(forward: Forward, data: SplitInputs, how: Checking, scoring: Scoring) -> Scored:
    """The module docstring's steps 1-3 for the setting `how.cfg` on `forward`."""
    members = members_of(how.cfg.attack)
    names, runs = [m.name for m in members], []
    for m in members:
        seed = how.seed if len(members) == 1 else derived_seed(how.seed, m.name)
        at, target = aimed(forward, data, m, how.norm)
        setting = how.cfg.with_attack(m)
        runs.append(
            batched_attack(at, target, how.eps_rel, setting, how.batch_size, seed, how.threat)
        )
    sigmas = scoring.all_sigmas()
    scores = [scoring.score(a.e, sigmas) for a in runs]
    rnd = scoring.score(runs[0].e_random, [scoring.check_at])[scoring.check_at]
    grad_bad = torch.stack([a.grad_bad for a in runs]).all(0)
    best, picks = _combine(scores, scoring.check_at)
    check = judge(best[scoring.check_at], rnd, grad_bad)
    if check.attack_failed:
        args = (how.eps_rel, how.cfg, how.batch_size, how.seed, how.threat)
        gf = batched_attack(forward, data, *args, how=gradient_free_attack)
        runs, names = [*runs, gf], [*names, GRADIENT_FREE]
        scores.append(scoring.score(gf.e, sigmas))
        best, picks = _combine(scores, scoring.check_at)
        check = dataclasses.replace(check, gradient_free=True)
    attacked = _picked(runs, picks["mse"], grad_bad)
    per_sigma = {s: best[s] for s in scoring.sigmas}
    if len(names) == 1:
        return Scored(attacked, check, per_sigma, best[scoring.check_at], rnd, {}, {})
    own = {
        n: {k: sc[scoring.check_at][k] for k in ("psnr", "ssim")}
        for n, sc in zip(names, scores, strict=True)
    }
    return Scored(
        attacked, check, per_sigma, best[scoring.check_at], rnd, _shares(picks, names), own
    )


def _combine(scores: list[PerSigma], check_at: float) -> tuple[PerSigma, dict[str, torch.Tensor]]:
    """Per sigma, per crop and metric the worst of the members' scores; and which member that
    was per crop where the attack is checked ({"mse": (B,), "ssim": (B,)} member indices)."""
    best, picks = {}, {}
    for s in scores[0]:
        best[s], chosen = worst_per_metric([sc[s] for sc in scores])
        if s == check_at:
            picks = chosen
    return best, picks


def _picked(runs: list[Attacked], pick: torch.Tensor, grad_bad: torch.Tensor) -> Attacked:
    """Per crop the run `pick` (B,) chose; the first run's random reference; grad_bad."""
    first = runs[0]
    e, loss, norm = (
        _gather([getattr(a, name) for a in runs], pick) for name in ("e", "loss", "norm")
    )
    return Attacked(e, loss, norm, first.e_random, grad_bad)


def _gather(values: list[torch.Tensor], pick: torch.Tensor) -> torch.Tensor:
    """Per sample i (dim 0), values[pick[i]][i]; values: R tensors of one shape (B, ...)."""
    stacked = torch.stack(values)
    idx = pick.to(stacked.device).view(1, -1, *([1] * (stacked.dim() - 2)))
    return stacked.gather(0, idx.expand(1, *stacked.shape[1:]))[0]


def _shares(picks: dict[str, torch.Tensor], names: list[str]) -> dict[str, dict[str, float]]:
    """{metric: {member name: share of crops where it was the worst}}."""
    return {
        m: {n: float((idx == i).double().mean()) for i, n in enumerate(names)}
        for m, idx in picks.items()
    }


def worst_through(results: dict[str, Scored], check_at: float) -> Scored:
    """Per crop and metric the worst of one attack setting run through several forwards of the
    same defence (its surrogates: for median smoothing the mean and the percentile of the
    draws), each scored alike by `attack_scored`: the metrics (`check.worst_per_metric`), the
    perturbation of the largest MSE, the first's random reference, judged again. Members are
    named "<forward>:<member>" (or "<forward>" for a single attack); `worst_of` and `by_member`
    count them all."""
    scs = list(results.values())
    best, picks = _combine([s.per_sigma for s in scs], check_at)
    grad_bad = torch.stack([s.attacked.grad_bad for s in scs]).all(0)
    first = scs[0]
    check = dataclasses.replace(
        judge(best[check_at], first.random, grad_bad),
        gradient_free=any(s.check is not None and s.check.gradient_free for s in scs),
    )
    attacked = _picked([s.attacked for s in scs], picks["mse"], grad_bad)
    own: dict[str, dict[str, list[float]]] = {}
    for name, s in results.items():
        members = s.by_member or {"": {k: s.per_image[k] for k in ("psnr", "ssim")}}
        own |= {f"{name}:{m}" if m else name: v for m, v in members.items()}
    as_mse = [
        {"mse": [10 ** (-p / 10) for p in v["psnr"]], "ssim": v["ssim"]} for v in own.values()
    ]
    _, member_picks = worst_per_metric(as_mse)
    return Scored(
        attacked, check, best, best[check_at], first.random, _shares(member_picks, list(own)), own
    )
