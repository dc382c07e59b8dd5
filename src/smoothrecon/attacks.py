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
so nothing accumulates in the model's parameters.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

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


@dataclass
class PGDResult:
    """e: (B, ...) perturbation; loss: (B,) its loss; trace: (steps + 1, B) loss per iterate;
    snapshots: {t: (e, loss)} the best iterate among the first t steps (for convergence)."""

    e: torch.Tensor
    loss: torch.Tensor
    trace: torch.Tensor
    snapshots: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)


def _validate(y: torch.Tensor, x: torch.Tensor, eps: float, steps: int, restarts: int) -> None:
    if eps < 0 or not math.isfinite(eps):
        raise ValueError(f"eps must be a finite number >= 0, got {eps}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if restarts < 1:
        raise ValueError(f"restarts must be >= 1, got {restarts}")
    if y.shape[0] != x.shape[0]:
        raise ValueError(
            f"y and x hold different numbers of samples: {y.shape[0]} and {x.shape[0]}"
        )


def _one_run(
    forward: Forward,
    y: torch.Tensor,
    x: torch.Tensor,
    eps: float,
    steps: int,
    step_size: float,
    start: str,
    keep: str,
    generator: torch.Generator | None,
    snapshots: tuple[int, ...] = (),
) -> PGDResult:
    e = random_start(y, eps, start, generator)
    snaps: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    best_e, best_loss = e.clone(), torch.full((y.shape[0],), -math.inf, device=y.device)
    trace = []
    for t in range(steps + 1):
        final = t == steps  # the last iterate's loss costs one forward without backward
        e_var = e.detach().requires_grad_(not final)
        with torch.set_grad_enabled(not final):
            loss = per_sample_loss(forward(y + e_var), x)
        trace.append(loss.detach())
        improved = loss.detach() > best_loss
        best_loss = torch.where(improved, loss.detach(), best_loss)
        best_e[improved] = e.detach()[improved]
        if t in snapshots:
            snaps[t] = (best_e.clone(), best_loss.clone())
        if final:
            break
        if loss.requires_grad:
            (grad,) = torch.autograd.grad(
                loss.sum(), e_var, allow_unused=True, materialize_grads=True
            )
        else:  # the output does not depend on the input: nothing to ascend
            grad = torch.zeros_like(e_var)
        step = grad / _norms(grad).clamp_min(1e-30)
        e = project_l2(e.detach() + step_size * step, eps)
    last_loss = trace[-1]
    if keep == "last":
        return PGDResult(e.detach(), last_loss, torch.stack(trace), snaps)
    return PGDResult(best_e, best_loss, torch.stack(trace), snaps)


def _keep_worse(a: tuple[torch.Tensor, torch.Tensor], b: tuple[torch.Tensor, torch.Tensor]):
    """Per sample, the (e, loss) pair with the larger loss."""
    better = b[1] > a[1]
    e = a[0].clone()
    e[better] = b[0][better]
    return e, torch.where(better, b[1], a[1])


def pgd_l2_run(
    forward: Forward,
    y: torch.Tensor,
    x: torch.Tensor,
    eps: float,
    steps: int = 10,
    step_size: float | None = None,
    random_start: str = "ball",
    restarts: int = 1,
    keep: str = "best",
    generator: torch.Generator | None = None,
    snapshots: tuple[int, ...] = (),
) -> PGDResult:
    """L2 PGD with its losses. y: (B, ...) model inputs; x: targets in forward's output space.

    Returns the per-sample worst case over `restarts` runs; `trace` is that of the first run;
    `snapshots` (best iterate after t steps, worst case over restarts) for each t asked for.
    """
    _validate(y, x, eps, steps, restarts)
    if keep not in ("best", "last"):
        raise ValueError(f"keep must be 'best' or 'last', got '{keep}'")
    alpha = eps / 4 if step_size is None else step_size
    if snapshots and keep != "best":
        raise ValueError("snapshots need keep='best'")
    result = _one_run(forward, y, x, eps, steps, alpha, random_start, keep, generator, snapshots)
    for _ in range(restarts - 1):
        other = _one_run(forward, y, x, eps, steps, alpha, random_start, keep, generator, snapshots)
        result.e, result.loss = _keep_worse((result.e, result.loss), (other.e, other.loss))
        for t, snap in other.snapshots.items():
            result.snapshots[t] = _keep_worse(result.snapshots[t], snap)
    return result


def pgd_l2(
    forward: Forward,
    y: torch.Tensor,
    x: torch.Tensor,
    eps: float,
    steps: int = 10,
    step_size: float | None = None,
    random_start: str = "ball",
    restarts: int = 1,
    keep: str = "best",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The perturbation e (B, ...) with ||e_i||_2 <= eps maximizing ||forward(y + e) - x||^2.

    Defaults are the thesis' evaluation attack (10 steps of eps/4, random start in the ball),
    except that the best iterate is kept (`keep="last"` reproduces the thesis).
    """
    return pgd_l2_run(
        forward, y, x, eps, steps, step_size, random_start, restarts, keep, generator
    ).e
