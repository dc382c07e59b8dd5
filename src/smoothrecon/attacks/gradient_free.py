"""A gradient-free L2 attack (SPSA / NES), a check against gradient masking.

PGD needs autograd; a model that rounds its input, detaches it or runs under torch.no_grad()
gives it zero or no gradient, and PGD then looks no stronger than random noise while the model
is no more robust (Athalye et al. 2018, "Obfuscated gradients"). This attack uses forward
evaluations only. It maximizes the same per-sample loss as PGD, L_i(e) = ||f(y_i + e) - x_i||^2
over ||e||_2 <= eps, and the evaluation keeps per sample the worse of it and PGD.

Gradient estimate (antithetic finite differences, u_j ~ N(0, I) of y's shape):
    g_hat = sum_j (L(P(e + c u_j)) - L(P(e - c u_j))) u_j / (2c),  c = scale * eps / sqrt(d),
with P the projection onto the ball, so every point evaluated is a valid candidate (on the
sphere this estimates the gradient of L∘P, the constrained objective). Each step:
e <- P(e + alpha * g_hat / ||g_hat||), alpha = step_factor * eps, from a random start on the
sphere. The best point seen per sample (iterate or probe) is returned.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from smoothrecon.attacks.pgd import (
    PGDResult,
    RunsAttack,
    check_attack_inputs,
    per_sample_loss,
    project_l2,
    random_start,
)
from smoothrecon.util.runtime import auto_chunk


@dataclass(frozen=True)
class SPSA(RunsAttack):
    """How the SPSA attack runs.

    queries: forward evaluations per sample in all (the start, the probes, the last iterate);
    directions: Gaussian directions per step, each evaluated as a pair +/-, so a step costs
    2 * directions + 1 forwards (the probes and the current iterate); step_factor: alpha / eps;
    scale: finite-difference radius c as a fraction of eps / sqrt(d), so c * u has per-value RMS
    scale * eps / sqrt(d); chunk: most inputs per forward call (0: `auto_chunk`).

    The normalized estimate's cosine with the gradient is about sqrt(K / (K + d)) for K
    directions in d dimensions; a fixed step much larger than that fraction of eps makes the
    iterate wander near the optimum (d = 105, K = 16: about 94% of the worst case with
    step_factor 0.5, 97.5% with 0.25), so for large d choose step_factor of that order.
    """

    queries: int = 2000
    directions: int = 16
    step_factor: float = 0.5
    scale: float = 0.5
    chunk: int = 0
    name: str = "spsa"

    def __post_init__(self) -> None:
        if self.queries < 1 or self.directions < 1:
            raise ValueError(
                f"need queries >= 1 and directions >= 1, got {self.queries} and {self.directions}"
            )
        for name in ("step_factor", "scale"):
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be a finite number > 0, got {value}")
        if self.chunk < 0:
            raise ValueError(f"chunk must be >= 0 (0: automatic), got {self.chunk}")

    def steps(self) -> int:
        """Steps that fit the budget: 1 + steps * (2 * directions + 1) <= queries."""
        return (self.queries - 1) // (2 * self.directions + 1)

    def describe(self) -> dict[str, Any]:
        """Every parameter, with the attack's kind."""
        return {"kind": "spsa", **dataclasses.asdict(self)}

    def run(
        self,
        forward: Callable[..., torch.Tensor],
        y: torch.Tensor,
        target: torch.Tensor,
        eps: float,
        generator: torch.Generator | None = None,
        context: torch.Tensor | None = None,
    ) -> PGDResult:
        """`spsa_l2` with these settings (the whole result)."""
        return spsa_l2(forward, y, target, eps, self, generator, context)


def _losses(
    forward: Callable[..., torch.Tensor],
    y: torch.Tensor,
    x: torch.Tensor,
    points: torch.Tensor,
    context: torch.Tensor | None,
    chunk: int,
) -> torch.Tensor:
    """Losses (B, n) of the points e (B, n, ...) around y (B, ...), in calls of <= chunk inputs."""
    b, n = points.shape[:2]
    rows = torch.arange(b, device=y.device).repeat_interleave(n)
    flat = points.flatten(0, 1)
    out = []
    for i in range(0, flat.shape[0], chunk):
        r = rows[i : i + chunk]
        inp = y.index_select(0, r) + flat[i : i + chunk]
        f = forward(inp) if context is None else forward(inp, context.index_select(0, r))
        out.append(per_sample_loss(f, x.index_select(0, r)))
    return torch.cat(out).view(b, n)


def _probes(e: torch.Tensor, u: torch.Tensor, c: float, eps: float) -> torch.Tensor:
    """(B, 1 + 2K, ...): e, then P(e + c u_j) and P(e - c u_j) for u (B, K, ...)."""
    plus_minus = torch.cat([e.unsqueeze(1) + c * u, e.unsqueeze(1) - c * u], dim=1)
    return torch.cat(
        [e.unsqueeze(1), project_l2(plus_minus.flatten(0, 1), eps).view_as(plus_minus)], 1
    )


def _direction(losses: torch.Tensor, u: torch.Tensor, c: float) -> torch.Tensor:
    """g_hat / ||g_hat|| per sample (B, ...) from the probe losses (B, 2K), + then -, along u
    (B, K, ...); zero where every difference is zero (a flat or constant model)."""
    k = u.shape[1]
    diff = (losses[:, :k] - losses[:, k:]).to(u.dtype)
    g_hat = (diff.view(*diff.shape, *([1] * (u.dim() - 2))) * u).sum(1) / (2 * c)
    norm = g_hat.flatten(1).norm(dim=1).clamp_min(1e-30)
    return g_hat / norm.view(-1, *([1] * (g_hat.dim() - 1)))


def _keep_best(
    best: tuple[torch.Tensor, torch.Tensor], points: torch.Tensor, losses: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sample, the best of (e (B, ...), loss (B,)) and points (B, n, ...) with losses (B, n)."""
    loss, j = losses.max(dim=1)
    better = loss > best[1]
    cand = points[torch.arange(points.shape[0], device=points.device), j]
    mask = better.view(-1, *([1] * (cand.dim() - 1)))
    return torch.where(mask, cand, best[0]), torch.where(better, loss, best[1])


@torch.no_grad()
def spsa_l2(
    forward: Callable[..., torch.Tensor],
    y: torch.Tensor,
    x: torch.Tensor,
    eps: float,
    run: SPSA = SPSA(),
    generator: torch.Generator | None = None,
    context: torch.Tensor | None = None,
) -> PGDResult:
    """Gradient-free L2 attack: max over ||e_i||_2 <= eps of ||forward(y_i + e_i) - x_i||^2.

    Args:
        forward: model, inputs (N, ...) -> outputs (N, ...); with `context`, forward(inputs,
            context rows (N, ...) of each input's sample). Called under torch.no_grad().
        y: (B, ...) model inputs (normalized model-input space); e lives in the same space.
        x: (B, ...) targets in forward's output space.
        eps: radius of the l2 ball in y's space.
        run: budget and step settings (`SPSA`).
        generator: draws the start and the directions, on y's device.
        context: (B, ...) optional per-sample data for forward, e.g. the base point of a
            measurement-space attack, where y is then zero and forward(e, y_rows).

    Returns:
        PGDResult: e (B, ...) the best point seen, loss (B,) its loss, trace (T + 1, B) the best
        loss after each of T steps, steps_used (B,) forward evaluations spent (<= run.queries),
        last (e, loss) of the last iterate.
    """
    check_attack_inputs(y, x, eps)
    chunk = run.chunk or auto_chunk(y.shape[1:], y.device)
    e = random_start(y, eps, "sphere", generator)
    if eps == 0:
        loss = _losses(forward, y, x, e.unsqueeze(1), context, chunk)[:, 0]
        used = torch.ones_like(loss, dtype=torch.long)
        return PGDResult(e=e, loss=loss, trace=loss.unsqueeze(0), steps_used=used, last=(e, loss))
    k, steps = run.directions, run.steps()
    c, alpha = run.scale * eps / math.sqrt(y[0].numel()), run.step_factor * eps
    best = (e, torch.full((y.shape[0],), -math.inf, device=y.device))
    trace = []
    for _ in range(steps):
        u = torch.randn(
            (y.shape[0], k, *y.shape[1:]), generator=generator, device=y.device, dtype=y.dtype
        )
        points = _probes(e, u, c, eps)
        losses = _losses(forward, y, x, points, context, chunk)
        best = _keep_best(best, points[:, :1], losses[:, :1])
        trace.append(best[1])
        best = _keep_best(best, points[:, 1:], losses[:, 1:])
        e = project_l2(e + alpha * _direction(losses[:, 1:], u, c), eps)
    last = _losses(forward, y, x, e.unsqueeze(1), context, chunk)
    best = _keep_best(best, e.unsqueeze(1), last)
    trace.append(best[1])
    used = torch.full_like(best[1], 1 + steps * (2 * k + 1), dtype=torch.long)
    return PGDResult(
        e=best[0], loss=best[1], trace=torch.stack(trace), steps_used=used, last=(e, last[:, 0])
    )
