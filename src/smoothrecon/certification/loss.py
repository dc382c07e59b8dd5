"""The loss certificate (`certify --method loss`): smoothing the per-image loss itself.

For one image with truth x (pixel space) and p(z) = clamp(denormalize(f(z)), 0, 1):
    L(z) = MSE(p(z), x) / T(x),   T(x) = mean_i max(x_i, 1 - x_i)^2  (`bounds.trivial_mse`),
so L maps into [0, 1] (no [0, 1] image is farther from x than T). Its Gaussian smoothing
H(y) = E L(y + delta), delta ~ N(0, sigma^2 I), is a [0, 1]-valued smoothed function, so the
Lipschitz lemma (Salman et al. 2019, Lemma 2) gives for every ||e||_2 <= eps
    H(y + e) <= Phi(Phi^-1(H(y)) + eps / sigma)
with one scalar: no union bound over pixels. By Jensen (the MSE is convex), the mean-smoothed
output G(y + e) = E p(y + e + delta) has
    MSE(G(y + e), x) <= E MSE(p(y + e + delta), x) = T(x) H(y + e).
H(y) is estimated from n samples; an upper confidence bound H_ucb at level alpha (the
KL-Chernoff bound below) makes the certified MSE T(x) Phi(Phi^-1(H_ucb) + eps / sigma) hold
with probability >= 1 - alpha. It is loose wherever the noisy samples' own MSE is far above the
smoothed output's (the variance of p under the noise counts in full).
"""

from __future__ import annotations

import math

import torch


def kl_bernoulli(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """KL(Ber(p) || Ber(q)) elementwise, float64, with 0 log 0 = 0; q in (0, 1)."""
    p, q = p.double(), q.double()
    a = torch.where(p > 0, p * (p / q).log(), torch.zeros_like(p))
    b = torch.where(p < 1, (1 - p) * ((1 - p) / (1 - q)).log(), torch.zeros_like(p))
    return a + b


def kl_upper(mean: torch.Tensor, n: int, delta: float, iters: int = 60) -> torch.Tensor:
    """The KL-Chernoff upper confidence bound of the mean of [0, 1] variables (any law):
    the largest q >= mean with n KL(mean || q) <= ln(1 / delta), so that P(E X > q) <= delta
    (Chernoff-Hoeffding in its relative-entropy form). mean: (...) sample means of n draws.
    Bisection in float64."""
    if n < 1 or not 0 < delta < 1:
        raise ValueError(f"need n >= 1 and 0 < delta < 1, got {n} and {delta}")
    m = mean.double().clamp(0, 1)
    budget = math.log(1 / delta) / n
    lo, hi = m.clone(), torch.ones_like(m)
    for _ in range(iters):
        mid = (lo + hi) / 2
        ok = kl_bernoulli(m, mid.clamp(max=1 - 1e-15)) <= budget
        lo, hi = torch.where(ok, mid, lo), torch.where(ok, hi, mid)
    return hi


def loss_mse_bound(
    h_ucb: torch.Tensor, scale: torch.Tensor, eps: float, sigma: float
) -> torch.Tensor:
    """Certified MSE of G(y + e) for ||e|| <= eps: T Phi(Phi^-1(H_ucb) + eps / sigma).

    h_ucb: (B,) upper bounds of H(y) in [0, 1]; scale: (B,) T(x). Returns (B,) float64."""
    h = h_ucb.double().clamp(0, 1)
    # 1 - Phi(Phi^-1(1 - h) - eps / sigma): accurate near 1, and h = 1 stays 1
    shifted = 1.0 - torch.special.ndtr(torch.special.ndtri(1.0 - h) - eps / sigma)
    return scale.double() * shifted


def per_sample_loss(p: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """L = MSE(p, x) / T(x) per row: p, x (N, C, H, W) pixel space -> (N,) float64 in [0, 1]."""
    x64 = x.double()
    scale = torch.maximum(x64, 1 - x64).pow(2).flatten(1).mean(1)
    return ((p.double() - x64).pow(2).flatten(1).mean(1) / scale).clamp(0, 1)
