"""Issue 24's defects, written as regression tests first: each is a rule that had two owners
or an edge that did not check what the core assumes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

import smoothrecon as sr
from smoothrecon.errors import UserError
from smoothrecon.evaluation.records import Record
from smoothrecon.operators import make_operator
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
    with pytest.raises(UserError, match=r"operator\.blur_std 3\.0 there, 0\.5 now"):
        psnr(0.5, out)  # the folder of another operator is refused, never reused
    narrow = psnr(0.5, tmp_path / "fresh")
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
    from smoothrecon.evaluation.loading import checkpoint_label as _checkpoint_label

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

    def row(mode: str, value: float, kind: str = "", name: str = "") -> dict:
        return {
            "model": "m", "kind": "unet", "variant": "residual", "mode": mode, "value": value,
            "train_space": "input", "defense": name, "defense_kind": kind,
        }  # fmt: skip

    den = ("denoised", "den0.2")
    assert "RS sigma_f=0.25 + denoiser (den0.2)" in _row_name(row("gaussian", 0.25, *den))
    assert "AT eps_rel=0.05 + range projection" in _row_name(
        row("adversarial", 0.05, "projection", "proj")
    )
    assert "standard + denoiser (den0.2)" in _row_name(row("standard", 0.0, *den))  # the sweep's
    assert "standard + median3" in _row_name(row("standard", 0.0, "MedianFront", "median3"))


def test_another_operators_model_and_its_baselines_share_factor_one() -> None:
    """Item 5: a denoising model's records said factor 2, its baselines' factor 1."""
    from smoothrecon.experiments.evaluate import baseline_models
    from smoothrecon.experiments.grid import thesis_grid
    from smoothrecon.models.checkpoint import trained_info

    for name in ("denoising", "deblurring", "inpainting", "compressed_sensing"):
        cfg = sr.load_config("smoke", overrides=[f"operator.name={name}"])
        assert trained_info("m", cfg).factor == 1, name
        op = make_operator(name)
        assert {b.info.factor for b in baseline_models(op)} == {1}, name
        assert {s.factor for s in thesis_grid(cfg)} == {1}, name
    sr_cfg = sr.load_config("smoke", overrides=["operator.factor=4"])
    assert trained_info("m", sr_cfg).factor == 4


def test_another_operators_parameters_are_refused() -> None:
    """Item 5: operator.blur_std with super-resolution, or --factor 4 with denoising, were
    accepted and ignored."""
    with pytest.raises(UserError, match=r"operator\.blur_std = 3\.0 is a parameter of deblurring"):
        sr.load_config("smoke", overrides=["operator.blur_std=3"])
    with pytest.raises(UserError, match=r"operator\.factor = 4 is a parameter of super_resolution"):
        sr.load_config("smoke", overrides=["operator.name=denoising", "operator.factor=4"])
    ok = sr.load_config("smoke", overrides=["operator.name=deblurring", "operator.blur_std=3"])
    assert ok.operator.blur_std == 3.0


def test_the_thesis_numbers_stand_beside_super_resolution_only() -> None:
    """Item 5: a deblurring RS model was printed beside the thesis' super-resolution numbers."""
    from smoothrecon.report.tables import Table, thesis_tables

    def run(operator: str) -> Run:
        rec = {
            "model": "x2/thesis/rs0.1", "kind": "unet", "variant": "thesis", "mode": "gaussian",
            "value": 0.1, "smoothed": False, "factor": 2, "split": "test", "eps_rel": 0.0,
            "attack": "none", "setting": "strong", "sigma_g": 0.0, "ssim": 0.9, "psnr": 30.0,
        }  # fmt: skip
        manifest = {"config": {"operator": {"name": operator}}, "attacks": {"strong": {}}}
        return Run(Path("."), manifest, [rec])  # type: ignore[list-item]

    ours = [Table("t", "t", ["model"], [], factor=2, eps_rels=(0.0,), setting="strong")]
    assert thesis_tables(run("super_resolution"), ours)
    assert thesis_tables(run("deblurring"), ours) == []


def test_two_budgets_in_one_table_are_marked(photo_dir: Path, tmp_path: Path) -> None:
    """Item 8: a pixel-space own model and normalized-space baselines shared a table at one
    eps_rel, and the report never said "pixel"."""
    from smoothrecon.report import build_report

    out = tmp_path / "run"
    sr.evaluate(
        torch.nn.Identity(), data=photo_dir, eps_rels=[0.0], sigmas=[0.0], out=out,
        preset="smoke", overrides=["data.short_side=0"], baselines=True,
    )  # fmt: skip
    build_report(out)
    page = (out / "report" / "report.md").read_text()
    assert "model (your model) (pixel-space eps)" in page
    assert "compared under different budgets" in page
    assert "bilinear (no learning) (pixel-space eps)" not in page


def test_the_api_refuses_a_folder_of_another_evaluation(photo_dir: Path, tmp_path: Path) -> None:
    """Item 9: sr.evaluate(..., out=F) with another model silently replaced F's records, where
    the CLI refuses; force_new moves the old run aside."""
    common = dict(data=photo_dir, eps_rels=[0.0], sigmas=[0.0], preset="smoke")
    over = ["data.short_side=0"]
    out = tmp_path / "run"
    sr.evaluate(torch.nn.Identity(), out=out, overrides=over, label="first", **common)
    with pytest.raises(UserError, match="--force-new"):
        sr.evaluate(torch.nn.Identity(), out=out, overrides=over, label="second", **common)
    rows = sr.evaluate(
        torch.nn.Identity(), out=out, overrides=over, label="second", force_new=True, **common
    )
    assert {r["model"] for r in rows} == {"second"}
    assert any(p.name.startswith(".old-") for p in out.iterdir())


def test_own_model_factor_and_labels_agree_across_cli_and_api(
    cli, photo_dir: Path, tmp_path: Path
) -> None:
    """Item 3: an own model's factor was the config's in the CLI and 1 in the API; the label
    of a checkpoint folder was its name on the CLI and "best" in the API."""
    from smoothrecon.evaluation.loading import checkpoint_label

    nets = tmp_path / "nets.py"
    nets.write_text("import torch\n\ndef ident():\n    return torch.nn.Identity()\n")
    out = tmp_path / "cli"
    r = cli(
        "evaluate", *SMOKE, "--data", photo_dir, "--model", f"{nets}:ident", "--eps-rel", "0",
        "--sigma-g", "0", "--set", "operator.factor=4", "--out", out,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    cli_rows = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    api_rows = sr.evaluate(
        torch.nn.Identity(), data=photo_dir, operator=make_operator("super_resolution", factor=4),
        eps_rels=[0.0], sigmas=[0.0], out=tmp_path / "api", preset="smoke",
        overrides=["data.short_side=0"],
    )  # fmt: skip
    assert {r["factor"] for r in cli_rows} == {r["factor"] for r in api_rows} == {4}
    assert checkpoint_label("runs/x2-rs0.1/best.safetensors") == "x2-rs0.1"
