"""Threat models: where the attacker's perturbation lives and how big it may be.

Two spaces, one budget rule eps = eps_rel * sqrt(d), d the number of values the attacker
perturbs, so eps_rel is the per-value RMS of the perturbation in either space:

    input        e in the normalized network-input space (the thesis, eq 4.4/4.5):
                 the network sees y + e, d = C*H*W.
    measurement  e_m perturbs the measurement A(x) in the normalized units of the data (the
                 per-channel std s of the normalization, broadcast over the measurement's
                 layout); the network sees the back-projection of the perturbed measurement,
                 d = operator.measurement_count((C, H, W)).

The lift. With pixel-space measurement m = A(x), the clean input is y = N(A_dagger(m)),
N(z) = (z - mu) / sigma per channel (sigma: the std of the model's input space). The attacked
input is N(A_dagger(m + e_m * s)), so the network sees y + lift(e_m) with

    lift(e_m) = N(A_dagger(m + e_m * s)) - N(A_dagger(m))
              = (A_dagger(m + e_m * s) - A_dagger(m)) / sigma
              = (A_dagger(e_m * s) - A_dagger(0)) / sigma          for an affine A_dagger.

The last line does not depend on m, so attacks need no measurement, and subtracting
A_dagger(0) keeps it exact for an affine (not only linear) back-projection. Constant
preservation is not needed for the lift (mu cancels in the difference). For super-resolution
A_dagger = U is linear and acts on each channel alike, so with s = sigma the scales cancel and
lift(e_m) = U(e_m): the attacked input y + U(e_m) stays in range(U). Every operator of
`smoothrecon.operators` has a linear back-projection except the quantized super-resolution
(rounding: piecewise constant, zero gradient), which measurement-space attacks refuse.

Budgets at 160x160 crops (C = 3): input d = 76800, eps = 277.1 eps_rel; measurement at x2
d = 3*80*80 = 19200, eps = 138.6 eps_rel; at x4 d = 3*40*40 = 4800, eps = 69.3 eps_rel.

The consistency defence that projects inputs onto that set is `defenses.projection`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch

from smoothrecon.attacks.pgd import PGD, PGDResult, eps_from_rel, per_sample_loss
from smoothrecon.attacks.protocol import Attack, solver_of
from smoothrecon.models.normalization import Normalization
from smoothrecon.operators import Operator

Space = Literal["input", "measurement"]
SPACES: tuple[Space, ...] = ("input", "measurement")
Forward = Callable[[torch.Tensor], torch.Tensor]


def _channel_scale(values: tuple[float, ...], like: torch.Tensor) -> torch.Tensor:
    """Per-channel `values` shaped (1, C', 1, ...) to broadcast over `like` (B, C', ...).

    A one-channel layout (e.g. a luminance measurement) takes the mean of the values.
    """
    c = like.shape[1]
    if c == len(values):
        v = torch.tensor(values, dtype=like.dtype, device=like.device)
    elif c == 1:
        v = torch.tensor([sum(values) / len(values)], dtype=like.dtype, device=like.device)
    else:
        raise ValueError(
            f"a tensor of {c} channels cannot take the {len(values)} per-channel values {values}"
        )
    return v.view(1, c, *([1] * (like.dim() - 2)))


@dataclass(frozen=True)
class ThreatModel:
    """Where the attacker's perturbation lives (see the module docstring).

    Attributes:
        space: "input" or "measurement".
        operator: the forward operator A (needed for "measurement").
        units: the data's normalization; its std is the unit of measurement perturbations.
        input_norm: the normalization of the model's input space (None: `units`); a model on
            pixel-space inputs has mean 0, std 1.
    """

    space: Space = "input"
    operator: Operator | None = None
    units: Normalization | None = None
    input_norm: Normalization | None = None

    def __post_init__(self) -> None:
        if self.space not in SPACES:
            raise ValueError(f"attack space must be 'input' or 'measurement', got {self.space!r}")
        if self.space == "measurement":
            if self.operator is None or self.units is None:
                raise ValueError("a measurement-space threat needs the operator and the units")
            if getattr(self.operator, "quantize", False):
                raise ValueError(
                    "measurement-space attacks need an affine back-projection; the quantized "
                    "super-resolution operator rounds (zero gradient): set operator.quantize "
                    "to false or attack in the input space"
                )

    @staticmethod
    def build(
        space: str,
        operator: Operator | None = None,
        units: Normalization | None = None,
        input_norm: Normalization | None = None,
    ) -> ThreatModel:
        """The threat model of `space` (a config's attack.space or train.attack_space)."""
        if space == "input":
            return ThreatModel("input")
        if space == "measurement":
            return ThreatModel("measurement", operator, units, input_norm)
        raise ValueError(f"attack space must be 'input' or 'measurement', got {space!r}")

    def perturbed_shape(self, shape: tuple[int, ...] | torch.Size) -> tuple[int, ...]:
        """The shape of one perturbation for network inputs of shape (C, H, W)."""
        if self.space == "input":
            return tuple(shape)
        assert self.operator is not None
        return tuple(self.operator.A(torch.zeros(1, *shape)).shape[1:])

    def count(self, shape: tuple[int, ...] | torch.Size) -> int:
        """d: how many values the attacker perturbs for network inputs of shape (C, H, W)."""
        if self.space == "input":
            return math.prod(shape)
        assert self.operator is not None
        c, h, w = shape
        return self.operator.measurement_count((c, h, w))

    def eps(self, eps_rel: float, shape: tuple[int, ...] | torch.Size) -> float:
        """eps = eps_rel * sqrt(d) (eq 4.4 with d counted in this space)."""
        return eps_from_rel(eps_rel, (self.count(shape),))

    def restrict(self, e: torch.Tensor) -> torch.Tensor:
        """e on the values the attacker can change (the measured ones; all in input space).

        PGD's random start also fills unmeasured values; they have no effect, shrink at each
        projection, and are dropped from the returned perturbation.
        """
        if self.space == "input":
            return e
        assert self.operator is not None
        return self.operator.restrict_noise(e)

    def lift(self, e: torch.Tensor) -> torch.Tensor:
        """The network-input perturbation of e: (B, ...) this space -> (B, C, H, W) normalized.

        Input space: e itself. Measurement space: (A_dagger(e * s) - A_dagger(0)) / sigma, the
        change of the normalized back-projection when the measurement moves by e * s (pixels).
        Linear in e; differentiable.
        """
        if self.space == "input":
            return e
        assert self.operator is not None and self.units is not None
        v = self.restrict(e) * _channel_scale(self.units.std, e)
        z = self.operator.A_dagger(v) - self.operator.A_dagger(torch.zeros_like(v))
        return z / _channel_scale((self.input_norm or self.units).std, z)


@dataclass
class SpaceAttack:
    """An attack's outcome. e: (B, C, H, W) the perturbation of the normalized network input
    (add it to y); e_space: the perturbation in the threat's own space (e itself, or the
    measurement perturbation e_m in normalized data units); norm: (B,) ||e_space||; loss: (B,)
    ||forward(y + e) - x||^2; eps: the budget in the threat's space; run: the PGD run (trace,
    snapshots, steps used; None when eps = 0)."""

    space: Space
    e: torch.Tensor
    e_space: torch.Tensor
    norm: torch.Tensor
    loss: torch.Tensor
    eps: float
    run: PGDResult | None = None


# (forward, start, x, eps, generator, context) -> the solver's result in the threat's space
Solver = Callable[..., PGDResult]


def pgd_in_space(
    forward: Forward,
    y: torch.Tensor,
    x: torch.Tensor,
    threat: ThreatModel,
    eps_rel: float,
    attack: PGD,
    generator: torch.Generator | None = None,
    snapshots: tuple[int, ...] = (),
) -> SpaceAttack:
    """The project's L2 PGD (`attacks.pgd_l2_run`, unchanged) in the threat's space.

    Maximizes ||forward(y + lift(e)) - x||^2 over ||e||_2 <= eps = eps_rel * sqrt(d) with the
    PGD `attack` (steps of attack.step_factor * eps): PGD on
    forward_m(e) = forward(y + lift(e)) from y_m = 0 of the perturbed shape. In input space
    this is exactly the thesis' attack. y: (B, C, H, W) normalized network input; x: the
    target in forward's output space. snapshots go to pgd_l2_run (e in the threat's space).
    """

    def solve(
        fwd: Callable[..., torch.Tensor],
        start: torch.Tensor,
        target: torch.Tensor,
        eps: float,
        gen: torch.Generator | None,
        context: torch.Tensor | None,
    ) -> PGDResult:
        return attack.run(fwd, start, target, eps, gen, snapshots, context)

    return attack_in_space(forward, y, x, threat, eps_rel, solve, generator)


def run_attack(
    forward: Forward,
    y: torch.Tensor,
    x: torch.Tensor,
    threat: ThreatModel,
    eps_rel: float,
    attack: Attack,
    generator: torch.Generator | None = None,
) -> SpaceAttack:
    """Any attack (`protocol.Attack`) in the threat's space at eps = eps_rel * sqrt(d)."""
    return attack_in_space(forward, y, x, threat, eps_rel, solver_of(attack), generator)


def attack_in_space(
    forward: Forward,
    y: torch.Tensor,
    x: torch.Tensor,
    threat: ThreatModel,
    eps_rel: float,
    solve: Solver,
    generator: torch.Generator | None = None,
) -> SpaceAttack:
    """Any L2 attack `solve` (PGD, a gradient-free search) in the threat's space.

    solve(forward_like, start, x, eps, generator, context) maximizes
    ||forward_like(start + e) - x||^2 over ||e|| <= eps and returns a PGDResult; in input space
    forward_like = forward and start = y (context None), in measurement space it is
    forward(y_rows + lift(e)) from start = 0 with y as the context. y: (B, C, H, W)
    normalized network input; x: the target in forward's output space.
    """
    eps = threat.eps(eps_rel, y.shape[1:])
    if eps == 0:
        with torch.no_grad():
            loss = per_sample_loss(forward(y), x)
        zeros = y.new_zeros((y.shape[0], *threat.perturbed_shape(y.shape[1:])))
        return SpaceAttack(
            threat.space, torch.zeros_like(y), zeros, zeros.new_zeros(len(y)), loss, 0.0
        )
    if threat.space == "input":
        run = solve(forward, y, x, eps, generator, None)
    else:
        # y rides along as context: with early stopping PGD continues on a subset of rows

        def forward_space(e: torch.Tensor, y_rows: torch.Tensor) -> torch.Tensor:
            return forward(y_rows + threat.lift(e))

        start = y.new_zeros((y.shape[0], *threat.perturbed_shape(y.shape[1:])))
        run = solve(forward_space, start, x, eps, generator, y)
    e_space = threat.restrict(run.e.detach())
    with torch.no_grad():
        e = threat.lift(e_space)
    norm = e_space.flatten(1).norm(dim=1)
    return SpaceAttack(threat.space, e, e_space, norm, run.loss.detach(), eps, run)


def same_norm_noise(
    threat: ThreatModel, y: torch.Tensor, norm: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """Random noise of the attack's own size: a uniform direction in the threat's space with
    the per-sample norm `norm` (B,) there, lifted to the network input (B, C, H, W).

    The reference an attack must beat: a perturbation of the same norm with no aim."""
    shape = (y.shape[0], *threat.perturbed_shape(y.shape[1:]))
    z = threat.restrict(torch.randn(shape, generator=generator, device=y.device, dtype=y.dtype))
    z = z / z.flatten(1).norm(dim=1).clamp_min(1e-30).view(-1, *([1] * (z.dim() - 1)))
    with torch.no_grad():
        return threat.lift(z * norm.to(z.dtype).view(-1, *([1] * (z.dim() - 1))))
