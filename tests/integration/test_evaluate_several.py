"""Several models in one evaluation: the same crops, attacks and noise for each, one report
comparing them; a repeated --model and a folder of another evaluation are refused in one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from smoothrecon.util.io import read_jsonl

FAST = ["--eps-rel", "0,0.02", "--sigma-g", "0,0.1", "--steps", "2", "--restarts", "1"]


@pytest.fixture(scope="module")
def two_models(smoke_models: dict[str, Path]) -> tuple[Path, Path]:
    """The session's standard and RS models (conftest.py), labelled by their folders."""
    return smoke_models["std"], smoke_models["rs"]


def _evaluate(cli, photo_dir: Path, out: Path, *args: str | Path):
    data = ["--data", photo_dir, "--set", "data.short_side=0", "--quiet", "--out", out]
    return cli("evaluate", *args, *FAST, *data)


def test_two_models_and_the_baselines_in_one_report(tmp_path, photo_dir, two_models, cli):
    a, b = two_models
    out = tmp_path / "eval"
    r = _evaluate(cli, photo_dir, out, "--model", a, "--model", b, "--baselines")
    assert r.returncode == 0, r.stderr
    rows = read_jsonl(out / "records.jsonl")
    assert {x["model"] for x in rows} == {"std", "rs", "x2/bilinear", "x2/bicubic"}
    # The same crops for every model: equal counts per split.
    counts = {(x["model"], x["split"]): x["n"] for x in rows}
    assert len({n for (_, split), n in counts.items() if split == "test"}) == 1
    r = cli("report", out)
    assert r.returncode == 0, r.stderr
    page = (out / "report" / "report.md").read_text()
    assert "std" in page and "rs" in page


def test_a_repeated_model_is_refused(tmp_path, photo_dir, two_models, cli):
    a, _ = two_models
    r = _evaluate(cli, photo_dir, tmp_path / "e", "--model", a, "--model", a)
    assert r.returncode == 2 and "given more than once" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_a_folder_of_another_evaluation_is_refused(tmp_path, photo_dir, two_models, cli):
    a, b = two_models
    out = tmp_path / "eval"
    assert _evaluate(cli, photo_dir, out, "--model", a).returncode == 0
    before = sorted(p.name for p in out.rglob("*"))
    other_model = _evaluate(cli, photo_dir, out, "--model", b)
    other_k = _evaluate(cli, photo_dir, out, "--model", a, "--k", "7")
    for r, field in ((other_model, "models"), (other_k, "smoothing.k")):
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1, r.stderr
        assert field in lines[0] and "--out" in lines[0]
    assert sorted(p.name for p in out.rglob("*")) == before  # nothing written
    # The same evaluation resumes, and --force-new starts over with the old run kept aside.
    assert _evaluate(cli, photo_dir, out, "--model", a).returncode == 0
    r = _evaluate(cli, photo_dir, out, "--model", b, "--force-new")
    assert r.returncode == 0, r.stderr
    assert any(p.name.startswith(".old-") for p in out.iterdir())
