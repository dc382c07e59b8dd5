"""The extension points, used from outside the package as a researcher would: a toy attack, a
toy defence and a toy operator, each one small class in this file, run through `evaluate` and
`report`. Nothing here is registered with the library; the records and the report page name
all three."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import smoothrecon as sr
from smoothrecon.report import build_report


class SignAttack:
    """One step along the sign of the loss gradient, scaled onto the L2 sphere of radius eps
    (an L2 version of FGSM)."""

    name = "signs"

    def __call__(self, forward, y, target, eps, generator):
        z = y.detach().requires_grad_(True)
        loss = (forward(z) - target).pow(2).sum()
        (grad,) = torch.autograd.grad(loss, z)
        s = grad.sign()
        return eps * s / s.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)


class Median3(nn.Module):
    """A 3x3 median filter per channel (reflect padding)."""

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        b, c, h, w = y.shape
        patches = F.unfold(F.pad(y, (1, 1, 1, 1), mode="reflect"), 3)
        return patches.view(b, c, 9, h * w).median(dim=2).values.view(b, c, h, w)


class MedianFront:
    """The defence f -> f o median3."""

    name = "median3"

    def defend(self, model: nn.Module, context) -> nn.Module:
        return nn.Sequential(Median3(), model)


class BoxBlur2:
    """A = the mean of each 2x2 block (a measurement of half the size); A_dagger = nearest
    up-sampling, the pseudo-inverse of A."""

    name = "box2"

    def A(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, 2)

    def A_adjoint(self, v: torch.Tensor) -> torch.Tensor:
        return F.interpolate(v, scale_factor=2, mode="nearest") / 4

    def A_dagger(self, v: torch.Tensor) -> torch.Tensor:
        return F.interpolate(v, scale_factor=2, mode="nearest")

    def measure(self, x: torch.Tensor, generator) -> torch.Tensor:
        return self.A(x)


def test_the_toy_operator_is_consistent() -> None:
    """<A x, v> = <x, A^T v> and A A_dagger = I: the toy is a sound operator."""
    g = torch.Generator().manual_seed(0)
    op = BoxBlur2()
    x, v = torch.rand(2, 3, 8, 6, generator=g), torch.rand(2, 3, 4, 3, generator=g)
    assert torch.allclose((op.A(x) * v).sum(), (x * op.A_adjoint(v)).sum(), atol=1e-5)
    assert torch.allclose(op.A(op.A_dagger(v)), v)


@pytest.fixture(scope="module")
def extended_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    out = tmp_path_factory.mktemp("extension") / "run"
    records = sr.evaluate(
        nn.Identity(),
        operator=BoxBlur2(),
        attacks=[SignAttack()],
        defenses=[MedianFront()],
        eps_rels=[0.0, 0.05],
        sigmas=[0.0],
        out=out,
        preset="smoke",
        overrides=["attack.fallback_queries=64"],
    )
    return out, [dict(r) for r in records]


def test_records_name_the_attack_the_defence_and_the_operator(extended_run) -> None:
    out, records = extended_run
    assert {r["model"] for r in records} == {"model", "model+median3"}
    attacked = [r for r in records if r["eps_rel"] > 0]
    assert attacked and {r["setting"] for r in attacked} == {"signs"}
    assert {r.get("defense", "") for r in records} == {"", "median3"}
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["operator"]["name"] == "box2"
    assert manifest["config"]["operator"]["name"] == "box2"
    assert "signs" in manifest["attacks"]
    # the identity has no defence: the sign step beats random noise of its norm by far
    plain = next(r for r in attacked if r["model"] == "model" and r["split"] == "test")
    assert plain["random_psnr"] > plain["psnr"] + 1.0, plain


def test_the_report_names_all_three(extended_run) -> None:
    out, _ = extended_run
    build_report(out)
    page = (out / "report" / "report.html").read_text()
    for name in ("signs", "median3", "box2"):
        assert name in page, name


def test_an_attack_leaving_the_ball_is_refused(tmp_path: Path) -> None:
    class Outside(SignAttack):
        name = "outside"

        def __call__(self, forward, y, target, eps, generator):
            return 2 * super().__call__(forward, y, target, eps, generator)

    with pytest.raises(ValueError, match="inside the ball"):
        sr.evaluate(
            nn.Identity(),
            attacks=[Outside()],
            eps_rels=[0.05],
            sigmas=[0.0],
            out=tmp_path / "run",
            preset="smoke",
        )


def test_objects_that_are_not_extensions_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not an attack"):
        sr.evaluate(nn.Identity(), attacks=[object()], out=tmp_path / "a", preset="smoke")
    with pytest.raises(ValueError, match="not a defence"):
        sr.evaluate(nn.Identity(), defenses=[object()], out=tmp_path / "b", preset="smoke")
    with pytest.raises(ValueError, match="not an operator"):
        sr.evaluate(nn.Identity(), operator=object(), out=tmp_path / "c", preset="smoke")


def test_a_users_attack_joins_an_ensemble(photo_dir: Path, tmp_path: Path) -> None:
    """The ensemble (per crop the worst of its members) takes a user's attack beside APGD."""
    ensemble = sr.Ensemble((sr.APGD(steps=4), SignAttack()), name="auto")
    common = dict(data=photo_dir, eps_rels=[0.05], sigmas=[0.0], preset="smoke")
    over = ["data.short_side=0", "attack.fallback_queries=64"]
    rows = sr.evaluate(
        nn.Identity(), attacks=[ensemble], out=tmp_path / "e", overrides=over, **common
    )
    alone = sr.evaluate(
        nn.Identity(), attacks=[SignAttack()], out=tmp_path / "s", overrides=over, **common
    )
    test = {r["setting"]: r for r in [*rows, *alone] if r["split"] == "test"}
    assert test["auto"]["mse"] >= test["signs"]["mse"] * (1 - 1e-6)


def test_a_users_operator_is_certified_too(photo_dir: Path, tmp_path: Path) -> None:
    over = ["data.short_side=0", "data.max_eval_crops=1", "attack.steps=3", "attack.restarts=1"]
    rows = sr.certify(
        nn.Identity(), data=photo_dir, operator=BoxBlur2(), sigma_g=0.25, eps_rels=[0.001],
        n=16, out=tmp_path / "c", preset="smoke", overrides=[*over, "attack.k_attack=2"],
    )  # fmt: skip
    assert rows and all(r["eps_rel"] == 0.001 for r in rows)
