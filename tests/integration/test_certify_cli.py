"""`smoothrecon certify` on a trained smoke model: per-image records whose certified PSNR never
exceeds what the EOT attack on G reaches, center smoothing's rows, resume, and bad values."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from smoothrecon.attacks.pgd import eps_from_rel
from smoothrecon.cli.main import main
from smoothrecon.report.certificates import certificate_blocks
from smoothrecon.util.io import read_jsonl

FIELDS = [
    "model",
    "split",
    "image",
    "photo",
    "sigma_g",
    "eps_rel",
    "eps",
    "n",
    "alpha",
    "method",
    "psnr_certified",
    "mse_certified",
    "psnr_attacked",
    "mse_attacked",
    "psnr_attacked_upper",
    "psnr_clean",
    "abstained",
    "vacuous",
]


@pytest.fixture(scope="module")
def model(smoke_models: dict[str, Path]) -> Path:
    """The session's RS model (Gaussian noise, sigma_f 0.3, 2 epochs; conftest.py)."""
    return smoke_models["rs"]


def _certify(cli, model: Path, out: Path, *args: str):
    result = cli("certify", "--model", model, "--sigma-g", "0.3", "--quiet", "--out", out, *args)
    assert result.returncode == 0, result.stderr
    return result, read_jsonl(out / "certificates.jsonl")


def test_certified_bound_is_below_the_attack_at_large_n(tmp_path: Path, model: Path, cli) -> None:
    eps_rels = (0.0, 0.002, 0.02)
    sets = ("--set", "data.max_eval_crops=2", "--set", "attack.k_attack=4")
    result, rows = _certify(
        cli, model, tmp_path, "--eps-rel", "0,0.002,0.02", "--n", "1000", "--alpha", "0.01", *sets
    )
    assert len(rows) == 2 * len(eps_rels)
    for r in rows:
        assert set(FIELDS) <= set(r) and r["method"] == "pixel" and r["n"] == 1000
        assert math.isclose(r["eps"], eps_from_rel(r["eps_rel"], (3, 32, 32)))
        # the invariant: no perturbation goes below the certificate, so the attack cannot
        assert r["psnr_certified"] <= r["psnr_attacked"] <= r["psnr_attacked_upper"]
        assert r["mse_certified"] >= r["mse_attacked"] and r["certified_le_attacked"]
        assert r["vacuous"] == (r["psnr_certified"] < r["psnr_gray"])
        assert r["e_norm"] <= r["eps"] * (1 + 1e-5)
    by = {(r["image"], r["eps_rel"]): r for r in rows}
    for i in range(2):
        certified = [by[i, e]["psnr_certified"] for e in eps_rels]
        assert certified == sorted(certified, reverse=True)  # larger balls certify less
        # the attack on G hurts more than no attack (fresh draws: up to Monte-Carlo noise)
        assert by[i, 0.02]["psnr_attacked"] < by[i, 0.0]["psnr_attacked"] + 0.01
        assert abs(by[i, 0.0]["psnr_attacked"] - by[i, 0.0]["psnr_clean"]) < 0.05
        # the no-learning reference: the back-projection's exact worst case falls with eps
        worst = [by[i, e]["psnr_backprojection_worst"] for e in eps_rels]
        assert worst == sorted(worst, reverse=True) and worst[0] > worst[-1]
    assert "psnr_certified <= psnr_attacked on 6 of 6 records" in result.stdout


def test_center_rows_and_resume(tmp_path: Path, model: Path, cli) -> None:
    # center smoothing needs n >= ln(2 / (alpha/2)) / (2 * 0.05^2) = 416 samples at alpha 0.5
    sets = ("--set", "data.max_eval_crops=2", "--set", "attack.k_attack=2")
    common = ("--n", "450", "--alpha", "0.5", "--method", "both", *sets)
    _, first = _certify(cli, model, tmp_path, "--eps-rel", "0.002", *common)
    assert sorted((r["method"], r["image"]) for r in first) == [
        ("center", 0),
        ("center", 1),
        ("pixel", 0),
        ("pixel", 1),
    ]
    for r in first:
        if r["method"] == "center" and not r["abstained"]:
            assert r["radius_out"] >= 0 and r["psnr_certified"] <= r["psnr_clean"]
        if r["certified_le_attacked"] is not None:
            assert r["certified_le_attacked"]
    result, second = _certify(cli, model, tmp_path, "--eps-rel", "0.002,0.004", *common)
    assert "resuming: 2 of 4" in result.stdout
    same = [json.dumps(r, sort_keys=True) for r in (second[: len(first)], first)]
    assert same[0] == same[1]  # done work is kept, not redone
    assert sorted({r["eps_rel"] for r in second[len(first) :]}) == [0.004]
    assert len(second) == 8
    settings = json.loads((tmp_path / "certify.json").read_text())
    assert settings["key"] == second[-1]["key"] and settings["eps_rels"] == [0.002, 0.004]
    # the report's piece: one figure, one table row per (method, eps_rel), the vacuous sentences
    blocks = certificate_blocks(tmp_path)
    kinds = [b.kind for b in blocks]
    assert kinds.count("image") == 1 and kinds.count("table") == 1
    assert (tmp_path / "report" / blocks[kinds.index("image")].content[0]).is_file()
    assert len(blocks[kinds.index("table")].content.rows) == 4
    assert all("sigma_g 0.3" in line for line in blocks[-1].content)


def test_median_and_loss_rows_hold_against_the_attack(tmp_path: Path, model: Path, cli) -> None:
    """Issue 26: `--method median` and `--method loss`; the median is attacked through the mean
    and through the percentile of the draws, per crop the worse, and no record goes below its
    certificate."""
    sets = ("--set", "data.max_eval_crops=2", "--set", "attack.k_attack=3")
    common = ("--n", "400", "--alpha", "0.05", *sets)
    for method in ("median", "loss"):
        _, rows = _certify(cli, model, tmp_path / method, "--eps-rel", "0,0.002", "--method",
                           method, *common)  # fmt: skip
        assert sorted((r["method"], r["eps_rel"]) for r in rows) == [
            (method, 0.0), (method, 0.0), (method, 0.002), (method, 0.002)
        ]  # fmt: skip
        for r in rows:
            assert r["certified_le_attacked"] and not r["violation"]
            assert r["psnr_attacked"] <= r["psnr_attacked_upper"] + 1e-9
            assert r["e_norm"] <= r["eps"] * (1 + 1e-5)
            if method == "median":
                assert r["percentile"] == 0.5 and r["attack_surrogate"] in ("mean", "percentile")
    pixel = _certify(cli, model, tmp_path / "pixel", "--eps-rel", "0.002", *common)[1]
    loss = [r for r in read_jsonl(tmp_path / "loss" / "certificates.jsonl") if r["eps_rel"]]
    # the loss certificate bounds the same estimate G as the pixel method: the same clean PSNR
    for a, b in zip(
        sorted(pixel, key=lambda r: r["image"]), sorted(loss, key=lambda r: r["image"]), strict=True
    ):
        assert abs(a["psnr_clean"] - b["psnr_clean"]) < 1e-9


def _refused(argv: list[str], capsys) -> str:
    """The one error line of a refused command (argparse may print its usage above it)."""
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own refusal of a value outside a flag's range
        code = exc.code
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert code == 2 and "Traceback" not in err and len(errors) == 1, err
    return errors[0]


@pytest.mark.parametrize(
    ("flag", "value", "named"),
    [
        ("--sigma-g", "0", ("--sigma-g", "sigma_g")),
        ("--n", "1", ("--n", "n = 1")),
        ("--alpha", "0", ("--alpha", "alpha =")),
        ("--alpha", "1.5", ("--alpha", "alpha =")),
        ("--eps-rel", "0.001,2", ("--eps-rel", "eps_rel")),
    ],
)
def test_bad_values_give_one_error_line(tmp_path: Path, capsys, flag, value, named) -> None:
    args = {"--sigma-g": "0.5", "--n": "100", "--alpha": "0.001", "--eps-rel": "0.001"}
    args[flag] = value
    argv = ["certify", "--model", str(tmp_path / "none"), "--out", str(tmp_path / "o")]
    line = _refused([*argv, *(x for kv in args.items() for x in kv)], capsys)
    assert any(name in line for name in named), line


def test_center_below_its_minimum_is_refused(tmp_path: Path, capsys) -> None:
    argv = ["certify", "--model", str(tmp_path / "none"), "--sigma-g", "0.5", "--eps-rel", "0"]
    line = _refused([*argv, "--n", "1000", "--method", "center", "--out", str(tmp_path)], capsys)
    assert line.startswith("error: ") and "1659" in line


def test_report_of_a_certify_folder(tmp_path: Path, model: Path, cli) -> None:
    sets = (
        "--set",
        "data.max_eval_crops=1",
        "--set",
        "attack.k_attack=2",
        "--set",
        "attack.steps=2",
    )
    _certify(cli, model, tmp_path, "--eps-rel", "0.001", "--n", "64", "--alpha", "0.5", *sets)
    r = cli("report", tmp_path)
    assert r.returncode == 0, r.stderr
    page = (tmp_path / "report" / "report.md").read_text()
    assert "Certified robustness" in page and "certificates" in page.splitlines()[0]
    assert (tmp_path / "report" / "report.html").is_file()


def test_certify_reads_its_whole_attack_from_the_config(tmp_path: Path, model: Path, cli) -> None:
    """Issue 24 item 13: attack.steps was ignored while restarts and k_attack were honoured."""
    sets = ["data.max_eval_crops=1", "attack.kind=pgd", "attack.steps=2", "attack.step_factor=0.3"]
    sets += ["attack.restarts=1", "attack.noise=fixed", "attack.k_attack=3"]
    args = [a for s in sets for a in ("--set", s)]
    _, rows = _certify(cli, model, tmp_path, "--eps-rel", "0.01", "--n", "64", *args)
    r = rows[0]
    assert (r["attack_steps"], r["attack_step_factor"], r["attack_restarts"]) == (2, 0.3, 1)
    assert (r["attack_noise"], r["k_attack"], r["attack_keep"]) == ("fixed", 3, "best")


def test_certify_claims_its_folder(tmp_path: Path, model: Path, cli) -> None:
    """Issue 24 item 10: certify rewrote config.yaml of any folder (a reproduce folder, whose
    report then showed the foreign certificate) and appended other models' certificates."""
    base = ("--eps-rel", "0", "--n", "16", "--set", "data.max_eval_crops=1")
    _certify(cli, model, tmp_path / "c", *base)
    again = cli("certify", "--model", "bilinear", "--sigma-g", "0.3", "--quiet", "--out",
                tmp_path / "c", *base)  # fmt: skip
    assert again.returncode != 0 and "Traceback" not in again.stderr
    assert "bilinear" in again.stderr
    _certify(cli, model, tmp_path / "c", *base)  # the same model resumes
    moved = cli("certify", "--model", "bilinear", "--sigma-g", "0.3", "--quiet", "--out",
                tmp_path / "c", "--force-new", *base)  # fmt: skip
    assert moved.returncode == 0, moved.stderr
    assert list((tmp_path / "c").glob(".old-*"))


def test_the_python_api_certifies_a_checkpoint_as_the_cli(tmp_path: Path, model: Path, cli) -> None:
    # api.certify on a checkpoint folder takes the checkpoint's own config, as the CLI does:
    # the same settings key, so the same records to the bit
    import smoothrecon as sr

    sets = ["data.max_eval_crops=1", "attack.k_attack=2", "attack.steps=3"]
    _, by_cli = _certify(
        cli, model, tmp_path / "cli", "--eps-rel", "0.001", "--n", "64",
        *[a for s in sets for a in ("--set", s)],
    )  # fmt: skip
    by_api = sr.certify(
        model, sigma_g=0.3, eps_rels=[0.001], n=64, out=tmp_path / "api", overrides=sets
    )
    assert len(by_api) == len(by_cli) == 1
    keys = ("key", "psnr_certified", "psnr_attacked", "psnr_clean", "model")
    assert {k: by_api[0][k] for k in keys} == {k: by_cli[0][k] for k in keys}
