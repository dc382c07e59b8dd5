"""The `smoothrecon` command: parses, builds the config, calls the library. Nothing else.

Every error a user can cause is printed as one line ("error: ...") with exit code 2; `--debug`
shows the traceback instead.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from smoothrecon import __version__
from smoothrecon.config import PRESETS, Config, load_config
from smoothrecon.errors import UserError


def _floats(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers, got '{text}'"
        ) from None


def _common(p: argparse.ArgumentParser, preset: bool = True) -> None:
    if preset:
        p.add_argument("--preset", default="cpu", help=f"one of {', '.join(PRESETS)} (default cpu)")
    p.add_argument("--config", help="a YAML file of config sections, applied after the preset")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any config field, e.g. --set train.epochs=5 (repeatable)",
    )
    p.add_argument("--data", help="a folder of images (recursive) instead of the default photos")
    p.add_argument("--device", help="auto, cpu, cuda, cuda:1 ...")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="smoothrecon",
        description="Train, attack, smooth and evaluate image-reconstruction networks.",
    )
    parser.add_argument("--version", action="version", version=f"smoothrecon {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("data", help="fetch and inspect the photos")
    p.add_argument("action", choices=["info", "fetch"], help="info: photos, splits, crops, stats")
    _common(p)

    p = sub.add_parser("train", help="train a U-Net (standard, gaussian or adversarial)")
    _common(p)
    p.add_argument("--factor", type=int, help="super-resolution factor (2, 4, ...)")
    p.add_argument("--mode", choices=["standard", "gaussian", "adversarial"])
    p.add_argument("--sigma-f", type=float, help="Gaussian training noise (normalized space)")
    p.add_argument("--eps-rel", type=float, help="adversarial training eps_rel")
    p.add_argument("--epochs", type=int)
    p.add_argument("--residual", action="store_true", help="global skip x_hat = y + U-Net(y)")
    p.add_argument("--out", required=True, help="run folder (resumes when it holds a run)")

    p = sub.add_parser("attack", help="L2 PGD on a trained model (or its smoothed version)")
    _common(p, preset=False)
    p.add_argument("--model", required=True, help="checkpoint file or run folder")
    p.add_argument("--eps-rel", type=_floats, required=True, help="e.g. 0.01,0.02")
    p.add_argument(
        "--split",
        choices=["val", "test", "all"],
        default="test",
        help="the crops attacked: val, test (default) or all (every photo of the folder)",
    )
    p.add_argument("--sigma-g", type=float, default=0.0, help="attack g at this sigma (RS-PGD)")
    p.add_argument("--save-perturbations", action="store_true")
    p.add_argument("--out", required=True)

    p = sub.add_parser("evaluate", help="attack + smoothing grid + sigma_g choice -> records")
    _common(p, preset=False)
    p.add_argument(
        "--model", required=True, help="checkpoint file, run folder, or bilinear/bicubic"
    )
    p.add_argument("--eps-rel", type=_floats, help="attack levels, e.g. 0,0.01,0.05")
    p.add_argument("--sigma-g", default=None, help="'grid' (the config's) or e.g. 0,0.1,0.2")
    p.add_argument("--k", type=int, help="noise draws of the smoothed estimator")
    p.add_argument("--rs-pgd", action="store_true", help="also attack g at the chosen sigma_g")
    p.add_argument(
        "--split",
        choices=["val", "test", "all"],
        default="test",
        help="test (default: sigma_g chosen on val, reported on test), val, or all (every "
        "photo of the folder, e.g. a held-out one; sigma_g is then chosen on the same crops)",
    )
    p.add_argument("--out", required=True)

    p = sub.add_parser("reproduce", help="the thesis' experiment at a preset: train+attack+eval")
    _common(p)
    p.add_argument("--out", required=True)
    p.add_argument(
        "--executor",
        choices=["serial", "ray"],
        default="serial",
        help="serial (default) or ray: each unit a Ray task",
    )
    p.add_argument("--address", help="Ray cluster address (default: a local Ray instance)")

    p = sub.add_parser("report", help="tables, figures and one page from a reproduce run")
    p.add_argument("run", help="the --out folder of `smoothrecon reproduce`")
    return parser


def _config(args: argparse.Namespace, base: dict[str, Any] | None = None) -> Config:
    extra: dict[str, Any] = {}
    if getattr(args, "data", None):
        extra.setdefault("data", {})["source"] = str(Path(args.data).expanduser())
    rt = {}
    if getattr(args, "device", None):
        rt["device"] = args.device
    if getattr(args, "threads", None):
        rt["threads"] = args.threads
    if rt:
        extra["runtime"] = rt
    for key, section, field in (
        ("factor", "operator", "factor"),
        ("mode", "train", "mode"),
        ("sigma_f", "train", "sigma_f"),
        ("eps_rel_train", "train", "eps_rel"),
        ("epochs", "train", "epochs"),
        ("k", "smoothing", "k"),
    ):
        value = getattr(args, key, None)
        if value is not None:
            extra.setdefault(section, {})[field] = value
    if getattr(args, "residual", False):
        extra.setdefault("model", {})["residual"] = True
    preset = getattr(args, "preset", None) or (base or {}).get("preset", "cpu")
    layers = [] if base is None else [{k: v for k, v in base.items() if k != "preset"}]
    return load_config(preset, args.config, args.set, [*layers, extra])


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "train" and getattr(args, "eps_rel", None) is not None:
        args.eps_rel_train = args.eps_rel
    try:
        from smoothrecon import commands

        return commands.run(args, _config)
    except UserError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError, PermissionError, IsADirectoryError) as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
