"""The consistency defence: project the network input onto the inputs a measurement can produce.

`RangeProjection` is the orthogonal projection of a normalized network input onto the affine
set {N(A_dagger(v))} that the back-projection of some measurement v reaches (the range of the
measurement-space lift of `attacks.threat`); `ProjectedModel` is f o P.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from smoothrecon.attacks.threat import ThreatModel
from smoothrecon.defenses.base import DefenseContext
from smoothrecon.models.normalization import Normalization
from smoothrecon.operators import Operator, SuperResolution

Forward = Callable[[torch.Tensor], torch.Tensor]


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


@dataclass(frozen=True)
class Projection:
    """The defence f -> f o P, P the orthogonal projection onto the inputs some measurement
    produces (`RangeProjection`, its CG tolerance, iteration cap and method)."""

    kind: ClassVar[str] = "projection"
    name: ClassVar[str] = "proj"

    tol: float = 1e-6
    max_iter: int = 100
    method: Literal["auto", "cg"] = "auto"

    def __post_init__(self) -> None:
        if not self.tol > 0 or self.max_iter < 1 or self.method not in ("auto", "cg"):
            raise ValueError(
                f"projection needs tol > 0, max_iter >= 1 and method 'auto' or 'cg', got "
                f"{self.tol}, {self.max_iter}, {self.method!r}"
            )

    def defend(self, model: nn.Module, context: DefenseContext) -> nn.Module:
        p = RangeProjection(context.operator, context.norm, self.tol, self.max_iter, self.method)
        return ProjectedModel(model, p)

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, **dataclasses.asdict(self)}
