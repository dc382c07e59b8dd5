"""Bring your own model: a torch.nn.Module from a Python file or module, weights from safetensors.

`--model path/to/file.py:NAME` or `--model package.module:NAME` names a class or a function
that returns the module when called without arguments. Loading a Python file runs its code, so
this happens only for such an explicit argument, never for a checkpoint path (checkpoints are
safetensors and are never executed). Weights are read with safetensors only (no pickle).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import inspect
import re
import sys
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from smoothrecon.errors import UserError

_MODULE = re.compile(r"^[A-Za-z_][\w.]*$")


def is_code_reference(text: str) -> bool:
    """Whether `text` is FILE.py:NAME or module:NAME (and not an existing path)."""
    source, sep, name = str(text).rpartition(":")
    if not sep or not name.isidentifier() or Path(text).exists():
        return False
    return source.endswith(".py") or bool(_MODULE.match(source))


def _load_source(source: str) -> object:
    """The Python module of FILE.py or of a dotted module name; its errors become UserErrors."""
    try:
        if source.endswith(".py"):
            path = Path(source).expanduser()
            if not path.is_file():
                raise UserError(f"model file '{source}' does not exist")
            name = f"smoothrecon_own_{hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:8]}"
            spec = importlib.util.spec_from_file_location(name, path)
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
            return module
        return importlib.import_module(source)
    except UserError:
        raise
    except ModuleNotFoundError as exc:
        raise UserError(f"cannot import '{source}': {exc}") from None
    except Exception as exc:
        raise UserError(
            f"loading '{source}' raised {type(exc).__name__}: {exc}".rstrip(": ")
        ) from None


def _build(source: str, name: str) -> nn.Module:
    module = _load_source(source)
    if not hasattr(module, name):
        public = sorted(n for n in vars(module) if not n.startswith("_"))
        raise UserError(
            f"'{source}' defines no '{name}' (it defines: {', '.join(public) or 'nothing'})"
        )
    try:
        built = getattr(module, name)()
    except Exception as exc:
        raise UserError(
            f"calling {name}() from '{source}' raised {type(exc).__name__}: {exc}"
        ) from None
    if not isinstance(built, nn.Module):
        raise UserError(
            f"{name}() from '{source}' returned a {type(built).__name__}, not a torch.nn.Module"
        )
    return built


def _load_weights(model: nn.Module, weights: str | Path) -> None:
    path = Path(weights)
    if path.suffix != ".safetensors":
        raise UserError(f"--weights '{path}' must be a .safetensors file (nothing is unpickled)")
    if not path.is_file():
        raise UserError(f"--weights '{path}' does not exist")
    try:
        state = load_file(str(path))
    except SafetensorError as exc:
        raise UserError(f"--weights '{path}' is not a readable safetensors file: {exc}") from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[1:2] or [str(exc)]
        raise UserError(f"--weights '{path}' do not fit the model: {first[0].strip()}") from None


def load_own_model(reference: str, weights: str | Path | None = None) -> nn.Module:
    """The module (eval mode) of FILE.py:NAME or module:NAME, with weights from a safetensors
    file when given."""
    source, _, name = str(reference).rpartition(":")
    model = _build(source, name)
    if weights is not None:
        _load_weights(model, weights)
    return model.eval()


def module_key(model: nn.Module) -> str:
    """A key of a module's class, its source code (when Python can find it) and its weights:
    the records of two different models never share a unit file."""
    digest = hashlib.sha256(type(model).__qualname__.encode())
    with contextlib.suppress(OSError, TypeError):
        digest.update(inspect.getsource(type(model)).encode())
    for name, t in model.state_dict().items():
        digest.update(name.encode())
        digest.update(t.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def check_output_shape(model: nn.Module, shape: tuple[int, ...], label: str) -> None:
    """One forward of a zero image of `shape` (C, H, W): the reconstruction must have it too."""
    param = next(iter(model.parameters()), None)
    probe = torch.zeros(1, *shape, device=param.device if param is not None else "cpu")
    try:
        with torch.no_grad():
            out = model.eval()(probe)
    except Exception as exc:
        raise UserError(
            f"model {label} failed on an input of shape {tuple(probe.shape)}: "
            f"{type(exc).__name__}: {exc}"
        ) from None
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != tuple(probe.shape):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise UserError(
            f"model {label} maps an input of shape {tuple(probe.shape)} to {got}; it must return "
            "a reconstruction of the input's shape (the back-projected measurement)"
        )
