"""`smoothrecon reproduce` + `smoothrecon report` at the smoke preset: the report's files parse,
a rerun does no work, and a run killed mid-way resumes to the same tables."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image
from safetensors.torch import load_file

from smoothrecon.models.checkpoint import load_model
from smoothrecon.report.records import load_run
from smoothrecon.report.tables import CELL_COLUMNS
from smoothrecon.util.io import read_jsonl


def reproduce_args(photo_dir: Path, out: Path) -> list[str]:
    return [
        "reproduce",
        "--preset",
        "smoke",
        "--data",
        str(photo_dir),
        "--set",
        "data.short_side=0",
        # issue 17's rows: AT trained against each threat model, and f o P
        "--set",
        "experiment.at_spaces=[input,measurement]",
        "--set",
        "experiment.projected=true",
        "--quiet",
        "--out",
        str(out),
    ]


def todo_counts(stdout: str) -> dict[str, list[int]]:
    """The '(N to train)' and '(N to run)' counts the runner prints."""
    found = re.findall(r"\((\d+) to (train|run)\)", stdout)
    counts: dict[str, list[int]] = {"train": [], "run": []}
    for n, kind in found:
        counts[kind].append(int(n))
    return counts


def checked(r: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert r.returncode == 0, f"exit {r.returncode}\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}"
    assert "Traceback" not in r.stderr
    return r


def eval_files(run: Path) -> dict[str, int]:
    return {
        str(p.relative_to(run)): p.stat().st_mtime_ns
        for p in sorted((run / "evals").rglob("*.json"))
    }


def model_weights(run: Path) -> dict[str, dict]:
    return {
        p.parent.name: {k: v for k, v in load_file(str(p)).items() if k.startswith("model.")}
        for p in sorted((run / "models").glob("*/last.safetensors"))
    }


@pytest.fixture(scope="module")
def full_run(cli, photo_dir: Path, tmp_path_factory) -> dict:
    """One uninterrupted reproduce + report."""
    out = tmp_path_factory.mktemp("reproduce") / "run"
    first = checked(cli(*reproduce_args(photo_dir, out)))
    report = checked(cli("report", out))
    return {"out": out, "first": first, "report": report}


def test_first_run_does_all_the_work(full_run) -> None:
    counts = todo_counts(full_run["first"].stdout)
    assert counts["train"] and all(n > 0 for n in counts["train"]), full_run["first"].stdout
    assert counts["run"] and all(n > 0 for n in counts["run"]), full_run["first"].stdout
    out = full_run["out"]
    assert (out / "run.json").exists() and (out / "config.yaml").exists()
    assert not (out / ".lock").exists()
    assert eval_files(out)
    assert not list(out.rglob("*.tmp")), "a temporary file was left behind"


def test_rs_models_are_certified_in_the_run_and_the_report(full_run) -> None:
    out = full_run["out"]
    files = sorted((out / "certificates").glob("*/certificates.jsonl"))
    rows = [r for p in files for r in read_jsonl(p)]
    assert {r["model"] for r in rows} == {"x2/thesis/rs0.1"}  # the smoke grid's one RS model
    assert {r["sigma_g"] for r in rows} == {0.1}  # G at sigma_g = sigma_f
    # the smoke preset certifies by the pixel, median and loss methods (issue 26)
    assert sorted((r["method"], r["image"], r["eps_rel"]) for r in rows) == [
        (m, i, e) for m in ("loss", "median", "pixel") for i in range(2) for e in (0.0, 0.001)
    ]
    # a certificate is a lower bound: the run's own attack never goes below it
    assert all(r["certified_le_attacked"] for r in rows), rows
    md = (out / "report" / "report.md").read_text()
    assert "Certified robustness" in md and "| median |" in md


def test_median_smoothing_rows_are_evaluated_and_reported(full_run) -> None:
    """Issue 26: the RS model behind median smoothing has its own rows, smoothed at sigma_g*
    with the attack on g through the mean and the median of the draws, and a finding."""
    out = full_run["out"]
    rows = [
        r for p in (out / "evals").rglob("*.json") for r in json.loads(p.read_text())["records"]
    ]
    med = [r for r in rows if r["model"] == "x2/thesis/rs0.1+med"]
    assert med and all(r["smoothed"] and r["defense_kind"] == "median" for r in med)
    on_g = [r for r in med if r["attack"] == "pgd_g"]
    assert on_g and all(
        {m.split(":")[0] for m in r["by_member"]} == {"mean", "percentile"} for r in on_g
    )
    md = (out / "report" / "report.md").read_text()
    assert "median smoothing" in md and "rs0.1+med" in md


def test_the_study_compares_families_and_the_report_says_so(full_run) -> None:
    """Issue 25: the convergence study runs PGD, APGD and a reference, and the report shows
    every setting as a share of the best loss any of them found."""
    out = full_run["out"]
    rows = load_run(out).convergence
    assert {r["attack"] for r in rows} == {"pgd", "apgd"}
    assert {r["attack"] for r in rows if r.get("reference")} == {"pgd", "apgd"}
    md = (out / "report" / "report.md").read_text()
    assert "best loss any attack found (per crop, a long reference included)" in md
    assert "| reference APGD |" in md


def test_threat_model_rows_are_trained_evaluated_and_reported(full_run) -> None:
    out = full_run["out"]
    rows = [
        r for p in (out / "evals").rglob("*.json") for r in json.loads(p.read_text())["records"]
    ]
    by_model = {r["model"]: r for r in rows}
    meas = by_model["x2/thesis/at0.02-meas"]
    assert (meas["mode"], meas["value"], meas["train_space"]) == (
        "adversarial",
        0.02,
        "measurement",
    )
    assert by_model["x2/thesis/at0.02"]["train_space"] == "input"
    (folder,) = (out / "models").glob("x2-thesis-at0.02-meas-*")
    _, meta = load_model(folder / "best.safetensors")
    assert meta["config"]["train"]["attack_space"] == "measurement"
    assert not list((out / "models").glob("*proj*")), "f o P reuses the standard model's weights"

    def clean_psnr(model: str) -> float:
        (r,) = [
            r
            for r in rows
            if r["model"] == model and r["eps_rel"] == 0 and r["split"] == "test"
            and r["sigma_g"] == 0
        ]  # fmt: skip
        return r["psnr"]

    # a noiseless measurement's input lies in the range of the back-projection already: the
    # projection costs no clean accuracy
    assert abs(clean_psnr("x2/thesis/std+proj") - clean_psnr("x2/thesis/std")) < 1e-3
    assert {r["sigma_g"] for r in rows if r["model"] == "x2/thesis/std+proj"} == {0.0}
    md = (out / "report" / "report.md").read_text()
    assert "standard + range projection (f o P)" in md
    assert "AT eps_rel=0.02 (measurement attack)" in md
    assert "the range projection (f o P) makes the standard model more robust" in md
    assert "adversarial training against the attacked space (input) beats training" in md


def test_report_tables_exist_and_parse(full_run) -> None:
    tables = full_run["out"] / "report" / "tables"
    stems = {p.stem for p in tables.iterdir()}
    assert stems, "no tables"
    assert any(s.startswith("table_4_1") for s in stems)
    for stem in sorted(stems):
        for suffix in (".md", ".csv", ".tex"):
            assert (tables / f"{stem}{suffix}").is_file(), f"{stem}{suffix} is missing"
        with open(tables / f"{stem}.csv", newline="") as fh:
            rows = list(csv.reader(fh))
        assert len(rows) >= 2, f"{stem}.csv has no data rows"
        assert all(len(r) == len(rows[0]) for r in rows), f"{stem}.csv is ragged"
        assert all(cell.strip() for cell in rows[0]), f"{stem}.csv has an empty header cell"
        md = (tables / f"{stem}.md").read_text()
        table_lines = [ln for ln in md.splitlines() if ln.startswith("|")]
        md_rows = [[c.strip() for c in ln.strip("|").split("|")] for ln in table_lines[2:]]
        if tuple(rows[0]) == CELL_COLUMNS:  # one CSV row per shown cell, with its numbers
            shown = [c for r in md_rows for c in r[1:] if c != "-"]
            assert len(rows) - 1 == len(shown), f"{stem}.csv: one row per cell of the table"
            assert all(float(r[5]) == float(r[5]) and int(r[7]) >= 1 for r in rows[1:])
        else:
            assert len(md_rows) == len(rows) - 1, f"{stem}.md: header, rule and one line per row"
        tex = (tables / f"{stem}.tex").read_text()
        assert "\\begin{tabular}" in tex and "\\end{tabular}" in tex
        assert tex.count("\\\\") >= len(md_rows), f"{stem}.tex lacks rows"


def test_report_figures_exist_and_are_pngs(full_run) -> None:
    report = full_run["out"] / "report"
    md = (report / "report.md").read_text()
    linked = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    pngs = sorted((report / "figures").glob("*.png"))
    assert pngs, "no figures"
    assert sorted(report / p for p in linked) == pngs  # every figure linked, every link a figure
    for p in pngs:
        with Image.open(p) as im:
            assert im.format == "PNG"
            im.verify()
        with Image.open(p) as im:
            im.load()
            assert im.size[0] >= 100 and im.size[1] >= 100


def test_report_html_is_self_contained(full_run) -> None:
    page = full_run["out"] / "report" / "report.html"
    assert page.is_file()
    assert f"report: {page}" in full_run["report"].stdout
    html = page.read_text()
    assert "<html" in html.lower() and "</html>" in html.lower()
    n_figures = len(list((page.parent / "figures").glob("*.png")))
    assert html.count("data:image/png;base64,") == n_figures
    assert "<table" in html


def test_rerun_does_no_work(cli, photo_dir: Path, full_run) -> None:
    out = full_run["out"]
    evals = eval_files(out)
    weights = {p: p.stat().st_mtime_ns for p in (out / "models").rglob("*.safetensors")}
    manifest = (out / "run.json").read_text()
    again = checked(cli(*reproduce_args(photo_dir, out)))
    counts = todo_counts(again.stdout)
    assert counts["train"] == [0] * len(counts["train"]) and counts["train"], again.stdout
    assert counts["run"] == [0] * len(counts["run"]) and counts["run"], again.stdout
    assert "[train" not in again.stdout
    assert eval_files(out) == evals
    assert {p: p.stat().st_mtime_ns for p in weights} == weights
    assert (out / "run.json").read_text() == manifest


def test_kill_and_resume_gives_the_same_tables(cli, photo_dir, tmp_path, full_run) -> None:
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "smoothrecon", *reproduce_args(photo_dir, out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=dict(os.environ),
    )
    try:
        deadline = time.monotonic() + 240
        while not list(out.glob("models/*/last.safetensors")):
            assert proc.poll() is None, "reproduce ended before its first checkpoint"
            assert time.monotonic() < deadline, "no checkpoint after 240 s"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert (out / ".lock").exists()  # the killed run's stale lock
    assert not (out / "run.json").exists()

    resumed = checked(cli(*reproduce_args(photo_dir, out)))
    counts = todo_counts(resumed.stdout)
    assert counts["train"] and counts["train"][0] >= 1, resumed.stdout
    checked(cli("report", out))

    ref_tables = full_run["out"] / "report" / "tables"
    tables = out / "report" / "tables"
    ref_csv = sorted(p.name for p in ref_tables.glob("*.csv"))
    assert sorted(p.name for p in tables.glob("*.csv")) == ref_csv
    for name in ref_csv:
        assert (tables / name).read_text() == (ref_tables / name).read_text(), name

    ref_weights, weights = model_weights(full_run["out"]), model_weights(out)
    assert weights.keys() == ref_weights.keys()
    for model, tensors in ref_weights.items():
        for k, v in tensors.items():
            assert (weights[model][k] == v).all(), f"{model}: {k} differs after the resume"
    assert not (out / ".lock").exists()


def test_another_preset_into_the_folder_is_refused_naming_it(cli, photo_dir, full_run) -> None:
    """`reproduce --preset cpu` (or the default preset) on a smoke folder: one line naming the
    preset difference, and the folder is left as it was."""
    out = full_run["out"]
    files = {str(p.relative_to(out)): p.stat().st_mtime_ns for p in out.rglob("*")}
    args = reproduce_args(photo_dir, out)
    for cpu in ([args[0], *args[3:]], [*args[:2], "cpu", *args[3:]]):
        r = cli(*cpu)
        assert r.returncode == 2, r.stderr[-2000:]
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:"), lines
        assert "preset 'smoke' there, 'cpu' now" in lines[0] and "--out" in lines[0]
    assert {str(p.relative_to(out)): p.stat().st_mtime_ns for p in out.rglob("*")} == files
