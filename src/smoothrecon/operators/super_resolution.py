"""Super-resolution, section 4.1's operator: A = D (antialiased bilinear downsampling by
`factor`), A_dagger = U (bilinear upsampling back to x's size), so the network input
U(D(x)) has the shape of x.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from smoothrecon.operators.base import Operator, check_sigma_y


def _quantize8(t: torch.Tensor) -> torch.Tensor:
    return torch.round(t.clamp(0, 1) * 255.0) / 255.0


class SuperResolution(Operator):
    """A = D, antialiased bilinear downsampling by `factor`; A_dagger = U, bilinear upsampling.

    Args:
        factor: integer downsampling factor (thesis: 2 and 4); must divide H and W.
        quantize: round the low-resolution image (and U's output) to 8 bits, as the thesis code
            did by resizing 8-bit PIL images. Makes A non-linear; off by default.
        sigma_y: std of the Gaussian noise on the low-resolution image, pixel units (thesis: 0).

    x and the network input op(x) = U(D(x)) live in pixel space [0, 1], shape (B, C, H, W);
    the measurement D(x) has shape (B, C, H / factor, W / factor). Without quantization D and U
    are linear: `A_adjoint` is D^T and `adjoint` is (U D)^T.
    """

    name = "super_resolution"

    def __init__(self, factor: int, quantize: bool = False, sigma_y: float = 0.0):
        if int(factor) != factor or factor < 1:
            raise ValueError(f"factor must be a positive integer, got {factor}")
        self.factor = int(factor)
        self.quantize = quantize
        self.sigma_y = check_sigma_y(sigma_y)

    def check_size(self, h: int, w: int) -> None:
        if h % self.factor or w % self.factor:
            raise ValueError(
                f"image size {h}x{w} is not divisible by the super-resolution factor {self.factor}"
            )

    def downsample(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, H, W) -> low-resolution (B, C, H/factor, W/factor), pixel space."""
        h, w = x.shape[-2:]
        self.check_size(h, w)
        lr = F.interpolate(
            x,
            size=(h // self.factor, w // self.factor),
            mode="bilinear",
            antialias=True,
            align_corners=False,
        )
        return _quantize8(lr) if self.quantize else lr

    def upsample(
        self, lr: torch.Tensor, size: tuple[int, int], mode: str = "bilinear"
    ) -> torch.Tensor:
        """Low-resolution (B, C, h, w) -> (B, C, *size) by bilinear (or bicubic) interpolation."""
        y = F.interpolate(lr, size=size, mode=mode, align_corners=False)
        return _quantize8(y) if self.quantize else y

    def A(self, x: torch.Tensor) -> torch.Tensor:
        """D(x): (B, C, H, W) -> (B, C, H/factor, W/factor), pixel space."""
        return self.downsample(x)

    def A_dagger(self, v: torch.Tensor) -> torch.Tensor:
        """U(v): (B, C, h, w) -> (B, C, h factor, w factor), pixel space."""
        return self.upsample(v, (v.shape[-2] * self.factor, v.shape[-1] * self.factor))

    def A_adjoint(self, v: torch.Tensor) -> torch.Tensor:
        """D^T v via autograd: (B, C, h, w) -> (B, C, h factor, w factor)."""
        shape = (*v.shape[:-2], v.shape[-2] * self.factor, v.shape[-1] * self.factor)
        return _vjp(self.A, v.new_zeros(shape), v, self.quantize)

    def adjoint(self, v: torch.Tensor) -> torch.Tensor:
        """(U D)^T v, the adjoint of the network-input map op(x) = U(D(x)): v (B, C, H, W)."""
        return _vjp(self, torch.zeros_like(v), v, self.quantize)

    def describe(self) -> dict[str, Any]:
        """sigma_y is listed only when nonzero, so noiseless SR is described as before."""
        out: dict[str, Any] = {"name": self.name, "factor": self.factor, "quantize": self.quantize}
        return {**out, "sigma_y": self.sigma_y} if self.sigma_y else out


def _vjp(fn: Any, x0: torch.Tensor, v: torch.Tensor, quantize: bool) -> torch.Tensor:
    """v^T J_fn, i.e. M^T v when fn is the linear map M (evaluated at x0 = 0)."""
    if quantize:
        raise ValueError("the quantized operator is not linear and has no adjoint")
    x = x0.requires_grad_(True)
    with torch.enable_grad():
        (out,) = torch.autograd.grad(fn(x), x, grad_outputs=v)
    return out
