"""The thesis code's evaluation method, re-implemented as the peer of the benchmark suite.

From ../shared/reference/thesis-code-notes.md: for every eps_rel and every sigma_g the attack
on f is recomputed (10 steps of eps/4, random start in the ball, batch-mean MSE, per-sample
normalized gradient, the last iterate); then k noisy copies of the perturbed input run in a
sequential Python loop, each prediction clamped to [-1.75, 2.2] in the normalized space,
de-normalized and averaged, the mean clamped to [0, 1]; metrics one image at a time. fp32,
NCHW. sigma_g = 0 is one forward of f (the generous reading: no k copies of the same input).
Only here to be timed against the project's path; not part of the library.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from smoothrecon.attacks.pgd import eps_from_rel, project_l2, random_start
from smoothrecon.evaluation.unit import SplitInputs
from smoothrecon.metrics import mse, psnr, ssim
from smoothrecon.models.normalization import Normalization

THESIS_CLAMP = (-1.75, 2.2)  # each prediction, normalized space (the thesis' code)


def thesis_attack(
    model: nn.Module,
    y: torch.Tensor,
    target: torch.Tensor,
    eps: float,
    gen: torch.Generator,
    steps: int = 10,
) -> torch.Tensor:
    """e: (B, C, H, W) normalized space, ||e_i|| <= eps; the last iterate of the thesis' PGD."""
    e = random_start(y, eps, "ball", gen)
    for _ in range(steps):
        e = e.detach().requires_grad_(True)
        loss = (model(y + e) - target).pow(2).mean()
        (grad,) = torch.autograd.grad(loss, e)
        norms = grad.flatten(1).norm(dim=1).clamp_min(1e-30).view(-1, 1, 1, 1)
        e = project_l2(e.detach() + eps / 4 * grad / norms, eps)
    return e.detach()


def thesis_smoothed(
    model: nn.Module,
    y: torch.Tensor,
    sigma: float,
    k: int,
    norm: Normalization,
    gen: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(x_hat, mc_var): x_hat (B, C, H, W) pixel space [0, 1]; mc_var (B,) the mean over pixels
    of the Monte-Carlo variance of x_hat (pixel units), from the loop's own samples."""
    with torch.no_grad():
        if sigma == 0:
            out = norm.denormalize(model(y).clamp(*THESIS_CLAMP))
            return out.clamp(0, 1), torch.zeros(y.shape[0])
        total = torch.zeros_like(y)
        total_sq = torch.zeros_like(y, dtype=torch.float64)
        for _ in range(k):
            noise = torch.randn(y.shape, generator=gen) * sigma
            px = norm.denormalize(model(y + noise).clamp(*THESIS_CLAMP))
            total += px
            total_sq += px.double() ** 2
        mean = total / k
        var = (total_sq / k - mean.double() ** 2).clamp_min(0) * k / (k - 1) / k
        return mean.clamp(0, 1), var.flatten(1).mean(1).float()


def thesis_grid(
    model: nn.Module,
    data: SplitInputs,
    norm: Normalization,
    eps_rels: Sequence[float],
    sigmas: Sequence[float],
    k: int,
    seed: int = 0,
) -> dict[tuple[float, float], dict[str, torch.Tensor]]:
    """{(eps_rel, sigma_g): {"mse", "psnr", "ssim", "mc_var"}: (B,) per image} for the grid."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    gen = torch.Generator().manual_seed(seed)
    out: dict[tuple[float, float], dict[str, torch.Tensor]] = {}
    for eps_rel in eps_rels:
        eps = eps_from_rel(eps_rel, data.y.shape[1:])
        for sigma in sigmas:
            e = thesis_attack(model, data.y, data.target, eps, gen) if eps > 0 else 0 * data.y
            x_hat, mc_var = thesis_smoothed(model, data.y + e, sigma, k, norm, gen)
            per = [
                (
                    mse(x_hat[i : i + 1], data.x[i : i + 1]),
                    psnr(x_hat[i : i + 1], data.x[i : i + 1]),
                )
                for i in range(x_hat.shape[0])
            ]
            ssims = [ssim(x_hat[i : i + 1], data.x[i : i + 1]) for i in range(x_hat.shape[0])]
            out[(eps_rel, sigma)] = {
                "mse": torch.cat([m for m, _ in per]),
                "psnr": torch.cat([p for _, p in per]),
                "ssim": torch.cat(ssims),
                "mc_var": mc_var,
            }
    return out
