"""The evaluation protocol: the attack is reused across sigma_g exactly, and sigma_g is chosen
on validation data only (a test that would fail if the choice looked at the test split)."""

from __future__ import annotations

import torch
from torch import nn

from smoothrecon.config import AttackConfig
from smoothrecon.data.normalization import Normalization
from smoothrecon.evaluation import (
    SplitInputs,
    batched_attack,
    choose_sigma,
    evaluate_unit,
    smoothed_metrics,
)
from smoothrecon.runtime import Runtime

NORM = Normalization((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
RUNTIME = Runtime(torch.device("cpu"), "fp32", False)


class Shrink(nn.Module):
    """A small non-linear model: smoothing helps it in a controlled way."""

    def __init__(self, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=g) * 0.2)
            self.conv.bias.zero_()

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return y + torch.tanh(self.conv(y))


def _inputs(n: int, seed: int, noise: float = 0.05) -> SplitInputs:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, 16, 20, generator=g)
    y = (x + noise * torch.randn(x.shape, generator=g)).clamp(0, 1)
    return SplitInputs(NORM.normalize(y), NORM.normalize(x), x)


def test_one_attack_reused_across_sigmas_equals_recomputing_it() -> None:
    f = Shrink().eval()
    data = _inputs(6, 1)
    cfg = AttackConfig(steps=3)
    sigmas = [0.0, 0.1, 0.3]
    e, _ = batched_attack(f, data, 0.02, cfg, batch_size=4, seed=7)
    reused = smoothed_metrics(f, data, e, sigmas, 4, NORM, batch_size=4, seed=3)
    for s in sigmas:
        e_again, _ = batched_attack(f, data, 0.02, cfg, batch_size=4, seed=7)
        alone = smoothed_metrics(f, data, e_again, [s], 4, NORM, batch_size=4, seed=3)[s]
        assert torch.equal(e, e_again)
        for m in ("mse", "psnr", "ssim"):
            assert reused[s][m] == alone[m], (s, m)


class Oscillating(nn.Module):
    """f(y) = y + 0.3 sin(20 y): smoothing with a large sigma averages the oscillation away."""

    def __init__(self) -> None:
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return y + 0.3 * torch.sin(20 * y) + 0 * self.dummy


def _split(seed: int, oscillation_is_true: bool) -> SplitInputs:
    g = torch.Generator().manual_seed(seed)
    x = 0.3 + 0.4 * torch.rand(6, 3, 16, 20, generator=g)
    y = NORM.normalize(x)
    target = Oscillating()(y).detach() if oscillation_is_true else y
    return SplitInputs(y, target, NORM.denormalize(target))


def test_sigma_g_is_chosen_on_validation_and_never_sees_test_data() -> None:
    # Validation: the truth is y, so a large sigma_g (removing the oscillation) is best.
    # Test: the truth is f(y), so sigma_g = 0 is best there. A choice that looked at the test
    # split would pick 0; the protocol must pick validation's best for everything downstream.
    val, test = _split(1, False), _split(2, True)
    sigmas = [0.0, 0.1, 0.5, 1.0]
    records = evaluate_unit(
        Oscillating(),
        {"val": val, "test": test},
        NORM,
        0.01,
        sigmas,
        8,
        {"main": AttackConfig(steps=2)},
        RUNTIME,
        batch_size=6,
        rs_pgd=True,
        seed=0,
    ).records
    best_val = max(
        (r for r in records if r["split"] == "val" and r["attack"] == "pgd_f"),
        key=lambda r: r["ssim"],
    )["sigma_g"]
    oracle = choose_sigma(records, "test", 0.01, "main")
    assert best_val > 0 and oracle == 0.0, (best_val, oracle)
    assert choose_sigma(records, "val", 0.01, "main") == best_val
    # The attack on g and the worst case are run at the validation choice on the test split.
    g_rows = [r for r in records if r["split"] == "test" and r["attack"] in ("pgd_g", "worst")]
    assert g_rows and all(r["sigma_g"] == best_val for r in g_rows)


def test_public_evaluate_gives_one_record_per_condition() -> None:
    from smoothrecon import evaluate

    inputs = {"val": _split(1, False), "test": _split(2, False)}
    records = evaluate(
        Shrink(),
        inputs,
        NORM,
        eps_rels=[0.0, 0.02],
        sigmas=[0.0, 0.2],
        k=2,
        attack_cfg=AttackConfig(steps=2),
        batch_size=6,
    )
    keys = {(r["split"], r["eps_rel"], r["attack"], r["sigma_g"]) for r in records}
    assert len(keys) == len(records) == 8
    assert all(r["n"] == 6 and len(r["per_image"]["ssim"]) == 6 for r in records)
    assert {r["attack"] for r in records} == {"none", "pgd_f"}


def test_antithetic_evaluation_of_a_linear_model_is_exact() -> None:
    # Lemma A.1.2 through the whole evaluation: with antithetic pairs the smoothed linear map
    # equals the map itself, so every sigma_g scores like sigma_g = 0.
    linear = nn.Conv2d(3, 3, 3, padding=1).eval()
    inputs = {"val": _split(1, False), "test": _split(2, False)}
    records = evaluate_unit(
        linear,
        inputs,
        NORM,
        0.0,
        [0.0, 0.3, 1.0],
        4,
        {"pgd": AttackConfig()},
        RUNTIME,
        batch_size=6,
        antithetic=True,
    ).records
    for split in ("val", "test"):
        rows = {r["sigma_g"]: r for r in records if r["split"] == split}
        for s in (0.3, 1.0):
            assert abs(rows[s]["psnr"] - rows[0.0]["psnr"]) < 1e-3, (split, s)
