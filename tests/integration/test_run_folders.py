"""A run folder belongs to one run: training extends with more epochs, another config is
refused with the fields named, --force-new moves the old run aside; reproduce likewise."""

from __future__ import annotations

import copy
import os
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from smoothrecon import train
from smoothrecon.errors import UserError
from smoothrecon.experiments.manifest import REPRODUCE_SECTIONS, build_manifest, claim
from smoothrecon.util.io import load_checkpoint, read_jsonl


def tensors(path: Path) -> dict[str, torch.Tensor]:
    return dict(load_file(str(path)))


def assert_same_tensors(a: Path, b: Path) -> None:
    ta, tb = tensors(a), tensors(b)
    assert ta.keys() == tb.keys() and any(k.startswith("model.") for k in ta)
    for k in ta:
        assert torch.equal(ta[k], tb[k]), f"{k} differs"


@pytest.fixture(scope="module")
def cfg(make_config):
    """2 epochs of Gaussian training (random noise and crops: seeding matters)."""
    return make_config("train.mode=gaussian", "train.epochs=2", "data.crops_per_epoch=32")


@pytest.fixture(scope="module")
def two_epochs(tmp_path_factory, cfg) -> Path:
    out = tmp_path_factory.mktemp("two") / "run"
    train(cfg, out, progress=False)
    return out


def with_epochs(cfg, epochs: int):
    other = copy.deepcopy(cfg)
    other.train.epochs = epochs
    return other


def test_more_epochs_extend_a_finished_run_to_the_weights_of_a_run_from_scratch(
    tmp_path: Path, cfg, two_epochs: Path
) -> None:
    extended = tmp_path / "extended"
    train(cfg, extended, progress=False)
    result = train(with_epochs(cfg, 3), extended, progress=False)
    scratch = tmp_path / "scratch"
    train(with_epochs(cfg, 3), scratch, progress=False)

    assert [r["epoch"] for r in result.epochs] == [1, 2, 3]
    assert load_checkpoint(extended / "last.safetensors")[1]["epoch"] == 3
    # Bit for bit: weights, optimizer state, best checkpoint and every logged number.
    assert_same_tensors(extended / "last.safetensors", scratch / "last.safetensors")
    assert any(k.startswith("optim.") for k in tensors(extended / "last.safetensors"))
    assert_same_tensors(extended / "best.safetensors", scratch / "best.safetensors")
    rows_e, rows_s = read_jsonl(extended / "metrics.jsonl"), read_jsonl(scratch / "metrics.jsonl")
    for re_, rs in zip(rows_e, rows_s, strict=True):
        for key in ("epoch", "step", "train_loss", "val_mse", "val_psnr", "val_ssim"):
            assert re_[key] == rs[key], key


def test_fewer_epochs_than_done_are_refused(cfg, two_epochs: Path) -> None:
    before = (two_epochs / "last.safetensors").stat().st_mtime_ns
    with pytest.raises(UserError, match="holds 2 epochs of this run, more than the 1 asked"):
        train(with_epochs(cfg, 1), two_epochs, progress=False)
    assert (two_epochs / "last.safetensors").stat().st_mtime_ns == before


def test_another_config_is_refused_naming_the_field(cfg, two_epochs: Path) -> None:
    other = copy.deepcopy(cfg)
    other.train.sigma_f = 0.3
    with pytest.raises(UserError) as info:
        train(other, two_epochs, progress=False)
    message = str(info.value)
    assert "train.sigma_f 0.1 there, 0.3 now" in message
    assert "choose a new --out" in message and "\n" not in message


def test_a_folder_without_manifest_is_checked_against_its_checkpoint(
    tmp_path: Path, cfg, two_epochs: Path
) -> None:
    """Folders of runs from before manifests: the checkpoint's config names the fields."""
    old = tmp_path / "old"
    shutil.copytree(two_epochs, old)
    (old / "manifest.json").unlink()
    other = copy.deepcopy(cfg)
    other.train.lr = 0.005
    with pytest.raises(UserError, match=r"train\.lr 0\.001 there, 0\.005 now"):
        train(other, old, progress=False)


def test_force_new_moves_the_old_run_aside_and_starts_over(
    tmp_path: Path, cfg, two_epochs: Path
) -> None:
    out = tmp_path / "run"
    shutil.copytree(two_epochs, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    other = copy.deepcopy(cfg)
    other.train.sigma_f = 0.3
    other.train.epochs = 1
    result = train(other, out, progress=False, force_new=True)
    assert [r["epoch"] for r in result.epochs] == [1]  # from scratch, not from the old run
    aside = out / ".old-1"
    assert {p.name: p.read_bytes() for p in aside.iterdir()} == before  # nothing deleted
    assert load_checkpoint(out / "last.safetensors")[1]["config"]["train"]["sigma_f"] == 0.3


# --- the command line ---------------------------------------------------------------------------


def test_train_cli_refuses_another_config_in_one_line(cli, two_epochs: Path) -> None:
    _, meta = load_checkpoint(two_epochs / "last.safetensors")
    r = cli(
        "train",
        "--preset",
        "smoke",
        "--data",
        meta["config"]["data"]["source"],
        "--set",
        "data.short_side=0",
        "--mode",
        "gaussian",
        "--sigma-f",
        "0.2",
        "--set",
        "data.crops_per_epoch=32",
        "--out",
        two_epochs,
    )
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), r.stderr
    assert "train.sigma_f 0.1 there, 0.2 now" in lines[0]


def test_reproduce_of_another_preset_into_a_smoke_folder_is_refused(
    cli, photo_dir: Path, make_config, tmp_path: Path
) -> None:
    """What `reproduce --preset smoke --out R` writes before any work, then `--preset cpu`."""
    out = tmp_path / "R"
    out.mkdir()
    claim(out, build_manifest("reproduce", make_config(), REPRODUCE_SECTIONS))
    before = sorted(os.listdir(out))
    r = cli(
        "reproduce", "--preset", "cpu", "--data", photo_dir, "--set", "data.short_side=0",
        "--out", out,
    )  # fmt: skip
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), r.stderr
    assert "preset 'smoke' there, 'cpu' now" in lines[0]
    assert "choose a new --out" in lines[0]
    assert sorted(os.listdir(out)) == before  # no config.yaml, no model folder


def test_a_checkpoint_from_before_a_new_config_field_still_extends(tmp_path: Path, make_config):
    """Fields added to the config after a checkpoint was written take their defaults."""
    from smoothrecon.util.io import load_checkpoint, save_checkpoint

    out = tmp_path / "run"
    train(make_config("train.epochs=1"), out, progress=False)
    for name in ("last.safetensors", "best.safetensors"):
        tensors, meta = load_checkpoint(out / name)
        del meta["config"]["train"]["attack_space"]  # as written before that field existed
        save_checkpoint(out / name, tensors, meta)
    (out / "manifest.json").unlink()
    result = train(make_config("train.epochs=2"), out, progress=False)
    assert [e["epoch"] for e in result.epochs] == [1, 2]
