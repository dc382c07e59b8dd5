"""What each CLI subcommand does, on top of the Python API (cli.py only parses)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from smoothrecon import distributed
from smoothrecon.config import Config, dump_config
from smoothrecon.errors import UserError

ConfigBuilder = Callable[..., Config]


def _progress(args: argparse.Namespace) -> bool:
    return not getattr(args, "quiet", False)


def cmd_data(args: argparse.Namespace, build: ConfigBuilder) -> int:
    from smoothrecon.data import prepare_data
    from smoothrecon.data.sources import fetch_default_photos

    cfg = build(args)
    if args.action == "fetch":
        if cfg.data.source != "default":
            raise UserError("data fetch only fetches the default photos; --data is already local")
        print(fetch_default_photos(cfg.data.cache_dir))
        return 0
    bundle = prepare_data(cfg.data, progress=_progress(args))
    s = bundle.summary()
    print(f"source: {s['source']}  ({s['resize']}, crops {s['crop_size']}px)")
    for split, names in s["photos"].items():
        print(f"{split:5s}: {len(names):3d} photos  {', '.join(names)}")
    c = s["crops"]
    print(
        f"crops: train {c['train_per_epoch']} per epoch (fresh), val {c['val']}, "
        f"test {c['test']} (fixed)"
    )
    n = s["normalization"]
    print(f"normalization ({n['kind']}): mean {n['mean']}  std {n['std']}")
    print(
        f"skipped: {len(s['skipped_too_small'])} smaller than one crop, "
        f"{len(s['unreadable'])} unreadable"
    )
    for name in s["skipped_too_small"]:
        print(f"  too small: {name}")
    for name in s["unreadable"]:
        print(f"  unreadable: {name}")
    _print_difficulty(bundle, cfg.operator.factor)
    return 0


def _print_difficulty(bundle, factor: int) -> None:
    """How hard the evaluation crops are: the no-learning baselines' PSNR per split."""
    from smoothrecon.difficulty import difficulty

    print(f"difficulty (PSNR of the no-learning baselines at x{factor}, per crop):")
    for split in ("val", "test"):
        for kind in ("bilinear", "bicubic"):
            d = difficulty(bundle.eval_set(split).x, split, factor, kind)
            print(
                f"  {split:4s} {kind:8s}: median {d.median:.2f} dB, mean {d.mean:.2f} dB "
                f"({d.n} crops)"
            )


def cmd_train(args: argparse.Namespace, build: ConfigBuilder) -> int:
    from smoothrecon.training import train

    cfg = build(args)
    result = train(cfg, args.out, progress=_progress(args))
    if not distributed.current().main:
        return 0
    last = result.epochs[-1] if result.epochs else {}
    print(f"trained {cfg.model.name} ({result.parameters} parameters) -> {result.best}")
    if last:
        print(
            f"epoch {last['epoch']}: val PSNR {last['val_psnr']:.2f} dB, "
            f"SSIM {last['val_ssim']:.4f}"
        )
    return 0


def _model_and_config(args: argparse.Namespace, build: ConfigBuilder):
    """(model, config, normalization): a checkpoint brings its operator, architecture and
    normalization (never the data folder's statistics); a baseline takes the data's."""
    from smoothrecon.checkpoint import load_model, model_normalization
    from smoothrecon.models import build_model

    if args.model in ("bilinear", "bicubic"):
        cfg = build(args)
        cfg.model.name = args.model
        return build_model(cfg.model, cfg.operator.factor), cfg, None
    model, meta = load_model(args.model)
    cfg = build(args, base=meta["config"])
    trained = meta["config"]["operator"]
    if (cfg.operator.factor, cfg.operator.quantize) != (trained["factor"], trained["quantize"]):
        raise UserError(
            f"the model was trained for operator super_resolution x{trained['factor']} but the "
            f"config asks for x{cfg.operator.factor}; evaluate it with its own operator"
        )
    return model, cfg, model_normalization(meta)


def _eval_splits(split: str) -> tuple[str, ...]:
    """The splits an evaluation reads: 'test' also needs 'val' to choose sigma_g on."""
    return ("val", "test") if split == "test" else (split,)


def _inputs(cfg: Config, runtime, progress: bool, norm, splits: tuple[str, ...]):
    """(normalization, {split: SplitInputs}) for `splits` of the configured data, normalized
    with `norm` (the model's) or, for a baseline, the data's own training-split statistics."""
    from smoothrecon.data import prepare_data
    from smoothrecon.evaluation import split_inputs
    from smoothrecon.operators import build_operator

    data = prepare_data(cfg.data, progress=progress, purpose="evaluate")
    norm = norm or data.normalization
    op = build_operator(cfg.operator.name, cfg.operator.factor, cfg.operator.quantize)
    crops = {s: data.eval_set(s).x for s in splits}
    reported = splits[-1]
    if crops[reported].shape[0] == 0:
        raise UserError(
            f"the {reported} split of '{cfg.data.source}' holds no crops; use --split all to "
            f"evaluate every photo of a folder"
        )
    return norm, {s: split_inputs(x, op, norm, runtime) for s, x in crops.items() if len(x)}


def cmd_attack(args: argparse.Namespace, build: ConfigBuilder) -> int:
    from smoothrecon.attacks import eps_from_rel, random_start
    from smoothrecon.evaluation import batched_attack, smoothed_metrics
    from smoothrecon.io import atomic_write_json, atomic_write_text, ensure_dir, save_checkpoint
    from smoothrecon.metrics import mean_and_ci
    from smoothrecon.runtime import Runtime
    from smoothrecon.smoothing import SmoothedEstimator, make_generator

    model, cfg, norm = _model_and_config(args, build)
    out = ensure_dir(args.out)
    runtime = Runtime.from_config(cfg.runtime)
    model = runtime.prepare_model(model).eval()
    norm, inputs = _inputs(cfg, runtime, _progress(args), norm, (args.split,))
    split = inputs[args.split]
    f = runtime.forward(model)
    forward = f
    if args.sigma_g > 0:
        g = SmoothedEstimator(f, args.sigma_g, cfg.attack.k_attack, cfg.smoothing.chunk_size)
        forward = g.with_noise(cfg.attack.noise, cfg.evaluation.seed)
    rows = []
    for eps_rel in args.eps_rel:
        e, loss = batched_attack(
            forward, split, eps_rel, cfg.attack, cfg.evaluation.batch_size, cfg.evaluation.seed
        )
        # The reference an attack must beat: random directions of the same norm.
        gen = make_generator(cfg.evaluation.seed, split.y.device)
        e_random = random_start(split.y, eps_from_rel(eps_rel, split.y.shape[1:]), "sphere", gen)

        def metrics(pert: torch.Tensor) -> dict[str, list[float]]:
            return smoothed_metrics(
                f,
                split,
                pert,
                [args.sigma_g],
                cfg.smoothing.k,
                norm,
                cfg.evaluation.batch_size,
                cfg.evaluation.seed,
            )[args.sigma_g]

        per, per_random = metrics(e), metrics(e_random)
        norms = e.flatten(1).norm(dim=1)
        row = {
            "eps_rel": eps_rel,
            "split": args.split,
            "sigma_g": args.sigma_g,
            "attack": "pgd_g" if args.sigma_g > 0 else "pgd_f",
            "e_norm_mean": float(norms.mean()),
            "loss_mean": float(loss.mean()),
            "n": len(per["mse"]),
        }
        for m in ("mse", "psnr", "ssim"):
            row[m], row[f"{m}_se"], _ = mean_and_ci(per[m])
            row[f"random_{m}"], row[f"random_{m}_se"], _ = mean_and_ci(per_random[m])
        rows.append(row)
        print(
            f"eps_rel {eps_rel:g}: PGD PSNR {row['psnr']:.2f} dB  SSIM {row['ssim']:.4f}  "
            f"(random noise of the same norm: {row['random_psnr']:.2f} dB, "
            f"{row['random_ssim']:.4f})  ||e|| {row['e_norm_mean']:.4f}"
        )
        if args.save_perturbations:
            save_checkpoint(
                out / f"perturbations-eps{eps_rel:g}.safetensors",
                {"e": e.cpu()},
                {"eps_rel": eps_rel, "space": "normalized model input"},
            )
    atomic_write_json(out / "attack.json", {"config": cfg.to_dict(), "rows": rows})
    atomic_write_text(out / "config.yaml", dump_config(cfg))
    return 0


def cmd_evaluate(args: argparse.Namespace, build: ConfigBuilder) -> int:
    from smoothrecon.evaluation import evaluate_unit
    from smoothrecon.io import (
        atomic_write_json,
        atomic_write_text,
        ensure_dir,
        read_jsonl,
        write_jsonl,
    )
    from smoothrecon.runtime import Runtime

    model, cfg, norm = _model_and_config(args, build)
    eps_rels = args.eps_rel if args.eps_rel is not None else list(cfg.evaluation.eps_rels)
    if args.sigma_g in (None, "grid"):
        sigmas = list(cfg.smoothing.sigma_grid)
    else:
        try:
            sigmas = [float(v) for v in args.sigma_g.split(",") if v.strip()]
        except ValueError:
            raise UserError(
                f"--sigma-g expects 'grid' or numbers like 0,0.1, got '{args.sigma_g}'"
            ) from None
    if any(s < 0 for s in sigmas):
        raise UserError(f"--sigma-g values must be >= 0, got {sigmas}")
    if any(not 0 <= e <= 1 for e in eps_rels):
        raise UserError(f"--eps-rel values must lie in [0, 1], got {eps_rels}")
    main = distributed.current().main
    out = ensure_dir(args.out) if main else Path(args.out)
    runtime = Runtime.from_config(cfg.runtime)
    model = runtime.prepare_model(model)
    norm, inputs = _inputs(cfg, runtime, _progress(args) and main, norm, _eval_splits(args.split))
    path = out / "records.jsonl"
    done = {r["eps_rel"] for r in read_jsonl(path)}
    records = read_jsonl(path)
    for eps_rel in eps_rels:
        if eps_rel in done:
            print(f"eps_rel {eps_rel:g}: already evaluated, skipped")
            continue
        res = evaluate_unit(
            model,
            inputs,
            norm,
            eps_rel,
            sigmas,
            cfg.smoothing.k,
            {"pgd": cfg.attack},
            runtime,
            cfg.evaluation.batch_size,
            rs_pgd=args.rs_pgd,
            seed=cfg.evaluation.seed,
            chunk_size=cfg.smoothing.chunk_size,
            antithetic=cfg.smoothing.antithetic,
        )
        for r in res.records:
            r["model"] = str(args.model)
        records += res.records
        if main:
            write_jsonl(path, records)
            _print_choice(res.records, eps_rel)
    if main:
        atomic_write_json(out / "chosen_sigma.json", _choices(records))
        atomic_write_text(out / "config.yaml", dump_config(cfg))
    return 0


def _choices(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per eps_rel: sigma_g* chosen on validation (or, without one, on the reported split
    itself, flagged as an oracle) and the reported split's oracle."""
    from smoothrecon.evaluation import choose_sigma

    out = []
    reported = next(s for s in ("test", "all", "val") if any(r["split"] == s for r in records))
    for eps_rel in sorted({r["eps_rel"] for r in records}):
        has_val = any(r["split"] == "val" and r["eps_rel"] == eps_rel for r in records)
        chosen = choose_sigma(records, "val" if has_val else reported, eps_rel, "pgd")
        oracle = choose_sigma(records, reported, eps_rel, "pgd")
        out.append(
            {
                "eps_rel": eps_rel,
                "split": reported,
                "chosen_on": "val" if has_val else reported,
                "sigma_g_val": chosen,
                "sigma_g_test_oracle": oracle,
            }
        )
    return out


def _print_choice(records: list[dict[str, Any]], eps_rel: float) -> None:
    c = next(c for c in _choices(records) if c["eps_rel"] == eps_rel)
    row = next(
        r
        for r in records
        if r["split"] == c["split"]
        and r["sigma_g"] == c["sigma_g_val"]
        and r["attack"] in ("none", "pgd_f")
    )
    where = (
        "chosen on val"
        if c["chosen_on"] == "val"
        else f"chosen on the {c['split']} crops themselves: no validation split, an oracle"
    )
    print(
        f"eps_rel {eps_rel:g}: sigma_g {c['sigma_g_val']:g} ({where}; {c['split']} oracle "
        f"{c['sigma_g_test_oracle']:g})  {c['split']} PSNR {row['psnr']:.2f} dB  "
        f"SSIM {row['ssim']:.4f}"
    )


def cmd_reproduce(args: argparse.Namespace, build: ConfigBuilder) -> int:
    from smoothrecon.experiments import reproduce

    cfg = build(args)
    out = reproduce(
        cfg, args.out, progress=_progress(args), executor=args.executor, address=args.address
    )
    print(f"done: {out} (make the report with: smoothrecon report {out})")
    return 0


def cmd_report(args: argparse.Namespace, build: ConfigBuilder) -> int:
    from smoothrecon.report import build_report

    page = build_report(Path(args.run))
    print(f"report: {page}")
    return 0


COMMANDS = {
    "data": cmd_data,
    "train": cmd_train,
    "attack": cmd_attack,
    "evaluate": cmd_evaluate,
    "reproduce": cmd_reproduce,
    "report": cmd_report,
}


def run(args: argparse.Namespace, build: ConfigBuilder) -> int:
    torch.set_printoptions(precision=4)
    if args.command in ("train", "evaluate"):
        distributed.init_from_env()  # under torchrun: join the process group
    try:
        code = COMMANDS[args.command](args, build)
    except BaseException:
        distributed.shutdown(clean=False)  # others may be mid-collective: no barrier
        raise
    distributed.shutdown()
    return code
