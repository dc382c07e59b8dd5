"""The one training loop end to end at the smoke size: learning, perturbations, resume,
checkpoints, divergence and locking."""

from __future__ import annotations

import copy
import os
import types
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from smoothrecon import eps_from_rel, load_model, train
from smoothrecon.config import TrainConfig
from smoothrecon.data import prepare_data
from smoothrecon.errors import TrainingDiverged, UserError
from smoothrecon.experiments import training
from smoothrecon.models import UNet
from smoothrecon.models.checkpoint import checkpoint_meta, save_model
from smoothrecon.util.io import load_checkpoint, read_jsonl
from smoothrecon.util.runtime import Runtime

CPU = Runtime(torch.device("cpu"), "fp32", channels_last=False)


def tensors_of(path: Path, prefix: str) -> dict[str, torch.Tensor]:
    return {k: v for k, v in load_file(str(path)).items() if k.startswith(prefix)}


@pytest.fixture(scope="module")
def resume_cfg(make_config):
    return make_config(
        "train.mode=gaussian", "train.sigma_f=0.2", "train.epochs=3", "data.crops_per_epoch=32"
    )


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, resume_cfg) -> Path:
    """3 epochs in one call."""
    out = tmp_path_factory.mktemp("uninterrupted")
    train(resume_cfg, out, progress=False)
    return out


# --- learning ----------------------------------------------------------------------------------


def test_tiny_model_overfits_a_handful_of_crops(tmp_path: Path, make_config) -> None:
    # The same six center crops every epoch: the training loss must fall by 10x.
    cfg = make_config(
        "data.train_crops=center",
        "data.flips=false",
        "data.crops_per_epoch=24",
        "train.batch_size=6",
        "train.epochs=16",
        "train.lr=0.01",
    )
    result = train(cfg, tmp_path, progress=False)
    rows = read_jsonl(tmp_path / "metrics.jsonl")
    assert [r["epoch"] for r in rows] == list(range(1, 17))
    assert rows == result.epochs
    first, last = rows[0]["train_loss"], rows[-1]["train_loss"]
    assert last < first / 10, [round(r["train_loss"], 4) for r in rows]
    assert rows[-1]["step"] == 16 * 4
    assert (tmp_path / "best.safetensors").exists() and (tmp_path / "config.yaml").exists()


# --- perturbations -----------------------------------------------------------------------------


def test_standard_mode_is_the_identity() -> None:
    y = torch.randn(2, 3, 8, 12)
    out = training.perturb(torch.nn.Identity(), y, y, TrainConfig(), torch.Generator(), CPU)
    assert torch.equal(out, y)


def test_gaussian_perturbation_has_mean_zero_and_std_sigma_f() -> None:
    cfg = TrainConfig(mode="gaussian", sigma_f=0.3)
    y = torch.full((8, 3, 20, 28), 0.7)
    out = training.perturb(torch.nn.Identity(), y, y, cfg, torch.Generator().manual_seed(0), CPU)
    delta = out - y
    n = delta.numel()
    assert torch.equal(y, torch.full_like(y, 0.7))  # y is not modified in place
    assert abs(delta.mean().item()) < 4 * 0.3 / n**0.5
    assert delta.std().item() == pytest.approx(0.3, rel=0.03)
    again = training.perturb(torch.nn.Identity(), y, y, cfg, torch.Generator().manual_seed(0), CPU)
    assert torch.equal(again, out)  # the generator is the only source of randomness
    other = training.perturb(torch.nn.Identity(), y, y, cfg, torch.Generator().manual_seed(1), CPU)
    assert not torch.equal(other, out)


def test_adversarial_perturbation_lies_on_the_eps_sphere_and_raises_the_loss() -> None:
    torch.manual_seed(0)
    model = UNet(3, 3, (4, 8, 16)).train()
    g = torch.Generator().manual_seed(0)
    y = torch.randn(3, 3, 20, 28, generator=g)  # odd, non-square sizes the U-Net takes
    x = torch.randn(3, 3, 20, 28, generator=g)
    cfg = TrainConfig(mode="adversarial", eps_rel=0.05, pgd_steps=5, pgd_step_factor=0.5)
    bn_before = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    out = training.perturb(model, y, x, cfg, torch.Generator().manual_seed(1), CPU)
    delta = out - y
    eps = eps_from_rel(0.05, y.shape[1:])
    assert eps == pytest.approx(0.05 * (3 * 20 * 28) ** 0.5)
    norms = delta.flatten(1).norm(dim=1)
    torch.testing.assert_close(norms, torch.full((3,), eps), rtol=1e-4, atol=0)
    for k, v in model.state_dict().items():
        if "running" in k:
            assert torch.equal(v, bn_before[k]), f"the attack changed BatchNorm statistic {k}"
    with torch.no_grad():
        clean = ((model(y) - x) ** 2).mean()
        attacked = ((model(out) - x) ** 2).mean()
    assert attacked > clean


@pytest.mark.parametrize("mode", ["gaussian", "adversarial"])
def test_each_mode_trains_one_epoch(tmp_path: Path, make_config, mode: str) -> None:
    cfg = make_config(f"train.mode={mode}", "train.epochs=1", "data.crops_per_epoch=16")
    result = train(cfg, tmp_path, progress=False)
    assert len(result.epochs) == 1
    _, meta = load_checkpoint(tmp_path / "last.safetensors")
    assert meta["config"]["train"]["mode"] == mode
    assert meta["epoch"] == 1


# --- resume ------------------------------------------------------------------------------------


def test_resume_equals_uninterrupted(tmp_path: Path, resume_cfg, uninterrupted: Path) -> None:
    train(resume_cfg, tmp_path, progress=False, stop_after=1)
    _, meta = load_checkpoint(tmp_path / "last.safetensors")
    assert meta["epoch"] == 1
    train(resume_cfg, tmp_path, progress=False)  # resumes at epoch 2

    a = tensors_of(uninterrupted / "last.safetensors", "model.")
    b = tensors_of(tmp_path / "last.safetensors", "model.")
    assert a.keys() == b.keys() and a
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs after resuming"
    oa = tensors_of(uninterrupted / "last.safetensors", "optim.")
    ob = tensors_of(tmp_path / "last.safetensors", "optim.")
    assert oa.keys() == ob.keys() and oa
    for k in oa:
        assert torch.equal(oa[k], ob[k]), f"{k} differs after resuming"
    rows_a = read_jsonl(uninterrupted / "metrics.jsonl")
    rows_b = read_jsonl(tmp_path / "metrics.jsonl")
    assert [r["epoch"] for r in rows_b] == [1, 2, 3]
    for ra, rb in zip(rows_a, rows_b, strict=True):
        for key in ("step", "train_loss", "val_mse", "val_psnr", "val_ssim"):
            assert ra[key] == rb[key], key


def test_finished_run_is_not_trained_again(tmp_path: Path, resume_cfg, uninterrupted) -> None:
    before = (uninterrupted / "last.safetensors").stat().st_mtime_ns
    result = train(resume_cfg, uninterrupted, progress=False)
    assert (uninterrupted / "last.safetensors").stat().st_mtime_ns == before
    assert [r["epoch"] for r in result.epochs] == [1, 2, 3]


def test_resuming_a_run_of_another_config_is_refused(resume_cfg, uninterrupted) -> None:
    other = copy.deepcopy(resume_cfg)
    other.train.lr = 0.005
    with pytest.raises(UserError, match="another config"):
        train(other, uninterrupted, progress=False)


# --- checkpoints -------------------------------------------------------------------------------


def test_checkpoint_round_trip_gives_the_same_outputs(tmp_path: Path, make_config) -> None:
    cfg = make_config("model.activation=leaky_relu")
    torch.manual_seed(3)
    model = UNet(3, 3, cfg.model.channels, "leaky_relu")
    with torch.no_grad():  # non-trivial weights and BatchNorm statistics
        for name, buf in model.named_buffers():
            if "running_mean" in name:
                buf.normal_(0, 0.5)
            elif "running_var" in name:
                buf.uniform_(0.5, 2.0)
    model.eval()
    norm = prepare_data(cfg.data).normalization
    save_model(tmp_path / "m.safetensors", model, checkpoint_meta(cfg, norm, epoch=7))
    loaded, meta = load_model(tmp_path / "m.safetensors")
    assert not loaded.training
    assert meta["epoch"] == 7 and meta["normalization"] == norm.to_dict()
    y = torch.randn(2, 3, 20, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(loaded(y), model(y))


def test_recorded_validation_metrics_match_the_saved_model(resume_cfg, uninterrupted) -> None:
    """The val PSNR a checkpoint records is what that checkpoint gives when loaded."""
    model, meta = load_model(uninterrupted / "best.safetensors")
    data = prepare_data(resume_cfg.data)
    val = training.validate(model, data, resume_cfg, CPU)
    assert val["psnr"] == pytest.approx(meta["val"]["psnr"], abs=1e-3)
    assert val["mse"] == pytest.approx(meta["val"]["mse"], rel=1e-4)


def test_validation_does_not_change_the_model(make_config) -> None:
    cfg = make_config()
    data = prepare_data(cfg.data)
    torch.manual_seed(0)
    model = UNet(3, 3, cfg.model.channels).train()  # the state the training loop leaves it in
    before = {k: v.clone() for k, v in model.state_dict().items()}
    training.validate(model, data, cfg, CPU)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), f"validation changed {k}"


# --- failures ----------------------------------------------------------------------------------


def test_nan_loss_raises_training_diverged(tmp_path: Path, make_config) -> None:
    cfg = make_config("train.lr=1.0e+30")
    with pytest.raises(TrainingDiverged, match="epoch 1") as info:
        train(cfg, tmp_path, progress=False)
    assert isinstance(info.value, UserError)
    assert "\n" not in str(info.value)
    assert not (tmp_path / ".lock").exists()


def test_divergence_keeps_the_last_good_checkpoint(tmp_path, make_config, monkeypatch) -> None:
    cfg = make_config()  # 64 crops per epoch, batches of 16: 4 steps per epoch
    calls = {"n": 0}
    real = training.F.mse_loss

    def mse_loss(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        calls["n"] += 1
        loss = real(a, b)
        return loss * float("nan") if calls["n"] == 6 else loss

    monkeypatch.setattr(training, "F", types.SimpleNamespace(mse_loss=mse_loss))
    with pytest.raises(TrainingDiverged, match="epoch 2, step 6"):
        train(cfg, tmp_path, progress=False)
    _, meta = load_checkpoint(tmp_path / "last.safetensors")
    assert meta["epoch"] == 1
    assert [r["epoch"] for r in read_jsonl(tmp_path / "metrics.jsonl")] == [1]
    assert not (tmp_path / ".lock").exists()


def test_a_locked_folder_is_refused(tmp_path: Path, make_config) -> None:
    (tmp_path / ".lock").write_text(str(os.getppid()))  # a live process that is not us
    with pytest.raises(UserError, match="in use by another smoothrecon run"):
        train(make_config(), tmp_path, progress=False)
    assert not (tmp_path / "last.safetensors").exists()
    assert (tmp_path / ".lock").read_text() == str(os.getppid())


def test_crop_size_the_unet_cannot_take(tmp_path: Path, make_config) -> None:
    with pytest.raises((UserError, ValueError), match="divisible by 4"):
        # divisible by factor 2, not by the U-Net's 4: refused when the config is built
        train(make_config("data.crop_size=34"), tmp_path, progress=False)
