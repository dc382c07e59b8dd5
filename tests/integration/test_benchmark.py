"""Issue 27: the benchmark protocol at smoke scale (protocol "smoke-v1") on a toy model of the
user's own, a no-learning baseline and an RS model behind median smoothing; their cards, the
leaderboard's ranking and CI-overlap marks, the refusal to rank two protocol definitions
together, and a card that agrees with `evaluate` on the same settings."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from smoothrecon.benchmark.leaderboard import grouped, load_cards, ranked
from smoothrecon.benchmark.protocol import PROTOCOLS
from smoothrecon.errors import UserError
from smoothrecon.evaluation.records import headline, split_roles
from smoothrecon.util.io import read_jsonl

TOY = '''
import torch
from torch import nn


class Toy(nn.Module):
    """The input plus a small learned-looking correction (fixed weights)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            self.conv.weight.copy_(0.05 * torch.randn(self.conv.weight.shape, generator=g))
            self.conv.bias.zero_()

    def forward(self, y):
        return y + torch.tanh(self.conv(y))
'''


@pytest.fixture(scope="module")
def denoiser(tmp_path_factory: pytest.TempPathFactory, cli, photo_dir: Path) -> Path:
    """A denoiser of the network input at sigma 0.2, trained here by the CLI (2 epochs)."""
    out = tmp_path_factory.mktemp("denoiser") / "den"
    common = ("--preset", "smoke", "--quiet", "--set", "data.short_side=0", "--data", photo_dir)
    r = cli("train", *common, "--mode", "denoiser", "--sigma-f", "0.2", "--residual", "--out", out)
    assert r.returncode == 0, r.stderr[-2000:]
    return out


@pytest.fixture(scope="module")
def cards(
    tmp_path_factory: pytest.TempPathFactory, cli, smoke_models, denoiser: Path
) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("benchmark")
    (root / "toy.py").write_text(TOY)
    runs = {
        "toy": ("--model", f"{root / 'toy.py'}:Toy"),
        "bilinear": ("--model", "bilinear"),
        "median": ("--model", smoke_models["rs"], "--defense", "median"),
        "denoised": ("--model", smoke_models["std"], "--denoiser", denoiser),
    }
    out = {}
    for name, args in runs.items():
        r = cli("benchmark", *args, "--protocol", "smoke-v1", "--quiet", "--out", root / name)
        assert r.returncode == 0, r.stderr
        assert "score" in r.stdout and "card.md" in r.stdout
        out[name] = root / name
    return out


def test_cards_hold_the_headline_and_the_curve(cards: dict[str, Path]) -> None:
    p = PROTOCOLS["smoke-v1"]
    for folder in cards.values():
        card = json.loads((folder / "card.json").read_text())
        assert card["protocol"] == "smoke-v1" and card["protocol_key"] == p.key
        assert (folder / "card.md").read_text().startswith(f"# {card['model']}")
        assert set(card["curve"]) == {"input", "measurement"}
        for rows in card["curve"].values():
            assert [r["eps_rel"] for r in rows] == list(p.eps_rels)
        h = card["headline"]
        assert h["robust_eps_rel"] == 0.05 and set(h["robust"]) == {"input", "measurement"}
        # the robust numbers are the curve's at eps_rel 0.05; attacks lower PSNR
        assert h["robust"]["input"]["psnr"]["mean"] == pytest.approx(
            card["curve"]["input"][2]["psnr"]
        )
        assert h["robust"]["input"]["psnr"]["mean"] < h["clean_psnr"]["mean"]
        assert card["code_version"] and card["machine"]["cpu"] and card["model_hash"]
    median = json.loads((cards["median"] / "card.json").read_text())
    assert median["smoothed"] and median["model"].endswith("+med")
    assert median["headline"]["certified_psnr"]["method"] == "median"
    cert = read_jsonl(cards["median"] / "certificate" / "certificates.jsonl")
    assert cert and all(r["certified_le_attacked"] for r in cert)
    bilinear = json.loads((cards["bilinear"] / "card.json").read_text())
    assert not bilinear["smoothed"] and bilinear["headline"]["certified_psnr"] is None
    denoised = json.loads((cards["denoised"] / "card.json").read_text())
    assert denoised["smoothed"] and denoised["model"].endswith("+den0.2")
    assert denoised["defense"] == "den0.2" and denoised["headline"]["certified_psnr"]
    for card in (median, bilinear, denoised):
        assert card["runtime"]["precision"] == "fp32"  # the protocol pins it
        assert "fp32" in (cards["bilinear"] / "card.md").read_text()


def test_a_denoiser_cannot_defend_a_baseline(denoiser: Path, tmp_path: Path, cli) -> None:
    r = cli("benchmark", "--model", "bilinear", "--denoiser", denoiser, "--protocol",
            "smoke-v1", "--quiet", "--out", tmp_path)  # fmt: skip
    assert r.returncode == 2 and "no-learning baseline" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_the_leaderboard_ranks_and_marks_unresolved_ranks(
    cards: dict[str, Path], tmp_path: Path, cli
) -> None:
    r = cli("leaderboard", *cards.values(), "--out", tmp_path)
    assert r.returncode == 0, r.stderr
    rows = ranked(load_cards(list(cards.values())))
    scores = [row["card"]["headline"]["score"] for row in rows]
    assert [s["mean"] for s in scores] == sorted((s["mean"] for s in scores), reverse=True)
    for above, row, s in zip(rows, rows[1:], scores[1:], strict=False):
        a = above["card"]["headline"]["score"]
        assert row["tied"] == (a["mean"] - a["ci95"] <= s["mean"] + s["ci95"])
    md = (tmp_path / "leaderboard.md").read_text()
    assert "Protocol smoke-v1, x2" in md and all(row["card"]["model"] in md for row in rows)
    with (tmp_path / "leaderboard.csv").open() as f:
        table = list(csv.DictReader(f))
    assert [t["model"] for t in table] == [row["card"]["model"] for row in rows]
    page = (tmp_path / "leaderboard.html").read_text()
    assert "<table>" in page and "<script>" in page and "http" not in page  # self-contained


def test_protocols_are_never_ranked_together(cards: dict[str, Path], tmp_path: Path) -> None:
    card = json.loads((cards["toy"] / "card.json").read_text())
    other = {**card, "protocol": "v0", "protocol_key": "0000"}
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "card.json").write_text(json.dumps(other))
    groups = grouped(load_cards([*cards.values(), tmp_path / "other"]))
    assert set(groups) == {("smoke-v1", "x2"), ("v0", "x2")}
    assert [c["model"] for c in groups[("v0", "x2")]] == [card["model"]]
    redefined = {**card, "protocol_key": "ffff"}
    (tmp_path / "redefined").mkdir()
    (tmp_path / "redefined" / "card.json").write_text(json.dumps(redefined))
    with pytest.raises(UserError, match="two definitions"):
        grouped(load_cards([cards["toy"], tmp_path / "redefined"]))
    with pytest.raises(UserError, match="does not exist"):
        load_cards([tmp_path / "nowhere"])


def test_a_card_agrees_with_evaluate(cards: dict[str, Path], tmp_path: Path, cli) -> None:
    """The card's input-space curve equals what `evaluate` reports with the same settings."""
    p = PROTOCOLS["smoke-v1"]
    sets = [x for s in p.sets() for x in ("--set", s)]
    r = cli("evaluate", "--model", "bilinear", "--preset", "smoke", *sets, "--quiet",
            "--out", tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr
    records = read_jsonl(tmp_path / "records.jsonl")
    card = json.loads((cards["bilinear"] / "card.json").read_text())
    splits = split_roles(r["split"] for r in records)
    for row in card["curve"]["input"]:
        rec = headline(records, row["eps_rel"], "strong", splits)
        assert rec is not None and abs(rec["psnr"] - row["psnr"]) < 0.01, row


def test_a_card_reproduces_in_a_fresh_folder(cards: dict[str, Path], tmp_path: Path, cli) -> None:
    """Rerunning the protocol from scratch on the same machine gives the same numbers."""
    model = f"{cards['toy'].parent / 'toy.py'}:Toy"
    r = cli("benchmark", "--model", model, "--protocol", "smoke-v1", "--quiet", "--out", tmp_path)
    assert r.returncode == 0, r.stderr
    again = json.loads((tmp_path / "card.json").read_text())
    first = json.loads((cards["toy"] / "card.json").read_text())
    for space, rows in first["curve"].items():
        for a, b in zip(rows, again["curve"][space], strict=True):
            assert abs(a["psnr"] - b["psnr"]) < 0.01 and abs(a["ssim"] - b["ssim"]) < 1e-4
    assert again["model_hash"] == first["model_hash"]
