"""What an attack is: any object with a `name` and a call returning a perturbation in the ball.

    attack(forward, y, target, eps, generator) -> e,   ||e_i||_2 <= eps per sample,

maximizing ||forward(y + e) - target||^2 (or whatever the attack aims at). y: (B, ...) the
inputs in the attacker's space (the threat model decides which: the normalized network input,
or a measurement perturbation around 0, `threat.attack_in_space`); forward: inputs of y's shape
-> outputs of target's shape. The evaluation runs every attack on f and, through EOT, on
smoothed models; records carry its `name`.

A built-in attack (`PGD`, and `SPSA` of the gradient-free check) also has `run(...)`, which
returns the whole `PGDResult` (trace, gradient check, early stopping on subsets of rows); any
other attack is wrapped by
`solver_of`, which checks its output and measures its first gradient. `setting.ATTACKS` is the
table of built-in kinds; `describe_attack` is what run folders record and unit keys hash.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import torch

from smoothrecon.attacks.pgd import PGDResult, per_sample_loss, project_l2

Forward = Callable[[torch.Tensor], torch.Tensor]
# (forward, start, target, eps, generator, context) -> the result in the attacker's space
Solver = Callable[..., PGDResult]

# How far past eps (relative) a returned perturbation may lie before it is refused; rounding
# below that is projected back into the ball.
NORM_SLACK = 1e-4


@runtime_checkable
class Attack(Protocol):
    """An L2 attack (see the module docstring)."""

    @property
    def name(self) -> str: ...

    def __call__(
        self,
        forward: Forward,
        y: torch.Tensor,
        target: torch.Tensor,
        eps: float,
        generator: torch.Generator | None,
    ) -> torch.Tensor: ...


def check_attack(attack: object) -> Attack:
    """`attack` if it has a string `name` and is callable, else ValueError naming what lacks."""
    name = getattr(attack, "name", None)
    if not isinstance(name, str) or not name or not callable(attack):
        raise ValueError(
            f"{attack!r} is not an attack: it needs a non-empty string `name` and a call "
            "(forward, y, target, eps, generator) -> e with ||e|| <= eps per sample"
        )
    return attack  # type: ignore[return-value]


def members_of(attack: Attack) -> tuple[Attack, ...]:
    """The attacks an evaluation runs for `attack`: an ensemble's `members` (any object with a
    non-empty tuple of them; each is scored, and per crop and metric the worst counts), else
    the attack itself."""
    members = tuple(getattr(attack, "members", ()) or ())
    return tuple(check_attack(m) for m in members) or (attack,)


def describe_attack(attack: Attack) -> dict[str, Any]:
    """Every parameter of `attack`: its own describe(), else its class, name and (for a
    dataclass) fields. What run folders record and unit keys hash."""
    describe = getattr(attack, "describe", None)
    if callable(describe):
        return dict(describe())
    cls = type(attack)
    out: dict[str, Any] = {"kind": f"{cls.__module__}.{cls.__qualname__}", "name": attack.name}
    if dataclasses.is_dataclass(attack):
        out.update(dataclasses.asdict(attack))  # type: ignore[arg-type]
    return out


def gradient_bad(forward: Forward, y: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(B,) bool: the loss's gradient at y is zero or not finite (nothing to ascend)."""
    z = y.detach().requires_grad_(True)
    with torch.enable_grad():
        loss = per_sample_loss(forward(z), target)
    if not loss.requires_grad:
        return torch.ones(y.shape[0], dtype=torch.bool, device=y.device)
    (grad,) = torch.autograd.grad(loss.sum(), z, allow_unused=True, materialize_grads=True)
    flat = grad.flatten(1)
    return ~torch.isfinite(flat).all(1) | (flat.norm(dim=1) == 0)


def solver_of(attack: Attack) -> Solver:
    """The solver `threat.attack_in_space` runs for `attack`: its own `run` when it has one,
    else its call, checked (shape, finite, ||e|| <= eps) and scored."""
    run = getattr(attack, "run", None)
    if callable(run):
        return lambda fwd, start, target, eps, gen, ctx: run(
            fwd, start, target, eps, gen, context=ctx
        )

    def solve(
        fwd: Callable[..., torch.Tensor],
        start: torch.Tensor,
        target: torch.Tensor,
        eps: float,
        gen: torch.Generator | None,
        context: torch.Tensor | None,
    ) -> PGDResult:
        def f1(z: torch.Tensor) -> torch.Tensor:
            return fwd(z) if context is None else fwd(z, context)

        e = attack(f1, start, target, eps, gen).detach()
        _check_output(attack.name, e, start, eps)
        e = project_l2(e, eps)
        with torch.no_grad():
            loss = per_sample_loss(f1(start + e), target)
        return PGDResult(e, loss, loss.unsqueeze(0), grad_bad=gradient_bad(f1, start, target))

    return solve


def _check_output(name: str, e: torch.Tensor, y: torch.Tensor, eps: float) -> None:
    if e.shape != y.shape:
        raise ValueError(
            f"attack '{name}' returned a perturbation of shape {tuple(e.shape)} for inputs of "
            f"shape {tuple(y.shape)}"
        )
    if not bool(torch.isfinite(e).all()):
        raise ValueError(f"attack '{name}' returned a perturbation with NaN or Inf values")
    worst = float(e.flatten(1).norm(dim=1).max()) if e.shape[0] else 0.0
    if worst > eps * (1 + NORM_SLACK) + 1e-12:
        raise ValueError(
            f"attack '{name}' returned a perturbation of L2 norm {worst:.6g} > eps = {eps:.6g}: "
            "an attack must stay inside the ball"
        )
