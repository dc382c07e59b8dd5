"""`evaluate --set attack.space=measurement` and `=input` give records labelled with their
space, with the budget eps = eps_rel * sqrt(d) and the perturbation norm in that space."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from smoothrecon.util.io import read_jsonl


@pytest.mark.parametrize(
    ("space", "values"), [("input", 3 * 32 * 32), ("measurement", 3 * 16 * 16)]
)
def test_records_carry_their_space(tmp_path: Path, photo_dir: Path, cli, space, values) -> None:
    r = cli(
        "evaluate", "--model", "bilinear", "--preset", "smoke", "--data", photo_dir,
        "--eps-rel", "0,0.02", "--steps", "3", "--restarts", "1", "--quiet",
        "--set", "data.short_side=0", "--set", f"attack.space={space}", "--out", tmp_path,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    attacked = [x for x in read_jsonl(tmp_path / "records.jsonl") if x["eps_rel"] > 0]
    assert attacked and {x["space"] for x in attacked} == {space}
    for x in attacked:
        assert math.isclose(x["eps"], 0.02 * math.sqrt(values), rel_tol=1e-6)
        # the perturbation's norm is measured in the attacker's own space, where PGD ends on
        # the sphere of radius eps (a linear model's worst case lies on it)
        assert math.isclose(x["e_norm_max"], x["eps"], rel_tol=1e-4)
        assert math.isclose(x["e_norm_min"], x["eps"], rel_tol=1e-3)
