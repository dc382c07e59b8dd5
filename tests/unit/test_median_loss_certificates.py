"""Issue 26: the median (percentile) and loss certificates of `certify`, against independent
references: exact order statistics (torch.sort), closed forms of a linear model (Gaussian
quantiles, the trust-region worst case), the KL-Chernoff equation, and coverage."""

from __future__ import annotations

import math
from statistics import NormalDist

import pytest
import torch

from smoothrecon.certification.bounds import identity_worst_mse
from smoothrecon.certification.certify import CertifySettings, certify
from smoothrecon.certification.loss import kl_bernoulli, kl_upper, loss_mse_bound, per_sample_loss
from smoothrecon.certification.percentile import StreamingRanks, rank_of, streamed_bounds
from smoothrecon.defenses.median import percentile_of, percentile_se, predict_percentile_many
from smoothrecon.models.normalization import Normalization

IDENTITY = Normalization((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
PHI = NormalDist()


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------- streamed order statistics


@pytest.mark.parametrize("chunk", [1, 7, 300])
def test_streamed_brackets_hold_the_exact_order_statistics(chunk: int) -> None:
    n, b, d, bins = 300, 2, 5, 16
    values = torch.rand((b, n, d), generator=_gen(0), dtype=torch.float64) ** 3  # skewed
    ranks = StreamingRanks.empty(b, d, bins)
    for i in range(b):
        ranks.set_window(i, values[i, :40])  # a narrow pilot: some ranks fall outside
        for start in range(0, n, chunk):
            rows = values[i, start : start + chunk]
            ranks.add(rows, torch.full((rows.shape[0],), i))
    exact = values.sort(dim=1).values
    for rank in (1, 3, 150, 298, 300):
        lo, hi = ranks.bracket(rank, n)
        assert torch.all(lo <= exact[:, rank - 1]) and torch.all(exact[:, rank - 1] <= hi)
        inside = (exact[:, rank - 1] >= ranks.low) & (exact[:, rank - 1] <= ranks.low + ranks.width)
        width = ranks.width / bins
        assert torch.all((hi - lo)[inside] <= width[inside] + 1e-9)  # one bin inside the window


def test_streamed_bounds_equal_sorting_up_to_one_bin() -> None:
    n, d = 1000, 4
    values = torch.randn((n, d), generator=_gen(1), dtype=torch.float64)
    ranks = StreamingRanks.empty(1, d, 2048)
    ranks.set_window(0, values[:256])
    ranks.add(values, torch.zeros(n, dtype=torch.long))
    lo, hi = streamed_bounds(ranks, n, (0.3, 0.7), 1e-3, (-math.inf, math.inf))
    from smoothrecon.certification.percentile import lower_rank, upper_rank

    ordered = values.sort(dim=0).values
    k, u = lower_rank(n, 0.3, 1e-3), upper_rank(n, 0.7, 1e-3)
    step = ranks.width[0] / 2048
    assert torch.all(lo[0] <= ordered[k - 1]) and torch.all(ordered[k - 1] - lo[0] <= step + 1e-9)
    assert torch.all(hi[0] >= ordered[u - 1]) and torch.all(hi[0] - ordered[u - 1] <= step + 1e-9)
    assert rank_of(10, 0.5) == 5 and rank_of(11, 0.5) == 6 and rank_of(3, 0.01) == 1


# ---------------------------------------------------------------- the median certificate


def _linear(z: torch.Tensor) -> torch.Tensor:
    return z


def test_median_certificate_of_a_linear_model_holds_its_exact_worst_case() -> None:
    """f = identity (outputs inside [0, 1]): the p-percentile at y + e is y + e + sigma
    Phi^-1(p) per value, so the exact worst MSE over the ball is the trust-region maximum
    `identity_worst_mse` of r = y + sigma Phi^-1(p) - x. The certificate is above it; being
    per value, it is close to the worst case of each value on its own, mean_i (|r_i| + eps)^2
    (every value moved by eps: the certificate does not use that the ball is one l2 ball)."""
    sigma, p, n = 0.02, 0.5, 4000
    y = 0.3 + 0.4 * torch.rand((2, 3, 4, 4), generator=_gen(2))
    x = y + 0.05 * torch.randn(y.shape, generator=_gen(3))
    eps_list = (0.0, 0.01, 0.03)
    s = CertifySettings(sigma=sigma, eps=eps_list, n=n, alpha=0.01, method="median", chunk_size=999)
    cert = certify(_linear, y, x, IDENTITY, s, _gen(4)).median
    assert cert is not None
    r = y.double() + sigma * PHI.inv_cdf(p) - x.double()
    for j, eps in enumerate(eps_list):
        exact = identity_worst_mse(r, (1.0, 1.0, 1.0), eps)
        assert torch.all(exact <= cert.mse_upper[:, j])
        per_value = (r.abs() + eps).pow(2).flatten(1).mean(1)
        assert torch.all(cert.mse_upper[:, j] <= per_value * 1.15)  # tight, not vacuous
    assert torch.allclose(cert.median, y.double(), atol=3 * sigma / math.sqrt(n) * 4)
    assert torch.all(cert.lo <= y.double()) and torch.all(y.double() <= cert.hi)


def _blocky(z: torch.Tensor) -> torch.Tensor:
    """A nonlinear, non-smooth model with [0, 1] outputs: a per-value threshold mixed with a
    neighbour."""
    return torch.sigmoid(8 * (z + 0.5 * z.roll(1, dims=-1))).clamp(0, 1)


def test_no_perturbation_we_try_breaks_the_median_certificate() -> None:
    """The median estimate at y + e (from n fresh samples) for e = the gradient-sign-free
    directions we can try (coordinate pushes, random sphere points, the attack direction of
    the mean) never has an MSE above the certificate, up to its own Monte-Carlo interval."""
    sigma, eps, n = 0.3, 0.2, 2000
    y = torch.randn((2, 3, 4, 4), generator=_gen(5)) * 0.5
    x = torch.rand(y.shape, generator=_gen(6))
    s = CertifySettings(sigma=sigma, eps=(eps,), n=n, alpha=0.01, method="median")
    cert = certify(_blocky, y, x, IDENTITY, s, _gen(7)).median
    assert cert is not None
    at = CertifySettings(sigma=sigma, eps=(0.0,), n=n, alpha=0.01, method="median")
    sphere = torch.randn((6, *y.shape), generator=_gen(8))
    towards = torch.where(_blocky(y) > x, 1.0, -1.0)  # push every output away from x
    for e in [*sphere, towards, -towards]:
        e = eps * e / e.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
        med = certify(_blocky, y + e, x, IDENTITY, at, _gen(9)).median
        assert med is not None
        gap = (med.lo - x.double()).clamp_min(0) + (x.double() - med.hi).clamp_min(0)
        assert torch.all(gap.pow(2).flatten(1).mean(1) <= cert.mse_upper[:, 0])


def test_percentile_estimator_against_numpy_quantiles_and_its_gradient() -> None:
    import numpy as np

    samples = torch.randn((3, 9, 2, 2), generator=_gen(10), dtype=torch.float64)
    for p in (0.5, 0.3, 0.9):
        ref = np.quantile(samples.numpy(), p, axis=1)
        assert np.allclose(percentile_of(samples, p).numpy(), ref)
    leaf = samples.clone().requires_grad_(True)
    percentile_of(leaf, 0.5).sum().backward()
    assert leaf.grad is not None and torch.all(leaf.grad.sum(1) == 1)  # the median's one sample
    se = percentile_se(torch.randn((1, 4000, 1), generator=_gen(11), dtype=torch.float64), 0.5)
    assert float(se) == pytest.approx(math.sqrt(math.pi / 2) / math.sqrt(4000), rel=0.05)
    y = torch.zeros((2, 3, 2, 2))
    out = predict_percentile_many(_linear, y, [0.0, 0.5], 64, 0.5, _gen(12), antithetic=True)
    assert torch.equal(out[0.0].mean, y)
    assert float(out[0.5].mean.abs().max()) < 0.25  # antithetic pairs: symmetric about 0


# ---------------------------------------------------------------- the loss certificate


def test_kl_upper_solves_its_equation_and_sits_between_mean_and_hoeffding() -> None:
    mean = torch.tensor([0.0, 0.01, 0.2, 0.5, 0.99])
    n, delta = 500, 1e-3
    ucb = kl_upper(mean, n, delta)
    budget = math.log(1 / delta) / n
    inner = ucb < 1 - 1e-9
    kl = kl_bernoulli(mean.double(), ucb.clamp(max=1 - 1e-12))
    assert torch.allclose(kl[inner], torch.full_like(kl[inner], budget), rtol=1e-6)
    hoeffding = mean.double() + math.sqrt(budget / 2)  # Pinsker: KL >= 2 (p - q)^2
    assert torch.all(ucb >= mean.double()) and torch.all(ucb <= hoeffding.clamp(max=1) + 1e-12)
    assert float(ucb[0]) == pytest.approx(1 - delta ** (1 / n), rel=1e-6)  # mean 0: closed form


def test_kl_upper_covers_bernoulli_means() -> None:
    gen, trials, n, q, delta = _gen(13), 4000, 50, 0.1, 0.05
    means = (torch.rand((trials, n), generator=gen) < q).double().mean(1)
    fails = float((kl_upper(means, n, delta) < q).double().mean())
    assert fails <= delta


def test_loss_certificate_of_a_linear_model_bounds_the_worst_mse_of_g() -> None:
    """f = identity with outputs inside [0, 1]: G(y + e) = y + e, so its exact worst MSE is the
    trust-region maximum of r = y - x; the loss certificate is above it."""
    sigma, n = 0.02, 2000
    y = 0.3 + 0.4 * torch.rand((2, 3, 4, 4), generator=_gen(14))
    x = y + 0.05 * torch.randn(y.shape, generator=_gen(15))
    s = CertifySettings(sigma=sigma, eps=(0.0, 0.02), n=n, alpha=0.01, method="loss")
    cert = certify(_linear, y, x, IDENTITY, s, _gen(16)).loss
    assert cert is not None
    for j, eps in enumerate((0.0, 0.02)):
        exact = identity_worst_mse(y.double() - x.double(), (1.0, 1.0, 1.0), eps)
        assert torch.all(exact <= cert.mse_upper[:, j])
    # E L = (MSE of G + per-value noise variance) / T: the estimate knows the variance too
    scale = torch.maximum(x.double(), 1 - x.double()).pow(2).flatten(1).mean(1)
    expected = ((y.double() - x.double()).pow(2).flatten(1).mean(1) + sigma**2) / scale
    assert torch.allclose(cert.h_mean, expected, rtol=0.05)
    assert torch.all(cert.h_ucb >= cert.h_mean)
    assert torch.allclose(loss_mse_bound(cert.h_ucb, scale, 0.0, sigma), cert.mse_upper[:, 0])


def test_per_sample_loss_is_scaled_into_the_unit_interval() -> None:
    x = torch.tensor([[[[0.2, 0.9]]]])
    worst = torch.tensor([[[[1.0, 0.0]]]])  # the farthest [0, 1] image
    assert per_sample_loss(worst, x).item() == pytest.approx(1.0)
    assert per_sample_loss(x, x).item() == 0.0
