"""The attack on g, checked for convergence: the EOT study.

An attack on the smoothed g(y) = E f(y + delta) follows Monte-Carlo gradients of g_hat with
k_attack draws per step (expectation over transformation). Two things decide its strength
besides steps: k_attack, and whether the draws are held fixed across steps ("fixed", as
SmoothAdv) or redrawn ("fresh"). A fixed attack can overfit its draws: it then looks strong
on them and is weak on g. So every setting is scored here on *fresh* draws of g at a large k
(`eot_eval_k`, antithetic, one set of draws shared by all settings: common random numbers),
with the Monte-Carlo variance of that estimate subtracted (the debiased loss), never on the
draws it optimized.

Settings compete at an equal budget: `eot_budget` network gradient passes per crop
(steps x k_attack x restarts), step eps * eot_step_factor; each long run also yields its best
iterate after 1/4 and 1/2 of its budget (cheaper settings) and its last iterate. A reference
attack that no setting is tuned on (fresh noise, k 4, 2 x eot_budget) joins the best loss
found. `choose_eot` picks the cheapest setting within `strong_within` of the best loss found
for every (model, sigma_g, eps_rel) of the study.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import torch

from smoothrecon.attacks.pgd import PGD, PGDResult, eps_from_rel, pgd_l2_run
from smoothrecon.config import AttackConfig, ExperimentConfig
from smoothrecon.defenses.smoothing import SmoothedEstimator
from smoothrecon.evaluation.inputs import SplitInputs, to_pixels
from smoothrecon.metrics import psnr, ssim
from smoothrecon.models.normalization import Normalization
from smoothrecon.util.seeds import make_generator

Forward = Callable[[torch.Tensor], torch.Tensor]
REFERENCE_K = 4  # the reference attack: fresh noise, k 4, REFERENCE_BUDGET x eot_budget
REFERENCE_BUDGET = 2


@dataclass(frozen=True)
class EOTSetting:
    """One attack on g: noise handling, draws per step, starts, iterate kept, and budget in
    network gradient passes per crop (steps = budget / (k_attack * restarts))."""

    noise: str
    k_attack: int
    restarts: int
    keep: str
    budget: int

    @property
    def steps(self) -> int:
        return self.budget // (self.k_attack * self.restarts)


@dataclass
class _EOTStudy:
    """The crops of one study (one model at one sigma_g and eps_rel) and how rows are scored."""

    f: Forward
    data: SplitInputs
    norm: Normalization
    sigma: float
    eps_rel: float
    cfg: ExperimentConfig
    seed: int
    chunk: int = 0

    @property
    def eps(self) -> float:
        return eps_from_rel(self.eps_rel, self.data.y.shape[1:])

    def score(self, e: torch.Tensor, setting: EOTSetting, reference: bool = False) -> dict:
        """The row of perturbation e (B, C, H, W): loss, PSNR and SSIM of g_hat(y + e) at
        eot_eval_k fresh draws (the same draws for every row)."""
        k = self.cfg.eot_eval_k
        g = SmoothedEstimator(self.f, self.sigma, k, self.chunk, antithetic=k % 2 == 0)
        gen = make_generator(self.seed * 7919 + 104729, e.device)
        with torch.no_grad():
            out = g.predict(self.data.y + e, gen, with_se=True)
        assert out.se is not None
        err = (out.mean.float() - self.data.target.float()).pow(2).flatten(1).sum(1)
        debiased = err - out.se.float().pow(2).flatten(1).sum(1)
        x_hat = to_pixels(out.mean, self.norm)
        return {
            "eps_rel": self.eps_rel,
            "sigma_g": self.sigma,
            **dataclasses.asdict(setting),
            "steps": setting.steps,
            "step_factor": self.cfg.eot_step_factor,
            "reference": reference,
            "loss": float(debiased.mean()) / self.data.y[0].numel(),
            "psnr": float(psnr(x_hat, self.data.x).mean()),
            "ssim": float(ssim(x_hat, self.data.x).mean()),
            "n": self.data.y.shape[0],
        }

    def run(self, noise: str, k: int, steps: int, start: int, snaps: tuple[int, ...]) -> PGDResult:
        """One PGD run on g with k draws per step from random start number `start`."""
        g = SmoothedEstimator(self.f, self.sigma, k, self.chunk)
        forward = g.with_noise(noise, self.seed * 7919 + 31 * start + k)
        run = PGD(steps, self.cfg.eot_step_factor, "ball", 1, "best")
        gen = make_generator(self.seed * 7919 + start, self.data.y.device)
        return pgd_l2_run(forward, self.data.y, self.data.target, self.eps, run, gen, snaps)

    def rows(self, noise: str, k: int, restarts: int, budget: int, reference: bool) -> list:
        """Rows of one long run per start: best iterate after 1/4, 1/2 and all of `budget`,
        and the last iterate; with several starts the per-crop worse by the attack's loss."""
        steps = budget // (k * restarts)
        if steps < 1:
            return []
        snaps = tuple(sorted({max(1, steps // 4), max(1, steps // 2), steps}))
        runs = [self.run(noise, k, steps, r, snaps) for r in range(restarts)]
        out = []
        for t in snaps:
            e = _worse([r.snapshots[t] for r in runs])
            setting = EOTSetting(noise, k, restarts, "best", t * k * restarts)
            out.append(self.score(e, setting, reference))
        e = _worse([_last(r) for r in runs])
        last = EOTSetting(noise, k, restarts, "last", steps * k * restarts)
        out.append(self.score(e, last, reference))
        return out


def _last(r: PGDResult) -> tuple[torch.Tensor, torch.Tensor]:
    assert r.last is not None
    return r.last


def _worse(pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """Per sample, the e of the (e, loss) pair with the largest loss."""
    e, loss = pairs[0]
    for other_e, other_loss in pairs[1:]:
        better = other_loss > loss
        e = torch.where(better.view(-1, *([1] * (e.dim() - 1))), other_e, e)
        loss = torch.maximum(loss, other_loss)
    return e


def eot_rows(
    f: Forward,
    data: SplitInputs,
    norm: Normalization,
    sigma: float,
    eps_rel: float,
    cfg: ExperimentConfig,
    seed: int = 0,
) -> list[dict]:
    """The study of one model at one sigma_g and eps_rel on the first convergence_images
    crops of `data`: one row per (setting, budget), plus the reference attack's rows."""
    n = min(cfg.convergence_images, data.y.shape[0])
    sub = SplitInputs(data.y[:n], data.target[:n], data.x[:n])
    study = _EOTStudy(f, sub, norm, sigma, eps_rel, cfg, seed)
    rows = []
    for noise in cfg.eot_noises:
        for k in cfg.eot_k_attacks:
            starts = sorted({1, cfg.eot_restarts}) if noise == "fresh" else [1]
            for restarts in starts:
                rows += study.rows(noise, k, restarts, cfg.eot_budget, False)
    ref_budget = REFERENCE_BUDGET * cfg.eot_budget
    return rows + study.rows("fresh", REFERENCE_K, 1, ref_budget, True)


def eot_scores(rows: list[dict]) -> list[dict]:
    """Per setting (not the reference): its budget and the smallest and mean ratio of its loss
    to the best loss found by any row (reference included) per (model, sigma_g, eps_rel)."""
    best: dict[tuple, float] = {}
    for r in rows:
        key = (r["model"], r["sigma_g"], r["eps_rel"])
        best[key] = max(best.get(key, 0.0), r["loss"])
    groups: dict[EOTSetting, list[float]] = {}
    for r in rows:
        if r["reference"]:
            continue
        s = EOTSetting(r["noise"], r["k_attack"], r["restarts"], r["keep"], r["budget"])
        ratio = r["loss"] / max(best[(r["model"], r["sigma_g"], r["eps_rel"])], 1e-30)
        groups.setdefault(s, []).append(ratio)
    return [
        {
            **dataclasses.asdict(s),
            "steps": s.steps,
            "min_ratio": min(v),
            "mean_ratio": sum(v) / len(v),
        }
        for s, v in sorted(groups.items(), key=lambda kv: dataclasses.astuple(kv[0]))
    ]


def choose_eot(rows: list[dict], within: float, base: AttackConfig) -> tuple[AttackConfig, dict]:
    """The attack on g: the cheapest setting (by budget, then the higher smallest ratio) whose
    loss is >= (1 - within) of the best loss found everywhere in `rows`; when none is, the
    one closest to it. Returns (base with that setting, its score with 'converged')."""
    scores = eot_scores(rows)
    close = [s for s in scores if s["min_ratio"] >= 1 - within]
    pick = (
        min(close, key=lambda s: (s["budget"], -s["min_ratio"]))
        if close
        else max(scores, key=lambda s: (s["min_ratio"], -s["budget"]))
    )
    setting = dataclasses.replace(
        base,
        kind="pgd",  # the study is of PGD on g
        steps=pick["steps"],
        step_factor=float(rows[0].get("step_factor", base.step_factor)),
        restarts=pick["restarts"],
        keep=pick["keep"],
        k_attack=pick["k_attack"],
        noise=pick["noise"],
        patience=0,
    )
    return setting, {**pick, "within": within, "converged": bool(close)}
