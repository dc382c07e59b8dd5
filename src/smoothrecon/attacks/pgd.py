"""L2 projected gradient ascent (PGD) on the reconstruction error (appendix A.2, eq A.15).

One function serves every attack: `forward` is any callable from inputs to outputs, the base
model f ("Vanilla PGD") or a smoothed estimator g ("RS-PGD", appendix A.3, expectation over
transformation). The loss maximized per sample i is ||forward(y_i + e_i) - x_i||^2 (the thesis'
MSE up to a constant, which the normalized step ignores). Perturbations e live in the space of
the model input y (the normalized space of the thesis) and are never clipped.

Each step: e <- Proj_eps(e + alpha * grad / ||grad||) per sample. Random start "ball" draws e_0
uniformly in the ball (Gaussian direction, radius eps * u^(1/d)), as the thesis' code did;
"sphere" puts it on the sphere; "none" starts at 0. By default the best iterate per sample
(highest loss) is returned; the thesis used the last one (`keep="last"`). With restarts the
worst case per sample over all restarts is kept. Gradients are taken with respect to e only,
so nothing accumulates in the model's parameters. How PGD runs (steps, step size, start,
restarts, iterate kept, early stopping) is one object, `PGD`, which is also the attack.

Early stopping (off by default): with `patience` m > 0 a sample stops once its best loss has
risen by at most `rel_tol` (relative) over its last m steps; it keeps its best (or last
evaluated) iterate and costs no further forward or backward.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from smoothrecon.metrics import ssim

Forward = Callable[[torch.Tensor], torch.Tensor]


def eps_from_rel(eps_rel: float, input_shape: tuple[int, ...] | torch.Size) -> float:
    """eps = sqrt(d) * eps_rel with d = C*H*W of one model input (eq 4.4)."""
    if eps_rel < 0:
        raise ValueError(f"eps_rel must be >= 0, got {eps_rel}")
    return math.sqrt(math.prod(input_shape)) * eps_rel


def _norms(e: torch.Tensor) -> torch.Tensor:
    """Per-sample l2 norms of e (B, ...) broadcastable to e's shape."""
    return e.flatten(1).norm(dim=1).view(-1, *([1] * (e.dim() - 1)))


def project_l2(e: torch.Tensor, eps: float) -> torch.Tensor:
    """Project each sample of e onto the l2 ball of radius eps (identity inside the ball)."""
    return e * (eps / _norms(e).clamp_min(1e-30)).clamp(max=1.0)


def random_start(
    like: torch.Tensor, eps: float, kind: str, generator: torch.Generator | None = None
) -> torch.Tensor:
    """e_0 of shape like's: uniform in the ball, on the sphere, or zero."""
    if kind == "none" or eps == 0:
        return torch.zeros_like(like)
    z = torch.randn(like.shape, generator=generator, device=like.device, dtype=like.dtype)
    direction = z / _norms(z).clamp_min(1e-30)
    if kind == "sphere":
        return eps * direction
    if kind != "ball":
        raise ValueError(f"random_start must be 'ball', 'sphere' or 'none', got '{kind}'")
    d = like[0].numel()
    u = torch.rand(like.shape[0], generator=generator, device=like.device, dtype=like.dtype)
    radius = eps * u.pow(1.0 / d)
    return direction * radius.view(-1, *([1] * (like.dim() - 1)))


def per_sample_loss(out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """||out_i - x_i||_2^2 per sample: (B, ...) -> (B,)."""
    return (out.float() - x.float()).pow(2).flatten(1).sum(1)


def ssim_loss(out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """1 - SSIM(out_i, x_i) per sample: (B, C, H, W) pixel space [0, 1] -> (B,). The attack on
    the metric the report shows (`metrics.ssim`, differentiable)."""
    return 1.0 - ssim(out, x, dtype=torch.float32)


# The losses an attack can maximize: "mse" on the model's outputs (the PSNR attack), "ssim" on
# pixel-space outputs (an attack that `wants_pixels`: the evaluation de-normalizes and clamps
# the outputs as the metrics do, and hands it the pixel truth).
LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "mse": per_sample_loss,
    "ssim": ssim_loss,
}


@dataclass
class PGDResult:
    """e: (B, ...) perturbation; loss: (B,) its loss; trace: (steps + 1, B) loss per iterate
    (NaN after a sample stopped early); snapshots: {t: (e, loss)} the best iterate among the
    first t steps (for convergence); steps_used: (B,) gradient steps (forward+backward) spent
    per sample over all restarts; grad_bad: (B,) bool, the first gradient of the loss was zero
    or not finite (the attack had nothing to ascend: masked gradients); last: (e, loss) of the
    last evaluated iterate (of the first run)."""

    e: torch.Tensor
    loss: torch.Tensor
    trace: torch.Tensor
    snapshots: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    steps_used: torch.Tensor | None = None
    grad_bad: torch.Tensor | None = None
    last: tuple[torch.Tensor, torch.Tensor] | None = None


def check_attack_inputs(y: torch.Tensor, x: torch.Tensor, eps: float) -> None:
    if eps < 0 or not math.isfinite(eps):
        raise ValueError(f"eps must be a finite number >= 0, got {eps}")
    if y.shape[0] != x.shape[0]:
        raise ValueError(
            f"y and x hold different numbers of samples: {y.shape[0]} and {x.shape[0]}"
        )


class RunsAttack:
    """The attack protocol's call for an attack object that has `run(forward, y, target, eps,
    generator) -> PGDResult`: the perturbation of its result."""

    def __call__(
        self,
        forward: Callable[..., torch.Tensor],
        y: torch.Tensor,
        target: torch.Tensor,
        eps: float,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """e (B, ...) with ||e_i|| <= eps maximizing the attack's loss per sample."""
        return self.run(forward, y, target, eps, generator).e  # type: ignore[attr-defined]


@dataclass(frozen=True)
class PGD(RunsAttack):
    """L2 PGD as an attack object (`attacks.protocol.Attack`); the defaults are the thesis'
    evaluation attack (10 steps of eps/4, random start in the ball), except that the best
    iterate is kept (`keep="last"` reproduces the thesis).

    steps: gradient steps per run; step_factor: the step size alpha = step_factor * eps (in
    the attacker's space); random_start: "ball", "sphere" or "none"; restarts: runs, the
    per-sample worst case kept; keep: "best" or "last" iterate; patience, rel_tol: early
    stopping, a sample stops once its best loss rose by at most rel_tol (relative) over
    `patience` steps (0: never stops); loss: "mse" or "ssim" (`LOSSES`); name: what records
    and reports call it.
    """

    steps: int = 10
    step_factor: float = 0.25
    random_start: str = "ball"
    restarts: int = 1
    keep: str = "best"
    patience: int = 0
    rel_tol: float = 1e-3
    loss: str = "mse"
    name: str = "pgd"

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if not self.step_factor > 0:
            raise ValueError(f"step_factor must be > 0, got {self.step_factor}")
        if self.random_start not in ("ball", "sphere", "none"):
            raise ValueError(
                f"random_start must be 'ball', 'sphere' or 'none', got '{self.random_start}'"
            )
        if self.restarts < 1:
            raise ValueError(f"restarts must be >= 1, got {self.restarts}")
        if self.keep not in ("best", "last"):
            raise ValueError(f"keep must be 'best' or 'last', got '{self.keep}'")
        if self.patience < 0 or not self.rel_tol >= 0:
            raise ValueError(
                f"need patience >= 0 and rel_tol >= 0, got {self.patience} and {self.rel_tol}"
            )
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got '{self.loss}'")

    @property
    def wants_pixels(self) -> bool:
        """Whether it attacks pixel-space outputs (the SSIM loss)."""
        return self.loss == "ssim"

    def alpha(self, eps: float) -> float:
        """The step size for radius eps."""
        return self.step_factor * eps

    def describe(self) -> dict[str, Any]:
        """Every parameter, with the attack's kind: what records, run folders and keys hold."""
        return {"kind": "pgd", **dataclasses.asdict(self)}

    def run(
        self,
        forward: Callable[..., torch.Tensor],
        y: torch.Tensor,
        target: torch.Tensor,
        eps: float,
        generator: torch.Generator | None = None,
        snapshots: tuple[int, ...] = (),
        context: torch.Tensor | None = None,
    ) -> PGDResult:
        """`pgd_l2_run` with these settings: the whole result (trace, snapshots, steps used,
        gradient check)."""
        return pgd_l2_run(forward, y, target, eps, self, generator, snapshots, context)


def _running(history: list[torch.Tensor], running: torch.Tensor, run: PGD) -> torch.Tensor:
    """The samples still running after the last entry of the best-loss `history` (B,) list."""
    if not run.patience or len(history) <= run.patience:
        return running
    now, then = history[-1], history[-1 - run.patience]
    return running & (now - then > run.rel_tol * then.abs())


def _take(t: torch.Tensor, idx: torch.Tensor | None) -> torch.Tensor:
    return t if idx is None else t.index_select(0, idx)


def _one_run(
    forward: Callable[..., torch.Tensor],
    y: torch.Tensor,
    x: torch.Tensor,
    eps: float,
    run: PGD,
    generator: torch.Generator | None,
    snapshots: tuple[int, ...] = (),
    context: torch.Tensor | None = None,
) -> PGDResult:
    """One PGD run (restarts aside); samples that stopped early (idx: those still running)
    cost nothing more. With `context` (B, ...), forward(input, context rows of the running
    samples)."""
    steps, step_size = run.steps, run.alpha(eps)
    e = random_start(y, eps, run.random_start, generator)
    snaps: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    best_e, best_loss = e.clone(), torch.full((y.shape[0],), -math.inf, device=y.device)
    trace: list[torch.Tensor] = []
    history: list[torch.Tensor] = []
    idx: torch.Tensor | None = None
    running = torch.ones(y.shape[0], dtype=torch.bool, device=y.device)
    used = torch.zeros(y.shape[0], dtype=torch.long, device=y.device)
    grad_bad = torch.zeros(y.shape[0], dtype=torch.bool, device=y.device)
    last_loss = torch.full_like(best_loss, math.nan)
    for t in range(steps + 1):
        final = t == steps  # the last iterate's loss costs one forward without backward
        e_run = _take(e, idx)
        e_var = e_run.detach().requires_grad_(not final)
        with torch.set_grad_enabled(not final):
            inp = _take(y, idx) + e_var
            out = forward(inp) if context is None else forward(inp, _take(context, idx))
            loss = LOSSES[run.loss](out, _take(x, idx))
        full = loss.detach() if idx is None else last_loss.index_copy(0, idx, loss.detach())
        trace.append(full if idx is None else torch.where(running, full, math.nan))
        improved = full > best_loss
        best_loss = torch.where(improved, full, best_loss)
        best_e[improved] = e.detach()[improved]
        last_loss, history = full, [*history, best_loss][-(run.patience + 1) :]
        if t in snapshots:
            snaps[t] = (best_e.clone(), best_loss.clone())
        running = _running(history, running, run)
        if final or not running.any():
            break
        grad = _gradient(loss, e_var)
        if t == 0:
            grad_bad = ~torch.isfinite(grad).flatten(1).all(1) | (_norms(grad).flatten() == 0)
        grad = torch.nan_to_num(grad, nan=0.0, posinf=0.0, neginf=0.0)
        used = used + 1 if idx is None else used.index_add(0, idx, torch.ones_like(idx))
        step = grad / _norms(grad).clamp_min(1e-30)
        e_new = project_l2(e_run.detach() + step_size * step, eps)
        e, idx = _advance(e, e_new, idx, running)
    result = _result((e, last_loss), (best_e, best_loss), trace, (snapshots, snaps), used, run)
    result.grad_bad = grad_bad
    return result


def _gradient(loss: torch.Tensor, e_var: torch.Tensor) -> torch.Tensor:
    """d sum(loss) / d e_var, zero where the loss does not depend on e (nothing to ascend).
    Non-finite entries are kept: the caller flags them."""
    if not loss.requires_grad:
        return torch.zeros_like(e_var)
    (grad,) = torch.autograd.grad(loss.sum(), e_var, allow_unused=True, materialize_grads=True)
    return grad


def _advance(
    e: torch.Tensor, e_new: torch.Tensor, idx: torch.Tensor | None, running: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """e with the rows idx (None: all) stepped to e_new where still running; the new idx.
    Stopped samples keep their last evaluated iterate."""
    rows = torch.arange(e.shape[0], device=e.device) if idx is None else idx
    moving = running.index_select(0, rows)
    if bool(moving.all()):
        return (e_new if idx is None else e.index_copy(0, idx, e_new)), idx
    e = e.index_copy(0, rows[moving], e_new[moving])
    return e, running.nonzero().squeeze(1)


def _result(
    last: tuple[torch.Tensor, torch.Tensor],
    best: tuple[torch.Tensor, torch.Tensor],
    trace: list[torch.Tensor],
    snapshots: tuple[tuple[int, ...], dict[int, tuple[torch.Tensor, torch.Tensor]]],
    used: torch.Tensor,
    run: PGD,
) -> PGDResult:
    """The run's result; a run that stopped early fills its later snapshots and trace rows.
    last, best: (e, loss) of the last evaluated and of the best iterate per sample;
    snapshots: (the steps asked for, the snapshots taken)."""
    (e, last_loss), (best_e, best_loss), steps = last, best, run.steps
    asked, snaps = snapshots
    for t in asked:
        if t <= steps and t not in snaps:
            snaps[t] = (best_e.clone(), best_loss.clone())
    nan_rows = [torch.full_like(best_loss, math.nan)] * (steps + 1 - len(trace))
    padded = torch.stack(trace + nan_rows)
    last = (e.detach(), last_loss)
    if run.keep == "last":
        return PGDResult(e.detach(), last_loss, padded, snaps, used, last=last)
    return PGDResult(best_e, best_loss, padded, snaps, used, last=last)


def _keep_worse(a: tuple[torch.Tensor, torch.Tensor], b: tuple[torch.Tensor, torch.Tensor]):
    """Per sample, the (e, loss) pair with the larger loss."""
    better = b[1] > a[1]
    e = a[0].clone()
    e[better] = b[0][better]
    return e, torch.where(better, b[1], a[1])


def pgd_l2_run(
    forward: Callable[..., torch.Tensor],
    y: torch.Tensor,
    x: torch.Tensor,
    eps: float,
    run: PGD = PGD(),
    generator: torch.Generator | None = None,
    snapshots: tuple[int, ...] = (),
    context: torch.Tensor | None = None,
) -> PGDResult:
    """L2 PGD with its losses, run as `run` says (see `PGD`).

    y: (B, ...) model inputs (the normalized space); x: (B, ...) targets in forward's output
    space; eps: radius of the l2 ball in y's space. Returns the per-sample worst case over
    `run.restarts` runs; `trace` is that of the first run; `snapshots` (best iterate after t
    steps, worst case over restarts) for each t asked for (needs keep="best").
    run.patience > 0 stops each sample once its best loss rose by at most run.rel_tol
    (relative) over the last `patience` steps; later steps then run `forward` on the other
    samples only (so a forward whose noise depends on the batch, like g with fixed noise, sees
    other draws). patience = 0 (default) runs every step for every sample. `context`
    (B, ...): what forward needs per sample beside its input, e.g. the base point of a
    measurement-space attack; forward is then called as forward(input, context rows of the
    samples still running).
    """
    check_attack_inputs(y, x, eps)
    if snapshots and run.keep != "best":
        raise ValueError("snapshots need keep='best'")
    result = _one_run(forward, y, x, eps, run, generator, snapshots, context)
    for _ in range(run.restarts - 1):
        other = _one_run(forward, y, x, eps, run, generator, snapshots, context)
        result.e, result.loss = _keep_worse((result.e, result.loss), (other.e, other.loss))
        for t, snap in other.snapshots.items():
            result.snapshots[t] = _keep_worse(result.snapshots[t], snap)
        assert result.steps_used is not None and other.steps_used is not None
        result.steps_used = result.steps_used + other.steps_used
    return result


def pgd_l2(
    forward: Forward,
    y: torch.Tensor,
    x: torch.Tensor,
    eps: float,
    run: PGD = PGD(),
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The perturbation e (B, ...) with ||e_i||_2 <= eps maximizing ||forward(y + e) - x||^2.

    y: (B, ...) model inputs (the normalized space), e in the same space; x: (B, ...) targets
    in forward's output space. `run` (see `PGD`): by default the thesis' evaluation attack
    (10 steps of eps/4, random start in the ball), except that the best iterate is kept
    (`PGD(keep="last")` reproduces the thesis); per-sample early stopping is off.
    """
    return pgd_l2_run(forward, y, x, eps, run, generator).e
