"""The attack check (issue 23): random noise of the attack's norm as the reference, the flag,
and the gradient-free attack that backs a failed one. Masked-gradient models (rounding,
detach, no_grad) are flagged and brought down near the identity's number; the identity is
not flagged."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from smoothrecon.attacks.setting import setting_from_config
from smoothrecon.attacks.threat import ThreatModel
from smoothrecon.config import AttackConfig
from smoothrecon.evaluation.attacking import Checking, Scoring, attack_scored
from smoothrecon.evaluation.check import judge, worse_per_crop
from smoothrecon.evaluation.unit import SplitInputs, smoothed_metrics
from smoothrecon.models.normalization import Normalization

PIXELS = Normalization((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))


class Rounded(nn.Module):
    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return torch.round(y * 255) / 255


class Detached(nn.Module):
    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return y.detach()


class NoGrad(nn.Module):
    def forward(self, y: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return y * 1.0


def _data(n: int = 8) -> SplitInputs:
    """Crops x in [0.2, 0.8] (3, 11, 13: odd, non-square; SSIM needs 11), y = x + noise."""
    g = torch.Generator().manual_seed(0)
    x = 0.2 + 0.6 * torch.rand((n, 3, 11, 13), generator=g)
    y = x + 0.03 * torch.randn(x.shape, generator=g)
    return SplitInputs(y, x, x)


def _check(model: nn.Module, data: SplitInputs, eps_rel: float = 0.05):
    cfg = setting_from_config(
        AttackConfig(steps=20, step_factor=0.25, restarts=1, fallback_queries=2000)
    )

    def score(e: torch.Tensor, sigmas) -> dict:
        return smoothed_metrics(model, data, e, sigmas, 1, PIXELS, 8, 0)

    how = Checking(cfg, 0, ThreatModel(), eps_rel, 8, PIXELS)
    return attack_scored(model, data, how, Scoring(score, (0.0,), 0.0))


def _mean(v: list[float]) -> float:
    return sum(v) / len(v)


def test_identity_beats_random_noise_and_is_not_flagged() -> None:
    res = _check(nn.Identity(), _data())
    assert not res.check.attack_failed and not res.check.gradient_free
    assert res.check.random_gap > res.check.random_gap_ci95 > 0
    assert res.check.grad_bad_share == 0.0
    assert _mean(res.per_image["psnr"]) < _mean(res.random["psnr"]) - 1.0


@pytest.mark.parametrize(
    "masked", [Rounded(), Detached(), NoGrad()], ids=lambda m: type(m).__name__
)
def test_masked_gradients_are_flagged_and_the_gradient_free_attack_finds_them(masked) -> None:
    data = _data()
    identity = _mean(_check(nn.Identity(), data).per_image["psnr"])
    res = _check(masked, data)
    assert res.check.attack_failed, "PGD on a masked model is no better than noise"
    assert res.check.grad_bad_share == 1.0
    assert res.check.gradient_free
    psnr = _mean(res.per_image["psnr"])
    assert psnr < _mean(res.random["psnr"]) - 1.0  # the gradient-free attack did the work
    assert psnr == pytest.approx(identity, abs=0.5)  # the masked models are the identity
    norms = res.attacked.e.flatten(1).norm(dim=1)
    assert bool((norms <= 0.05 * (3 * 11 * 13) ** 0.5 * (1 + 1e-5)).all())


def test_judge_flags_a_gap_whose_ci_covers_zero_and_bad_gradients() -> None:
    ok = {"psnr": [20.0, 21.0, 20.5, 20.2], "ssim": [0.5] * 4}
    noise = {"psnr": [25.0, 26.0, 25.2, 25.1], "ssim": [0.7] * 4}
    same = {"psnr": [20.1, 20.9, 20.6, 20.1], "ssim": [0.5] * 4}
    fine = torch.zeros(4, dtype=torch.bool)
    assert not judge(ok, noise, fine).attack_failed
    assert judge(ok, same, fine).attack_failed  # no better than noise
    assert judge(noise, ok, fine).attack_failed  # worse than noise
    one_bad = torch.tensor([True, False, False, False])
    assert judge(ok, noise, one_bad).attack_failed  # 25% of the crops had no gradient
    c = judge(ok, noise, fine)
    assert c.random_psnr == pytest.approx(25.325) and c.random_gap == pytest.approx(4.9)


def test_worse_per_crop_picks_the_larger_mse() -> None:
    assert worse_per_crop([1.0, 3.0, 2.0], [2.0, 1.0, 2.0]).tolist() == [True, False, False]
