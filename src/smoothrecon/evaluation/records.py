"""The evaluation record (one typed row per model x condition) and the rules that read it.

Evaluation writes `Record`s, the report reads them; both decide with the functions here and
nowhere else:
- `choose_sigma`: sigma_g* = the sigma_g with the highest mean SSIM under the attack on f (or
  no attack at eps_rel 0) on the selection split; ties go to the smaller sigma_g.
- `split_roles`: which split is reported (test, else all, else val) and which one chooses
  sigma_g ("val" when evaluated, else the reported split itself: an oracle choice).
- `headline`: the record a table or curve shows for a model at one eps_rel. A smoothed model is
  shown at sigma_g* under the per-image worse of the attacks on f and on g ("worst") when both
  ran, else under the attack on f; any other model without smoothing under the attack on f.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, NotRequired, TypedDict, cast

from smoothrecon.metrics import mean_and_ci
from smoothrecon.models.info import ModelInfo

METRICS = ("mse", "psnr", "ssim")
# What a record's `attack` says was attacked (the values of the first schema): nothing (eps_rel
# 0), the model f, the smoothed g (with EOT), or per crop the worse of the two. Whatever the
# attack itself (`setting` names it: "strong", "thesis", a user's attack).
NO_ATTACK, ON_F, ON_G, WORST = "none", "pgd_f", "pgd_g", "worst"
SCHEMA = 3  # 1: no eps, smoothed, input_space; 2: compositions as modes; read by `upgrade`


class Record(TypedDict):
    """One row: a model under one condition, metrics on [0, 1] images of the split's crops."""

    schema: int
    # the model
    model: str  # label, e.g. "x2/thesis/rs0.1", "x2/bilinear", "mynet"
    factor: int  # super-resolution factor of the operator
    kind: str  # "unet", "bilinear", "bicubic", "own"
    variant: str  # "thesis", "residual", "-"
    mode: str  # training: "standard", "gaussian", "adversarial"; "none" baselines; "own"
    value: float  # sigma_f (gaussian) or eps_rel (adversarial) of training, else 0
    smoothed: bool  # defended by smoothing: the headline shows it at sigma_g*
    input_space: str  # "normalized" or "pixel": where eps, sigma_g and e live
    train_space: NotRequired[str]  # adversarial training's threat model: "input", "measurement"
    defense: NotRequired[str]  # f behind a defence: its name ("den0.1", "proj"; "" none)
    defense_kind: NotRequired[str]  # ... and its kind ("denoised", "projection", a class)
    # the condition
    split: str  # "val", "test" or "all"
    eps_rel: float
    eps: float  # sqrt(d) * eps_rel, L2 norm in the model's input space
    attack: str  # "none", "pgd_f" (Vanilla PGD), "pgd_g" (RS-PGD, EOT), "worst" (per image)
    setting: str  # named attack setting: "strong", "thesis"
    sigma_g: float
    k: int  # noise draws of the smoothed estimate (1 when sigma_g = 0)
    space: NotRequired[str]  # the attack's threat model: "input" or "measurement"
    # the results: mean, standard error, 95% CI half-width, and per image
    n: int
    mse: float
    mse_se: float
    mse_ci95: float
    psnr: float
    psnr_se: float
    psnr_ci95: float
    ssim: float
    ssim_se: float
    ssim_ci95: float
    per_image: dict[str, list[float]]
    mc_share: NotRequired[float]  # share of the MSE that is Monte-Carlo noise of g_hat (mean)
    mc_share_median: NotRequired[float]
    mse_debiased: NotRequired[float]  # MSE of the exact g: the MSE less the MC variance
    k_mean: NotRequired[float]  # draws per image actually used (k: auto varies them)
    k_max_used: NotRequired[float]
    e_norm_mean: NotRequired[float]
    unit_file: NotRequired[str]  # set by the report: the unit file the record was read from
    e_norm_min: NotRequired[float]
    e_norm_max: NotRequired[float]
    # the attack's check (attack_check.AttackCheck): random noise of the attack's per-crop norm
    # scored like the attack (random_* only on the record where it was scored), the mean
    # per-crop PSNR gap random - attacked with its 95% CI, the share of crops whose first
    # gradient was zero or not finite, the flag, and whether the gradient-free attack ran
    random_psnr: NotRequired[float]
    random_ssim: NotRequired[float]
    random_gap: NotRequired[float]
    random_gap_ci95: NotRequired[float]
    grad_bad_share: NotRequired[float]
    attack_failed: NotRequired[bool]
    gradient_free: NotRequired[bool]
    # an ensemble (attacking.attack_scored): per metric, the share of crops on which each
    # member was the worst ({"mse": {"apgd-mse": 0.8, ...}, "ssim": {...}}); the PSNR column
    # follows "mse"
    worst_of: NotRequired[dict[str, dict[str, float]]]
    # and each member's own per-image PSNR and SSIM ({"apgd-ssim": {"psnr": [...], ...}}):
    # what the MSE attack alone and the SSIM attack alone leave
    by_member: NotRequired[dict[str, dict[str, list[float]]]]
    # what ran (util.runtime.Runtime.describe): device, precision ("fp32" or "bf16", resolved),
    # channels_last, threads, torch, CPU model; absent in records from before it was recorded
    runtime: NotRequired[dict[str, Any]]


@dataclass(frozen=True)
class Condition:
    """One row's identity besides the model."""

    split: str
    eps_rel: float
    eps: float
    attack: str
    setting: str
    sigma_g: float
    k: int
    space: str = "input"  # where the attack perturbs: "input" (the thesis) or "measurement"


def make_record(
    info: ModelInfo, cond: Condition, per_image: dict[str, list[float]], **extra: Any
) -> Record:
    row: dict[str, Any] = {"schema": SCHEMA, **asdict(info), **asdict(cond)}
    row.update(n=len(per_image["mse"]), per_image=per_image, **extra)
    for m in METRICS:
        row[m], row[f"{m}_se"], row[f"{m}_ci95"] = mean_and_ci(per_image[m])
    return row  # type: ignore[return-value]


def value(r: Record, key: str) -> float:
    """A record's number under a computed name, e.g. value(r, "psnr_ci95")."""
    return float(cast(Mapping[str, Any], r)[key])


def upgrade(row: dict[str, Any], crop_size: int) -> Record:
    """A record as `Record`, including one of an earlier schema:
    1 (no version) came from `reproduce` runs of 3-channel super-resolution in normalized
    space, where eps = sqrt(3 crop_size^2) eps_rel and only Gaussian-trained models were
    reported smoothed; 2 wrote f o D and f o P as modes "denoised" (value: the denoiser's
    sigma) and "projected", with f's mode and value in base_mode and base_value."""
    if row.get("schema", 1) < 2:
        row = {
            **row,
            "eps": row["eps_rel"] * math.sqrt(3 * crop_size**2),
            "smoothed": row.get("mode") == "gaussian",
            "input_space": "normalized",
        }
    if row.get("schema", 1) < 3:
        old, row = row, {k: v for k, v in row.items() if k not in ("base_mode", "base_value")}
        kind = {"denoised": "denoised", "projected": "projection"}.get(row.get("mode", ""))
        if kind:
            name = f"den{row['value']:g}" if kind == "denoised" else "proj"
            row.update(defense=name, defense_kind=kind)
            row["mode"] = old.get("base_mode") or "standard"
            row["value"] = old.get("base_value", 0.0)
        row["schema"] = SCHEMA
    return row  # type: ignore[return-value]


def runtimes(records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The distinct runtimes (`Record.runtime`) that computed `records`, in order of first
    appearance; more than one means the rows were computed differently (e.g. bf16 and fp32)."""
    seen: dict[str, dict[str, Any]] = {}
    for r in records:
        if "runtime" in r:
            seen.setdefault(json.dumps(r["runtime"], sort_keys=True), r["runtime"])
    return list(seen.values())


def split_roles(splits: Iterable[str]) -> tuple[str, str]:
    """(reported split, split that chooses sigma_g) among the evaluated `splits`."""
    present = set(splits)
    reported = next(s for s in ("test", "all", "val") if s in present)
    return reported, "val" if "val" in present else reported


def _same_setting(r: Record, setting: str) -> bool:
    """At eps_rel 0 there is no attack: its one record stands for every setting."""
    return r["eps_rel"] == 0 or r["setting"] == setting


def choose_sigma(
    records: Iterable[Record], split: str, eps_rel: float, setting: str
) -> float | None:
    """sigma_g* of one model: the highest mean SSIM among its records of `split` at `eps_rel`
    under the attack on f of `setting` (no attack at eps_rel 0); None when there are none."""
    rows = [
        r
        for r in records
        if r["split"] == split
        and r["eps_rel"] == eps_rel
        and r["attack"] in (ON_F, NO_ATTACK)
        and _same_setting(r, setting)
    ]
    if not rows:
        return None
    return float(max(rows, key=lambda r: (r["ssim"], -r["sigma_g"]))["sigma_g"])


def find(
    records: Iterable[Record], split: str, eps_rel: float, attack: str, sigma: float, setting: str
) -> Record | None:
    """The record of exactly this condition (of one model), or None."""
    for r in records:
        if (
            (r["split"], r["eps_rel"], r["attack"]) == (split, eps_rel, attack)
            and abs(r["sigma_g"] - sigma) < 1e-12
            and _same_setting(r, setting)
        ):
            return r
    return None


def headline(
    records: Sequence[Record], eps_rel: float, setting: str, splits: tuple[str, str]
) -> Record | None:
    """The record shown for one model (`records` are all of its rows) at `eps_rel` under
    `setting`; `splits` = split_roles(...) of the run. See the module docstring."""
    if not records:
        return None
    reported, chosen_on = splits
    attack = NO_ATTACK if eps_rel == 0 else ON_F
    if not records[0]["smoothed"]:
        return find(records, reported, eps_rel, attack, 0.0, setting)
    sigma = choose_sigma(records, chosen_on, eps_rel, setting)
    if sigma is None:
        return None
    worst = find(records, reported, eps_rel, WORST, sigma, setting) if eps_rel > 0 else None
    return worst or find(records, reported, eps_rel, attack, sigma, setting)


def sigma_choices(records: Sequence[Record], setting: str) -> list[dict[str, Any]]:
    """Per model and eps_rel: sigma_g* and the reported split's own best (its oracle)."""
    reported, chosen_on = split_roles(r["split"] for r in records)
    out = []
    for model in dict.fromkeys(r["model"] for r in records):
        mine = [r for r in records if r["model"] == model]
        for eps_rel in sorted({r["eps_rel"] for r in mine}):
            out.append(
                {
                    "model": model,
                    "eps_rel": eps_rel,
                    "setting": setting,
                    "split": reported,
                    "chosen_on": chosen_on,
                    "sigma_g": choose_sigma(mine, chosen_on, eps_rel, setting),
                    "sigma_g_oracle": choose_sigma(mine, reported, eps_rel, setting),
                }
            )
    return out
