"""Every code example in docs/*.md runs, at smoke scale on the test photos (issue 18, "Docs
that run").

Each fenced block and each indented block of a doc is one test case, unless the line above it
(blank lines aside) is `<!-- not run: REASON -->`. A `python` block is executed as written in a
fresh folder, with `sr.load_config` pointed at the test photos; any other block must hold
`smoothrecon` command lines, run with the smoke preset and the test photos appended. A new
example is therefore run by the suite, or says in the doc why it is not. Blocks whose results
can be checked beyond "it ran" have a check in CHECKS.
"""

from __future__ import annotations

import json
import math
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch

import smoothrecon as sr
from smoothrecon.config import load_config

DOCS = Path(__file__).resolve().parents[2] / "docs"
NOT_RUN = re.compile(r"^<!--\s*not run:\s*(.*?)\s*-->$")
FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})\s*([^`\s]*)")
SHELL = ("", "sh", "shell", "bash", "console")
# The smoke preset on the test photos (`--data` is appended), with 2 evaluation crops and one
# 2-draw attack start: `certify` attacks G with its own 100 steps, which no preset shortens.
SMOKE = [
    "--preset", "smoke", "--quiet",
    "--set", "data.short_side=0", "--set", "data.max_eval_crops=2",
    "--set", "attack.k_attack=2", "--set", "attack.restarts=1",
]  # fmt: skip


@dataclass(frozen=True)
class Block:
    """One code block of a markdown file; `line` is its first code line (1-based)."""

    doc: str
    line: int
    info: str  # the fence's info string; "" for an indented block
    text: str
    not_run: str | None  # the reason in <!-- not run: ... -->, or None: the tests run it

    @property
    def id(self) -> str:
        return f"{self.doc}:{self.line}"


def _reason(lines: list[str], start: int) -> str | None:
    """The not-run reason on the last non-blank line before lines[start], if any."""
    j = start - 1
    while j >= 0 and not lines[j].strip():
        j -= 1
    match = NOT_RUN.match(lines[j].strip()) if j >= 0 else None
    return match.group(1) if match else None


def code_blocks(markdown: str, doc: str = "") -> list[Block]:
    """The fenced blocks and the indented blocks (4 spaces, after a blank line) of `markdown`.

    Indented lines that continue a paragraph or list item without a blank line are not code;
    an indented paragraph after a blank line inside a list would be taken as code, and then
    fail loudly as a command that is not `smoothrecon`, never pass unnoticed.
    """
    lines = markdown.splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        fence = FENCE.match(lines[i])
        indented = lines[i].startswith("    ") and bool(lines[i].strip())
        if fence:
            mark, info = fence.groups()
            closing = re.compile(rf"^ {{0,3}}{mark[0]}{{{len(mark)},}}\s*$")
            end = i + 1
            while end < len(lines) and not closing.match(lines[end]):
                end += 1
            body, first, nxt = lines[i + 1 : end], i + 1, end + 1
        elif indented and (i == 0 or not lines[i - 1].strip()):
            end = i
            while end < len(lines) and (lines[end].startswith("    ") or not lines[end].strip()):
                end += 1
            body, first, nxt, info = [ln[4:] for ln in lines[i:end]], i, end, ""
        else:
            i += 1
            continue
        text = "\n".join(body).strip("\n") + "\n"
        blocks.append(Block(doc, first + 1, info, text, _reason(lines, i)))
        i = nxt
    return blocks


BLOCKS = [b for p in sorted(DOCS.glob("*.md")) for b in code_blocks(p.read_text(), p.name)]
RUN = [b for b in BLOCKS if b.not_run is None]


def commands(block: Block) -> list[list[str]]:
    """The `smoothrecon` command lines of a command-line block, arguments after the program
    (continuations joined, comments dropped)."""
    assert block.info in SHELL, (
        f"{block.id}: a ```{block.info} block cannot be run; run it or mark it "
        "<!-- not run: why -->"
    )
    found = []
    for line in block.text.replace("\\\n", " ").splitlines():
        args = shlex.split(line, comments=True)
        if args:
            assert args[0] == "smoothrecon", (
                f"{block.id}: only `smoothrecon` commands run in the tests; `{line.strip()}` "
                "needs <!-- not run: why --> above its block"
            )
            found.append(args[1:])
    assert found, f"{block.id}: no command in the block"
    return found


@dataclass
class Ran:
    """What one block left: its folder, its printed output and (Python) its variables."""

    cwd: Path
    out: str
    names: dict[str, Any] = field(default_factory=dict)


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]


# ---------------------------------------------------------------- checks beyond "it ran"


def _certify_api(r: Ran) -> None:
    rows = r.names["rows"]
    assert {(row["method"], row["image"]) for row in rows} == {
        (m, i) for m in ("pixel", "center") for i in (0, 1)
    }
    pixel = [row for row in rows if row["method"] == "pixel"]
    # a lower bound at eps > 0 lies below the Monte-Carlo estimate at y
    assert all(0 < row["psnr_certified"] < row["psnr_clean"] for row in pixel), pixel
    printed = re.findall(r"pixel crop \d: certified PSNR >= (\d+\.\d\d) dB", r.out)
    assert [float(v) for v in printed] == [round(row["psnr_certified"], 2) for row in pixel]


def _certify_cli(r: Ran) -> None:
    rows = _jsonl(r.cwd / "runs/cert/certificates.jsonl")
    assert {row["eps_rel"] for row in rows} == {0.0005, 0.001, 0.002, 0.005}
    assert {(row["method"], row["n"], row["sigma_g"]) for row in rows} == {("pixel", 2000, 0.5)}
    assert all(row["certified_le_attacked"] and not row["violation"] for row in rows)
    held = re.search(r"psnr_certified <= psnr_attacked on (\d+) of (\d+) records", r.out)
    assert held and held.group(1) == held.group(2) == str(len(rows)), r.out


def _threat_api(r: Ran) -> None:
    n = r.names
    y, attack, threat = n["y"], n["attack"], n["threat"]
    b, c, h, w = y.shape
    factor = n["cfg"].operator.factor
    assert attack.e.shape == y.shape
    assert attack.e_space.shape == (b, c, h // factor, w // factor)
    assert attack.eps == pytest.approx(0.05 * math.sqrt(c * (h // factor) * (w // factor)))
    assert torch.all(attack.norm <= attack.eps * (1 + 1e-5)) and attack.norm.min() > 0
    assert torch.allclose(attack.e, threat.lift(attack.e_space), atol=1e-5)
    with torch.no_grad():  # P is the identity on clean inputs: f o P costs nothing clean
        assert torch.allclose(n["f_P"](y), n["f"](y), atol=1e-4)


def _column_dropout(r: Ran) -> None:
    op = r.names["ColumnDropout"](sigma_y=0.1)
    g = torch.Generator().manual_seed(0)
    x, v = torch.rand(2, 3, 5, 8, generator=g), torch.rand(2, 3, 5, 4, generator=g)
    assert torch.allclose((op.A(x) * v).sum(), (x * op.A_adjoint(v)).sum())  # <Ax, v> = <x, A^T v>
    assert op(x).shape == x.shape and op.measurement_count((3, 5, 8)) == 60
    assert not torch.equal(op(x, g), op(x)) and op.describe()["name"] == "column_dropout"


def _denoised_smoothing(r: Ran) -> None:
    records = _jsonl(r.cwd / "runs/ds/records.jsonl")
    composed = {rec["model"] for rec in records if rec["model"].endswith("+den0.25")}
    assert len(composed) == 1 and len({rec["model"] for rec in records}) >= 2
    assert any(rec["sigma_g"] > 0 for rec in records if rec["model"] in composed)
    psnrs = [rec["psnr"] for rec in records]
    assert all(math.isfinite(p) and p > 0 for p in psnrs), psnrs


# A text each checked block holds (exactly one run block must hold it) -> its check.
CHECKS: dict[str, Callable[[Ran], None]] = {
    "cert = certify(f, y, x, norm, s": _certify_api,
    "smoothrecon certify --model runs/rs0.25/best.safetensors": _certify_cli,
    "attack = pgd_in_space(f, y, target, threat, eps_rel, pgd)": _threat_api,
    "class ColumnDropout(Operator)": _column_dropout,
    "--denoiser runs/den0.25/best --out runs/ds": _denoised_smoothing,
}


# ---------------------------------------------------------------- the tests


def _run_python(block: Block, photo_dir: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    def on_test_photos(preset="paper", file=None, overrides=None, extra=None):
        more = [f"data.source={photo_dir}", "data.short_side=0"]
        return load_config(preset, file, [*(overrides or []), *more], extra)

    monkeypatch.setattr(sr, "load_config", on_test_photos)
    names: dict[str, Any] = {"__name__": "docs_example"}
    exec(compile(block.text, block.id, "exec"), names)
    return names


def _run_commands(block: Block, photo_dir: Path, cli: Callable) -> str:
    out = []
    for args in commands(block):
        extra = [] if args[0] == "report" else [*SMOKE, "--data", str(photo_dir)]
        r = cli(*args, *extra)
        assert r.returncode == 0, f"{block.id}: smoothrecon {shlex.join(args)}: {r.stderr}"
        if "--out" in args:
            folder = Path(args[args.index("--out") + 1])
            assert folder.is_dir() and any(folder.iterdir()), f"{block.id}: {folder} is empty"
        out.append(r.stdout)
    return "".join(out)


@pytest.mark.parametrize("block", RUN, ids=lambda b: b.id)
def test_doc_example_runs(block: Block, tmp_path, photo_dir, monkeypatch, capsys, cli) -> None:
    monkeypatch.chdir(tmp_path)
    if block.info == "python":
        names = _run_python(block, photo_dir, monkeypatch)
        ran = Ran(tmp_path, capsys.readouterr().out, names)
    else:
        ran = Ran(tmp_path, _run_commands(block, photo_dir, cli))
    for key, check in CHECKS.items():
        if key in block.text:
            check(ran)


def test_every_check_belongs_to_one_run_block() -> None:
    for key in CHECKS:
        holders = [b.id for b in RUN if key in b.text]
        assert len(holders) == 1, f"{key!r} is in the run blocks {holders}, expected one"


def test_blocks_not_run_say_why() -> None:
    skipped = [b for b in BLOCKS if b.not_run is not None]
    assert skipped and all(len(b.not_run or "") >= 10 for b in skipped), skipped
    assert {b.doc for b in RUN} >= {"certify.md", "operators.md", "threat-models.md"}


def test_code_blocks_finds_fenced_and_indented_blocks_and_their_marks() -> None:
    md = "\n".join([
        "Text", "    lazy continuation, not code", "",
        "```python", "print(1)", "    indented inside a fence", "```", "",
        "<!-- not run: needs a cluster -->", "", "    smoothrecon a", "", "    smoothrecon b", "",
        "1. item", "   - sub", "     continued", "",
        "<!-- not run: a reason -->", "~~~~ sh", "x", "~~~~", "",
        "    smoothrecon c",
    ])  # fmt: skip
    got = [(b.line, b.info, b.text, b.not_run) for b in code_blocks(md)]
    assert got == [
        (5, "python", "print(1)\n    indented inside a fence\n", None),
        (11, "", "smoothrecon a\n\nsmoothrecon b\n", "needs a cluster"),
        (21, "sh", "x\n", "a reason"),
        (24, "", "smoothrecon c\n", None),
    ]
