"""Forward operators A (the physics), kept apart from the models that invert them.

`SuperResolution(factor)` is section 4.1's operator: the high-resolution crop x is downsampled by
`factor` with antialiased bilinear filtering, then resized back to its size bilinearly, so the
network input y = A(x) has the shape of x. A new inverse problem is one new class here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _quantize8(t: torch.Tensor) -> torch.Tensor:
    return torch.round(t.clamp(0, 1) * 255.0) / 255.0


class SuperResolution:
    """y = U(D(x)): D antialiased bilinear downsampling by `factor`, U bilinear upsampling.

    Args:
        factor: integer downsampling factor (thesis: 2 and 4); must divide H and W.
        quantize: round the low-resolution image (and y) to 8 bits, as the thesis code did by
            resizing 8-bit PIL images. Makes A non-linear; off by default.

    Both x and y live in pixel space [0, 1], shape (B, C, H, W). Without quantization A is
    linear, and `adjoint` gives A^T.
    """

    def __init__(self, factor: int, quantize: bool = False):
        if int(factor) != factor or factor < 1:
            raise ValueError(f"factor must be a positive integer, got {factor}")
        self.factor = int(factor)
        self.quantize = quantize

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

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """y = A(x): (B, C, H, W) -> (B, C, H, W), pixel space."""
        return self.upsample(self.downsample(x), (x.shape[-2], x.shape[-1]))

    def adjoint(self, v: torch.Tensor) -> torch.Tensor:
        """A^T v for the linear (unquantized) operator, via autograd: v (B, C, H, W)."""
        if self.quantize:
            raise ValueError("the quantized operator is not linear and has no adjoint")
        x = torch.zeros_like(v, requires_grad=True)
        with torch.enable_grad():
            (out,) = torch.autograd.grad(self(x), x, grad_outputs=v)
        return out

    def describe(self) -> dict:
        return {"name": "super_resolution", "factor": self.factor, "quantize": self.quantize}


def build_operator(name: str, factor: int, quantize: bool = False) -> SuperResolution:
    """The one table from operator names to constructors."""
    if name != "super_resolution":
        raise ValueError(f"unknown operator '{name}'")
    return SuperResolution(factor, quantize)
