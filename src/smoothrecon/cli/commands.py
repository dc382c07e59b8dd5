"""What each CLI subcommand does, on top of the Python API (cli.py only parses)."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from smoothrecon.config import BASELINES, Config, problem_factor
from smoothrecon.errors import UserError
from smoothrecon.evaluation.check import FAILED_TEXT
from smoothrecon.util import distributed
from smoothrecon.util.runtime import config_yaml

ALL_BASELINES = {b for names in BASELINES.values() for b in names}

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
    from smoothrecon.data.difficulty import difficulty

    print(f"difficulty (PSNR of the no-learning baselines at x{factor}, per crop):")
    for split in ("val", "test"):
        for kind in ("bilinear", "bicubic"):
            d = difficulty(bundle.eval_set(split).x, split, factor, kind)
            print(
                f"  {split:4s} {kind:8s}: median {d.median:.2f} dB, mean {d.mean:.2f} dB "
                f"({d.n} crops)"
            )


def cmd_train(args: argparse.Namespace, build: ConfigBuilder) -> int:
    from smoothrecon.experiments.training import train

    cfg = build(args)
    result = train(cfg, args.out, progress=_progress(args), force_new=args.force_new)
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


def _checkpoint_model(args: argparse.Namespace, build: ConfigBuilder):
    """A trained checkpoint (`evaluation.loading`); --preset sets only the evaluation scale."""
    from smoothrecon.evaluation.loading import checkpoint_model

    if args.weights or args.input_space:
        raise UserError(
            "--weights and --input-space are for your own model (--model FILE.py:NAME); a "
            "checkpoint brings its weights and normalization"
        )
    return checkpoint_model(args.model, lambda saved: build(args, base=saved))


def _own_model(args: argparse.Namespace, build: ConfigBuilder):
    """Your own module (FILE.py:NAME or module:NAME; running its code is what was asked for),
    on pixel-space images or on the data's normalized ones; the preset sets everything else."""
    from smoothrecon.evaluation.unit import EvalModel
    from smoothrecon.models.info import ModelInfo
    from smoothrecon.models.normalization import PIXEL_SPACE
    from smoothrecon.models.own import load_own_model, module_key

    cfg = build(args)
    module = load_own_model(args.model, args.weights)
    space = args.input_space or "pixel"
    name = args.model.rpartition(":")[2]
    info = ModelInfo(name, problem_factor(cfg.operator), "own", mode="own", input_space=space)
    norm = PIXEL_SPACE if space == "pixel" else None
    return EvalModel(module, info, norm, module_key(module)), cfg


def _model_and_config(args: argparse.Namespace, build: ConfigBuilder):
    """(EvalModel, config) of --model: a baseline name, FILE.py:NAME / module:NAME, or a
    checkpoint file or run folder (never executed)."""
    from smoothrecon.experiments.evaluate import baseline_models
    from smoothrecon.models.own import is_code_reference
    from smoothrecon.operators import build_operator

    if args.model in ALL_BASELINES:
        cfg = build(args)
        try:  # make_baseline knows which baselines the operator has
            return baseline_models(build_operator(cfg.operator), [args.model])[0], cfg
        except ValueError as exc:
            raise UserError(str(exc)) from None
    if is_code_reference(args.model):
        return _own_model(args, build)
    if str(args.model).endswith(".py"):
        raise UserError(
            f"--model {args.model} is a Python file: name the module or function in it that "
            f"builds your model, --model {args.model}:NAME (running it executes its code)"
        )
    return _checkpoint_model(args, build)


def _attack_inputs(cfg: Config, model, runtime, progress: bool, split: str):
    """(model with its normalization resolved, SplitInputs of `split`)."""

    from smoothrecon.data import prepare_data
    from smoothrecon.experiments.evaluate import eval_inputs
    from smoothrecon.models.own import check_output_shape
    from smoothrecon.operators import build_operator

    data = prepare_data(cfg.data, progress=progress, purpose="evaluate")
    module = runtime.prepare_model(model.module).eval()
    model = dataclasses.replace(model, module=module, norm=model.norm or data.normalization)
    check_output_shape(module, (3, cfg.data.crop_size, cfg.data.crop_size), model.info.model)
    op = build_operator(cfg.operator)
    return model, eval_inputs(data, op, model.space, runtime, (split,))[split]


def cmd_attack(args: argparse.Namespace, build: ConfigBuilder) -> int:
    from smoothrecon.defenses.smoothing import SmoothedEstimator
    from smoothrecon.experiments.evaluate import attack_settings
    from smoothrecon.util.io import (
        atomic_write_json,
        atomic_write_text,
        ensure_dir,
        save_checkpoint,
    )
    from smoothrecon.util.runtime import Runtime

    model, cfg = _model_and_config(args, build)
    _check_eps_rels(args.eps_rel)
    attack_cfg = attack_settings(args.attack, cfg.attack)[args.attack]
    out = ensure_dir(args.out)
    runtime = Runtime.from_config(cfg.runtime)
    model, split = _attack_inputs(cfg, model, runtime, _progress(args), args.split)
    f = runtime.forward(model.module)
    forward = f
    if args.sigma_g > 0:
        k, noise = attack_cfg.eot.k_attack, attack_cfg.eot.noise
        g = SmoothedEstimator(f, args.sigma_g, k, cfg.smoothing.chunk_size)
        forward = g.with_noise(noise, cfg.evaluation.seed)
    job = _AttackCommand(args, cfg, attack_cfg, f, forward, model.space, split)
    rows = []
    for eps_rel in args.eps_rel:
        row, e = _attack_row(job, eps_rel)
        rows.append(row)
        print(
            f"eps_rel {eps_rel:g}: attacked PSNR {row['psnr']:.2f} dB  SSIM {row['ssim']:.4f}  "
            f"(random noise of the same norm: {row['random_psnr']:.2f} dB, "
            f"{row['random_ssim']:.4f})  ||e|| {row['e_norm_mean']:.4f} ({row['space']} space)"
        )
        if row["attack_failed"]:
            print(f"  warning: {FAILED_TEXT}" + _gradient_free_note(row))
        if args.save_perturbations:
            save_checkpoint(
                out / f"perturbations-eps{eps_rel:g}.safetensors",
                {"e": e.cpu()},
                {"eps_rel": eps_rel, "space": f"{model.info.input_space} model input"},
            )
    ran = runtime.describe()
    payload = {"config": cfg.to_dict(), "attack": args.attack, "runtime": ran, "rows": rows}
    atomic_write_json(out / "attack.json", payload)
    atomic_write_text(out / "config.yaml", config_yaml(cfg))
    return 0


@dataclasses.dataclass(frozen=True)
class _AttackCommand:
    """What every eps_rel of the attack command shares: its arguments, config, attack
    setting, f, the forward attacked (f, or g with EOT at --sigma-g), f's normalization and
    the split's inputs."""

    args: argparse.Namespace
    cfg: Config
    attack_cfg: Any
    f: Any
    forward: Any
    norm: Any
    split: Any


def _attack_row(job: _AttackCommand, eps_rel: float):
    """(row of the attack command, e): the attack of `attack_cfg` on `forward` in the threat
    model of attack.space (an ensemble's members each, per crop and metric the worst), judged
    against random noise of the same norm in the same space (the reference an attack must
    beat; a failed attack is backed by the gradient-free one), all scored on g at --sigma-g:
    the evaluation's own path (`evaluation.attacking.attack_scored`)."""
    from smoothrecon.attacks.threat import ThreatModel
    from smoothrecon.evaluation.attacking import Checking, Scoring, attack_scored
    from smoothrecon.evaluation.records import ON_F, ON_G
    from smoothrecon.evaluation.unit import EvalSettings, Sampling, smoothed_metrics
    from smoothrecon.metrics import mean_and_ci
    from smoothrecon.operators import build_operator

    args, cfg, attack_cfg, f, norm, split = (
        job.args,
        job.cfg,
        job.attack_cfg,
        job.f,
        job.norm,
        job.split,
    )
    seed, batch = cfg.evaluation.seed, cfg.evaluation.batch_size
    s = EvalSettings.from_config(cfg, {args.attack: attack_cfg})
    how = Sampling(s.fixed_k, s.chunk_size, s.antithetic, s.adaptive)
    threat = ThreatModel.build(attack_cfg.space, build_operator(cfg.operator), norm, norm)

    def score(e, sigmas):
        return smoothed_metrics(f, split, e, sigmas, how, norm, batch, seed)

    scoring = Scoring(score, (args.sigma_g,), args.sigma_g)
    res = attack_scored(
        job.forward, split, Checking(attack_cfg, seed, threat, eps_rel, batch, norm), scoring
    )
    assert res.check is not None
    row = {
        "eps_rel": eps_rel,
        "split": args.split,
        "sigma_g": args.sigma_g,
        "attack": ON_G if args.sigma_g > 0 else ON_F,
        "setting": args.attack,
        "space": threat.space,
        "e_norm_mean": float(res.attacked.norm.mean()),
        "loss_mean": float(res.attacked.loss.mean()),
        "n": len(res.per_image["mse"]),
        **res.check.fields(),
        **({"worst_of": res.worst_of} if res.worst_of else {}),
    }
    if res.by_member:  # each member's own mean PSNR and SSIM (an ensemble)
        row["by_member"] = {
            n: {k: mean_and_ci(v)[0] for k, v in own.items()} for n, own in res.by_member.items()
        }
    for m in ("mse", "psnr", "ssim"):
        row[m], row[f"{m}_se"], _ = mean_and_ci(res.per_image[m])
        row[f"random_{m}"], row[f"random_{m}_se"], _ = mean_and_ci(res.random[m])
    return row, res.attacked.e


def _gradient_free_note(row: dict) -> str:
    if not row.get("gradient_free"):
        return ""
    return " (the PSNR above is the per-crop worse of PGD and the gradient-free attack)"


def _check_eps_rels(eps_rels: list[float]) -> None:
    if any(not 0 <= e <= 1 for e in eps_rels):
        raise UserError(f"--eps-rel values must lie in [0, 1], got {eps_rels}")


def _sigmas(text: str | None, cfg: Config) -> tuple[float, ...]:
    if text in (None, "grid"):
        return tuple(cfg.smoothing.sigma_grid)
    try:
        sigmas = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise UserError(f"--sigma-g expects 'grid' or numbers like 0,0.1, got '{text}'") from None
    if not sigmas or any(s < 0 for s in sigmas):
        raise UserError(f"--sigma-g values must be >= 0, got {list(sigmas)}")
    return sigmas


def _eval_settings(args: argparse.Namespace, cfg: Config):
    """The evaluation settings of the config, with the command line's eps_rel, sigma_g grid,
    attack setting and RS-PGD choice (k comes in through the config)."""

    from smoothrecon.evaluation.unit import EvalSettings
    from smoothrecon.experiments.evaluate import attack_settings

    settings = EvalSettings.from_config(cfg, attack_settings(args.attack, cfg.attack))
    eps_rels = tuple(args.eps_rel) if args.eps_rel is not None else settings.eps_rels
    _check_eps_rels(list(eps_rels))
    rs_pgd = settings.rs_pgd if args.rs_pgd is None else args.rs_pgd
    return dataclasses.replace(
        settings, eps_rels=eps_rels, sigmas=_sigmas(args.sigma_g, cfg), rs_pgd=rs_pgd
    )


def cmd_evaluate(args: argparse.Namespace, build: ConfigBuilder) -> int:
    from smoothrecon.experiments.evaluate import (
        baseline_models,
        claim_evaluation,
        eval_splits,
        evaluate_models,
    )
    from smoothrecon.operators import build_operator

    models, cfg = _evaluation_models(args, build)
    settings = _eval_settings(args, cfg)
    models = [_smoothed_if_grid(m, settings) for m in models]
    if args.denoiser or args.project:
        models = _resolved_norms(models, cfg)
    if args.denoiser:
        _check_denoiser_operator(args.denoiser, cfg)
        models += denoised_models(models, args.denoiser, cfg)
    if args.project:
        models += projected_models(models, cfg)
    if args.baselines:
        keys = {m.key for m in models}
        op = build_operator(cfg.operator)
        models += [b for b in baseline_models(op) if b.key not in keys]
    labels = [m.info.model for m in models]
    clash = sorted({x for x in labels if labels.count(x) > 1})
    if clash:
        raise UserError(f"two models are both called '{clash[0]}'; give their runs other names")
    claim_evaluation(
        args.out, cfg, models, args.split, build_operator(cfg.operator), args.force_new
    )
    evaluate_models(models, cfg, settings, args.out, eval_splits(args.split))
    return 0


def _check_denoiser_operator(path: str, cfg: Config) -> None:
    """A denoiser learns the noise of one operator's network inputs: one trained for another
    inverse problem is refused, naming both."""
    from smoothrecon.models.checkpoint import load_model, model_operator
    from smoothrecon.operators import build_operator

    _, meta = load_model(path)
    mine, theirs = build_operator(cfg.operator).describe(), model_operator(meta).describe()
    if mine != theirs:
        raise UserError(
            f"the denoiser '{path}' was trained for the operator {theirs}, but the models are "
            f"evaluated with {mine}; train a denoiser for this operator"
        )


def _resolved_norms(models: list, cfg: Config) -> list:
    """Models on the data's normalized inputs (norm None) with the data's statistics, which a
    defence in front of them needs."""

    if all(m.norm is not None or m.info.mode == "none" for m in models):
        return models
    from smoothrecon.data import prepare_data

    norm = prepare_data(cfg.data, purpose="evaluate").normalization
    return [
        m if m.norm is not None or m.info.mode == "none" else dataclasses.replace(m, norm=norm)
        for m in models
    ]


def denoised_models(models: list, path: str, cfg: Config) -> list:
    """f o D for every learned model f of `models` (denoised smoothing, `DenoisedSmoothing`),
    D the denoiser checkpoint at `path`; shown smoothed, labelled '<f>+den<sigma>'."""
    from smoothrecon.defenses import defense_from_config
    from smoothrecon.evaluation.defended import defended
    from smoothrecon.models.checkpoint import load_model, model_normalization
    from smoothrecon.operators import build_operator

    defense = defense_from_config({"kind": "denoised", "source": path})
    norm = model_normalization(load_model(path)[1])
    out = []
    for m in models:
        if m.info.mode == "none":
            continue
        if m.norm is not None and m.norm != norm:
            raise UserError(
                f"the denoiser '{path}' was trained on inputs normalized with {norm}, but "
                f"{m.info.model} uses {m.norm}"
            )
        out.append(defended(m, defense, build_operator(cfg.operator)))
    return out


def projected_models(models: list, cfg: Config) -> list:
    """f o P for every learned model f of `models` (the consistency baseline, `Projection`):
    P projects the network input onto the range of the back-projection of `cfg.operator`;
    labelled '<f>+proj'."""
    from smoothrecon.defenses import defense_from_config
    from smoothrecon.evaluation.defended import defended
    from smoothrecon.operators import build_operator

    op, projection = build_operator(cfg.operator), defense_from_config({"kind": "projection"})
    learned = [m for m in models if m.info.mode != "none" and not m.info.defense]
    return [defended(m, projection, op) for m in learned]


def _evaluation_models(args: argparse.Namespace, build: ConfigBuilder):
    """(EvalModels of every --model, the config): the first model's config sets the data and
    the evaluation scale; all must share the operator; none may be given twice."""
    specs = list(args.model)
    twice = sorted({m for m in specs if specs.count(m) > 1})
    if twice:
        raise UserError(f"--model {twice[0]} is given more than once")
    pairs = [
        _model_and_config(argparse.Namespace(**{**vars(args), "model": m}), build) for m in specs
    ]
    cfg = pairs[0][1]
    for (_, other), spec in zip(pairs[1:], specs[1:], strict=True):
        if other.operator != cfg.operator:
            raise UserError(
                f"--model {spec} was made for operator {_operator_text(other)} but --model "
                f"{specs[0]} for {_operator_text(cfg)}; models compared in one evaluation "
                f"must share the operator"
            )
    return [m for m, _ in pairs], cfg


def _smoothed_if_grid(model, settings):
    """A trained or own model is shown smoothed (at sigma_g*) when the grid has sigma_g > 0."""

    if model.info.mode == "none":  # a no-learning baseline
        return model
    info = dataclasses.replace(model.info, smoothed=max(settings.sigmas) > 0)
    return dataclasses.replace(model, info=info)


def _operator_text(cfg: Config) -> str:
    op = cfg.operator
    return f"{op.name} x{op.factor}" if op.name == "super_resolution" else op.name


def cmd_certify(args: argparse.Namespace, build: ConfigBuilder) -> int:

    from smoothrecon.attacks.setting import EOT, setting_from_config
    from smoothrecon.certification.run import CertifyRunSettings, certify_model
    from smoothrecon.experiments.convergence import thesis_attack

    # bad values: one error line before anything is loaded
    asked = CertifyRunSettings(
        args.sigma_g, args.eps_rel, args.n, args.alpha, args.method, args.percentile
    )
    model, cfg = _model_and_config(args, build)
    if model.info.mode not in ("gaussian", "own") and model.info.defense_kind != "denoised":
        print(
            f"note: {model.info.model} was not trained with Gaussian noise (mode "
            f"{model.info.mode}); smoothing it at sigma_g {args.sigma_g:g} usually ruins its "
            "output, so expect vacuous certificates; certify a model trained with --mode gaussian"
        )
    _claim_certify(args, cfg, model)
    attack = setting_from_config(cfg.attack, "strong")
    if args.attack == "thesis":
        thesis = setting_from_config(thesis_attack(cfg.attack), "thesis")
        attack = dataclasses.replace(thesis, eot=EOT(thesis.eot.k_attack, "fixed"))
    s = asked.with_config(cfg, attack, progress=_progress(args))
    certify_model(model, cfg, args.split, s, args.out)
    return 0


def _claim_certify(args: argparse.Namespace, cfg: Config, model) -> None:
    """A certify folder belongs to one model on one data set and operator: a folder of another
    run (a reproduce or evaluate folder, or another model's certificates) is refused in one
    line naming the differences, or moved aside with --force-new (manifest.py)."""
    from smoothrecon.experiments.manifest import build_manifest, claim
    from smoothrecon.util.io import ensure_dir

    out = ensure_dir(args.out)
    extra = {"models": {model.info.model: model.key}, "split": args.split}
    moved = claim(out, build_manifest("certify", cfg, (), extra=extra), args.force_new)
    if moved is not None:
        print(f"moved the old contents of '{out}' to '{moved}'")


def cmd_reproduce(args: argparse.Namespace, build: ConfigBuilder) -> int:
    from smoothrecon.experiments import reproduce

    cfg = build(args)
    out = reproduce(
        cfg,
        args.out,
        progress=_progress(args),
        executor=args.executor,
        address=args.address,
        force_new=args.force_new,
    )
    print(f"done: {out} (make the report with: smoothrecon report {out})")
    return 0


def cmd_report(args: argparse.Namespace, build: ConfigBuilder) -> int:
    from smoothrecon.report import build_report

    page = build_report(Path(args.run))
    print(f"report: {page}")
    return 0


def cmd_benchmark(args: argparse.Namespace, build: ConfigBuilder) -> int:
    """A model through a frozen protocol: no --set, --preset or --config reaches it."""

    from smoothrecon.benchmark.protocol import protocol
    from smoothrecon.benchmark.run import run_benchmark
    from smoothrecon.defenses import MedianSmoothing
    from smoothrecon.evaluation.defended import defended
    from smoothrecon.operators import build_operator

    p = protocol(args.protocol)
    sets = [*p.sets()]
    if not Path(args.model).exists():  # a baseline or your own model: the operator named here
        sets.append(f"operator.name={args.operator}")
    fixed = argparse.Namespace(**{**vars(args), "preset": p.preset, "config": None, "set": sets})
    fixed.attack = "strong"
    model, cfg = _model_and_config(fixed, build)
    if args.defense == "median":
        model = defended(
            dataclasses.replace(model, norm=model.norm or _data_norm(cfg)),
            MedianSmoothing(),
            build_operator(cfg.operator),
        )
    if args.denoiser:
        _check_denoiser_operator(args.denoiser, cfg)
        behind = denoised_models(_resolved_norms([model], cfg), args.denoiser, cfg)
        if not behind:
            raise UserError(
                f"--denoiser defends a learned model; '{args.model}' is a no-learning baseline"
            )
        model = behind[0]
    card = run_benchmark(model, cfg, p, args.out, verbose=not args.quiet)
    h = card["headline"]
    print(
        f"{card['model']} ({card['operator']}, protocol {card['protocol']}): score "
        f"{h['score']['mean']:.2f} ± {h['score']['ci95']:.2f} dB, clean "
        f"{h['clean_psnr']['mean']:.2f} dB; card: {Path(args.out) / 'card.md'}"
    )
    return 0


def _data_norm(cfg: Config):
    from smoothrecon.data import prepare_data

    return prepare_data(cfg.data, progress=False, purpose="evaluate").normalization


def cmd_leaderboard(args: argparse.Namespace, build: ConfigBuilder) -> int:
    from smoothrecon.benchmark.leaderboard import build_leaderboard

    for path in build_leaderboard(args.cards, args.out):
        print(f"written: {path}")
    return 0


COMMANDS = {
    "data": cmd_data,
    "train": cmd_train,
    "attack": cmd_attack,
    "evaluate": cmd_evaluate,
    "certify": cmd_certify,
    "reproduce": cmd_reproduce,
    "report": cmd_report,
    "benchmark": cmd_benchmark,
    "leaderboard": cmd_leaderboard,
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
