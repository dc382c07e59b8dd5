"""Attack convergence, shown: how strong is each candidate attack — PGD after t steps per step
size, APGD-L2 of N steps, with 1 or R restarts — against the best loss any attack found, and
the "strong" setting chosen from that. Every candidate runs on each loss the evaluation
attacks with (the MSE, and 1 - SSIM on pixel-space outputs: the row's `objective`), and a
setting's strength is its smallest share over both: the SSIM columns come from the SSIM attack,
so it has to be shown converged too.

Every candidate also runs in each threat model the evaluation attacks in (`threats`: the
network input, and the measurement where experiment.attack_spaces has it; the row's `space`):
in the measurement space the attack perturbs the measurement and the network sees its lifted
back-projection (`attacks.threat.ThreatModel.lift`), with that space's budget.

The best loss found is per crop the largest over every row of one (model, eps_rel, loss,
threat model), including a reference no setting is tuned on: long APGD and long PGD
(`convergence_reference_steps` x `convergence_reference_restarts` each). A setting's share is
its mean loss over the mean of those per-crop bests, so it reads as "this much of the worst
case anything found".

Early stopping: per step size, the longest run is repeated with per-sample early
stopping (`convergence_patience` steps, `convergence_rel_tol`) from the same random starts, so
its loss is comparable to the full run's row by row; its cost is the mean gradient steps it
spent per crop. Such a row competes with the full runs for "strong" by that mean cost.

One long PGD run per (step size, restart) yields every shorter run's result for free: with
best-iterate tracking, the attack of t steps is the best iterate among the first t steps of the
long run (same random start, same iterates). The loss reported is the mean over images of the
per-image MSE in the attack's (normalized) space, and PSNR/SSIM are measured on [0, 1] images.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from smoothrecon.attacks.apgd import APGD
from smoothrecon.attacks.pgd import PGD, PGDResult, pgd_l2_run
from smoothrecon.attacks.threat import ThreatModel
from smoothrecon.config import (
    PGD_ONLY,
    THESIS_EVAL_STEP_FACTOR,
    THESIS_EVAL_STEPS,
    AttackConfig,
    ExperimentConfig,
)
from smoothrecon.evaluation.inputs import SplitInputs, to_pixels
from smoothrecon.metrics import psnr, ssim
from smoothrecon.models.normalization import Normalization
from smoothrecon.util.seeds import make_generator

Forward = Callable[[torch.Tensor], torch.Tensor]
Context = torch.Tensor | None  # per-crop data an attack's forward takes beside its input


@dataclass
class _Study:
    """The crops of one convergence study and how a row is scored on them: `forward` maps
    network inputs `y` to outputs; the attacks perturb in `threat`'s space (the input, or the
    measurement lifted onto the input, `ThreatModel.lift`) with that space's budget."""

    forward: Forward
    y: torch.Tensor
    target: torch.Tensor
    x: torch.Tensor
    norm: Normalization
    eps_rel: float
    start: str
    seed: int
    objective: str = "mse"  # the loss every attack of this study maximizes (`pgd.LOSSES`)
    threat: ThreatModel = field(default_factory=ThreatModel)

    @property
    def eps(self) -> float:
        return self.threat.eps(self.eps_rel, self.y.shape[1:])

    def aimed(self) -> tuple[Callable[..., torch.Tensor], torch.Tensor, torch.Tensor, Context]:
        """(forward, start, target, context) of the attacks: the model's outputs against the
        model-space target, or for SSIM pixel-space outputs against the pixel truth (as the
        evaluation aims them, `evaluation.attacking.aimed`); in the measurement space forward
        takes the perturbation (from 0) and the rows of y it perturbs: the context, which PGD
        narrows to the crops still running when it stops early."""
        ssim = self.objective == "ssim"
        target = self.x if ssim else self.target

        def out(z: torch.Tensor) -> torch.Tensor:
            return to_pixels(self.forward(z), self.norm) if ssim else self.forward(z)

        if self.threat.space == "input":
            return out, self.y, target, None

        def lifted(e: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
            return out(rows + self.threat.lift(e))

        start = self.y.new_zeros((len(self.y), *self.threat.perturbed_shape(self.y.shape[1:])))
        return lifted, start, target, self.y

    def row(self, e: torch.Tensor, loss: torch.Tensor, **key: object) -> dict:
        with torch.no_grad():
            x_hat = self.norm.denormalize(self.forward(self.y + self.threat.lift(e))).clamp(0, 1)
        per_crop = loss / self.target[0].numel() if self.objective == "mse" else loss
        return {
            "eps_rel": self.eps_rel,
            "attack": "pgd",
            "objective": self.objective,
            "space": self.threat.space,
            **key,
            "loss": float(per_crop.mean()),
            "losses": per_crop.tolist(),
            "psnr": float(psnr(x_hat, self.x).mean()),
            "ssim": float(ssim(x_hat, self.x).mean()),
            "n": self.y.shape[0],
        }

    def run(
        self,
        steps: int,
        factor: float,
        keep: str,
        restart: int,
        snapshots: tuple[int, ...] = (),
        stop: tuple[int, float] = (0, 1e-3),
    ) -> PGDResult:
        """One PGD run from random start number `restart`; stop = (patience, rel_tol)."""
        run = PGD(
            steps=steps,
            step_factor=factor,
            random_start=self.start,
            restarts=1,
            keep=keep,
            patience=stop[0],
            rel_tol=stop[1],
            loss=self.objective,
        )
        gen = make_generator(self.seed * 7919 + restart, self.y.device)
        forward, start, target, context = self.aimed()
        return pgd_l2_run(forward, start, target, self.eps, run, gen, snapshots, context)

    def apgd(self, steps: int, restart: int) -> PGDResult:
        """One APGD run of `steps` from random start number `restart`."""
        gen = make_generator(self.seed * 7919 + 104729 + restart, self.y.device)
        forward, start, target, context = self.aimed()
        attack = APGD(steps=steps, loss=self.objective)
        return attack.run(forward, start, target, self.eps, gen, context)

    def apgd_rows(self, steps: tuple[int, ...], restarts: int) -> list[dict]:
        """APGD of each length in `steps` with 1 and `restarts` starts (its schedule depends
        on its length, so every length is its own run)."""
        rows = []
        for n in steps:
            runs = [self.apgd(n, r) for r in range(restarts)]
            for n_starts in sorted({1, restarts}):
                e, loss = _best_of(runs[:n_starts])
                key = {"attack": "apgd", "step_factor": 0.0, "steps": n, "restarts": n_starts}
                rows.append(self.row(e, loss, **key, steps_used=(n + 1) * n_starts, thesis=False))
        return rows

    def reference_rows(self, steps: int, restarts: int, factor: float) -> list[dict]:
        """The reference no setting is tuned on: APGD and PGD (step `factor` eps) of `steps`,
        each with `restarts` starts of their own (seeds apart from the candidates')."""
        far = 1000  # start numbers no candidate uses
        apgd = [self.apgd(steps, far + r) for r in range(restarts)]
        pgd = [self.run(steps, factor, "best", far + r) for r in range(restarts)]
        rows = []
        for name, runs, f in (("apgd", apgd, 0.0), ("pgd", pgd, factor)):
            e, loss = _best_of(runs)
            key = {"attack": name, "step_factor": f, "steps": steps, "restarts": restarts}
            rows.append(self.row(e, loss, **key, thesis=False, reference=True))
        return rows

    def thesis_row(self) -> dict:
        res = self.run(THESIS_EVAL_STEPS, THESIS_EVAL_STEP_FACTOR, "last", 0)
        key = {"step_factor": THESIS_EVAL_STEP_FACTOR, "steps": THESIS_EVAL_STEPS}
        return self.row(res.e, res.loss, **key, restarts=1, thesis=True)

    def factor_rows(self, factor: float, steps: tuple[int, ...], restarts: int) -> list[dict]:
        """Rows for `steps` (best iterate) with 1 and `restarts` starts: the best of the first
        r long runs' snapshots after t steps is the r-restart attack of t steps."""
        runs = [self.run(max(steps), factor, "best", r, steps).snapshots for r in range(restarts)]
        rows = []
        for n_starts in sorted({1, restarts}):
            for t in steps:
                e, loss = runs[0][t]
                for other in runs[1:n_starts]:
                    better = other[t][1] > loss
                    e = torch.where(better.view(-1, *([1] * (e.dim() - 1))), other[t][0], e)
                    loss = torch.maximum(loss, other[t][1])
                key = {"step_factor": factor, "steps": t, "restarts": n_starts}
                rows.append(self.row(e, loss, **key, thesis=False))
        return rows

    def stopped_rows(
        self, factor: float, steps: int, restarts: int, stop: tuple[int, float]
    ) -> list[dict]:
        """Rows of the `steps`-step attack with early stopping (patience, rel_tol) from the
        same starts as `factor_rows`' runs, with 1 and `restarts` starts; 'steps_used' is the
        mean gradient steps spent per crop over those starts."""
        runs = [self.run(steps, factor, "best", r, stop=stop) for r in range(restarts)]
        rows = []
        for n_starts in sorted({1, restarts}):
            e, loss = runs[0].e, runs[0].loss
            for other in runs[1:n_starts]:
                better = other.loss > loss
                e = torch.where(better.view(-1, *([1] * (e.dim() - 1))), other.e, e)
                loss = torch.maximum(loss, other.loss)
            used = sum(_mean_steps(r) for r in runs[:n_starts])
            key = {"step_factor": factor, "steps": steps, "restarts": n_starts}
            extra = {"patience": stop[0], "rel_tol": stop[1], "steps_used": used}
            rows.append(self.row(e, loss, **key, **extra, thesis=False))
        return rows


def _best_of(runs: list[PGDResult]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sample the perturbation and loss of the run with the largest loss."""
    e, loss = runs[0].e, runs[0].loss
    for other in runs[1:]:
        better = other.loss > loss
        e = torch.where(better.view(-1, *([1] * (e.dim() - 1))), other.e, e)
        loss = torch.maximum(loss, other.loss)
    return e, loss


def _mean_steps(res: PGDResult) -> float:
    assert res.steps_used is not None
    return float(res.steps_used.float().mean())


@dataclass(frozen=True)
class StudyPlan:
    """How one convergence study attacks: the random start, the seed, the losses (`pgd.LOSSES`)
    and the threat models (`ThreatModel`s: input, and measurement when the evaluation
    attacks there)."""

    start: str = "ball"
    seed: int = 0
    objectives: tuple[str, ...] = ("mse",)
    threats: tuple[ThreatModel, ...] = (ThreatModel(),)


def convergence_rows(
    forward: Forward,
    data: SplitInputs,
    norm: Normalization,
    eps_rel: float,
    cfg: ExperimentConfig,
    plan: StudyPlan = StudyPlan(),
) -> list[dict]:
    """Per threat model and loss of `plan`, one row per candidate (PGD: step_factor, steps,
    restarts in {1, R}, and early-stopped; APGD: steps, restarts in {1, R}) with the per-crop
    and mean loss, PSNR and SSIM, and the reference rows; the thesis attack's row (the MSE,
    first random start) once per threat model."""
    n = min(cfg.convergence_images, data.y.shape[0])
    crops = (forward, data.y[:n], data.target[:n], data.x[:n], norm)
    rows = []
    for threat in plan.threats:
        for objective in plan.objectives:
            study = _Study(*crops, eps_rel, plan.start, plan.seed, objective, threat)
            if objective == "mse":
                rows.append(study.thesis_row())
            rows += _candidate_rows(study, cfg)
    return rows


def _candidate_rows(study: _Study, cfg: ExperimentConfig) -> list[dict]:
    """Every candidate's and the reference's rows of one study (one loss)."""
    steps = tuple(sorted(set(cfg.convergence_steps)))
    rows = []
    stop = (cfg.convergence_patience, cfg.convergence_rel_tol)
    for factor in cfg.convergence_step_factors:
        rows += study.factor_rows(factor, steps, cfg.convergence_restarts)
        if stop[0]:
            rows += study.stopped_rows(factor, max(steps), cfg.convergence_restarts, stop)
    apgd_steps = tuple(sorted(set(cfg.convergence_apgd_steps)))
    rows += study.apgd_rows(apgd_steps, cfg.convergence_restarts)
    if cfg.convergence_reference_steps:
        factor = min(cfg.convergence_step_factors)
        ref = (cfg.convergence_reference_steps, cfg.convergence_reference_restarts)
        rows += study.reference_rows(*ref, factor)
    return rows


def _group(row: dict) -> tuple[str, int, int, float, int]:
    """A candidate setting: (attack, steps, restarts, step_factor, patience)."""
    return (
        row.get("attack", "pgd"),
        row["steps"],
        row["restarts"],
        row["step_factor"],
        row.get("patience", 0),
    )


def study_key(row: dict) -> tuple[str, float, str, str]:
    """What a row's loss is comparable within: (model, eps_rel, objective, threat model); rows
    written before the SSIM loss or the measurement space joined the study are MSE rows in the
    input space."""
    return row["model"], row["eps_rel"], row.get("objective", "mse"), row.get("space", "input")


def best_found(rows: list[dict]) -> dict[tuple, float]:
    """Per `study_key`: the mean over crops of the largest loss any row reached on that crop
    (rows without per-crop losses count by their mean)."""
    per_crop: dict[tuple, list[float]] = {}
    means: dict[tuple, float] = {}
    for r in rows:
        key = study_key(r)
        means[key] = max(means.get(key, 0.0), r["loss"])
        if "losses" in r:
            old = per_crop.get(key, r["losses"])
            per_crop[key] = [max(a, b) for a, b in zip(old, r["losses"], strict=True)]
    return {
        k: max(means[k], sum(per_crop[k]) / len(per_crop[k])) if k in per_crop else means[k]
        for k in means
    }


def setting_scores(rows: list[dict]) -> list[dict]:
    """Per candidate setting (thesis and reference rows are none): its attack and cost (steps x
    restarts, APGD's start pass included, or for an early-stopped one the mean gradient steps
    it spent per crop) and max_cost, the smallest and mean share of the best loss found
    (`best_found`, over models, eps_rel, losses and threat models) it reaches, the smallest
    per threat model, and whether it is never below
    the thesis attack's loss from the same start (on the MSE)."""
    best = best_found(rows)
    floor = {study_key(r): r["loss"] for r in rows if r.get("thesis")}
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if not r.get("thesis") and not r.get("reference"):
            groups.setdefault(_group(r), []).append(r)
    scores = []
    for (attack, steps, restarts, factor, patience), mine in sorted(groups.items()):
        ratios = [r["loss"] / max(best[study_key(r)], 1e-30) for r in mine]
        used = [r.get("steps_used", steps * restarts) for r in mine]
        scores.append(
            {
                "attack": attack,
                "steps": steps,
                "restarts": restarts,
                "step_factor": factor,
                "patience": patience,
                "rel_tol": mine[0].get("rel_tol", 0.0),
                "cost": sum(used) / len(used),
                "max_cost": max(used) if attack == "apgd" else steps * restarts,
                "min_ratio": min(ratios),
                "min_ratio_by_space": _min_by_space(mine, ratios),
                "mean_ratio": sum(ratios) / len(ratios),
                "above_thesis": all(r["loss"] >= floor.get(study_key(r), 0.0) for r in mine),
            }
        )
    return scores


def reference_scores(rows: list[dict]) -> list[dict]:
    """The reference rows' smallest and mean share of the best loss found (and the smallest
    per threat model): how far the long attacks themselves are from agreeing."""
    best = best_found(rows)
    out: dict[str, list[dict]] = {}
    for r in rows:
        if r.get("reference"):
            out.setdefault(r["attack"], []).append(r)
    scores = []
    for attack, mine in out.items():
        shares = [r["loss"] / max(best[study_key(r)], 1e-30) for r in mine]
        scores.append({
            "attack": attack,
            "min_ratio": min(shares),
            "min_ratio_by_space": _min_by_space(mine, shares),
            "mean_ratio": sum(shares) / len(shares),
        })  # fmt: skip
    return scores


def _min_by_space(rows: list[dict], shares: list[float]) -> dict[str, float]:
    """{threat model: the smallest of `shares` (one per row of `rows`) in it}."""
    out: dict[str, float] = {}
    for r, share in zip(rows, shares, strict=True):
        space = r.get("space", "input")
        out[space] = min(out.get(space, share), share)
    return out


def choose_strong(
    rows: list[dict], within: float, base: AttackConfig, max_cost: int = 0
) -> tuple[AttackConfig, dict]:
    """The cheapest setting whose loss is >= (1 - within) of the best loss found
    (`best_found`) and >= the thesis attack's loss from the same start, for every model and
    eps_rel in `rows` (each row carries a 'model' key), as `base` with that attack's kind,
    steps and restarts on each of base.losses. Its cost is the ensemble's: the setting's
    passes per crop times the number of losses, at most `max_cost` when > 0. When none is close
    enough under the cap, the capped setting closest to the best. Returns (setting, its score
    with `cost` the ensemble's)."""
    n = len(base.losses)
    every = [
        {**s, "cost": s["cost"] * n, "max_cost": s["max_cost"] * n} for s in setting_scores(rows)
    ]
    scores = [s for s in every if s["above_thesis"] and (max_cost <= 0 or s["cost"] <= max_cost)]
    if not scores:  # nothing beats the thesis attack under the cap: use the strongest overall
        scores = every
    close = [s for s in scores if s["min_ratio"] >= 1 - within]
    pick = (
        min(close, key=lambda s: (s["cost"], -s["min_ratio"]))
        if close
        else max(scores, key=lambda s: (s["min_ratio"], -s["cost"]))
    )
    return _setting(pick, base), {**pick, "within": within, "converged": bool(close)}


def _setting(pick: dict, base: AttackConfig) -> AttackConfig:
    """`base` with the picked attack: APGD (its steps and restarts; PGD's fields at their
    defaults) or PGD (steps, step size, restarts, best iterate, early stopping)."""
    plain = AttackConfig()
    common = {"steps": pick["steps"], "restarts": pick["restarts"]}
    if pick["attack"] == "apgd":
        pgd_fields = {f: getattr(plain, f) for f in PGD_ONLY}
        return dataclasses.replace(base, kind="apgd", **common, **pgd_fields)
    return dataclasses.replace(
        base,
        kind="pgd",
        **common,
        step_factor=pick["step_factor"],
        keep="best",
        patience=pick["patience"],
        rel_tol=pick["rel_tol"] if pick["patience"] else base.rel_tol,
    )


def thesis_attack(base: AttackConfig) -> AttackConfig:
    """Section 4.4's evaluation attack: 10 steps of eps/4 from a random start, last iterate."""
    return dataclasses.replace(
        base,
        kind="pgd",
        losses=("mse",),
        steps=THESIS_EVAL_STEPS,
        step_factor=THESIS_EVAL_STEP_FACTOR,
        restarts=1,
        keep="last",
        random_start="ball",
    )
