"""Device, threads and precision: how fast, and (bf16 against fp32) a little of what is computed.

`Runtime` turns `RuntimeConfig` into a device, an autocast context (bf16 on CPU or CUDA when
asked) and the channels_last layout, and describes itself as it resolved (`describe`: what
every record, manifest and card says ran); `auto_chunk` sizes batches of noisy inputs for the
device; `machine_info` names the machine.
"""

from __future__ import annotations

import contextlib
import platform
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

import torch
from torch import nn

from smoothrecon.config import Config, RuntimeConfig, dump_config
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


Precision = Literal["fp32", "bf16"]


def resolve_precision(precision: str, device: torch.device) -> Precision:
    """'fp32' or 'bf16': 'auto' is bf16 where `device` computes it natively, else fp32."""
    if precision in ("fp32", "bf16"):
        return cast(Precision, precision)
    if precision != "auto":
        raise UserError(f"runtime.precision = '{precision}': use auto, fp32 or bf16")
    return "bf16" if native_bf16(device) else "fp32"


def resolved_precision(cfg: RuntimeConfig) -> Precision:
    """The precision a run of `cfg` computes in on this machine: 'fp32' or 'bf16'."""
    return runtime_of(cfg).precision


def annotate_precision(config_yaml: str, resolved: str) -> str:
    """A config's YAML (`dump_config`) with its runtime's `precision: auto` line saying what
    it resolved to, so `auto` never appears alone."""
    lines = config_yaml.splitlines()
    section = ""
    for i, line in enumerate(lines):
        if line and not line.startswith(" "):
            section = line.rstrip(":")
        elif section == "runtime" and line.strip() == "precision: auto":
            lines[i] = f"{line}  # resolved: {resolved}"
    return "\n".join(lines) + "\n"


def config_yaml(cfg: Config, operator: dict[str, Any] | None = None) -> str:
    """`dump_config(cfg, operator)` with `precision: auto` resolved for this machine: the
    config.yaml of a run folder."""
    return annotate_precision(dump_config(cfg, operator), resolved_precision(cfg.runtime))


def runtime_of(cfg: RuntimeConfig) -> Runtime:
    """The runtime `cfg` resolves to on this machine, without setting torch's threads (what
    `Runtime.from_config` does before a run)."""
    device = pick_device(cfg.device)
    precision = resolve_precision(cfg.precision, device)
    return Runtime(device, precision, cfg.channels_last, cfg.threads)


def runtime_words(rt: dict[str, Any]) -> str:
    """A `Runtime.describe()` in words: 'AMD EPYC (2 threads, fp32, channels_last, torch
    2.13.0+cpu)' (the GPU's name in place of the CPU's on CUDA; 'bf16 emulated' where it is)."""
    bf16 = f" {rt['bf16']}" if rt.get("bf16") else ""
    layout = "channels_last" if rt.get("channels_last") else "NCHW"
    return (
        f"{rt.get('gpu') or rt['cpu']} ({rt['threads']} threads, {rt['precision']}{bf16}, "
        f"{layout}, torch {rt['torch']})"
    )


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo), else what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    """The machine a run used: CPU model, threads, torch, Python, platform (and the GPU)."""
    info = {
        "cpu": cpu_model(),
        "cores": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


@dataclass
class Runtime:
    device: torch.device
    precision: Precision = "fp32"
    channels_last: bool = True
    threads: int = 0  # torch's CPU threads (0: whatever torch uses)

    @staticmethod
    def from_config(cfg: RuntimeConfig) -> Runtime:
        """The runtime of `cfg` on this machine, with torch's threads set to cfg.threads."""
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        return runtime_of(cfg)

    def describe(self) -> dict[str, Any]:
        """What ran, resolved: device, precision ('fp32' or 'bf16', never 'auto'), whether bf16
        was native or emulated, channels_last, threads, torch and the CPU (and GPU) model."""
        d: dict[str, Any] = {"device": str(self.device), "precision": self.precision}
        if self.precision == "bf16":
            d["bf16"] = "native" if native_bf16(self.device) else "emulated"
        d |= {
            "channels_last": self.channels_last,
            "threads": self.threads or torch.get_num_threads(),
            "torch": torch.__version__,
            "cpu": cpu_model(),
        }
        if self.device.type == "cuda":
            d["gpu"] = torch.cuda.get_device_name(self.device)
        return d

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
