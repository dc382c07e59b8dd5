"""The interface every forward operator shares, in deepinv's words.

An operator maps a clean image x (pixel space [0, 1], shape (B, C, H, W)) to measurements
y = A(x) + n, n ~ N(0, sigma_y^2 I) in A's output space (the measurement space), and maps
measurements back to what the network sees, A_dagger(y), an image of x's shape:

    A(x)            noiseless linear measurement           image -> measurement space
    A_adjoint(v)    A^T v, the exact adjoint of A          measurement -> image space
    A_dagger(v)     back-projection, the network input     measurement -> image space
    measure(x, g)   A(x) + sigma_y * noise drawn from the torch.Generator g
    op(x)           A_dagger(A(x)); op(x, g) = A_dagger(measure(x, g))

A new inverse problem is one subclass with A, A_adjoint, A_dagger and describe.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch


def check_sigma_y(sigma_y: float) -> float:
    if not sigma_y >= 0:
        raise ValueError(f"sigma_y = {sigma_y} must be >= 0 (pixel units)")
    return float(sigma_y)


class Operator(ABC):
    """A linear forward operator with Gaussian measurement noise of std `sigma_y` (pixels)."""

    name: ClassVar[str]
    sigma_y: float = 0.0

    @abstractmethod
    def A(self, x: torch.Tensor) -> torch.Tensor:
        """Noiseless measurement: x (B, C, H, W) pixel space -> measurement space."""

    @abstractmethod
    def A_adjoint(self, v: torch.Tensor) -> torch.Tensor:
        """A^T v: measurement space -> image space (B, C, H, W)."""

    @abstractmethod
    def A_dagger(self, v: torch.Tensor) -> torch.Tensor:
        """Back-projection: measurement space -> the network input, shape (B, C, H, W)."""

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """The operator's name and parameters, for records and checkpoints."""

    def __eq__(self, other: object) -> bool:
        """Operators are equal when they are of one class and describe themselves alike."""
        if not isinstance(other, Operator):
            return NotImplemented
        return type(self) is type(other) and self.describe() == other.describe()

    def __hash__(self) -> int:
        return hash((type(self).__name__, repr(sorted(self.describe().items()))))

    def check_size(self, h: int, w: int) -> None:
        """Raise ValueError when the operator cannot act on H x W images."""
        if h < 1 or w < 1:
            raise ValueError(f"image size {h}x{w} is empty")

    def restrict_noise(self, n: torch.Tensor) -> torch.Tensor:
        """The noise n (measurement space) on the values that are actually measured."""
        return n

    def measure(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """y = A(x) + sigma_y n, n ~ N(0, I) drawn from `generator` (on x's device).

        x: (B, C, H, W) pixel space; y: measurement space. sigma_y = 0 gives A(x), and so does
        generator = None (the noiseless measurement).
        """
        y = self.A(x)
        if self.sigma_y == 0 or generator is None:
            return y
        n = torch.randn(y.shape, generator=generator, device=y.device, dtype=y.dtype)
        return y + self.sigma_y * self.restrict_noise(n)

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The network input for a clean x: A_dagger(A(x)), or A_dagger(measure(x, generator)).

        x: (B, C, H, W) pixel space -> (B, C, H, W) network-input space (pixel units).
        """
        return self.A_dagger(self.measure(x, generator))

    def measurement_count(self, shape: tuple[int, int, int]) -> int:
        """How many real values A measures of one image of shape (C, H, W)."""
        return self.A(torch.zeros(1, *shape)).numel()
