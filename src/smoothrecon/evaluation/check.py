"""Is an attack evidence? The reference every attack must beat, and the flag when it does not.

A robustness number is only as good as the attack behind it. An attack whose perturbations
hurt no more than random noise of the same norm, or whose loss gradient is zero or not finite
(a model that rounds, detaches or runs without autograd: "obfuscated gradients", Athalye,
Carlini & Wagner 2018), shows nothing about robustness. Per attacked split:

    gap_i = PSNR_i(random noise of ||e_i||) - PSNR_i(attack e_i)     (dB, per crop)

The attack is flagged ("failed") when the 95% CI of the mean gap does not lie above 0, or when
the first gradient was zero or not finite on more than GRAD_BAD_LIMIT of the crops. A flagged
attack is backed by a gradient-free one (`gradient_free.spsa_l2`); the evaluation reports the
per-crop worse of the two and keeps the flag.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from smoothrecon.metrics import mean_and_ci

GRAD_BAD_LIMIT = 0.1  # share of crops with a zero or non-finite first gradient that flags
FAILED_TEXT = (
    "the attack did not beat random noise: gradients may be masked; this robustness is not evidence"
)


@dataclass(frozen=True)
class AttackCheck:
    """The random-noise reference of one attack on one split, as record fields.

    random_psnr, random_ssim: means under random noise of the attack's per-crop norm;
    random_gap, random_gap_ci95: mean per-crop PSNR(random) - PSNR(attack) in dB and its 95%
    CI half-width; grad_bad_share: share of crops whose first gradient was zero or not
    finite; attack_failed: the flag; gradient_free: the gradient-free attack ran and the
    per-crop worse of it and the attack is what the record's metrics show."""

    random_psnr: float
    random_ssim: float
    random_gap: float
    random_gap_ci95: float
    grad_bad_share: float
    attack_failed: bool
    gradient_free: bool = False

    def fields(self) -> dict[str, float | bool]:
        return asdict(self)


def judge(
    attacked: dict[str, list[float]], random: dict[str, list[float]], grad_bad: torch.Tensor
) -> AttackCheck:
    """The check of an attack from per-crop metrics under it (`attacked`) and under random
    noise of the same norm (`random`), both {"psnr": [...], "ssim": [...]} over the same
    crops; grad_bad: (B,) bool, the first gradient was zero or not finite."""
    gaps = [r - a for r, a in zip(random["psnr"], attacked["psnr"], strict=True)]
    gap, _, half = mean_and_ci(gaps)
    share = float(grad_bad.float().mean()) if grad_bad.numel() else 0.0
    beats_noise = gap - half > 0 if len(gaps) > 1 else gap > 0
    return AttackCheck(
        random_psnr=mean_and_ci(random["psnr"])[0],
        random_ssim=mean_and_ci(random["ssim"])[0],
        random_gap=gap,
        random_gap_ci95=half,
        grad_bad_share=share,
        attack_failed=not beats_noise or share > GRAD_BAD_LIMIT,
    )


def worse_per_crop(a_mse: list[float], b_mse: list[float]) -> torch.Tensor:
    """(B,) bool: True where the second attack left the larger MSE (the per-crop worse)."""
    return torch.tensor([mb > ma for ma, mb in zip(a_mse, b_mse, strict=True)])


def worst_per_metric(
    scores: list[dict[str, list[float]]],
) -> tuple[dict[str, list[float]], dict[str, torch.Tensor]]:
    """Per crop and metric the worst of several attacks' per-image metrics (each a dict with
    at least "mse" and "ssim", over the same crops): SSIM from the attack of the lowest SSIM,
    every other field (MSE, PSNR and the smoothing's own) from the attack of the largest MSE;
    ties go to the earlier attack. Returns (the combined metrics, {"mse": (B,), "ssim": (B,)}
    the index of the attack each came from)."""
    mse = torch.tensor([sc["mse"] for sc in scores], dtype=torch.float64)
    ssim = torch.tensor([sc["ssim"] for sc in scores], dtype=torch.float64)
    # argmax/argmin return the first of equal values: ties go to the earlier attack
    picks = {"mse": _first_arg(mse, largest=True), "ssim": _first_arg(ssim, largest=False)}
    out = {}
    for key in scores[0]:
        idx = picks["ssim" if key == "ssim" else "mse"].tolist()
        out[key] = [scores[i][key][j] for j, i in enumerate(idx)]
    return out, picks


def _first_arg(values: torch.Tensor, largest: bool) -> torch.Tensor:
    """(B,) index along dim 0 of values (A, B) of the first largest (or smallest) entry."""
    best = values.max(0).values if largest else values.min(0).values
    hit = values == best
    return hit.float().argmax(0)  # the first True per column


def record_fields(check: AttackCheck | None, scored_here: bool) -> dict[str, float | bool]:
    """The check's fields for one record: all of them where the random reference was scored
    (`scored_here`), else the flag alone (e.g. the attack on f scored through g)."""
    if check is None:
        return {}
    d = check.fields()
    if scored_here:
        return d
    return {k: v for k, v in d.items() if not k.startswith("random_")}
