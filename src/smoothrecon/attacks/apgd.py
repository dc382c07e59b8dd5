"""APGD-L2 (Croce & Hein, ICML 2020, "Reliable evaluation of adversarial robustness with an
ensemble of diverse parameter-free attacks"), for the reconstruction loss.

Maximizes the per-sample loss L_i(e) = ||forward(y_i + e_i) - x_i||^2 over ||e_i||_2 <= eps,
like `pgd.PGD`, but with the step-size schedule and momentum of AutoAttack's APGD
(fra31/auto-attack, `autopgd_base.py`; written anew here, constants from there):

- start on the sphere of radius eps in a random direction;
- step size eta = 2 eps per sample;
- z = P(e_k + eta g_k / ||g_k||), then e_{k+1} = P(e_k + a (z - e_k) + (1 - a)(e_k - e_{k-1}))
  with momentum a = 0.75 (a = 1 at the first step), P the projection onto the ball;
- checkpoints: the first after max(0.22 N, 1) steps, then the gap shrinks by max(0.03 N, 1)
  down to max(0.06 N, 1) (N the steps). At a checkpoint, a sample's step size halves, and it
  goes back to its best point, when its loss rose (against the iterate before) in at most
  rho = 0.75 of the steps since the last checkpoint, or when the step size was not halved at
  the last checkpoint and the best loss has not improved since (not at the first one);
- the best iterate per sample is returned; restarts keep the per-sample worst case.

A step costs one forward and one backward pass per sample (the start one more): `steps +1`
passes per run, counted in `steps_used`. Early stopping is not part of APGD: its schedule
spends the budget where the loss still rises.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from smoothrecon.attacks.pgd import (
    LOSSES,
    PGDResult,
    RunsAttack,
    check_attack_inputs,
    project_l2,
    random_start,
)

# autopgd_base.py: the first checkpoint at 22% of the steps, the gap shrinks by 3% of them at
# each checkpoint down to 6%; a sample whose loss rose in at most RHO of the steps since the
# last checkpoint halves its step size; momentum MOMENTUM. APGD has no other parameter.
FIRST_CHECK, CHECK_DECREASE, CHECK_MIN = 0.22, 0.03, 0.06
RHO, MOMENTUM = 0.75, 0.75


@dataclass(frozen=True)
class APGD(RunsAttack):
    """APGD-L2 as an attack object (see the module docstring). steps: gradient steps per run;
    restarts: runs from other random starts, the per-sample worst case kept; loss: "mse" or
    "ssim" (`pgd.LOSSES`); name: what records call it. Everything else is AutoAttack's
    constant."""

    steps: int = 100
    restarts: int = 1
    loss: str = "mse"
    name: str = "apgd"

    def __post_init__(self) -> None:
        if self.steps < 1 or self.restarts < 1:
            raise ValueError(
                f"need steps >= 1 and restarts >= 1, got {self.steps} and {self.restarts}"
            )
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got '{self.loss}'")

    @property
    def wants_pixels(self) -> bool:
        """Whether it attacks pixel-space outputs (the SSIM loss)."""
        return self.loss == "ssim"

    def checkpoints(self) -> list[int]:
        """The steps (1-based) after which the step size may halve."""
        gap = max(int(FIRST_CHECK * self.steps), 1)
        decrease = max(int(CHECK_DECREASE * self.steps), 1)
        least = max(int(CHECK_MIN * self.steps), 1)
        out, at = [], gap
        while at <= self.steps:
            out.append(at)
            gap = max(gap - decrease, least)
            at += gap
        return out

    def describe(self) -> dict[str, Any]:
        return {"kind": "apgd", **dataclasses.asdict(self)}

    def run(
        self,
        forward: Callable[..., torch.Tensor],
        y: torch.Tensor,
        target: torch.Tensor,
        eps: float,
        generator: torch.Generator | None = None,
        context: torch.Tensor | None = None,
    ) -> PGDResult:
        """The whole result: best e and loss per sample (worst case over restarts), the trace
        of the best loss of the first run, passes used, the first gradient's check."""
        check_attack_inputs(y, target, eps)
        result = _one_run(forward, (y, target, context), eps, self, generator)
        for _ in range(self.restarts - 1):
            other = _one_run(forward, (y, target, context), eps, self, generator)
            better = other.loss > result.loss
            result.e = torch.where(_rows(better, y), other.e, result.e)
            result.loss = torch.where(better, other.loss, result.loss)
            assert result.steps_used is not None and other.steps_used is not None
            result.steps_used = result.steps_used + other.steps_used
        return result


def _rows(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(B,) -> (B, 1, ...) broadcastable to `like`."""
    return mask.view(-1, *([1] * (like.dim() - 1)))


def _unit(g: torch.Tensor) -> torch.Tensor:
    """Each sample of g scaled to norm 1 (0 stays 0)."""
    return g / _rows(g.flatten(1).norm(dim=1).clamp_min(1e-30), g)


def _loss_and_grad(
    forward: Callable[..., torch.Tensor],
    data: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None],
    e: torch.Tensor,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor]:
    """(L(e) (B,), dL/de (B, ...)); non-finite gradient entries are set to 0."""
    y, target, context = data
    e_var = e.detach().requires_grad_(True)
    with torch.enable_grad():
        inp = y + e_var
        out = forward(inp) if context is None else forward(inp, context)
        loss = loss_fn(out, target)
    if not loss.requires_grad:
        return loss.detach(), torch.zeros_like(e)
    (grad,) = torch.autograd.grad(loss.sum(), e_var, allow_unused=True, materialize_grads=True)
    return loss.detach(), grad


def _one_run(
    forward: Callable[..., torch.Tensor],
    data: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None],
    eps: float,
    a: APGD,
    generator: torch.Generator | None,
) -> PGDResult:
    """One APGD run (the module docstring's loop)."""
    y = data[0]
    e = random_start(y, eps, "sphere", generator)
    loss_fn = LOSSES[a.loss]
    loss, grad = _loss_and_grad(forward, data, e, loss_fn)
    flat = grad.flatten(1)
    grad_bad = ~torch.isfinite(flat).all(1) | (flat.norm(dim=1) == 0)
    grad = torch.nan_to_num(grad, nan=0.0, posinf=0.0, neginf=0.0)
    best = [e.clone(), loss.clone(), grad.clone()]
    step = torch.full_like(loss, 2 * eps)
    e_prev, trace = e.clone(), [loss.clone()]
    checks, last_check = set(a.checkpoints()), 0
    rising = torch.zeros_like(loss)
    reduced = torch.ones_like(loss, dtype=torch.bool)  # as autopgd_base: no rule 2 at first
    best_at_check = loss.clone()
    for k in range(1, a.steps + 1):
        z = project_l2(e + _rows(step, e) * _unit(grad), eps)
        m = 1.0 if k == 1 else MOMENTUM
        e_new = project_l2(e + m * (z - e) + (1 - m) * (e - e_prev), eps)
        e_prev, e = e, e_new
        new_loss, grad = _loss_and_grad(forward, data, e, loss_fn)
        grad = torch.nan_to_num(grad, nan=0.0, posinf=0.0, neginf=0.0)
        rising += (new_loss > loss).to(rising.dtype)
        loss = new_loss
        up = loss > best[1]
        best = [torch.where(_rows(up, e), e, best[0]), torch.where(up, loss, best[1]),
                torch.where(_rows(up, e), grad, best[2])]  # fmt: skip
        trace.append(best[1].clone())
        if k in checks:
            halve = (rising <= RHO * (k - last_check)) | (~reduced & (best_at_check >= best[1]))
            step = torch.where(halve, step / 2, step)
            e = torch.where(_rows(halve, e), best[0], e)
            grad = torch.where(_rows(halve, e), best[2], grad)
            reduced, best_at_check, rising, last_check = halve, best[1].clone(), rising * 0, k
    used = torch.full_like(loss, a.steps + 1, dtype=torch.long)
    return PGDResult(best[0], best[1], torch.stack(trace), {}, used, grad_bad, (e, loss))
