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

`RangeProjection` is the consistency defence: the orthogonal projection of a
network input onto the set of inputs some measurement produces; `ProjectedModel` is f o P.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from smoothrecon.attacks import PGDResult, PGDSettings, eps_from_rel, per_sample_loss, pgd_with
from smoothrecon.data.normalization import Normalization
from smoothrecon.operators import Operator, SuperResolution

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
    attack: PGDSettings,
    generator: torch.Generator | None = None,
    snapshots: tuple[int, ...] = (),
) -> SpaceAttack:
    """The project's L2 PGD (`attacks.pgd_l2_run`, unchanged) in the threat's space.

    Maximizes ||forward(y + lift(e)) - x||^2 over ||e||_2 <= eps = eps_rel * sqrt(d) with the
    PGD settings `attack` (an AttackConfig; steps of attack.step_factor * eps): PGD on
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
        return pgd_with(fwd, start, target, eps, attack, gen, snapshots, context)

    return attack_in_space(forward, y, x, threat, eps_rel, solve, generator)


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


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-sample inner products (B,), shaped to broadcast over a and b."""
    return (a * b).flatten(1).sum(1).view(-1, *([1] * (a.dim() - 1)))


def conjugate_gradient(
    normal: Forward, b: torch.Tensor, tol: float, max_iter: int
) -> tuple[torch.Tensor, int]:
    """z solving M z = b per sample for a symmetric positive semi-definite M (`normal`),
    starting at 0 (for a singular M and b in its range: the minimum-norm solution). Stops
    when every residual is below tol * ||b||; returns (z, iterations)."""
    z, r = torch.zeros_like(b), b.clone()
    p, rs = r.clone(), _dot(r, r)
    stop = (tol**2) * rs
    tiny = torch.finfo(b.dtype).tiny
    for it in range(max_iter):
        if bool((rs <= stop).all()):
            return z, it
        mp = normal(p)
        alpha = rs / _dot(p, mp).clamp_min(tiny)
        z, r = z + alpha * p, r - alpha * mp
        rs_new = _dot(r, r)
        p = r + (rs_new / rs.clamp_min(tiny)) * p
        rs = rs_new
    return z, max_iter


class RangeProjection:
    """P y = c + Pi (y - c): the orthogonal projection of normalized network inputs onto the
    affine set {N(A_dagger(v))} that the back-projection of some measurement v reaches.

    Pi is the orthogonal projector onto range(L), L the measurement-space lift (for
    super-resolution L = U, so Pi = U (U^T U)^{-1} U^T); c = N(A_dagger(0)) (for SR -mu/sigma,
    a constant, inside range(U), so P = Pi). Pi w = L z with z solving L^T L z = L^T w by
    conjugate gradients, L^T by autograd. For super-resolution U is separable (1-D linear
    interpolation along H, then W, each channel alike), so Pi = P_H (x) P_W exactly, with
    P_H = U_H (U_H^T U_H)^{-1} U_H^T an H x H matrix (and P_W): two small matrix products, no
    CG (`method="cg"` forces the general path). P is idempotent and Pi symmetric, so the
    gradient of P is Pi.

    Clean cost: a noiseless measurement's input y = N(U(D x)) lies in the set already, so
    P y = y up to rounding (no clean accuracy is lost); the compute cost is two H x H / W x W
    matrix products per image (SR) or the CG iterations, each one A_dagger and its adjoint.
    Inputs (B, C, H, W) normalized; the projection runs in float32 or float64 whatever the
    autocast.
    """

    def __init__(
        self,
        operator: Operator,
        norm: Normalization,
        tol: float = 1e-6,
        max_iter: int = 100,
        method: Literal["auto", "cg"] = "auto",
    ):
        self.threat = ThreatModel("measurement", operator, norm)
        self.operator, self.norm = operator, norm
        self.tol, self.max_iter = tol, max_iter
        self.separable = method == "auto" and isinstance(operator, SuperResolution)
        self.iterations = 0  # of the last CG solve

    def offset(self, like: torch.Tensor) -> torch.Tensor:
        """c = N(A_dagger(0)), (1, C, H, W)."""
        m_shape = self.threat.perturbed_shape(like.shape[1:])
        zero = like.new_zeros((1, *m_shape))
        return self.norm.normalize(self.operator.A_dagger(zero))

    def project_linear(self, w: torch.Tensor) -> torch.Tensor:
        """Pi w: (B, C, H, W) -> (B, C, H, W), the orthogonal projection onto range(L)."""
        if self.separable:
            p_h, p_w = (self._axis_projector(n, w) for n in w.shape[-2:])
            return p_h @ w @ p_w  # P_W is symmetric: w P_W^T = w P_W
        lift = self.threat.lift
        v0 = w.new_zeros((w.shape[0], *self.threat.perturbed_shape(w.shape[1:])))
        with torch.enable_grad():
            v0.requires_grad_(True)
            out = lift(v0)

            def adjoint(u: torch.Tensor) -> torch.Tensor:
                (g,) = torch.autograd.grad(out, v0, grad_outputs=u, retain_graph=True)
                return g

            z, self.iterations = conjugate_gradient(
                lambda p: adjoint(lift(p)), adjoint(w), self.tol, self.max_iter
            )
        return lift(z).detach()

    def _axis_projector(self, n: int, like: torch.Tensor) -> torch.Tensor:
        """U_n (U_n^T U_n)^{-1} U_n^T (n x n): U_n is 1-D interpolation from n / factor values,
        read off the operator by up-sampling unit vectors (the columns of U_n)."""
        assert isinstance(self.operator, SuperResolution)
        k = n // self.operator.factor
        eye = torch.eye(k, dtype=torch.float64, device=like.device).view(k, 1, k, 1)
        u = self.operator.A_dagger(eye)[:, 0, :, 0].T  # (n, k): column j = U e_j
        p = u @ torch.linalg.solve(u.T @ u, u.T)
        return p.to(like.dtype)

    def __call__(self, y: torch.Tensor) -> torch.Tensor:
        """P y, differentiable (its Jacobian is Pi)."""
        with torch.autocast(y.device.type, enabled=False):
            dtype = y.dtype if y.dtype == torch.float64 else torch.float32
            out = _Project.apply(y.to(dtype), self)
        assert isinstance(out, torch.Tensor)
        return out


class _Project(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, y: torch.Tensor, projection: RangeProjection) -> torch.Tensor:
        ctx.projection = projection
        c = projection.offset(y)
        return c + projection.project_linear(y - c)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return ctx.projection.project_linear(grad), None


class ProjectedModel(nn.Module):
    """f o P: the model applied to the projection of its input onto the range of the
    back-projection (the consistency baseline). y: (B, C, H, W) normalized."""

    def __init__(self, model: nn.Module, projection: RangeProjection):
        super().__init__()
        self.model, self.projection = model, projection

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.model(self.projection(y))
