"""Issue 24's defects, written as regression tests first: each is a rule that had two owners
or an edge that did not check what the core assumes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

import smoothrecon as sr
from smoothrecon.operators import make_operator
from smoothrecon.records import Record
from smoothrecon.report import setting_section
from smoothrecon.report.records import Run

SMOKE = ["--preset", "smoke", "--set", "data.short_side=0", "--quiet"]


def test_the_attack_command_uses_the_threat_model_and_says_which(
    cli, photo_dir: Path, tmp_path: Path
) -> None:
    """Item 1: `attack --set attack.space=measurement` ran the input-space attack."""
    rows = {}
    for space in ("input", "measurement"):
        out = tmp_path / space
        r = cli(
            "attack", *SMOKE, "--data", photo_dir, "--model", "bilinear", "--eps-rel", "0.05",
            "--set", f"attack.space={space}", "--out", out,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        assert f"({space} space)" in r.stdout
        rows[space] = json.loads((out / "attack.json").read_text())["rows"][0]
        assert rows[space]["space"] == space
    assert rows["input"]["psnr"] != pytest.approx(rows["measurement"]["psnr"], abs=1e-3)


def test_the_api_records_every_operator_parameter_and_never_reuses_another(
    photo_dir: Path, tmp_path: Path
) -> None:
    """Item 2: the API kept only factor and quantize of an operator, so a deblurring run with
    blur_std 3.0 was saved (and keyed) as 1.5, and a rerun with 0.5 reused its numbers."""
    common = dict(normalization=None, eps_rels=[0], sigmas=[0], data=photo_dir, preset="smoke")
    over = ["data.short_side=0"]
    out = tmp_path / "d"

    def psnr(blur: float, folder: Path) -> float:
        op = make_operator("deblurring", blur_std=blur)
        rows = sr.evaluate(torch.nn.Identity(), operator=op, out=folder, overrides=over, **common)
        return next(r["psnr"] for r in rows if r["split"] == "test")

    wide = psnr(3.0, out)
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["operator"]["name"] == "deblurring" and saved["operator"]["blur_std"] == 3.0
    narrow = psnr(0.5, out)
    assert narrow == pytest.approx(psnr(0.5, tmp_path / "fresh"), abs=1e-9)
    assert narrow > wide + 1.0  # a milder blur is easier to undo


def _record(setting: str, space: str) -> Record:
    return {"setting": setting, "space": space, "eps_rel": 0.1}  # type: ignore[typeddict-item]


ATTACKS = {"strong": {"space": "input"}, "strong-measurement": {"space": "measurement"}}


def test_section_headings_name_the_setting_they_show() -> None:
    """Item 4: "The same tables under the thesis' attack setting" stood above the tables of
    the strong attack on the measurement."""
    run = Run(
        Path("."),
        {"attacks": ATTACKS},
        [_record("strong", "input"), _record("strong-measurement", "measurement")],
    )
    heading, text = setting_section(run, "strong-measurement")
    assert "'strong-measurement'" in text
    assert "thesis" not in heading and "'strong-measurement'" in heading
    assert "measurement A(x)" in heading
    assert "thesis" in setting_section(run, "thesis")[0]


def test_a_dot_in_a_run_folder_name_stays_in_the_label() -> None:
    """Item 6: `--model runs/x2-rs0.1` was labelled 'x2-rs0'."""
    from smoothrecon.commands import _checkpoint_label

    assert _checkpoint_label("runs/x2-rs0.1") == "x2-rs0.1"
    assert _checkpoint_label("runs/x2-rs0.25/best") == "x2-rs0.25"
    assert _checkpoint_label("runs/x2-rs0.25/best.safetensors") == "x2-rs0.25"
    assert _checkpoint_label("nets/model.v2.safetensors") == "model.v2"


class OneNaN(torch.nn.Module):
    """The identity with one NaN pixel."""

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        out = y.clone()
        out[:, 0, 0, 0] = float("nan")
        return out


def test_non_finite_outputs_are_refused_not_scored(cli, photo_dir: Path, tmp_path: Path) -> None:
    """Item 12: a module returning NaN in one pixel printed `test PSNR nan dB` and exited 0."""
    r = cli(
        "evaluate", *SMOKE, "--data", photo_dir, "--model", f"{__file__}:OneNaN",
        "--input-space", "pixel", "--eps-rel", "0", "--sigma-g", "0", "--out", tmp_path / "n",
    )  # fmt: skip
    assert r.returncode != 0
    assert "non-finite values" in r.stderr and "OneNaN" in r.stderr
    assert "Traceback" not in r.stderr


def test_the_saved_config_is_what_ran(cli, photo_dir: Path, tmp_path: Path) -> None:
    """Item 11: config.yaml showed the preset's eps_rels, not those of --eps-rel."""
    out = tmp_path / "e"
    r = cli(
        "evaluate", *SMOKE, "--data", photo_dir, "--model", "bilinear", "--eps-rel", "0,0.01",
        "--sigma-g", "0", "--out", out,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["evaluation"]["eps_rels"] == [0.0, 0.01]
    assert saved["smoothing"]["sigma_grid"] == [0.0]
    ran = json.loads((out / "run.json").read_text())["config"]
    assert ran["evaluation"]["eps_rels"] == [0.0, 0.01]


def test_certifying_a_model_not_trained_with_noise_says_what_to_expect(
    cli, photo_dir: Path, tmp_path: Path
) -> None:
    """Item 14: certifying a standard, AT or baseline model gave no hint."""
    r = cli(
        "certify", *SMOKE, "--data", photo_dir, "--model", "bilinear", "--sigma-g", "0.3",
        "--eps-rel", "0", "--n", "16", "--set", "data.max_eval_crops=1", "--out", tmp_path / "c",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "expect vacuous certificates" in r.stdout and "bilinear" in r.stdout


def test_a_python_file_without_a_name_says_so(cli, tmp_path: Path) -> None:
    """Item 15: `--model nets.py` without :NAME said "header too large"."""
    nets = tmp_path / "nets.py"
    nets.write_text("import torch\nNet = torch.nn.Identity\n")
    r = cli("evaluate", *SMOKE, "--model", nets, "--out", tmp_path / "o")
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert f"{nets}:NAME" in r.stderr


def test_load_config_defaults_to_the_cli_preset() -> None:
    """Item 15: sr.load_config() defaulted to 'paper' where every command defaults to 'cpu'."""
    assert sr.load_config().preset == "cpu"
    assert sr.load_config().data.crop_size == sr.load_config("cpu").data.crop_size


def test_composite_rows_say_what_they_compose() -> None:
    """Item 7: f o D and f o P of an RS or AT model were labelled 'standard + ...'."""
    from smoothrecon.report.tables import _row_name

    def row(mode: str, value: float, base_mode: str = "", base_value: float = 0.0) -> dict:
        return {
            "model": "m", "kind": "unet", "variant": "residual", "mode": mode, "value": value,
            "train_space": "input", "base_mode": base_mode, "base_value": base_value,
        }  # fmt: skip

    assert "RS sigma_f=0.25 + denoiser sigma=0.2" in _row_name(
        row("denoised", 0.2, "gaussian", 0.25)
    )
    assert "AT eps_rel=0.05 + range projection" in _row_name(
        row("projected", 0.05, "adversarial", 0.05)
    )
    assert "standard + denoiser sigma=0.2" in _row_name(row("denoised", 0.2))  # the sweep's
