"""The evaluation protocol: the attack is reused across sigma_g exactly, and sigma_g is chosen
on validation data only (a test that would fail if the choice looked at the test split)."""

from __future__ import annotations

import torch
from torch import nn

from smoothrecon.attacks.setting import setting_from_config
from smoothrecon.config import AttackConfig
from smoothrecon.evaluation.attacking import batched_attack
from smoothrecon.evaluation.records import choose_sigma
from smoothrecon.evaluation.unit import (
    EvalModel,
    EvalSettings,
    SplitInputs,
    evaluate_unit,
    smoothed_metrics,
)
from smoothrecon.models.info import ModelInfo
from smoothrecon.models.normalization import Normalization
from smoothrecon.util.runtime import Runtime

NORM = Normalization((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
RUNTIME = Runtime(torch.device("cpu"), "fp32", False)


def _model(module: nn.Module) -> EvalModel:
    return EvalModel(module, ModelInfo("m", 2, "own", mode="own", smoothed=True), NORM, "m")


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
    cfg = setting_from_config(AttackConfig(steps=3))
    sigmas = [0.0, 0.1, 0.3]
    e = batched_attack(f, data, 0.02, cfg, batch_size=4, seed=7).e
    reused = smoothed_metrics(f, data, e, sigmas, 4, NORM, batch_size=4, seed=3)
    for s in sigmas:
        e_again = batched_attack(f, data, 0.02, cfg, batch_size=4, seed=7).e
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
    settings = EvalSettings(
        (0.01,),
        tuple(sigmas),
        8,
        {"main": setting_from_config(AttackConfig(steps=2))},
        rs_pgd=True,
        batch_size=6,
    )
    records = evaluate_unit(
        _model(Oscillating()), {"val": val, "test": test}, 0.01, settings, RUNTIME
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


def test_antithetic_evaluation_of_a_linear_model_is_exact() -> None:
    # Lemma A.1.2 through the whole evaluation: with antithetic pairs the smoothed linear map
    # equals the map itself, so every sigma_g scores like sigma_g = 0.
    linear = nn.Conv2d(3, 3, 3, padding=1).eval()
    inputs = {"val": _split(1, False), "test": _split(2, False)}
    settings = EvalSettings(
        (0.0,),
        (0.0, 0.3, 1.0),
        4,
        {"pgd": setting_from_config(AttackConfig())},
        batch_size=6,
        antithetic=True,
    )
    records = evaluate_unit(_model(linear), inputs, 0.0, settings, RUNTIME).records
    for split in ("val", "test"):
        rows = {r["sigma_g"]: r for r in records if r["split"] == split}
        for s in (0.3, 1.0):
            assert abs(rows[s]["psnr"] - rows[0.0]["psnr"]) < 1e-3, (split, s)


def test_adaptive_k_reaches_the_tolerance_and_records_the_draws_used() -> None:
    """k: auto keeps drawing until each image's mc_share is within the tolerance (or k_max),
    and the records carry the k actually used: more at large sigma_g than at small."""
    settings = EvalSettings(
        eps_rels=(0.0,),
        sigmas=(0.0, 0.05, 0.5),
        k="auto",
        attacks={"strong": setting_from_config(AttackConfig(steps=2))},
        batch_size=4,
        antithetic=True,
        k_min=4,
        k_max=64,
        mc_tolerance=0.05,
    )
    data = {"val": _inputs(4, 2), "test": _inputs(6, 3)}
    records = evaluate_unit(_model(Shrink().eval()), data, 0.0, settings, RUNTIME).records
    by_sigma = {r["sigma_g"]: r for r in records if r["split"] == "test"}
    assert by_sigma[0.0]["k"] == 1
    small, large = by_sigma[0.05], by_sigma[0.5]
    assert 4 <= small["k_mean"] <= large["k_mean"] <= 64
    for r in (small, large):
        at_cap = r["k_max_used"] == 64
        assert at_cap or r["mc_share"] <= 0.05 + 1e-9, r
        assert r["mse_debiased"] <= r["mse"]


def test_image_grids_show_the_most_textured_crops_in_index_order() -> None:
    from smoothrecon.evaluation.unit import most_textured

    g = torch.Generator().manual_seed(0)
    x = torch.full((6, 3, 8, 10), 0.5)
    x[4] = torch.rand(3, 8, 10, generator=g)  # the most textured
    x[1] = 0.5 + 0.1 * torch.rand(3, 8, 10, generator=g)  # a little texture
    x[3, :, :, 5:] = 0.9  # one edge
    assert most_textured(x, 2).tolist() == [3, 4]  # an edge outweighs faint noise
    assert most_textured(x, 3).tolist() == [1, 3, 4]
    assert most_textured(x, 10).tolist() == list(range(6))


def test_median_smoothing_of_a_linear_model_is_exact_and_is_attacked_two_ways() -> None:
    """Issue 26: with antithetic pairs the draws are symmetric about y, so their median is y
    itself: the median-smoothed linear map scores like sigma_g = 0 at every sigma_g. The attack
    on g runs through the mean and through the median of the draws; the record names both and
    keeps per crop the worse."""
    import dataclasses

    from smoothrecon.defenses.median import MedianSmoothing
    from smoothrecon.evaluation.defended import defended
    from smoothrecon.operators import SuperResolution

    linear = nn.Conv2d(3, 3, 3, padding=1).eval()
    model = defended(_model(linear), MedianSmoothing(), SuperResolution(2))
    assert model.percentile == 0.5 and model.info.model == "m+med"
    inputs = {"val": _split(1, False), "test": _split(2, False)}
    settings = EvalSettings(
        (0.0, 0.02),
        (0.0, 0.3, 1.0),
        4,
        {"pgd": setting_from_config(AttackConfig(steps=2))},
        rs_pgd=True,
        batch_size=6,
        antithetic=True,
    )
    clean = evaluate_unit(model, inputs, 0.0, settings, RUNTIME).records
    for split in ("val", "test"):
        rows = {r["sigma_g"]: r for r in clean if r["split"] == split}
        for s in (0.3, 1.0):
            assert abs(rows[s]["psnr"] - rows[0.0]["psnr"]) < 1e-3, (split, s)
    # the mean of the same draws is not the median: another model's numbers at sigma_g 1
    shrink = dataclasses.replace(model, module=Shrink())
    attacked = evaluate_unit(shrink, inputs, 0.02, settings, RUNTIME).records
    on_g = [r for r in attacked if r["attack"] == "pgd_g"]
    worst = [r for r in attacked if r["attack"] == "worst"]
    assert on_g and worst
    members = set(on_g[0]["by_member"])
    names = {f"{g}:apgd-{loss}" for g in ("mean", "percentile") for loss in ("mse", "ssim")}
    assert members == names, members  # the default ensemble through each of the two
    for m in names:
        own = on_g[0]["by_member"][m]["psnr"]
        assert on_g[0]["psnr"] <= sum(own) / len(own) + 1e-9  # per crop the worse of the two
    assert worst[0]["psnr"] <= on_g[0]["psnr"] + 1e-9
