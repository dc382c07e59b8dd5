"""Run one model through a benchmark protocol into a folder: its evaluation, its certificate and
its result card (`smoothrecon benchmark`).

    <out>/evaluation/   the evaluation run folder (`evaluate`'s: resumable per unit)
    <out>/certificate/  a smoothed model's median certificate (resumable per crop)
    <out>/card.json, card.md

A model is evaluated smoothed (sigma_g* on validation, the attack on g at every attacked
eps_rel and threat model, per crop and metric the worst of the attacks on f and on g) when it
is behind a smoothing defence or was trained with Gaussian noise; else unsmoothed.
"""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path
from typing import Any

from smoothrecon.attacks.setting import setting_from_config
from smoothrecon.benchmark.card import Card, build_card, write_card
from smoothrecon.benchmark.protocol import Protocol
from smoothrecon.certification.run import CertifyRunSettings, certify_model
from smoothrecon.config import Config
from smoothrecon.evaluation.records import Record, choose_sigma
from smoothrecon.evaluation.unit import EvalModel, EvalSettings
from smoothrecon.experiments.evaluate import evaluate_models
from smoothrecon.operators import Operator, build_operator, problem_tag
from smoothrecon.util.runtime import machine_info
from smoothrecon.util.version import VERSION


def benchmark_settings(p: Protocol, cfg: Config, smoothed: bool) -> EvalSettings:
    """The protocol's evaluation: one setting per threat model (the config's attack in that
    space), its eps_rel grid, the sigma_g grid and the attack on g for a smoothed model."""
    attacks = {}
    for space in p.spaces:
        with_space = dataclasses.replace(cfg.attack, space=space)  # type: ignore[arg-type]
        setting = setting_from_config(with_space, "strong")
        attacks[setting.name] = setting
    s = EvalSettings.from_config(cfg, attacks)
    sigmas = s.sigmas if smoothed else (0.0,)
    return dataclasses.replace(
        s, eps_rels=p.eps_rels, sigmas=sigmas, rs_pgd=smoothed, rs_pgd_eps_rels=(),
        rs_pgd_spaces=(),
    )  # fmt: skip


# what computes a card's numbers: a change elsewhere (docs, the committed cards that
# `make leaderboard-cards` copies in while it runs) leaves the code clean
CODE_PATHS = ("src", "pyproject.toml")


def describe(root: Path) -> str:
    """`git describe --always --tags` of the checkout at root, with "-dirty" when CODE_PATHS
    differ from that commit (untracked files under them too). Raises OSError or
    SubprocessError when root is no checkout."""

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10,
            check=True,
        )  # fmt: skip
        return done.stdout.strip()

    changed = git("status", "--porcelain", "--", *CODE_PATHS)
    return git("describe", "--always", "--tags") + ("-dirty" if changed else "")


def code_version() -> str:
    """The package version with `describe` of the source tree when it is a checkout."""
    try:
        return f"{VERSION} ({describe(Path(__file__).resolve().parents[3])})"
    except (OSError, subprocess.SubprocessError):
        return VERSION


def _certificate(
    model: EvalModel, cfg: Config, p: Protocol, records: list[Record], s: EvalSettings, out: Path
) -> list[dict[str, Any]]:
    """The certificate of the model's own smoothed estimator at sigma_g* of the headline
    eps_rel (none where it is 0), on the protocol's first certify_crops test crops: the median
    method for median smoothing, else the pixel and loss methods (both bound G)."""
    sigma = choose_sigma(records, "val", p.headline_eps, s.primary)
    if not sigma:
        return []
    ccfg = dataclasses.replace(
        cfg, data=dataclasses.replace(cfg.data, max_eval_crops=p.certify_crops)
    )
    settings = CertifyRunSettings(
        sigma_g=sigma,
        eps_rels=(p.certify_eps_rel,),
        n=p.certify_n,
        alpha=p.certify_alpha,
        method="median" if model.percentile is not None else "pixel+loss",
        attack=s.attacks[s.primary].on_mse(),
        seed=cfg.evaluation.seed,
        chunk_size=cfg.smoothing.chunk_size,
        progress=False,
    )
    return certify_model(model, ccfg, "test", settings, out, verbose=False)


def run_benchmark(
    model: EvalModel,
    cfg: Config,
    p: Protocol,
    out: str | Path,
    operator: Operator | None = None,
    verbose: bool = True,
) -> Card:
    """The protocol on `model` (with `cfg = p`'s config for the model's operator) into `out`;
    returns the card (also written to out/card.json and card.md)."""
    out = Path(out)
    smoothed = model.info.smoothed or model.info.mode == "gaussian"
    model = dataclasses.replace(model, info=dataclasses.replace(model.info, smoothed=smoothed))
    s = benchmark_settings(p, cfg, smoothed)
    op = operator or build_operator(cfg.operator)
    records = evaluate_models(
        [model], cfg, s, out / "evaluation", ("val", "test"), op, verbose=verbose
    )
    certs = _certificate(model, cfg, p, records, s, out / "certificate") if smoothed else []
    about = {
        "model": model.info.model,
        "operator": problem_tag(op),
        "model_hash": model.key,
        "defense": model.info.defense,
        "code_version": code_version(),
        "machine": machine_info(),
    }
    spaces: dict[str, str] = {a.space: name for name, a in s.attacks.items()}
    card = build_card(records, spaces, p, about, certs)
    write_card(card, out)
    return card
