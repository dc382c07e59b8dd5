"""Certification: interval widths by hand, the Lipschitz bound against models whose smoothed
output is known in closed form, coverage, the MSE bound, center smoothing and bad values."""

from __future__ import annotations

import math

import pytest
import torch
from scipy.stats import norm as normal

from smoothrecon.certification.bounds import (
    bernstein_halfwidth,
    center_abstains,
    center_min_samples,
    center_quantile,
    center_radius,
    hoeffding_halfwidth,
    lipschitz_interval,
    mean_interval,
    select_center,
    worst_case_mse,
)
from smoothrecon.certification.certify import CertifySettings, certify
from smoothrecon.models.normalization import Normalization

IDENTITY = Normalization((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
SHAPE = (2, 3, 5, 7)  # odd, non-square
T = 0.3  # threshold of the threshold model, model-input space


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _threshold(z: torch.Tensor) -> torch.Tensor:
    """h(z) = 1[z_i > T] per pixel: G_i(y) = Phi((y_i - T) / sigma) exactly."""
    return (z > T).float()


def _threshold_g(y: torch.Tensor, sigma: float) -> torch.Tensor:
    return torch.from_numpy(normal.cdf((y.double().numpy() - T) / sigma))


def _clamp_linear(z: torch.Tensor) -> torch.Tensor:
    """p(z) = clamp(0.8 z + 0.5, 0, 1) per pixel (the clamp happens in `certify`)."""
    return 0.8 * z + 0.5


def _clamp_linear_g(y: torch.Tensor, sigma: float) -> torch.Tensor:
    """E clamp(X, 0, 1), X ~ N(mu, s^2): s (psi(mu / s) - psi((mu - 1) / s)) with
    psi(a) = a Phi(a) + phi(a), the antiderivative of Phi."""
    mu, s = 0.8 * y.double().numpy() + 0.5, 0.8 * sigma

    def psi(a):
        return a * normal.cdf(a) + normal.pdf(a)

    return torch.from_numpy(s * (psi(mu / s) - psi((mu - 1) / s)))


def _y(shape=SHAPE, seed: int = 0) -> torch.Tensor:
    return T + 0.6 * torch.randn(shape, generator=_gen(seed))


# ---------------------------------------------------------------- interval widths


def test_hoeffding_width_by_hand() -> None:
    # sqrt(ln(2 / 0.01) / (2 * 100)) = sqrt(5.298317 / 200)
    assert hoeffding_halfwidth(100, 0.01) == pytest.approx(0.1627623, rel=1e-6)


def test_bernstein_width_by_hand() -> None:
    # V = 0.04, n = 50, delta = 0.1: sqrt(2 * 0.04 * ln 40 / 50) + 7 ln 40 / (3 * 49)
    #   = sqrt(0.0059022) + 25.822156 / 147 = 0.0768259 + 0.1756609
    w = bernstein_halfwidth(torch.tensor([0.04], dtype=torch.float64), 50, 0.1)
    assert float(w) == pytest.approx(0.2524868, rel=1e-6)


def test_bernstein_tighter_than_hoeffding_only_at_small_variance() -> None:
    n, delta = 10_000, 1e-3
    small = float(bernstein_halfwidth(torch.tensor([1e-3], dtype=torch.float64), n, delta))
    large = float(bernstein_halfwidth(torch.tensor([0.25], dtype=torch.float64), n, delta))
    assert small < 0.25 * hoeffding_halfwidth(n, delta) < large


def test_bernstein_covers_a_bernoulli_mean() -> None:
    # an independent check of the bound by simulation: a rare event, where Bernstein is tight
    p, n, delta, trials = 0.02, 400, 0.2, 4000
    draws = (torch.rand(trials, n, generator=_gen(3)) < p).double()
    w = bernstein_halfwidth(draws.var(dim=1), n, delta)
    covered = ((draws.mean(1) - p).abs() <= w).double().mean()
    assert covered >= 1 - delta
    assert float(w.mean()) < hoeffding_halfwidth(n, delta)


def test_mean_interval_union_bound_and_both() -> None:
    mean = torch.rand(2, 3, 5, 7, generator=_gen(1), dtype=torch.float64)
    var = mean * (1 - mean) * torch.rand(mean.shape, generator=_gen(2), dtype=torch.float64)
    n, alpha, d = 500, 0.05, 105
    lo, hi = mean_interval(mean, var, n, alpha, "hoeffding")
    w = hoeffding_halfwidth(n, alpha / d)
    assert torch.allclose(lo, (mean - w).clamp(0, 1)) and torch.allclose(hi, (mean + w).clamp(0, 1))
    lo, hi = mean_interval(mean, var, n, alpha, "both")
    w2 = torch.minimum(
        torch.full_like(mean, hoeffding_halfwidth(n, alpha / (2 * d))),
        bernstein_halfwidth(var, n, alpha / (2 * d)),
    )
    assert torch.allclose(hi, (mean + w2).clamp(0, 1)) and torch.allclose(
        lo, (mean - w2).clamp(0, 1)
    )


# ---------------------------------------------------------------- the Lipschitz bound


def test_lipschitz_interval_matches_scipy_and_handles_the_edges() -> None:
    lo = torch.tensor([0.0, 1e-12, 0.2, 0.7, 1.0], dtype=torch.float64)
    hi = torch.tensor([0.0, 0.3, 0.6, 1.0 - 1e-12, 1.0], dtype=torch.float64)
    lo_e, hi_e = lipschitz_interval(lo, hi, eps=0.3, sigma=0.5)
    assert not (lo_e.isnan().any() or hi_e.isnan().any())
    ref_lo = normal.cdf(normal.ppf(lo.numpy()) - 0.6)
    ref_hi = normal.sf(normal.isf(hi.numpy()) - 0.6)
    assert torch.allclose(lo_e, torch.from_numpy(ref_lo), atol=1e-12)
    assert torch.allclose(hi_e, torch.from_numpy(ref_hi), atol=1e-12)
    assert lo_e[0] == 0 and hi_e[-1] == 1 and lo_e[-1] == 1 and hi_e[0] == 0
    same = lipschitz_interval(lo, hi, eps=0.0, sigma=0.5)
    assert torch.equal(same[0], lo) and torch.equal(same[1], hi)


def test_lipschitz_interval_is_tight_for_the_threshold_model() -> None:
    # the threshold model attains the lemma's bound: from the exact G(y) the interval's ends are
    # exactly G(y - eps e_i) and G(y + eps e_i)
    y, sigma, eps = _y(), 0.5, 0.2
    g = _threshold_g(y, sigma)
    lo_e, hi_e = lipschitz_interval(g, g, eps, sigma)
    assert torch.allclose(lo_e, _threshold_g(y - eps, sigma), atol=1e-12)
    assert torch.allclose(hi_e, _threshold_g(y + eps, sigma), atol=1e-12)


@pytest.mark.parametrize(
    ("f", "exact"), [(_threshold, _threshold_g), (_clamp_linear, _clamp_linear_g)]
)
def test_certified_interval_contains_exact_g_under_worst_case_e(f, exact) -> None:
    y, sigma, eps_list = _y(), 0.5, (0.0, 0.05, 0.3)
    s = CertifySettings(sigma=sigma, eps=eps_list, n=400, alpha=0.1, method="pixel", chunk_size=97)
    cert = certify(f, y, _threshold(y), IDENTITY, s, _gen(7)).pixel
    assert cert is not None
    assert torch.all(cert.lo <= exact(y, sigma)) and torch.all(exact(y, sigma) <= cert.hi)
    # G_i depends on y_i alone, so e = +-eps along coordinate i is the worst case for pixel i;
    # a random e on the sphere moves every pixel at once
    sphere = torch.randn(y.shape, generator=_gen(8))
    sphere = sphere / sphere.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    for eps in eps_list:
        lo_e, hi_e = lipschitz_interval(cert.lo, cert.hi, eps, sigma)
        for e in (eps, -eps, eps * sphere, -eps * sphere):
            g_e = exact(y + e, sigma)
            assert torch.all(lo_e <= g_e + 1e-12) and torch.all(g_e <= hi_e + 1e-12)
    assert torch.all(cert.lo < cert.hi)  # Monte-Carlo intervals have a width


def test_eps_zero_interval_contains_the_monte_carlo_estimate() -> None:
    y = _y()
    s = CertifySettings(sigma=0.5, eps=(0.0,), n=50, alpha=0.001, method="pixel")
    cert = certify(_clamp_linear, y, torch.rand(y.shape, generator=_gen(1)), IDENTITY, s, _gen(2))
    assert cert.pixel is not None
    lo_e, hi_e = lipschitz_interval(cert.pixel.lo, cert.pixel.hi, 0.0, 0.5)
    assert torch.all(lo_e <= cert.pixel.mean) and torch.all(cert.pixel.mean <= hi_e)


def test_coverage_with_alpha_one_half() -> None:
    # one image = one run; an image is violated if any of its intervals misses the exact G
    sigma, violated, runs = 0.5, 0, 0
    for seed in range(4):
        y = T + 0.5 * torch.randn((100, 3, 1, 1), generator=_gen(seed))
        s = CertifySettings(sigma=sigma, eps=(0.0,), n=8, alpha=0.5, method="pixel")
        cert = certify(_threshold, y, _threshold(y), IDENTITY, s, _gen(100 + seed)).pixel
        assert cert is not None
        g = _threshold_g(y, sigma)
        missed = ((g < cert.lo) | (g > cert.hi)).flatten(1).any(1)
        violated, runs = violated + int(missed.sum()), runs + y.shape[0]
    assert violated / runs < 0.5


def test_certified_mse_bounds_the_mse_at_worst_case_e() -> None:
    y, sigma, eps = _y(), 0.5, 0.25
    x = torch.rand(y.shape, generator=_gen(4))
    s = CertifySettings(sigma=sigma, eps=(0.0, eps), n=300, alpha=0.05, method="pixel")
    cert = certify(_threshold, y, x, IDENTITY, s, _gen(5)).pixel
    assert cert is not None
    # pushing every pixel away from x (G_i increases with y_i), all of eps on one pixel, or a
    # random direction: none may exceed the certified MSE
    away = torch.where(_threshold_g(y, sigma) > x.double(), 1.0, -1.0).float()
    d = math.prod(y.shape[1:])
    e_list = [eps * away / math.sqrt(d), eps * torch.randn(y.shape, generator=_gen(6)) / 9]
    e_list += [eps * away * torch.eye(d)[i].view(y.shape[1:]) for i in range(0, d, 7)]
    for e in e_list:
        e = e * torch.clamp(eps / e.flatten(1).norm(dim=1), max=1).view(-1, 1, 1, 1)
        mse = (_threshold_g(y + e, sigma) - x.double()).pow(2).flatten(1).mean(1)
        assert torch.all(mse <= cert.mse_upper[:, 1])
    assert torch.all(cert.mse_upper[:, 0] <= cert.mse_upper[:, 1])
    assert torch.allclose(cert.psnr_lower, -10 * torch.log10(cert.mse_upper))
    assert torch.equal(cert.mse_upper[:, 0], worst_case_mse(cert.lo, cert.hi, x))


# ---------------------------------------------------------------- center smoothing


def _two_point(z: torch.Tensor) -> torch.Tensor:
    """The all-ones image if z's first value > 0, else the all-zeros image."""
    return (z[:, :1, :1, :1] > 0).float().expand(z.shape)


def test_center_pieces_by_hand() -> None:
    pts = torch.tensor([[0.0], [0.1], [0.2], [5.0], [9.0]])
    assert select_center(pts) == (1, pytest.approx(0.1))  # ceil(5/2) = 3rd smallest distance
    # Delta_1 = sqrt(ln(2 / 0.01) / 2000) = 0.05147: always abstains above Delta = 0.05
    frac = torch.tensor([0.4, 0.6, 1.0])
    assert center_abstains(frac, 1000, 1000, 0.01, 0.05).tolist() == [True, True, True]
    assert center_abstains(frac, 2000, 1000, 0.01, 0.06).tolist() == [True, False, False]
    assert center_min_samples(0.01, 0.05) == 1060  # ln(200) / 0.005 = 1059.66
    # q = Phi(Phi^-1(0.55) + 1) + sqrt(ln(100) / 2000) = Phi(1.12566) + 0.04799
    assert center_quantile(0.5, 0.5, 1000, 0.01, 0.05) == pytest.approx(0.917831, abs=1e-5)
    d = torch.arange(1.0, 11.0).view(1, 10)  # the 0.8667-quantile of 1..10 is the 9th value
    assert center_radius(d, 0.8667).item() == pytest.approx(27.0)
    assert center_radius(d, 1.01).item() == math.inf


def _two_point_center(y: torch.Tensor, eps: tuple[float, ...], seed: int):
    s = CertifySettings(
        sigma=1.0, eps=eps, n=1200, n_select=1200, alpha=0.01, method="center", chunk_size=4096
    )
    cert = certify(_two_point, y, torch.ones(y.shape), IDENTITY, s, _gen(seed)).center
    assert cert is not None
    return cert


def test_center_certificate_holds_at_the_worst_case_e() -> None:
    # P(output = ones) = Phi(y_0) = 0.9 at sigma 1; e = -eps along y_0 is the worst case
    y = torch.zeros(1, 3, 1, 2)
    y[0, 0, 0, 0] = float(normal.ppf(0.9))
    cert = _two_point_center(y, (0.5, 1.4), seed=0)
    assert not cert.abstained.any() and torch.equal(cert.center, torch.ones(y.shape))
    assert cert.radius[0, 0] == 0  # Phi(1.28 - 0.5) = 0.78: still the ones image
    moved = _two_point_center(y - 0.5 * (torch.arange(6) == 0).float().view(y.shape), (0.0,), 1)
    assert not moved.abstained.any() and torch.equal(moved.center, cert.center)
    # at eps = 1.4 the output flips (Phi(1.28 - 1.4) < 1/2): the radius must cover the jump
    flipped = _two_point_center(y - 1.4 * (torch.arange(6) == 0).float().view(y.shape), (0.0,), 2)
    jump = (flipped.center - cert.center).flatten(1).norm(dim=1)
    assert jump.item() == pytest.approx(math.sqrt(6)) or flipped.abstained.all()
    assert cert.radius[0, 1] >= math.sqrt(6)
    assert cert.psnr_lower[0, 0] == pytest.approx(200.0)  # zero error certified at eps = 0.5


def test_center_radius_contains_the_displacement_of_a_linear_model() -> None:
    y = 0.5 + 0.1 * torch.randn((3, 3, 2, 5), generator=_gen(0))
    eps, sigma = 0.05, 0.05
    s = CertifySettings(sigma=sigma, eps=(eps,), n=2000, n_select=2000, alpha=0.01, method="center")
    at_y = certify(lambda z: z, y, y, IDENTITY, s, _gen(1)).center
    e = torch.randn(y.shape, generator=_gen(2))
    e = eps * e / e.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    at_ye = certify(lambda z: z, y + e, y, IDENTITY, s, _gen(3)).center
    assert at_y is not None and at_ye is not None
    ok = ~(at_y.abstained | at_ye.abstained)
    assert ok.any()
    moved = (at_ye.center - at_y.center).flatten(1).norm(dim=1)
    assert torch.all(moved[ok] <= at_y.radius[ok, 0])
    psnr_ye = -10 * torch.log10((at_ye.center - y).pow(2).flatten(1).mean(1))
    assert torch.all(psnr_ye[ok] >= at_y.psnr_lower[ok, 0] - 1e-4)


def test_center_smoothing_abstains_on_a_spread_output() -> None:
    # two equally likely outputs: the ball around either holds about half of the fresh samples,
    # so the test (which needs >= 1/2 - (Delta - Delta_1) = 0.49996 here) fails about half the
    # time; a concentrated output (0.9 on one image) never abstains
    spread = _two_point_center(torch.zeros(24, 3, 1, 2), (0.0,), seed=3)
    assert 0.2 <= spread.abstained.double().mean() <= 0.8
    assert spread.psnr_lower[spread.abstained].isnan().all()
    concentrated = _two_point_center(torch.full((24, 3, 1, 2), 1.2816), (0.0,), seed=4)
    assert not concentrated.abstained.any()


# ---------------------------------------------------------------- bad values


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"sigma": 0.0}, "sigma"),
        ({"sigma": -1.0}, "sigma"),
        ({"n": 1}, "n must"),
        ({"alpha": 0.0}, "alpha"),
        ({"alpha": 1.0}, "alpha"),
        ({"eps": (-0.1,)}, "eps"),
        ({"method": "box"}, "method"),
        ({"bound": "chernoff"}, "bound"),
        ({"n": 500, "method": "both"}, "abstains always"),
    ],
)
def test_bad_values_raise_one_clear_error(kwargs: dict, match: str) -> None:
    args = {"sigma": 0.5, "eps": (0.1,), "n": 2000, "method": "pixel"} | kwargs
    with pytest.raises(ValueError, match=match):
        CertifySettings(**args)


def test_mismatched_images_raise() -> None:
    s = CertifySettings(sigma=0.5, eps=(0.1,), n=10, method="pixel")
    with pytest.raises(ValueError, match="different numbers of images"):
        certify(_threshold, _y(), torch.rand(3, 3, 5, 7), IDENTITY, s)
    with pytest.raises(ValueError, match="shape"):
        certify(_threshold, _y(), torch.rand(2, 3, 4, 7), IDENTITY, s)


def test_identity_worst_case_is_the_exact_trust_region_maximum() -> None:
    """Against a brute-force search over the sphere (d = 3: one pixel per channel), and the
    closed form (||r|| + eps s)^2 when every channel has the same std s."""
    from smoothrecon.certification.bounds import identity_worst_mse

    g = torch.Generator().manual_seed(3)
    std, eps = (0.2, 0.3, 0.25), 0.7
    r = torch.randn(4, 3, 1, 1, generator=g, dtype=torch.float64) * 0.1
    theta = torch.linspace(0, math.pi, 721, dtype=torch.float64)
    phi = torch.linspace(0, 2 * math.pi, 1441, dtype=torch.float64)
    t, p = torch.meshgrid(theta, phi, indexing="ij")
    e = eps * torch.stack([t.sin() * p.cos(), t.sin() * p.sin(), t.cos()], -1).reshape(-1, 3)
    s = torch.tensor(std, dtype=torch.float64)
    brute = ((r.flatten(1)[:, None, :] + s * e[None]) ** 2).sum(-1).max(1).values / 3
    got = identity_worst_mse(r, std, eps)
    torch.testing.assert_close(got, brute, rtol=1e-4, atol=0)
    assert bool((got >= brute).all())  # nothing on the grid beats the exact maximum
    same = torch.randn(2, 3, 4, 5, generator=g, dtype=torch.float64)
    closed = (same.flatten(1).norm(dim=1) + eps * 0.25) ** 2 / same[0].numel()
    torch.testing.assert_close(identity_worst_mse(same, (0.25,) * 3, eps), closed)
    torch.testing.assert_close(identity_worst_mse(same, std, 0.0), same.pow(2).flatten(1).mean(1))
