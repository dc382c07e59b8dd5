"""An ensemble of attacks scored per sample by the worst (AutoAttack's rule, Croce & Hein 2020).
Any attack of the protocol can be a member, a user's included (`Ensemble.joined`).

The evaluation runs every member itself, each aimed at what it maximizes, and keeps per crop
and per reported metric the member that did the most harm (`evaluation.attacking`): the PSNR
column the one of the largest MSE, the SSIM column the one of the lowest SSIM. Called on its
own (the protocol's call, `run`), the ensemble runs every member on the same `forward` and
keeps per sample the perturbation of the largest squared error ||forward(y + e) - target||^2,
one common score whatever the members maximize.

Each member draws from its own generator, seeded from the one handed in, so a member's result
does not depend on the members before it. The ensemble's budget is the sum of its members'.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from smoothrecon.attacks.pgd import PGDResult, RunsAttack, per_sample_loss
from smoothrecon.attacks.protocol import Attack, check_attack, describe_attack, solver_of


@dataclass(frozen=True)
class Ensemble(RunsAttack):
    """The per-sample worst of `members` (attack objects), called `name`."""

    members: tuple[Attack, ...]
    name: str = "ensemble"

    def __post_init__(self) -> None:
        if not self.members:
            raise ValueError("an ensemble needs at least one member")
        names = [check_attack(m).name for m in self.members]
        if len(set(names)) != len(names):
            raise ValueError(f"the members of an ensemble need distinct names, got {names}")

    def joined(self, attack: Attack) -> Ensemble:
        """This ensemble with `attack` as one more member (e.g. a user's own)."""
        return dataclasses.replace(self, members=(*self.members, check_attack(attack)))

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "ensemble",
            "name": self.name,
            "members": [describe_attack(m) for m in self.members],
        }

    def run(
        self,
        forward: Callable[..., torch.Tensor],
        y: torch.Tensor,
        target: torch.Tensor,
        eps: float,
        generator: torch.Generator | None = None,
        context: torch.Tensor | None = None,
    ) -> PGDResult:
        """Every member's result, then per sample the one of the largest squared error of
        forward(y + e) to target (`loss` is that error). trace: the per-sample best after
        each member; steps_used: the members' passes summed (a member that does not count its
        passes adds 0); grad_bad: the first member's check."""
        seeds = _member_seeds(len(self.members), generator)
        best: PGDResult | None = None
        trace = []
        for member, seed in zip(self.members, seeds, strict=True):
            gen = torch.Generator(device=y.device).manual_seed(seed)
            res = solver_of(member)(forward, y, target, eps, gen, context)
            with torch.no_grad():
                out = forward(y + res.e) if context is None else forward(y + res.e, context)
                res.loss = per_sample_loss(out, target)
            best = res if best is None else _worse(best, res)
            trace.append(best.loss.clone())
        assert best is not None
        best.trace = torch.stack(trace)
        return best


def _member_seeds(n: int, generator: torch.Generator | None) -> list[int]:
    """One seed per member, drawn from `generator` (from torch's default one without it)."""
    where = generator.device if generator is not None else "cpu"
    return [int(s) for s in torch.randint(0, 2**62, (n,), generator=generator, device=where)]


def _worse(a: PGDResult, b: PGDResult) -> PGDResult:
    """Per sample the result of the larger loss; passes added up."""
    pick = b.loss > a.loss
    rows = pick.view(-1, *([1] * (a.e.dim() - 1)))
    used = None
    if a.steps_used is not None or b.steps_used is not None:
        zero = torch.zeros_like(a.loss, dtype=torch.long)
        used = (a.steps_used if a.steps_used is not None else zero) + (
            b.steps_used if b.steps_used is not None else zero
        )
    return PGDResult(
        torch.where(rows, b.e, a.e),
        torch.where(pick, b.loss, a.loss),
        a.trace,
        {},
        used,
        a.grad_bad,
        a.last,
    )
