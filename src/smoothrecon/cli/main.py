"""The `smoothrecon` command: parses, builds the config, calls the library. Nothing else.

Every error a user can cause is printed as one line ("error: ...") with exit code 2; `--debug`
shows the traceback instead.
"""

from __future__ import annotations

import argparse
import difflib
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from smoothrecon.config import PRESETS, Config, load_config
from smoothrecon.errors import UserError
from smoothrecon.util.version import VERSION


def _number(interval: str, integer: bool = False, many: bool = False) -> Callable[[str], Any]:
    """An argparse type: a number in `interval`, written as in mathematics ('[0, 1]',
    '(0, 1)', '[1, inf)'), or with `many` a comma-separated list of such numbers. A value
    outside is refused by argparse in one line naming the flag, the value and the range."""
    low, high = (float(v) for v in interval[1:-1].split(","))
    what = (
        ("integers" if integer else "numbers")
        if many
        else ("an integer" if integer else "a number")
    )
    expected = f"{what} in {interval}"
    if high == math.inf:
        expected = f"{what} {'>=' if interval[0] == '[' else '>'} {low:g}"

    def inside(v: float) -> bool:
        above = low <= v if interval[0] == "[" else low < v
        below = v <= high if interval[-1] == "]" else v < high
        return math.isfinite(v) and above and below

    def parse(text: str) -> Any:
        items = text.split(",") if many else [text]
        try:
            values = [(int if integer else float)(v) for v in items if v.strip() or not many]
        except ValueError:
            values = []
        if not values or not all(inside(v) for v in values):
            raise argparse.ArgumentTypeError(f"expected {expected}, got '{text}'")
        return values if many else values[0]

    return parse


_EPS_RELS = _number("[0, 1]", many=True)  # eq 4.4: eps = sqrt(d) eps_rel


def _certify_method(text: str) -> str:
    """--method of certify: a name of certification.certify.METHODS, or methods joined by +
    (pixel+median+loss: one stream of samples for all three)."""
    from smoothrecon.certification.certify import METHODS, known_method

    if known_method(text):
        return text
    raise argparse.ArgumentTypeError(
        f"'{text}' is not one of {', '.join(METHODS)}, nor such methods joined by +"
    )


def _sigma_grid(text: str) -> str:
    """--sigma-g of evaluate: 'grid' or sigmas >= 0 (kept as text; commands.py reads it)."""
    if text != "grid":
        _number("[0, inf)", many=True)(text)
    return text


def _attack_flags(p: argparse.ArgumentParser) -> None:
    """The strong attack's most used settings (attack.steps, attack.restarts)."""
    p.add_argument(
        "--steps",
        type=_number("[1, inf)", integer=True),
        help="steps of the strong attack, per loss and start (attack.steps)",
    )
    p.add_argument(
        "--restarts",
        type=_number("[1, inf)", integer=True),
        help="random starts of the strong attack, per loss (attack.restarts)",
    )


def _force_new(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--force-new",
        action="store_true",
        help="start over in a folder that holds another run: its contents move to "
        "<out>/.old-<n>/ (nothing is deleted)",
    )


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
    p.add_argument("--threads", type=_number("[0, inf)", integer=True), help="torch CPU threads")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _model_flags(p: argparse.ArgumentParser, command: str) -> None:
    """--model and what it needs, --preset (the evaluation scale) and --attack."""
    several = command == "evaluate"
    p.add_argument(
        "--model",
        required=True,
        action="append" if several else "store",
        help="checkpoint file or run folder, bilinear/bicubic, or your own module as "
        "path/to/file.py:NAME or package.module:NAME (NAME a class or a function returning "
        "the torch.nn.Module; this runs that file's code)"
        + ("; repeat --model to compare several models on the same crops" if several else ""),
    )
    p.add_argument("--weights", help="safetensors weights for your own model (FILE.py:NAME)")
    p.add_argument(
        "--input-space",
        choices=["pixel", "normalized"],
        help="your own model's input space: pixel ([0, 1] images, default) or normalized "
        "(the data's mean/std, see data.normalization)",
    )
    p.add_argument(
        "--factor",
        type=_number("[1, inf)", integer=True),
        help="super-resolution factor (your own model, baselines)",
    )
    p.add_argument(
        "--preset",
        help=f"the evaluation scale: crops, k, sigma grid, attack ({', '.join(PRESETS)}); a "
        "checkpoint keeps its operator, architecture and normalization (default: the "
        "checkpoint's preset, else cpu)",
    )
    attacks = ["strong", "thesis", "both"] if command == "evaluate" else ["strong", "thesis"]
    p.add_argument(
        "--attack",
        choices=attacks,
        default="strong",
        help="strong (default: the config's attack, by default APGD-L2 on the MSE and on SSIM, "
        "100 steps each, per crop and metric the worst) or "
        "thesis (10 steps of eps/4, last iterate, section 4.4)"
        + ("; both: strong, then thesis" if command == "evaluate" else ""),
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="smoothrecon",
        description="Train, attack, smooth and evaluate image-reconstruction networks.",
    )
    parser.add_argument("--version", action="version", version=f"smoothrecon {VERSION}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _data_parser(sub)
    _train_parser(sub)
    _attack_parser(sub)
    _evaluate_parser(sub)
    _certify_parser(sub)
    _reproduce_parser(sub)
    _report_parser(sub)
    _benchmark_parsers(sub)
    return parser


def _data_parser(sub: Any) -> None:
    """The `data` command's flags."""
    p = sub.add_parser("data", help="fetch and inspect the photos")
    p.add_argument("action", choices=["info", "fetch"], help="info: photos, splits, crops, stats")
    _common(p)


def _train_parser(sub: Any) -> None:
    """The `train` command's flags."""
    p = sub.add_parser(
        "train", help="train a U-Net (standard, gaussian, adversarial, or a denoiser of y)"
    )
    _common(p)
    p.add_argument(
        "--factor", type=_number("[1, inf)", integer=True), help="super-resolution factor (2, 4)"
    )
    p.add_argument(
        "--mode",
        choices=["standard", "gaussian", "adversarial", "denoiser"],
        help="denoiser: learn D(y + noise) = y for denoised smoothing (evaluate --denoiser)",
    )
    p.add_argument(
        "--sigma-f",
        type=_number("[0, inf)"),
        help="Gaussian training noise (normalized space), of a denoiser too",
    )
    p.add_argument("--eps-rel", type=_number("[0, 1]"), help="adversarial training eps_rel")
    p.add_argument(
        "--epochs",
        type=_number("[1, inf)", integer=True),
        help="epochs in all (more than a finished run of the same config has: extends it)",
    )
    p.add_argument("--residual", action="store_true", help="global skip x_hat = y + U-Net(y)")
    p.add_argument("--out", required=True, help="run folder (resumes when it holds a run)")
    _force_new(p)


def _attack_parser(sub: Any) -> None:
    """The `attack` command's flags."""
    p = sub.add_parser("attack", help="L2 PGD on a model (or its smoothed version)")
    _common(p, preset=False)
    _model_flags(p, "attack")
    p.add_argument("--eps-rel", type=_EPS_RELS, required=True, help="e.g. 0.01,0.02")
    _attack_flags(p)
    p.add_argument(
        "--split",
        choices=["val", "test", "all"],
        default="test",
        help="the crops attacked: val, test (default) or all (every photo of the folder)",
    )
    p.add_argument(
        "--sigma-g", type=_number("[0, inf)"), default=0.0, help="attack g at this sigma (RS-PGD)"
    )
    p.add_argument("--save-perturbations", action="store_true")
    p.add_argument("--out", required=True)


def _evaluate_parser(sub: Any) -> None:
    """The `evaluate` command's flags."""
    p = sub.add_parser("evaluate", help="attack + smoothing grid + sigma_g choice -> records")
    _common(p, preset=False)
    _model_flags(p, "evaluate")
    p.add_argument("--eps-rel", type=_EPS_RELS, help="attack levels, e.g. 0,0.01,0.05")
    _attack_flags(p)
    p.add_argument("--sigma-g", type=_sigma_grid, help="'grid' (the config's) or e.g. 0,0.1,0.2")
    p.add_argument(
        "--k", type=_number("[1, inf)", integer=True), help="noise draws of the smoothed estimator"
    )
    p.add_argument(
        "--rs-pgd",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also attack g at the chosen sigma_g and report the per-image worst case "
        "(default: the config's experiment.rs_pgd, on)",
    )
    p.add_argument(
        "--baselines",
        action="store_true",
        help="also evaluate the operator's no-learning baselines (SR: bilinear, bicubic)",
    )
    p.add_argument(
        "--denoiser",
        help="a denoiser checkpoint (train --mode denoiser): also evaluate every --model f as "
        "f(D(y)), smoothed (denoised smoothing)",
    )
    p.add_argument(
        "--project",
        action="store_true",
        help="also evaluate every --model f as f(P(y)), P the orthogonal projection of the "
        "input onto the range of the back-projection (the consistency baseline, "
        "docs/threat-models.md)",
    )
    p.add_argument(
        "--split",
        choices=["val", "test", "all"],
        default="test",
        help="test (default: sigma_g chosen on val, reported on test), val, or all (every "
        "photo of the folder, e.g. a held-out one; sigma_g is then chosen on the same crops)",
    )
    _force_new(p)
    p.add_argument("--out", required=True)


def _certify_parser(sub: Any) -> None:
    """The `certify` command's flags."""
    p = sub.add_parser("certify", help="certified PSNR of the smoothed G beside the attacked PSNR")
    _common(p, preset=False)
    _model_flags(p, "certify")
    p.add_argument(
        "--sigma-g", type=_number("(0, inf)"), required=True, help="noise std of G (model input)"
    )
    p.add_argument("--eps-rel", type=_EPS_RELS, required=True, help="e.g. 0.0005,0.001,0.005")
    p.add_argument(
        "--n",
        type=_number("[2, inf)", integer=True),
        default=2000,
        help="Monte-Carlo samples per crop (2000)",
    )
    p.add_argument(
        "--alpha", type=_number("(0, 1)"), default=0.001, help="failure probability (0.001)"
    )
    p.add_argument(
        "--method",
        type=_certify_method,
        default="pixel",
        help="pixel (default: per-pixel bounds on G), center (center smoothing), median "
        "(percentile smoothing), loss (the smoothed MSE, a bound on G), both (pixel and "
        "center), all, or methods joined by + (pixel+median+loss; docs/certify.md)",
    )
    p.add_argument(
        "--percentile",
        type=_number("(0, 1)"),
        default=0.5,
        help="the median method's percentile p (0.5: the median)",
    )
    p.add_argument("--split", choices=["val", "test", "all"], default="test")
    p.add_argument("--out", required=True, help="folder of certificates.jsonl (resumes)")
    _force_new(p)


def _reproduce_parser(sub: Any) -> None:
    """The `reproduce` command's flags."""
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
    _force_new(p)


def _report_parser(sub: Any) -> None:
    """The `report` command's flags."""
    p = sub.add_parser("report", help="tables, figures and one page from a run folder")
    p.add_argument("run", help="the --out folder of `smoothrecon reproduce` or `evaluate`")


def _benchmark_parsers(sub: Any) -> None:
    """`benchmark` (a model through a frozen protocol into a result card) and `leaderboard`
    (cards ranked); docs/benchmark.md."""
    from smoothrecon.benchmark.protocol import PROTOCOLS

    p = sub.add_parser("benchmark", help="a model through the frozen benchmark protocol: a card")
    p.add_argument(
        "--model",
        required=True,
        help="checkpoint file or run folder, a no-learning baseline (bilinear, ...), or your own "
        "module as path/to/file.py:NAME (this runs that file's code)",
    )
    p.add_argument("--weights", help="safetensors weights for your own model (FILE.py:NAME)")
    p.add_argument(
        "--input-space",
        choices=["pixel", "normalized"],
        help="your own model's input space (default pixel)",
    )
    p.add_argument(
        "--operator",
        default="super_resolution",
        help="the inverse problem of a baseline or your own model (a checkpoint brings its own)",
    )
    p.add_argument(
        "--factor", type=_number("[1, inf)", integer=True), help="super-resolution factor"
    )
    defense = p.add_mutually_exclusive_group()
    defense.add_argument(
        "--defense",
        choices=["median"],
        help="put the model behind median smoothing (its own card, labelled '+med')",
    )
    defense.add_argument(
        "--denoiser",
        help="put the model behind denoised smoothing f(D(y + noise)) with this denoiser "
        "checkpoint (train --mode denoiser; its own card, labelled '+den<sigma>')",
    )
    p.add_argument(
        "--protocol",
        default="v1",
        choices=list(PROTOCOLS),
        help="the frozen protocol (v1; smoke-v1 is its toy-scale twin for tests)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.add_argument("--out", required=True, help="folder of the card (resumes)")

    p = sub.add_parser("leaderboard", help="rank result cards: Markdown, CSV and HTML tables")
    p.add_argument("cards", nargs="+", help="card.json files or folders holding them")
    p.add_argument("--out", required=True, help="folder of leaderboard.md / .csv / .html")


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
        ("steps", "attack", "steps"),
        ("restarts", "attack", "restarts"),
    ):
        value = getattr(args, key, None)
        if value is not None:
            extra.setdefault(section, {})[field] = value
    if getattr(args, "residual", False):
        extra.setdefault("model", {})["residual"] = True
    if getattr(args, "attack", None) == "thesis" and "attack" in extra:
        raise UserError(
            "--steps and --restarts set the strong attack; --attack thesis is section 4.4's "
            "fixed attack (10 steps, 1 restart): use --attack strong or both"
        )
    explicit = getattr(args, "preset", None)
    preset = explicit or (base or {}).get("preset", "cpu")
    # A checkpoint's config is the base; with an explicit preset only what belongs to the model
    # (its operator, architecture and training) comes from it, the evaluation scale does not.
    owned = ("operator", "model", "train") if explicit else tuple(base or {})
    layers = [] if base is None else [{k: base[k] for k in owned if k in base and k != "preset"}]
    return load_config(preset, args.config, args.set, [*layers, extra])


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def _check_command(parser: argparse.ArgumentParser, argv: list[str]) -> None:
    """A misspelled command gets a "did you mean" (argparse only lists the choices)."""
    word = next((a for a in argv if not a.startswith("-")), None)
    commands = list(_subparsers(parser))
    if word is not None and word not in commands:
        close = difflib.get_close_matches(word, commands, n=1)
        if close:
            parser.error(f"unknown command '{word}' (did you mean '{close[0]}'?)")


def _refuse_unknown(parser: argparse.ArgumentParser, command: str, unknown: list[str]) -> None:
    """Exit with the subcommand's usage and, for each unknown flag, the closest of its own
    flags (or where a flag of `smoothrecon` itself goes)."""
    p = _subparsers(parser)[command]
    own = [s for a in p._actions for s in a.option_strings]
    top = [s for a in parser._actions for s in a.option_strings]
    flags = [w.split("=", 1)[0] for w in unknown if w.startswith("-")]
    hints = [f"{f} goes before the command" for f in flags if f in top]
    close = {f: difflib.get_close_matches(f, own, n=1) for f in flags if f not in top}
    guesses = [(f, c[0]) for f, c in close.items() if c]
    if len(guesses) == 1:
        hints.append(f"did you mean {guesses[0][1]}?")
    elif guesses:
        hints.append("did you mean " + ", ".join(f"{c} for {f}" for f, c in guesses) + "?")
    hint = f" ({'; '.join(hints)})" if hints else ""
    p.error(f"unrecognized arguments: {' '.join(unknown)}{hint}")


def _parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """argparse, but a misspelled command or flag is reported before a missing one (whose
    error would hide the typo: `train --sigam-f 0.1` lacks --out too)."""
    _check_command(parser, argv)
    required = [a for p in _subparsers(parser).values() for a in p._actions if a.required]
    for a in required:
        a.required = False
    try:
        args, unknown = parser.parse_known_args(argv)
    finally:
        for a in required:
            a.required = True
    if unknown:
        _refuse_unknown(parser, args.command, unknown)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = _parse(parser, sys.argv[1:] if argv is None else argv)
    if args.command == "train" and getattr(args, "eps_rel", None) is not None:
        args.eps_rel_train = args.eps_rel
    try:
        from smoothrecon.cli import commands

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
