"""Evaluate a model under attack, with and without smoothing, into records (section 4.4).

Protocol of one unit (one model at one eps_rel):
1. validation split: attack the base model f once ("Vanilla PGD"), then evaluate the smoothed
   g for every sigma_g of the grid on the same perturbed inputs (common random numbers);
2. sigma_g* = the sigma with the highest mean validation SSIM (the thesis chose on the test set;
   we never look at test data to choose);
3. test split: the same attack and grid, reported at sigma_g* (the test-set oracle is reported
   beside it by the report, from the same records);
4. for smoothed models, the white-box attack on g at sigma_g* ("RS-PGD", EOT) on the test
   split (nothing is chosen with it), and the per-image worst case of the two attacks.
Every record is one (split, eps_rel, attack, setting, sigma_g) row with per-image MSE / PSNR /
SSIM on images de-normalized and clamped to [0, 1], their means and standard errors, and the
share of the MSE that is Monte-Carlo noise of the smoothed estimate.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from smoothrecon.attacks import eps_from_rel, pgd_l2_run
from smoothrecon.config import AttackConfig
from smoothrecon.data.normalization import Normalization
from smoothrecon.distributed import map_batches
from smoothrecon.metrics import all_metrics, mean_and_ci
from smoothrecon.operators import SuperResolution
from smoothrecon.runtime import Runtime
from smoothrecon.smoothing import SmoothedEstimator, make_generator, predict_many

Forward = Callable[[torch.Tensor], torch.Tensor]
METRICS = ("mse", "psnr", "ssim")


def _seed(*parts: object) -> int:
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:6], "little")


def _to_pixels(z: torch.Tensor, norm: Normalization) -> torch.Tensor:
    return norm.denormalize(z).clamp(0, 1)


def clean_metrics(
    forward: Forward,
    x_uint8: torch.Tensor,
    operator: SuperResolution,
    norm: Normalization,
    runtime: Runtime,
    batch_size: int,
) -> dict[str, list[float]]:
    """Per-image metrics of forward(A(x)) against x, no attack, no smoothing."""
    out: dict[str, list[float]] = {m: [] for m in METRICS}
    with torch.no_grad():
        for start in range(0, x_uint8.shape[0], batch_size):
            y, _, x = runtime.pairs(x_uint8[start : start + batch_size], operator, norm)
            for m, v in all_metrics(_to_pixels(forward(y), norm), x).items():
                out[m].extend(v.tolist())
    return out


def attack(
    forward: Forward,
    y: torch.Tensor,
    target: torch.Tensor,
    eps_rel: float,
    cfg: AttackConfig,
    seed: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(e, per-sample loss) of the L2 PGD of `cfg` at eps = sqrt(d) eps_rel on `forward`."""
    eps = eps_from_rel(eps_rel, y.shape[1:])
    if eps == 0:
        return torch.zeros_like(y), torch.zeros(y.shape[0], device=y.device)
    res = pgd_l2_run(
        forward,
        y,
        target,
        eps,
        steps=cfg.steps,
        step_size=cfg.step_factor * eps,
        random_start=cfg.random_start,
        restarts=cfg.restarts,
        keep=cfg.keep,
        generator=make_generator(seed, y.device),
    )
    return res.e.detach(), res.loss.detach()


@dataclass
class Condition:
    """One row's identity (besides the model)."""

    split: str
    eps_rel: float
    attack: str  # "none", "pgd_f" (Vanilla PGD), "pgd_g" (RS-PGD), "worst"
    setting: str  # the named attack setting ("thesis", "strong", ...)
    sigma_g: float
    k: int


def make_record(cond: Condition, per_image: dict[str, list[float]], **extra) -> dict:
    row = {**cond.__dict__, "n": len(per_image["mse"]), "per_image": per_image, **extra}
    for m in METRICS:
        mean, se, half = mean_and_ci(per_image[m])
        row[m], row[f"{m}_se"], row[f"{m}_ci95"] = mean, se, half
    return row


@dataclass
class SplitInputs:
    """The normalized inputs/targets and pixel targets of one split, on the runtime device."""

    y: torch.Tensor
    target: torch.Tensor
    x: torch.Tensor


def split_inputs(
    x_uint8: torch.Tensor, operator: SuperResolution, norm: Normalization, runtime: Runtime
) -> SplitInputs:
    y, target, x = runtime.pairs(x_uint8, operator, norm)
    return SplitInputs(y, target, x)


def smoothed_metrics(
    forward: Forward,
    data: SplitInputs,
    e: torch.Tensor,
    sigmas: Sequence[float],
    k: int,
    norm: Normalization,
    batch_size: int,
    seed: int,
    chunk_size: int = 0,
    antithetic: bool = False,
) -> dict[float, dict[str, list[float]]]:
    """Per-image metrics of g_hat(y + e) for every sigma (common random numbers), plus
    'mc_share': the share of each image's MSE that is Monte-Carlo variance of g_hat."""
    std = torch.tensor(norm.std, device=data.y.device).view(1, -1, 1, 1)

    def batch(start: int) -> dict[float, dict[str, list[float]]]:
        sl = slice(start, start + batch_size)
        gen = make_generator(_seed(seed, start), data.y.device)
        with torch.no_grad():
            preds = predict_many(
                forward, data.y[sl] + e[sl], sigmas, k, gen, chunk_size, antithetic, with_se=True
            )
        res = {}
        for s, p in preds.items():
            metrics = all_metrics(_to_pixels(p.mean, norm), data.x[sl])
            assert p.se is not None
            mc = (p.se * std).pow(2).flatten(1).mean(1) / metrics["mse"].clamp_min(1e-12)
            res[s] = {**{m: v.tolist() for m, v in metrics.items()}, "mc_share": mc.tolist()}
        return res

    out: dict[float, dict[str, list[float]]] = {
        s: {m: [] for m in (*METRICS, "mc_share")} for s in sigmas
    }
    for part in map_batches(data.y.shape[0], batch_size, batch):
        for s, per in part.items():
            for m, values in per.items():
                out[s][m].extend(values)
    return out


def batched_attack(
    forward: Forward,
    data: SplitInputs,
    eps_rel: float,
    cfg: AttackConfig,
    batch_size: int,
    seed: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """PGD over a whole split in batches (shared across ranks): (e, per-sample loss)."""

    def batch(start: int) -> tuple[torch.Tensor, torch.Tensor]:
        sl = slice(start, start + batch_size)
        return attack(forward, data.y[sl], data.target[sl], eps_rel, cfg, _seed(seed, start))

    parts = map_batches(data.y.shape[0], batch_size, batch)
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def _norm_stats(e: torch.Tensor) -> dict[str, float]:
    n = e.flatten(1).norm(dim=1)
    return {
        "e_norm_mean": float(n.mean()),
        "e_norm_min": float(n.min()),
        "e_norm_max": float(n.max()),
    }


def choose_sigma(records: list[dict], split: str, eps_rel: float, setting: str) -> float:
    """sigma_g with the highest mean SSIM among Vanilla-PGD records of `split`."""
    rows = [
        r
        for r in records
        if r["split"] == split
        and r["eps_rel"] == eps_rel
        and r["attack"] in ("pgd_f", "none")
        and r["setting"] == setting
    ]
    assert rows, f"no records for split {split} at eps_rel {eps_rel}"
    return max(rows, key=lambda r: (r["ssim"], -r["sigma_g"]))["sigma_g"]


def worst_case(a: dict[str, list[float]], b: dict[str, list[float]]) -> dict[str, list[float]]:
    """Per image, the metrics of whichever attack gave the larger MSE."""
    pick = [ma >= mb for ma, mb in zip(a["mse"], b["mse"], strict=True)]
    return {
        m: [va if p else vb for p, va, vb in zip(pick, a[m], b[m], strict=True)] for m in METRICS
    }


@dataclass
class UnitResult:
    """Records of one (model, eps_rel) unit and example images of its first test crops."""

    records: list[dict]
    samples: dict[str, torch.Tensor]


def evaluate_unit(
    model: torch.nn.Module,
    inputs: dict[str, SplitInputs],
    norm: Normalization,
    eps_rel: float,
    sigmas: Sequence[float],
    k: int,
    attacks: dict[str, AttackConfig],
    runtime: Runtime,
    batch_size: int = 64,
    rs_pgd: bool = False,
    seed: int = 0,
    n_samples: int = 0,
    chunk_size: int = 0,
    antithetic: bool = False,
) -> UnitResult:
    """The protocol of this module's docstring for one model at one eps_rel.

    `attacks` maps setting names to attack configs; the first one chooses sigma_g*. Models that
    are not smoothed are evaluated with `sigmas = [0.0]`.
    """
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    f = runtime.forward(model)
    records: list[dict] = []
    samples: dict[str, torch.Tensor] = {}
    primary = next(iter(attacks))
    settings = dict(attacks) if eps_rel > 0 else {primary: attacks[primary]}
    # Splits in order; the last one is reported, "val" (when present) chooses sigma_g, else
    # the reported split chooses for itself (an oracle choice, flagged by the front ends).
    splits = [s for s, d in inputs.items() if d.y.shape[0]]
    assert splits, "no crops to evaluate"
    select_on = "val" if "val" in splits else splits[-1]
    reported = splits[-1]

    def score(
        data: SplitInputs, e: torch.Tensor, sigmas: Sequence[float], cond: Condition
    ) -> dict[float, dict[str, list[float]]]:
        """Metrics of g(y + e) per sigma; one record each (`cond` with that sigma)."""
        noise_seed = _seed(seed, cond.split, "noise")
        per_sigma = smoothed_metrics(
            f, data, e, sigmas, k, norm, batch_size, noise_seed, chunk_size, antithetic
        )
        for s, per_image in per_sigma.items():
            mc = per_image.pop("mc_share")
            row = dataclasses.replace(cond, sigma_g=s, k=k if s > 0 else 1)
            records.append(
                make_record(row, per_image, mc_share=sum(mc) / len(mc), **_norm_stats(e))
            )
        return per_sigma

    for split in splits:
        data = inputs[split]
        for setting, cfg in settings.items():
            e, _ = batched_attack(f, data, eps_rel, cfg, batch_size, _seed(seed, split, setting))
            kind = "pgd_f" if eps_rel > 0 else "none"
            per_sigma = score(data, e, sigmas, Condition(split, eps_rel, kind, setting, 0.0, k))
            chosen = choose_sigma(records, select_on, eps_rel, setting)
            if split == reported and setting == primary and n_samples:
                samples.update(_samples(f, data, e, chosen, k, norm, n_samples, seed))
            if rs_pgd and eps_rel > 0 and chosen > 0 and split == reported:
                # RS-PGD: the same attack on g at sigma_g* with k_attack draws (EOT), then the
                # per-image worse of the two attacks.
                g = SmoothedEstimator(f, chosen, cfg.k_attack, chunk_size)
                forward = g.with_noise(cfg.noise, _seed(seed, split, setting, "eot"))
                e_g, _ = batched_attack(
                    forward, data, eps_rel, cfg, batch_size, _seed(seed, split, setting, "rs")
                )
                on_g = score(data, e_g, [chosen], Condition(split, eps_rel, "pgd_g", setting, 0, k))
                worst = worst_case(per_sigma[chosen], on_g[chosen])
                cond = Condition(split, eps_rel, "worst", setting, chosen, k)
                records.append(make_record(cond, worst))
    return UnitResult(records, samples)


def _samples(
    f: Forward,
    data: SplitInputs,
    e: torch.Tensor,
    sigma: float,
    k: int,
    norm: Normalization,
    n: int,
    seed: int,
) -> dict[str, torch.Tensor]:
    """Pixel-space images of the first n test crops: input, perturbed input, output, truth."""
    sl = slice(0, n)
    with torch.no_grad():
        y_adv = data.y[sl] + e[sl]
        gen = make_generator(_seed(seed, "samples"), data.y.device)
        out = predict_many(f, y_adv, [sigma], k, gen)[sigma].mean
    return {
        "input": _to_pixels(data.y[sl], norm).cpu(),
        "perturbed": _to_pixels(y_adv, norm).cpu(),
        "output": _to_pixels(out, norm).cpu(),
        "truth": data.x[sl].cpu(),
        "sigma_g": torch.tensor([sigma]),
    }


def evaluate(
    model: torch.nn.Module,
    inputs: dict[str, SplitInputs],
    norm: Normalization,
    eps_rels: Sequence[float],
    sigmas: Sequence[float],
    k: int = 50,
    attack_cfg: AttackConfig | None = None,
    runtime: Runtime | None = None,
    batch_size: int = 64,
    rs_pgd: bool = False,
    seed: int = 0,
) -> list[dict]:
    """Records for every eps_rel (see `evaluate_unit`), with the default attack setting."""
    runtime = runtime or Runtime(torch.device("cpu"), "fp32", False)
    attacks = {"pgd": attack_cfg or AttackConfig()}
    records: list[dict] = []
    for eps_rel in eps_rels:
        records += evaluate_unit(
            model, inputs, norm, eps_rel, sigmas, k, attacks, runtime, batch_size, rs_pgd, seed
        ).records
    return records
