"""The ensemble (attacks/ensemble.py): per sample never better than any member, its budget the
members' sum, a user's attack as a member."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from smoothrecon.attacks.apgd import APGD
from smoothrecon.attacks.ensemble import Ensemble
from smoothrecon.attacks.pgd import PGD, per_sample_loss
from smoothrecon.attacks.protocol import solver_of


class Toward:
    """A user's attack: eps along (f(y) - target), the direction a linear f would take."""

    name = "toward"

    def __call__(self, forward, y, target, eps, generator):
        d = forward(y) - target
        return eps * d / d.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)


def _net() -> nn.Module:
    torch.manual_seed(0)
    f = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Tanh(), nn.Conv2d(8, 3, 3, padding=1))
    for p in f.parameters():
        p.requires_grad_(False)
    return f


def test_the_per_sample_worst_is_never_better_than_any_member() -> None:
    f = _net()
    g = torch.Generator().manual_seed(1)
    y, x = torch.randn(6, 3, 8, 8, generator=g), torch.randn(6, 3, 8, 8, generator=g)
    members = (PGD(steps=4, name="pgd4"), APGD(steps=6), Toward())
    ens = Ensemble(members).run(f, y, x, 0.8, torch.Generator().manual_seed(2))
    seeds = torch.randint(0, 2**62, (3,), generator=torch.Generator().manual_seed(2))
    for member, seed in zip(members, seeds, strict=True):
        alone = solver_of(member)(f, y, x, 0.8, torch.Generator().manual_seed(int(seed)), None)
        assert (ens.loss >= alone.loss).all(), member.name
    assert torch.allclose(per_sample_loss(f(y + ens.e), x), ens.loss, rtol=1e-5)
    assert (ens.e.flatten(1).norm(dim=1) <= 0.8 * (1 + 1e-5)).all()
    assert ens.trace.shape == (3, 6) and (ens.trace.diff(dim=0) >= 0).all()


def test_the_budget_is_the_members_sum() -> None:
    f = _net()
    y, x = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    ens = Ensemble((PGD(steps=5, restarts=2, name="a"), APGD(steps=7, name="b")))
    res = ens.run(f, y, x, 0.5, torch.Generator().manual_seed(0))
    assert res.steps_used is not None and res.steps_used.tolist() == [2 * 5 + 8] * 2


def test_bad_ensembles_are_refused() -> None:
    with pytest.raises(ValueError, match="at least one"):
        Ensemble(())
    with pytest.raises(ValueError, match="distinct names"):
        Ensemble((PGD(), PGD()))
    assert Ensemble((APGD(), Toward())).describe()["members"][1]["name"] == "toward"


def test_the_evaluation_keeps_per_crop_and_metric_the_worst_member() -> None:
    """An MSE + SSIM ensemble through the evaluation's one path (`attack_scored`): per crop the
    PSNR is the lowest and the SSIM the lowest of its members run alone (same seeds), and the
    shares of crops each member supplied add up to 1 per metric."""
    from smoothrecon.attacks.setting import AttackSetting
    from smoothrecon.attacks.threat import ThreatModel
    from smoothrecon.evaluation.attacking import Checking, Scoring, attack_scored
    from smoothrecon.evaluation.inputs import SplitInputs
    from smoothrecon.evaluation.unit import smoothed_metrics
    from smoothrecon.models.normalization import Normalization
    from smoothrecon.util.seeds import derived_seed

    pixels = Normalization((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    f = _net()
    g = torch.Generator().manual_seed(3)
    x = 0.2 + 0.6 * torch.rand(6, 3, 12, 12, generator=g)
    data = SplitInputs(x + 0.05 * torch.randn(x.shape, generator=g), x, x)
    members = (APGD(steps=6, name="apgd-mse"), APGD(steps=6, loss="ssim", name="apgd-ssim"))

    def score(e, sigmas):
        return smoothed_metrics(f, data, e, sigmas, 1, pixels, 8, 0)

    def run(attack, seed):
        how = Checking(AttackSetting(attack), seed, ThreatModel(), 0.1, 8, pixels)
        return attack_scored(f, data, how, Scoring(score, (0.0,), 0.0))

    both = run(Ensemble(members), 5)
    alone = [run(m, derived_seed(5, m.name)) for m in members]
    for metric in ("psnr", "ssim"):
        worst = [min(v) for v in zip(*(a.per_image[metric] for a in alone), strict=True)]
        assert both.per_image[metric] == pytest.approx(worst, abs=1e-6), metric
        assert abs(sum(both.worst_of["mse" if metric == "psnr" else "ssim"].values()) - 1) < 1e-9
    assert set(both.worst_of["ssim"]) == {"apgd-mse", "apgd-ssim"}
