"""Device, threads and precision: how fast, never what is computed.

`Runtime` turns `RuntimeConfig` into a device, an autocast context (bf16 on CPU or CUDA when
asked) and the channels_last layout; `auto_chunk` sizes batches of noisy inputs for the device.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from smoothrecon.config import RuntimeConfig
from smoothrecon.errors import UserError

Forward = Callable[[torch.Tensor], torch.Tensor]


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise UserError(
            f"runtime.device = '{name}' is not a device (use auto, cpu or cuda)"
        ) from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"runtime.device = '{name}' but no CUDA device is available")
    return dev


def native_bf16(device: torch.device) -> bool:
    """Whether `device` computes bf16 in hardware (else autocast emulates it, slowly)."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    probe = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    amx = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool((probe and probe()) or (amx and amx()))


def resolve_precision(precision: str, device: torch.device) -> str:
    """'fp32' or 'bf16': 'auto' is bf16 where `device` computes it natively, else fp32."""
    if precision != "auto":
        return precision
    return "bf16" if native_bf16(device) else "fp32"


@dataclass
class Runtime:
    device: torch.device
    precision: str = "fp32"
    channels_last: bool = True

    @staticmethod
    def from_config(cfg: RuntimeConfig) -> Runtime:
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        device = pick_device(cfg.device)
        return Runtime(device, resolve_precision(cfg.precision, device), cfg.channels_last)

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def prepare_model(self, model: nn.Module) -> nn.Module:
        model = model.to(self.device)
        layout = torch.channels_last if self.channels_last else torch.contiguous_format
        return model.to(memory_format=layout)  # type: ignore[call-overload]

    def layout(self, t: torch.Tensor) -> torch.Tensor:
        return t.contiguous(memory_format=torch.channels_last) if self.channels_last else t

    def forward(self, model: nn.Module) -> Forward:
        """model as a callable on normalized inputs, in this runtime's layout and precision,
        returning float32 outputs."""

        def f(y: torch.Tensor) -> torch.Tensor:
            with self.autocast():
                out = model(self.layout(y))
            return out.float()

        return f


def auto_chunk(input_shape: torch.Size | tuple[int, ...], device: torch.device) -> int:
    """Noisy inputs per forward pass: about 2M input values on CPU, 16M on a GPU."""
    per = 1
    for s in input_shape:
        per *= int(s)
    budget = (1 << 24) if device.type == "cuda" else (1 << 21)
    return max(2, (budget // per) // 2 * 2)
