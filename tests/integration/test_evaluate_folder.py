"""A trained model evaluated on a folder it never saw: the checkpoint's normalization and
operator are used (never the folder's own statistics), and `--split all` takes every photo,
even a folder of one photo."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from smoothrecon.data import prepare_data
from smoothrecon.metrics import psnr
from smoothrecon.models import UNet
from smoothrecon.models.checkpoint import checkpoint_meta, save_model
from smoothrecon.models.normalization import Normalization
from smoothrecon.operators import SuperResolution
from smoothrecon.util.io import read_jsonl

# The statistics the model "was trained with": far from the darkened photos' own.
TRAINED = Normalization((0.45, 0.45, 0.40), (0.25, 0.24, 0.26))


def _checkpoint(path: Path, make_config) -> tuple[UNet, Path]:
    cfg = make_config("model.residual=true")
    torch.manual_seed(3)
    model = UNet(3, 3, cfg.model.channels, "relu", residual=True)
    with torch.no_grad():  # a model that is not the identity, with non-trivial BN statistics
        for m in model.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.weight.normal_(0, 0.2)
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    model.eval()
    return model, save_model(path, model, checkpoint_meta(cfg, TRAINED))


def _darkened(src: Path, dst: Path, n: int) -> Path:
    dst.mkdir()
    for p in sorted(src.iterdir())[:n]:
        a = np.asarray(Image.open(p).convert("RGB"), dtype=np.float64) * 0.3
        Image.fromarray(a.round().astype(np.uint8)).save(dst / f"{p.stem}.png")
    return dst


def _hand_psnr(model: UNet, x_uint8: torch.Tensor, norm: Normalization) -> float:
    x = x_uint8.float() / 255.0
    with torch.no_grad():
        z = model(norm.normalize(SuperResolution(2)(x)))
    return float(psnr(norm.denormalize(z).clamp(0, 1), x).mean())


def test_evaluate_on_another_folder_uses_the_checkpoint_normalization(
    tmp_path: Path, photo_dir: Path, make_config, cli
) -> None:
    model, ckpt = _checkpoint(tmp_path / "model.safetensors", make_config)
    dark = _darkened(photo_dir, tmp_path / "dark", 4)
    out = tmp_path / "eval"
    r = cli(
        "evaluate",
        "--model",
        ckpt,
        "--data",
        dark,
        "--split",
        "all",
        "--eps-rel",
        "0",
        "--sigma-g",
        "0",
        "--set",
        "runtime.precision=fp32",
        "--quiet",
        "--out",
        out,
    )
    assert r.returncode == 0, r.stderr
    rows = [x for x in read_jsonl(out / "records.jsonl") if x["attack"] == "none"]
    assert len(rows) == 1 and rows[0]["split"] == "all"
    data = prepare_data(make_config(f"data.source={dark}").data, purpose="evaluate")
    crops = data.eval_set("all").x
    assert rows[0]["n"] == len(crops) == 4 * data.config.eval_crops_per_photo
    expected = _hand_psnr(model, crops, TRAINED)
    assert math.isclose(rows[0]["psnr"], expected, abs_tol=0.01)
    # The folder's own statistics would give another number: the test can tell them apart.
    assert abs(_hand_psnr(model, crops, data.normalization) - expected) > 0.05


def test_one_held_out_photo_is_enough(tmp_path: Path, photo_dir: Path, make_config, cli) -> None:
    _, ckpt = _checkpoint(tmp_path / "model.safetensors", make_config)
    one = _darkened(photo_dir, tmp_path / "one", 1)
    args = ["--model", ckpt, "--data", one, "--eps-rel", "0", "--sigma-g", "0", "--quiet"]
    r = cli("evaluate", *args, "--split", "all", "--out", tmp_path / "e1")
    assert r.returncode == 0, r.stderr
    rows = read_jsonl(tmp_path / "e1" / "records.jsonl")
    assert rows and {x["split"] for x in rows} == {"all"}
    r = cli("evaluate", *args, "--out", tmp_path / "e2")  # --split test: one photo has none
    assert r.returncode == 2 and "use --split all" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
