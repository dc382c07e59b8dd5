"""Threat models (issue 17): budgets and lifts in both spaces, PGD against the exact worst case
of the bilinear baseline (a trust-region problem), the range projection, and adversarial
training in the measurement space."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from scipy.optimize import brentq

from smoothrecon.attacks.pgd import PGD
from smoothrecon.attacks.threat import ThreatModel, pgd_in_space
from smoothrecon.config import Config
from smoothrecon.defenses.projection import ProjectedModel, RangeProjection, conjugate_gradient
from smoothrecon.errors import UserError
from smoothrecon.experiments import training
from smoothrecon.models.normalization import Normalization
from smoothrecon.operators import (
    CompressedSensing,
    Deblurring,
    Denoising,
    Inpainting,
    Operator,
    SuperResolution,
)

NORM = Normalization((0.45, 0.42, 0.38), (0.21, 0.26, 0.31))


def _image(h: int, w: int, c: int = 3, seed: int = 0) -> torch.Tensor:
    """A smooth pixel-space image (1, c, h, w) in [0, 1] with a little texture."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    base = torch.stack([torch.sin(6 * xx + 3 * yy + k) for k in range(c)])
    return (0.5 + 0.3 * base + 0.05 * torch.randn(c, h, w, generator=g)).clamp(0, 1)[None]


# --- budgets and lifts -------------------------------------------------------------------------


def test_measurement_attack_with_early_stopping_keeps_each_crop_with_its_own_input() -> None:
    """Crops stop at different steps; the others go on with their own y (issue 16 x 17)."""
    op = SuperResolution(2)
    threat = ThreatModel.build("measurement", op, NORM)
    x = torch.cat([_image(14, 10, seed=s) for s in range(4)])
    y, target = NORM.normalize(op(x)), NORM.normalize(x)
    target[0] += 1000.0  # a huge loss: relative progress is tiny, crop 0 stops first
    settings = PGD(steps=30, step_factor=0.25, restarts=1, patience=3, rel_tol=1e-3)
    seen: list[torch.Tensor] = []

    def f(z: torch.Tensor) -> torch.Tensor:
        seen.append(z.detach())
        return 1.5 * z

    attack = pgd_in_space(f, y, target, threat, 0.05, settings, torch.Generator().manual_seed(0))
    assert attack.run is not None and attack.run.steps_used is not None
    used = attack.run.steps_used.tolist()
    assert used[0] < min(used[1:]), used  # crop 0 stopped early, the others went on
    assert min(z.shape[0] for z in seen) < 4  # so some steps ran on a subset of the crops
    # and the loss reported is that of each crop's own y with its own perturbation
    expected = (1.5 * (y + attack.e) - target).pow(2).flatten(1).sum(1)
    torch.testing.assert_close(attack.loss, expected, rtol=1e-4, atol=1e-3)


def test_measurement_attack_norm_is_eps_on_the_low_resolution_tensor() -> None:
    op = SuperResolution(2)
    threat = ThreatModel.build("measurement", op, NORM)
    x = torch.cat([_image(14, 10, seed=s) for s in range(3)])  # odd, non-square LR: 7 x 5
    y, target = NORM.normalize(op(x)), NORM.normalize(x)
    settings = PGD(steps=20, step_factor=0.5, restarts=1, keep="last")
    attack = pgd_in_space(lambda z: 1.5 * z, y, target, threat, 0.05, settings)
    assert attack.space == "measurement"
    assert attack.e_space.shape == op.A(x).shape == (3, 3, 7, 5)
    eps = 0.05 * math.sqrt(3 * 7 * 5)
    assert attack.eps == pytest.approx(eps)
    norms = attack.e_space.flatten(1).norm(dim=1)
    torch.testing.assert_close(norms, torch.full((3,), eps), rtol=1e-5, atol=0)
    torch.testing.assert_close(attack.norm, norms)
    # the network sees the bilinear up-sampling of the perturbed low-resolution image
    torch.testing.assert_close(attack.e, op.A_dagger(attack.e_space), rtol=1e-5, atol=1e-6)
    # and the input-space budget is larger by sqrt(4): the same eps_rel, 4x the values
    assert ThreatModel("input").eps(0.05, y.shape[1:]) == pytest.approx(2 * eps)


def test_budgets_at_160_pixels() -> None:
    shape = (3, 160, 160)
    assert ThreatModel("input").eps(1.0, shape) == pytest.approx(math.sqrt(76800))
    for factor, d in ((2, 19200), (4, 4800)):
        threat = ThreatModel.build("measurement", SuperResolution(factor), NORM)
        assert threat.count(shape) == d
        assert threat.eps(0.02, shape) == pytest.approx(0.02 * math.sqrt(d))


@pytest.mark.parametrize("factor", [2, 4])
def test_measurement_ball_lies_inside_the_input_ball_of_the_same_eps_rel(factor: int) -> None:
    """||U e|| <= factor ||e|| (equality for constants), and eps_input = factor eps_measurement:
    at one eps_rel every measurement attack is an input attack (certificates carry over)."""
    threat = ThreatModel.build("measurement", SuperResolution(factor), NORM)
    shape = (3, 6 * factor, 5 * factor)
    g = torch.Generator().manual_seed(0)
    e = torch.randn(64, 3, 6, 5, generator=g, dtype=torch.float64)
    e[0] = 1.0
    gain = threat.lift(e).flatten(1).norm(dim=1) / e.flatten(1).norm(dim=1)
    assert float(gain.max()) <= factor * (1 + 1e-12)
    assert float(gain[0]) == pytest.approx(factor)
    eps_input = ThreatModel("input").eps(0.05, shape)
    assert eps_input == pytest.approx(factor * threat.eps(0.05, shape))


class _Affine(Operator):
    """A toy operator with an affine back-projection A_dagger(v) = 2 v + 0.3."""

    name = "affine"

    def A(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def A_adjoint(self, v: torch.Tensor) -> torch.Tensor:
        return v

    def A_dagger(self, v: torch.Tensor) -> torch.Tensor:
        return 2 * v + 0.3

    def describe(self) -> dict[str, Any]:
        return {"name": self.name}


OPERATORS = [
    SuperResolution(2),
    SuperResolution(4),
    Denoising(),
    Deblurring(),
    Inpainting(),
    CompressedSensing(),
    CompressedSensing(grayscale=True),
    _Affine(),
]


@pytest.mark.parametrize("op", OPERATORS, ids=lambda o: str(o.describe()))
def test_lift_is_the_change_of_the_normalized_back_projection(op: Operator) -> None:
    """lift(e) = N(A_dagger(m + e s)) - N(A_dagger(m)) for any measurement m, linear in e;
    the budget counts exactly the values the attacker can change."""
    pixel_input = Normalization((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))  # a pixel-space model
    x = _image(16, 12).double()
    g = torch.Generator().manual_seed(3)
    m = op.A(x) + 0.1 * torch.randn(op.A(x).shape, generator=g, dtype=torch.float64)
    for input_norm in (None, pixel_input):
        threat = ThreatModel.build("measurement", op, NORM, input_norm)
        out_norm = input_norm or NORM
        e1, e2 = (torch.randn(m.shape, generator=g, dtype=torch.float64) for _ in range(2))
        s = torch.tensor(NORM.std, dtype=torch.float64)
        s = s.view(1, 3, *[1] * (m.dim() - 2)) if m.shape[1] == 3 else s.mean()
        direct = out_norm.normalize(op.A_dagger(m + op.restrict_noise(e1) * s))
        expected = direct - out_norm.normalize(op.A_dagger(m))
        torch.testing.assert_close(threat.lift(e1), expected)
        torch.testing.assert_close(
            threat.lift(2 * e1 - 3 * e2), 2 * threat.lift(e1) - 3 * threat.lift(e2)
        )
    assert threat.perturbed_shape(x.shape[1:]) == tuple(m.shape[1:])
    measured = int((op.restrict_noise(torch.ones_like(m)) != 0).sum())
    assert threat.count(x.shape[1:]) == measured


def test_quantized_super_resolution_is_refused_in_measurement_space(
    make_config: Callable[..., Config],
) -> None:
    with pytest.raises(ValueError, match="quantize"):
        ThreatModel.build("measurement", SuperResolution(2, quantize=True), NORM)
    with pytest.raises(UserError, match="quantize"):
        make_config("attack.space=measurement", "operator.quantize=true")
    with pytest.raises(UserError, match=r"attack\.space"):
        make_config("attack.space=low_resolution")
    assert make_config("attack.space=measurement").attack.space == "measurement"
    assert make_config("train.attack_space=measurement").train.attack_space == "measurement"


def test_input_space_is_the_thesis_attack() -> None:
    """In input space pgd_in_space is pgd_l2_run on y itself: the same numbers."""
    from smoothrecon.attacks.pgd import PGD, eps_from_rel, pgd_l2

    g = torch.Generator().manual_seed(0)
    y, x = torch.randn(2, 3, 6, 10, generator=g), torch.randn(2, 3, 6, 10, generator=g)

    def f(z: torch.Tensor) -> torch.Tensor:
        return torch.tanh(z) * 2

    eps = eps_from_rel(0.1, y.shape[1:])
    old = pgd_l2(f, y, x, eps, PGD(7, 0.5), torch.Generator().manual_seed(5))
    settings = PGD(steps=7, step_factor=0.5, restarts=1)
    new = pgd_in_space(
        f, y, x, ThreatModel("input"), 0.1, settings, torch.Generator().manual_seed(5)
    )
    assert torch.equal(new.e, old) and torch.equal(new.e_space, old)


# --- the exact worst case of the bilinear baseline ---------------------------------------------


def trust_region_max(m: np.ndarray, b: np.ndarray, eps: float) -> np.ndarray:
    """argmax_e e^T M e + 2 b^T e over ||e|| <= eps, M symmetric positive semi-definite.

    A convex function is maximized on the sphere; the global maximizer is e = (lam I - M)^-1 b
    with lam >= mu_max (the largest eigenvalue) and ||e|| = eps: the secular equation
    sum_i beta_i^2 / (lam - mu_i)^2 = eps^2, beta = Q^T b, has one root above mu_max. Hard
    case: b has no component on the top eigenspace and the pseudo-inverse solution at
    lam = mu_max is shorter than eps; then lam = mu_max and the top eigenvector fills the norm.
    """
    mu, q = np.linalg.eigh(m)
    beta = q.T @ b
    top = mu >= mu[-1] - 1e-10 * max(1.0, abs(mu[-1]))
    if np.linalg.norm(beta[top]) <= 1e-12 * max(np.linalg.norm(b), 1e-300):
        rest = beta[~top] / (mu[-1] - mu[~top])
        if rest @ rest <= eps**2:
            z = np.zeros_like(beta)
            z[~top] = rest
            z[np.flatnonzero(top)[0]] = math.sqrt(eps**2 - rest @ rest)
            return q @ z

    def secular(lam: float) -> float:
        return float(np.sum(beta**2 / (lam - mu) ** 2) - eps**2)

    lo = mu[-1] + 1e-14 * max(1.0, abs(mu[-1]))
    hi = mu[-1] + np.linalg.norm(b) / eps  # there secular <= 0
    lam = brentq(secular, lo, hi, xtol=1e-15, rtol=4 * np.finfo(float).eps)
    return q @ (beta / (lam - mu))


@pytest.mark.parametrize(
    ("m", "b"),
    [
        (np.diag([4.0, 1.0]), np.array([0.5, 0.3])),
        (np.diag([4.0, 1.0]), np.array([0.0, 0.3])),  # the hard case
        (np.array([[2.0, 1.0], [1.0, 2.0]]), np.array([1.0, -1.0])),  # hard case, rotated
    ],
)
def test_trust_region_solver_against_a_dense_search_on_the_circle(
    m: np.ndarray, b: np.ndarray
) -> None:
    eps = 1.0
    e = trust_region_max(m, b, eps)
    theta = np.linspace(0, 2 * np.pi, 200_001)
    circle = eps * np.stack([np.cos(theta), np.sin(theta)])
    values = np.einsum("in,ij,jn->n", circle, m, circle) + 2 * b @ circle
    assert np.linalg.norm(e) == pytest.approx(eps)
    assert e @ m @ e + 2 * b @ e == pytest.approx(values.max(), rel=1e-8)


def _bilinear_problem(eps_rel: float, size: int = 8, seed: int = 0) -> tuple[Any, ...]:
    """1 x s x s image, 1 x s/2 x s/2 measurement (s = `size`): y, target, the threat,
    U (s^2 x s^2/4), r."""
    norm = Normalization((0.45,), (0.25,))  # type: ignore[arg-type]
    op = SuperResolution(2)
    threat = ThreatModel.build("measurement", op, norm)
    x = _image(size, size, c=1, seed=seed).double()
    y, target = norm.normalize(op(x)), norm.normalize(x)
    m, h = (size // 2) ** 2, size // 2
    u = threat.lift(torch.eye(m, dtype=torch.float64).view(m, 1, h, h)).view(m, size**2).T
    r = (y - target).flatten()
    return y, target, threat, u.numpy(), r.numpy()


@pytest.mark.parametrize(("eps_rel", "restarts"), [(0.02, 1), (0.05, 1), (0.2, 1), (1.0, 3)])
def test_measurement_pgd_reaches_the_exact_worst_case_of_the_bilinear_baseline(
    eps_rel: float, restarts: int
) -> None:
    """f = identity on y, so the error is r + U e_m: max ||r + U e||^2 over ||e|| <= eps is a
    trust-region problem. The project's PGD (100 steps of eps/2) reaches it within 1%; at
    eps_rel 1 (eps > ||r||) one start can stop at the local non-global maximum, 3 do not."""
    y, target, threat, u, r = _bilinear_problem(eps_rel)
    eps = eps_rel * 4.0  # sqrt(16 measured values)
    e = trust_region_max(u.T @ u, u.T @ r, eps)
    best = float(np.sum((r + u @ e) ** 2))
    attack = pgd_in_space(
        lambda z: z,
        y,
        target,
        threat,
        eps_rel,
        PGD(steps=100, step_factor=0.5, restarts=restarts),
        torch.Generator().manual_seed(1),
    )
    assert float(attack.norm[0]) <= eps * (1 + 1e-9)
    assert float(attack.loss[0]) == pytest.approx(best, rel=0.01)
    assert float(attack.loss[0]) <= best * (1 + 1e-6)  # nothing beats the exact maximum


@pytest.mark.parametrize("eps_rel", [0.02, 0.2, 1.0])
def test_input_pgd_reaches_the_closed_form_of_the_bilinear_baseline(eps_rel: float) -> None:
    """max ||r + e||^2 over ||e|| <= eps is (||r|| + eps)^2, at e = eps r / ||r||."""
    y, target, _, u, r = _bilinear_problem(eps_rel)
    eps = eps_rel * 8.0  # sqrt(64 input values)
    attack = pgd_in_space(
        lambda z: z,
        y,
        target,
        ThreatModel("input"),
        eps_rel,
        PGD(steps=100, step_factor=0.5, restarts=1),
        torch.Generator().manual_seed(1),
    )
    best = (np.linalg.norm(r) + eps) ** 2
    assert float(attack.loss[0]) == pytest.approx(best, rel=0.01)
    # at the same eps_rel the input threat model is the stronger one here
    measurement = trust_region_max(u.T @ u, u.T @ r, eps / 2)
    assert best > np.sum((r + u @ measurement) ** 2)


# --- the range projection ----------------------------------------------------------------------


def _dense_projector(op: SuperResolution, h: int, w: int) -> torch.Tensor:
    """U U^+ from U's explicit matrix (one channel), by an SVD-based pseudo-inverse."""
    k = (h // op.factor) * (w // op.factor)
    eye = torch.eye(k, dtype=torch.float64).view(k, 1, h // op.factor, w // op.factor)
    u = op.A_dagger(eye).view(k, h * w).T
    return u @ torch.linalg.pinv(u)


@pytest.mark.parametrize("factor", [2, 4])
@pytest.mark.parametrize("method", ["auto", "cg"])
def test_range_projection_is_the_orthogonal_projection_onto_range_u(
    factor: int, method: str
) -> None:
    op = SuperResolution(factor)
    proj = RangeProjection(op, NORM, tol=1e-12, max_iter=500, method=method)  # type: ignore[arg-type]
    g = torch.Generator().manual_seed(0)
    h, w = 4 * factor, 3 * factor  # non-square
    a, b = (torch.randn(2, 3, h, w, generator=g, dtype=torch.float64) for _ in range(2))
    pa = proj(a)
    dense = _dense_projector(op, h, w)
    torch.testing.assert_close(pa.flatten(2), a.flatten(2) @ dense.T)  # U U^+, per channel
    torch.testing.assert_close(proj(pa), pa)  # idempotent
    torch.testing.assert_close((proj(a) * b).sum(), (a * proj(b)).sum())  # symmetric
    # an input perturbation in range(U) is unchanged, and so is a clean input
    y = NORM.normalize(op(_image(h, w).double()))
    e = 0.3 * op.A_dagger(torch.randn(1, 3, h // factor, w // factor, generator=g).double())
    torch.testing.assert_close(proj(y), y)
    torch.testing.assert_close(proj(y + e), y + e)
    torch.testing.assert_close(proj(y + e) - proj(y), e)


def test_range_projection_gradient_is_the_projection() -> None:
    proj = RangeProjection(SuperResolution(2), NORM, method="cg", tol=1e-12, max_iter=500)
    a = torch.randn(1, 3, 2, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(proj, (a,))


def test_projected_model_is_f_of_p_and_removes_what_no_measurement_produces() -> None:
    op = SuperResolution(2)
    proj = RangeProjection(op, NORM)
    f = ProjectedModel(torch.nn.Conv2d(3, 3, 3, padding=1), proj)
    g = torch.Generator().manual_seed(0)
    y = NORM.normalize(op(_image(12, 10)))
    outside = torch.randn(y.shape, generator=g)
    outside = outside - proj(outside)  # orthogonal to range(U): no measurement produces it
    with torch.no_grad():
        torch.testing.assert_close(f(y + outside), f.model(y), rtol=1e-4, atol=1e-4)


def test_conjugate_gradient_solves_a_small_system() -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.randn(5, 5, generator=g, dtype=torch.float64)
    m = a @ a.T + 0.1 * torch.eye(5, dtype=torch.float64)
    b = torch.randn(2, 5, generator=g, dtype=torch.float64)
    z, iters = conjugate_gradient(lambda p: p @ m, b, 1e-12, 50)
    torch.testing.assert_close(z, torch.linalg.solve(m, b.T).T)
    assert iters <= 10


# --- adversarial training in the measurement space ---------------------------------------------


def test_measurement_space_training_attacks_the_low_resolution_image(
    make_config: Callable[..., Config], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = make_config(
        "train.mode=adversarial",
        "train.attack_space=measurement",
        "train.eps_rel=0.05",
        "train.epochs=1",
    )
    seen = []

    def recording(*args: Any, **kwargs: Any) -> Any:
        out = pgd_in_space(*args, **kwargs)
        seen.append((args[3], out))
        return out

    monkeypatch.setattr(training, "pgd_in_space", recording)
    result = training.train(cfg, tmp_path / "run", progress=False)
    assert result.epochs and math.isfinite(result.epochs[-1]["train_loss"])
    assert seen, "the training attack never ran"
    crop = cfg.data.crop_size
    eps = 0.05 * math.sqrt(3 * (crop // 2) ** 2)  # counted on the 3 x 16 x 16 measurement
    for threat, attack in seen:
        assert threat.space == attack.space == "measurement"
        assert attack.e_space.shape[1:] == (3, crop // 2, crop // 2)
        assert attack.eps == pytest.approx(eps)
        assert bool((attack.norm <= eps * (1 + 1e-5)).all())
        assert float(attack.norm.max()) > 0.5 * eps
        torch.testing.assert_close(attack.e, threat.lift(attack.e_space), rtol=1e-5, atol=1e-6)


def test_the_convergence_study_in_the_measurement_space_finds_the_exact_worst_case() -> None:
    """The study's measurement-space rows attack the lifted measurement with that space's
    budget (early stopping included, which narrows the batch to the crops still running): on
    f = identity the best loss found is the exact trust-region maximum per crop, the
    input-space rows reach the closed form (||r|| + eps)^2, and each row says its space."""
    from smoothrecon.config import ExperimentConfig
    from smoothrecon.evaluation.inputs import SplitInputs
    from smoothrecon.experiments.convergence import StudyPlan, best_found, convergence_rows

    eps_rel = 0.2
    problems = [_bilinear_problem(eps_rel, size=16, seed=k) for k in (0, 1)]  # SSIM: 11 x 11
    y = torch.cat([p[0] for p in problems]).float()
    target = torch.cat([p[1] for p in problems]).float()
    threat = problems[0][2]
    norm = threat.units
    assert norm is not None
    data = SplitInputs(y, target, norm.denormalize(target))
    cfg = ExperimentConfig(
        convergence_steps=(10, 50), convergence_step_factors=(0.5,), convergence_restarts=2,
        convergence_apgd_steps=(25,), convergence_reference_steps=100,
        convergence_reference_restarts=2, convergence_images=2, convergence_patience=3,
    )  # fmt: skip
    plan = StudyPlan("ball", 0, ("mse",), (ThreatModel(), threat))
    rows = [
        {**row, "model": "id"} for row in convergence_rows(lambda z: z, data, norm, 0.2, cfg, plan)
    ]
    assert {row["space"] for row in rows} == {"input", "measurement"}
    assert any(row.get("patience") and row["space"] == "measurement" for row in rows)
    best = best_found(rows)
    exact_m, exact_in = [], []
    for _, _, _, u, r in problems:
        e = trust_region_max(u.T @ u, u.T @ r, eps_rel * 8.0)  # sqrt(64 measured values)
        exact_m.append(float(np.sum((r + u @ e) ** 2)) / 256)
        exact_in.append((float(np.linalg.norm(r)) + eps_rel * 16.0) ** 2 / 256)  # sqrt(256)
    found_m = best[("id", 0.2, "mse", "measurement")]
    assert found_m == pytest.approx(np.mean(exact_m), rel=0.01)
    assert found_m <= np.mean(exact_m) * (1 + 1e-4)  # nothing beats the exact maximum
    assert best[("id", 0.2, "mse", "input")] == pytest.approx(np.mean(exact_in), rel=1e-3)
