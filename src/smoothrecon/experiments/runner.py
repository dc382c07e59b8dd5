"""The resumable sweep: train every model of the grid, study attack convergence on one model
per family, choose the "strong" attack from it, evaluate every model at every eps_rel, then
(experiment.certify_eps_rels) certify every RS model's G.

Each unit of work is an artifact keyed by the hash of the config that produced it:
    <out>/models/<label>-<key>/                 a training run (resumes mid-way, training.py)
    <out>/convergence/<label>/eps<e>-<key>.json  loss / PSNR vs PGD steps (convergence.py)
    <out>/evals/<label>/eps<e>-<key>.json        records (+ .safetensors with example images)
    <out>/certificates/<label>/certificates.jsonl  certificates (certification_run.py)
A rerun skips finished units and an interrupted run continues where it stopped; a changed
setting recomputes only the units whose key it changes. A folder holds one sweep (manifest.py:
another preset, data or operator is refused, `--force-new` moves the old run aside).
`run.json` records the config, machine and timings for the report.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smoothrecon.attacks.setting import AttackSetting, setting_from_config, setting_record
from smoothrecon.certification.run import CertifyRunSettings
from smoothrecon.config import Config
from smoothrecon.data import prepare_data
from smoothrecon.evaluation.unit import EvalSettings
from smoothrecon.experiments.convergence import choose_strong, thesis_attack
from smoothrecon.experiments.eot_study import choose_eot
from smoothrecon.experiments.executors import make_executor
from smoothrecon.experiments.grid import ModelSpec, thesis_grid
from smoothrecon.experiments.manifest import REPRODUCE_SECTIONS, build_manifest, claim
from smoothrecon.experiments.units import (
    CertifyUnit,
    EOTUnit,
    EvalUnit,
    StudyUnit,
    TrainUnit,
    UnitIdentity,
    short_hash,
)
from smoothrecon.operators import build_operator
from smoothrecon.util.io import atomic_write_json, atomic_write_text, ensure_dir, run_lock
from smoothrecon.util.runtime import (
    Runtime,
    config_yaml,
    machine_info,
    resolved_precision,
    runtime_of,
)


def _model_folder(spec: ModelSpec, mcfg: Config, out: Path) -> Path | None:
    if not spec.trained:
        return None
    return out / "models" / f"{spec.slug}-{mcfg.hash('data', 'operator', 'model', 'train')}"


def plan_training(cfg: Config, out: Path) -> list[TrainUnit]:
    """One unit per trained model, keyed by the hash of what determines its weights."""
    units = []
    for spec in thesis_grid(cfg):
        mcfg = spec.config(cfg)
        folder = _model_folder(spec, mcfg, out)
        if folder is not None:
            units.append(TrainUnit(spec, mcfg, folder))
    return units


def family_representatives(cfg: Config) -> list[ModelSpec]:
    """One model per family for the convergence study: per factor the bilinear baseline, and
    per variant the standard, the first RS and the first adversarially trained model."""
    reps, seen = [], set()
    for spec in thesis_grid(cfg):
        family = (spec.factor, spec.variant, spec.mode)
        # baselines come first: the operator's first one stands for all; the standard model
        # stands for its denoised and projected compositions
        if family in seen or spec.mode == "denoiser" or spec.defense:
            continue
        seen.add(family)
        reps.append(spec)
    return reps


def _experiment_fields(cfg: Config, *names: str) -> dict[str, Any]:
    """The experiment fields a unit depends on (not the whole section: adding a model to the
    grid must not invalidate the other models' studies)."""
    return {n: getattr(cfg.experiment, n) for n in names}


def plan_convergence(cfg: Config, out: Path) -> list[StudyUnit]:
    """One study per (family representative, eps_rel), keyed by the convergence fields and
    the threat models it covers (experiment.attack_spaces)."""
    fields = _experiment_fields(
        cfg,
        "convergence_steps",
        "convergence_step_factors",
        "convergence_restarts",
        "convergence_images",
        "convergence_patience",
        "convergence_rel_tol",
        "convergence_apgd_steps",
        "convergence_reference_steps",
        "convergence_reference_restarts",
    )
    if tuple(cfg.experiment.attack_spaces) != ("input",):  # (input only keeps older keys)
        fields["attack_spaces"] = list(cfg.experiment.attack_spaces)
    units = []
    for spec in family_representatives(cfg):
        mcfg = spec.config(cfg)
        key = mcfg.hash("data", "operator", "model", "train", "attack", "evaluation")
        key += f"-{short_hash(fields)}"
        for eps_rel in cfg.experiment.convergence_eps_rels:
            path = out / "convergence" / spec.slug / f"eps{eps_rel:g}-{key}.json"
            units.append(StudyUnit(spec, mcfg, eps_rel, path, _model_folder(spec, mcfg, out)))
    return units


def plan_eot(cfg: Config, out: Path) -> list[EOTUnit]:
    """The EOT study (the attack on g): one unit per (Gaussian-trained family representative,
    convergence eps_rel), at sigma_g = its sigma_f and the grid's largest sigma_g; none when
    g is not attacked."""
    if not cfg.experiment.rs_pgd:
        return []
    names = [f.name for f in dataclasses.fields(cfg.experiment) if f.name.startswith("eot_")]
    fields = _experiment_fields(cfg, "convergence_images", *names)
    units = []
    for spec in (s for s in family_representatives(cfg) if s.mode == "gaussian"):
        mcfg = spec.config(cfg)
        e = cfg.experiment
        sigmas = e.eot_sigmas or tuple(
            sorted({float(spec.value), max(cfg.smoothing.sigma_grid)} - {0.0})
        )
        key = mcfg.hash("data", "operator", "model", "train", "evaluation", "smoothing")
        key += f"-{short_hash({**fields, 'sigmas': sigmas})}"
        for eps_rel in e.eot_eps_rels or e.convergence_eps_rels:
            path = out / "eot" / spec.slug / f"eps{eps_rel:g}-{key}.json"
            folder = _model_folder(spec, mcfg, out)
            units.append(EOTUnit(spec, mcfg, eps_rel, sigmas, path, folder))
    return units


def unit_settings(
    spec: ModelSpec,
    cfg: Config,
    attacks: dict[str, AttackSetting],
    attacks_g: dict[str, AttackSetting] | None = None,
) -> EvalSettings:
    """The evaluation settings of one sweep model: the sigma_g grid unless adversarially
    trained, RS-PGD only on Gaussian-trained (RS) models, with the attacks on g `attacks_g`
    (where they differ from the attacks on f)."""
    settings = EvalSettings.from_config(cfg, attacks)
    return dataclasses.replace(
        settings,
        sigmas=settings.sigmas if spec.grid_evaluated else (0.0,),
        rs_pgd=settings.rs_pgd and spec.smoothed,
        attacks_g=dict(attacks_g or {}),
    )


@dataclass(frozen=True)
class Attacks:
    """The attack settings of a sweep's evaluation: on f per setting name ('strong' first),
    on g where the EOT study chose another, and the two studies' scores."""

    on_f: dict[str, AttackSetting]
    on_g: dict[str, AttackSetting]
    score: dict[str, Any]
    eot_score: dict[str, Any] | None


def plan_evaluation(
    cfg: Config,
    out: Path,
    attacks: dict[str, AttackSetting],
    attacks_g: dict[str, AttackSetting] | None = None,
) -> list[EvalUnit]:
    """One unit per (model, eps_rel), keyed by everything its records depend on."""
    units = []
    for spec in (s for s in thesis_grid(cfg) if s.evaluated):
        mcfg = spec.config(cfg)
        op = build_operator(mcfg.operator)
        settings = unit_settings(spec, mcfg, attacks, attacks_g)
        net, den = spec.parts()
        ncfg = net.config(cfg)
        model_key = ncfg.hash("model", "train")
        folder = _model_folder(net, ncfg, out)
        den_folder = None
        if spec.defense in ("projection", "median"):
            model_key += f"+{spec.defense_name}"
        if den is not None:
            dcfg = den.config(cfg)
            model_key += "+" + dcfg.hash("model", "train")
            den_folder = _model_folder(den, dcfg, out)
        for eps_rel in cfg.evaluation.eps_rels:
            unit = UnitIdentity(
                spec.info(), model_key, mcfg.data, op, settings, eps_rel, ("val", "test")
            )
            path = unit.path(out)
            units.append(EvalUnit(spec, ncfg, eps_rel, settings, path, folder, den_folder))
    return units


def plan_certification(cfg: Config, out: Path, attack: AttackSetting) -> list[CertifyUnit]:
    """One unit per Gaussian-trained (RS) model when experiment.certify_eps_rels is set: its G
    at sigma_g = sigma_f, attacked with the run's strong attack on G (EOT, k_attack draws)."""
    e = cfg.experiment
    if not e.certify_eps_rels:
        return []
    units = []
    for spec in thesis_grid(cfg):
        if spec.mode != "gaussian" or spec.defense:
            continue
        mcfg = spec.config(cfg)
        methods = "+".join(e.certify_methods)
        asked = CertifyRunSettings(spec.value, e.certify_eps_rels, e.certify_n, method=methods)
        s = asked.with_config(mcfg, attack, progress=False)
        key = short_hash(
            {
                "model": mcfg.hash("data", "operator", "model", "train"),
                "settings": s.key_fields(),
                "eps_rels": s.eps_rels,
                "crops": e.certify_crops,
            },
            16,
        )
        path = out / "certificates" / spec.slug / f"done-{key}.json"
        folder = _model_folder(spec, mcfg, out)
        units.append(CertifyUnit(spec, mcfg, s, e.certify_crops, path, folder))
    return units


def _run_phase(pool, units: list, desc: str, timings: dict[str, float]) -> None:
    """Run the unfinished `units` on the executor, recording each one's seconds."""
    todo = [u for u in units if not u.done()]
    for u, payload in zip(todo, pool.map(todo, desc), strict=True):
        eps = getattr(u, "eps_rel", None)
        tag = u.spec.label if eps is None else f"{u.spec.label}:{eps:g}"
        timings[f"{desc}:{tag}"] = payload["seconds"]


def _strong_attacks(cfg: Config, convs: list[StudyUnit], eots: list[EOTUnit]) -> Attacks:
    """The attack settings of the evaluation ('strong' from the study first; on g the EOT
    study's choice) and the studies' scores."""
    rows = [r for u in convs for r in json.loads(u.path.read_text())["rows"]]
    within = cfg.experiment.strong_within
    strong, score = choose_strong(rows, within, cfg.attack, cfg.experiment.strong_max_cost)
    attacks = {"strong": setting_from_config(strong, "strong")}
    if cfg.experiment.thesis_setting:
        attacks["thesis"] = setting_from_config(thesis_attack(cfg.attack), "thesis")
    on_g: dict[str, AttackSetting] = {}
    eot_score = None
    if eots:
        eot_rows = [r for u in eots for r in json.loads(u.path.read_text())["rows"]]
        chosen, eot_score = choose_eot(eot_rows, within, cfg.attack)
        on_g["strong"] = setting_from_config(chosen, "strong")
    if "measurement" in cfg.experiment.attack_spaces:
        for attacks_of in (attacks, on_g):
            if "strong" in attacks_of:
                s = dataclasses.replace(attacks_of["strong"], space="measurement")
                attacks_of[s.name] = s
    return Attacks(attacks, on_g, score, eot_score)


def _phases(cfg: Config, out: Path, pool, log: Callable[[str], None], timings: dict):
    """Training, convergence study, then evaluation with the attacks the study chose."""
    trains, convs = plan_training(cfg, out), plan_convergence(cfg, out)
    n_t, n_c = (sum(not u.done() for u in units) for units in (trains, convs))
    log(
        f"{len(trains)} models ({n_t} to train), {len(convs)} convergence studies "
        f"({n_c} to run) -> {out}"
    )
    _run_phase(pool, trains, "training", timings)
    _run_phase(pool, convs, "attack convergence", timings)
    eots = plan_eot(cfg, out)
    _run_phase(pool, eots, "attack on g (EOT) study", timings)
    attacks = _strong_attacks(cfg, convs, eots)
    evals = plan_evaluation(cfg, out, attacks.on_f, attacks.on_g)
    log(
        _attack_line(attacks)
        + f"; {len(evals)} evaluations ({sum(not u.done() for u in evals)} to run)"
    )
    _run_phase(pool, evals, "evaluating", timings)
    certs = plan_certification(cfg, out, attacks.on_g.get("strong") or attacks.on_f["strong"])
    if certs:
        log(f"{len(certs)} certifications ({sum(not u.done() for u in certs)} to run)")
    _run_phase(pool, certs, "certifying", timings)
    return trains, convs, evals, attacks, eots


def _attack_line(attacks: Attacks) -> str:
    """The log line of the chosen attacks on f and on g."""
    strong, score = setting_record(attacks.on_f["strong"]), attacks.score
    line = (
        f"strong attack: {_attack_words(strong)}, {score['cost']:.0f} passes/crop, "
        f">= {score['min_ratio']:.1%} of the best loss found"
    )
    g, eot = attacks.on_g.get("strong"), attacks.eot_score
    if g is None or eot is None:
        return line
    r = setting_record(g)
    return line + (
        f"; on g: {r['noise']} noise, k_attack {r['k_attack']}, {_attack_words(r)}, "
        f"{eot['budget']} passes/crop per loss, >= {eot['min_ratio']:.1%} of the best loss found"
    )


def _attack_words(r: dict) -> str:
    """A built-in setting's record (`setting_record`) in a few words."""
    losses = "+".join(r["losses"])
    if r["kind"] == "apgd":
        return f"APGD {r['steps']} steps x {r['restarts']} start(s) on {losses}"
    stop = f", early stopping patience {r['patience']}" if r["patience"] else ""
    return (
        f"PGD {r['steps']} steps of {r['step_factor']:g} eps x {r['restarts']} start(s), "
        f"{r['keep']} iterate{stop} on {losses}"
    )


def reproduce(
    cfg: Config,
    out: str | Path,
    progress: bool = True,
    log: Callable[[str], None] = print,
    executor: str = "serial",
    address: str | None = None,
    force_new: bool = False,
) -> Path:
    """Run (or resume) the whole experiment of `cfg` into `out`; returns `out`. A folder of
    another run is refused, or with `force_new` moved aside first (manifest.py).

    Phases run in order (training, convergence, evaluation) because each needs the previous
    one's results; the units inside a phase are independent and go to the executor.
    """
    out = ensure_dir(out)
    with run_lock(out):
        moved = claim(out, build_manifest("reproduce", cfg, REPRODUCE_SECTIONS), force_new)
        if moved is not None:
            log(f"moved the old contents of '{out}' to '{moved}'")
        started = time.perf_counter()
        atomic_write_text(out / "config.yaml", config_yaml(cfg))
        asked, cfg = cfg, resolved(cfg)  # every unit, on any worker, in the manifest's precision
        data = prepare_data(cfg.data, progress=progress)
        pool = make_executor(executor, data, Runtime.from_config(cfg.runtime), progress, address)
        timings: dict[str, float] = {}
        trains, convs, evals, attacks, eots = _phases(cfg, out, pool, log, timings)
        if (out / "run.json").exists() and not timings:
            return out  # nothing ran: keep the manifest of the run that did the work
        paths = [u.path for u in evals]
        manifest = run_manifest("reproduce", asked, out, data.summary(), paths, attacks.on_f)
        manifest.update(
            executor=executor,
            models=[
                {"label": u.spec.label, "folder": str(u.folder.relative_to(out))} for u in trains
            ],
            convergence=[str(u.path.relative_to(out)) for u in convs],
            strong_score=attacks.score,
            eot=[str(u.path.relative_to(out)) for u in eots],
            eot_score=attacks.eot_score,
            attacks_g={k: setting_record(v) for k, v in attacks.on_g.items()},
            seconds_this_call=time.perf_counter() - started,
            timings_this_call=timings,
        )
        atomic_write_json(out / "run.json", manifest)
    return out


def resolved(cfg: Config) -> Config:
    """`cfg` with runtime.precision as this machine resolves it: units sent to other machines
    (the distributed executors) then compute in it too, even where `auto` would resolve
    otherwise, so one run never mixes bf16 and fp32 units."""
    runtime = dataclasses.replace(cfg.runtime, precision=resolved_precision(cfg.runtime))
    return dataclasses.replace(cfg, runtime=runtime)


def run_manifest(
    kind: str,
    cfg: Config,
    out: Path,
    data: dict[str, Any],
    evals: list[Path],
    attacks: dict[str, AttackSetting],
) -> dict[str, Any]:
    """What `run.json` says about any run that the report reads (`reproduce` or `evaluate`):
    its kind, config, machine, data, unit files (relative to `out`) and attack settings."""
    return {
        "kind": kind,
        "preset": cfg.preset,
        "config": cfg.to_dict(),
        "machine": machine_info(),
        "runtime": runtime_of(cfg.runtime).describe(),
        "data": data,
        "evals": [str(p.relative_to(out)) for p in evals],
        "attacks": {k: setting_record(v) for k, v in attacks.items()},
    }
