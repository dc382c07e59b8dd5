"""The U-Net of the thesis (section 4.2.1, Fig 4.1), read together with its authors' code.

Down path: per level two blocks of conv3x3 (zero padding, no bias) + BatchNorm + activation, then
2x2 max pooling; the last width is the bottleneck. Up path: a 2x2 stride-2 transposed conv,
concatenation with the skip, two conv blocks. A 1x1 conv maps to the output channels.
"channels (8, 16, 32, 64, 128)" is 4 pooled levels plus the bottleneck, so H and W must be
divisible by 2**4 = 16. Choices: the text says ReLU (default), the authors' code LeakyReLU
(`activation="leaky_relu"`); `residual=True` adds a global skip x_hat = y + U-Net(y), which the
thesis does not have (without it the U-Net can lose to the bilinear input itself).
Input and output live in the normalized space of the data.
"""

from __future__ import annotations

import torch
from torch import nn


def _block(c_in: int, c_out: int, activation: str) -> nn.Sequential:
    act: nn.Module = nn.LeakyReLU(0.01) if activation == "leaky_relu" else nn.ReLU()
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), act
    )


def _double(c_in: int, c_out: int, activation: str) -> nn.Sequential:
    return nn.Sequential(_block(c_in, c_out, activation), _block(c_out, c_out, activation))


class UNet(nn.Module):
    """f: y (B, C_in, H, W) -> x_hat (B, C_out, H, W), both in normalized space."""

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        channels: tuple[int, ...] = (8, 16, 32, 64, 128),
        activation: str = "relu",
        residual: bool = False,
    ):
        super().__init__()
        if activation not in ("relu", "leaky_relu"):
            raise ValueError(f"activation must be 'relu' or 'leaky_relu', got '{activation}'")
        if residual and in_channels != out_channels:
            raise ValueError("a residual U-Net needs in_channels == out_channels")
        self.channels = tuple(channels)
        self.residual = residual
        widths = [in_channels, *channels]
        self.down = nn.ModuleList(
            _double(widths[i], widths[i + 1], activation) for i in range(len(channels) - 1)
        )
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = _double(channels[-2], channels[-1], activation)
        self.up = nn.ModuleList(
            nn.ConvTranspose2d(channels[i + 1], channels[i], 2, stride=2)
            for i in reversed(range(len(channels) - 1))
        )
        self.up_conv = nn.ModuleList(
            _double(2 * channels[i], channels[i], activation)
            for i in reversed(range(len(channels) - 1))
        )
        self.head = nn.Conv2d(channels[0], out_channels, 1)
        if residual:
            # Start as the identity on y (the bilinear baseline) and learn a correction.
            with torch.no_grad():
                self.head.weight.zero_()
                self.head.bias.zero_()  # type: ignore[union-attr]

    @property
    def divisor(self) -> int:
        """H and W must be multiples of this (2 ** number of pooling steps)."""
        return 2 ** (len(self.channels) - 1)

    def check_size(self, h: int, w: int) -> None:
        d = self.divisor
        if h % d or w % d:

            def down(n: int) -> int:
                return max(d, (n // d) * d)

            def up(n: int) -> int:
                return -(-n // d) * d

            raise ValueError(
                f"the U-Net with {len(self.channels) - 1} pooling steps needs height and width "
                f"divisible by {d}, got {h}x{w} (e.g. {down(h)}x{down(w)} or {up(h)}x{up(w)})"
            )

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        self.check_size(y.shape[-2], y.shape[-1])
        skips = []
        h = y
        for down in self.down:
            h = down(h)
            skips.append(h)
            h = self.pool(h)
        h = self.bottleneck(h)
        for up, conv, skip in zip(self.up, self.up_conv, reversed(skips), strict=True):
            h = conv(torch.cat([up(h), skip], dim=1))
        out = self.head(h)
        return y + out if self.residual else out


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
