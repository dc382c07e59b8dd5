"""The leaderboard: result cards ranked per (protocol, operator), in Markdown, CSV and HTML.

Cards are ranked by their score (per crop the mean over threat models of the area under the
PSNR-vs-eps_rel curve; `card.build_card`), best first. A row whose score's 95% CI overlaps the
row above is marked "≈": its rank over that row is not resolved. Cards of different protocols
are never ranked together: each (protocol, operator) is its own table, and two cards that
name the same protocol with different definitions (`protocol_key`) are refused.
"""

from __future__ import annotations

import csv
import html
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from smoothrecon.benchmark.card import CARD_VERSION, Card
from smoothrecon.errors import UserError
from smoothrecon.util.io import atomic_write_text

COLUMNS = (
    "rank",
    "model",
    "score",
    "clean PSNR",
    "robust PSNR input",
    "robust PSNR measurement",
    "robust SSIM input",
    "certified PSNR",
    "defence",
    "model hash",
)


def load_cards(paths: Sequence[str | Path]) -> list[Card]:
    """Every card.json named or found under the given folders; one clear error for a path
    that does not exist, holds no card, or a file that is not a card."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(p.rglob("card.json"))
            if not found:
                raise UserError(f"'{p}' holds no card.json")
            files += found
        elif p.is_file():
            files.append(p)
        else:
            raise UserError(f"'{p}' does not exist")
    cards = []
    for f in files:
        try:
            card = json.loads(f.read_text())
        except (OSError, ValueError) as exc:
            raise UserError(f"'{f}' is not a readable card: {exc}") from None
        if not isinstance(card, dict) or card.get("card") != CARD_VERSION:
            raise UserError(f"'{f}' is not a result card (version {CARD_VERSION})")
        cards.append(card)
    return cards


def grouped(cards: Sequence[Card]) -> dict[tuple[str, str], list[Card]]:
    """{(protocol, operator): cards}; refuses a protocol name with two definitions."""
    keys: dict[str, str] = {}
    out: dict[tuple[str, str], list[Card]] = {}
    for c in cards:
        seen = keys.setdefault(c["protocol"], c["protocol_key"])
        if seen != c["protocol_key"]:
            raise UserError(
                f"cards name protocol '{c['protocol']}' with two definitions ({seen} and "
                f"{c['protocol_key']}): they cannot be ranked together; regenerate them"
            )
        out.setdefault((c["protocol"], c["operator"]), []).append(c)
    return dict(sorted(out.items()))


def ranked(cards: Sequence[Card]) -> list[dict[str, Any]]:
    """Rows best first: rank, the card, and `tied` (its score CI overlaps the row above)."""
    order = sorted(cards, key=lambda c: -c["headline"]["score"]["mean"])
    rows: list[dict[str, Any]] = []
    for i, c in enumerate(order):
        tied = False
        if i:
            above = order[i - 1]["headline"]["score"]
            mine = c["headline"]["score"]
            tied = above["mean"] - above["ci95"] <= mine["mean"] + mine["ci95"]
        rows.append({"rank": i + 1, "tied": tied, "card": c})
    return rows


def _pm(stat: dict[str, float] | None, digits: int = 2) -> str:
    if not stat:
        return "-"
    return f"{stat['mean']:.{digits}f} ± {stat['ci95']:.{digits}f}"


def _cells(row: dict[str, Any]) -> list[str]:
    c = row["card"]
    h = c["headline"]
    robust = h["robust"]
    return [
        f"{row['rank']}{' ≈' if row['tied'] else ''}",
        c["model"],
        _pm(h["score"]),
        _pm(h["clean_psnr"]),
        _pm(robust.get("input", {}).get("psnr")),
        _pm(robust.get("measurement", {}).get("psnr")),
        _pm(robust.get("input", {}).get("ssim"), 4),
        _pm(h["certified_psnr"]),
        c.get("defense") or "-",
        c["model_hash"][:12],
    ]


def _title(protocol: str, operator: str, cards: Sequence[Card]) -> str:
    h = cards[0]["headline"]
    return (
        f"Protocol {protocol}, {operator} ({cards[0]['crops']} test crops; score: mean area under "
        f"PSNR vs eps_rel over both threat models, dB; robust at eps_rel "
        f"{h['robust_eps_rel']:g}; mean ± 95% CI; ≈: CI overlaps the row above)"
    )


def to_markdown(groups: dict[tuple[str, str], list[Card]]) -> str:
    lines = ["# Leaderboard", ""]
    for (protocol, operator), cards in groups.items():
        lines += [f"## {_title(protocol, operator, cards)}", ""]
        lines += ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
        lines += ["| " + " | ".join(_cells(r)) + " |" for r in ranked(cards)]
        lines.append("")
    return "\n".join(lines)


def to_csv(groups: dict[tuple[str, str], list[Card]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["protocol", "operator", "rank", "tied", "model", "score", "score_ci95",
                "clean_psnr", "robust_psnr_input", "robust_psnr_measurement",
                "certified_psnr", "defense", "model_hash"])  # fmt: skip
    for (protocol, operator), cards in groups.items():
        for r in ranked(cards):
            h = r["card"]["headline"]
            rob = h["robust"]
            cert = h["certified_psnr"]
            w.writerow([
                protocol, operator, r["rank"], r["tied"], r["card"]["model"],
                h["score"]["mean"], h["score"]["ci95"], h["clean_psnr"]["mean"],
                rob.get("input", {}).get("psnr", {}).get("mean", ""),
                rob.get("measurement", {}).get("psnr", {}).get("mean", ""),
                cert["mean"] if cert else "", r["card"].get("defense", ""),
                r["card"]["model_hash"],
            ])  # fmt: skip
    return buf.getvalue()


_SORT_JS = """
document.querySelectorAll('th').forEach(th => th.addEventListener('click', () => {
  const table = th.closest('table'), i = [...th.parentNode.children].indexOf(th);
  const rows = [...table.tBodies[0].rows], key = r => r.cells[i].dataset.v ?? r.cells[i].innerText;
  const num = rows.every(r => !isNaN(parseFloat(key(r))));
  const dir = th.dataset.dir = th.dataset.dir === 'asc' ? 'desc' : 'asc';
  rows.sort((a, b) => { const x = key(a), y = key(b);
    const c = num ? parseFloat(x) - parseFloat(y) : x.localeCompare(y);
    return dir === 'asc' ? c : -c; });
  rows.forEach(r => table.tBodies[0].appendChild(r));
}));
"""


def to_html(groups: dict[tuple[str, str], list[Card]]) -> str:
    """One self-contained page; a click on a column header sorts by it."""
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>Leaderboard</title><style>",
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin:1em 0}",
        "td,th{border:1px solid #ccc;padding:4px 8px}th{cursor:pointer;background:#eee}",
        "</style></head><body><h1>Leaderboard</h1>",
    ]
    for (protocol, operator), cards in groups.items():
        parts.append(f"<h2>{html.escape(_title(protocol, operator, cards))}</h2><table><thead><tr>")
        parts += [f"<th>{html.escape(c)}</th>" for c in COLUMNS]
        parts.append("</tr></thead><tbody>")
        for r in ranked(cards):
            cells = _cells(r)
            keys = [r["rank"], None, r["card"]["headline"]["score"]["mean"]] + [None] * 7
            parts.append("<tr>")
            for v, k in zip(cells, keys, strict=True):
                data = f" data-v='{k}'" if k is not None else ""
                parts.append(f"<td{data}>{html.escape(v)}</td>")
            parts.append("</tr>")
        parts.append("</tbody></table>")
    parts.append(f"<script>{_SORT_JS}</script></body></html>")
    return "".join(parts)


def build_leaderboard(paths: Sequence[str | Path], out: str | Path) -> list[Path]:
    """leaderboard.md, .csv and .html in `out` from the cards at `paths`."""
    groups = grouped(load_cards(paths))
    out = Path(out)
    written = []
    for name, text in (("md", to_markdown(groups)), ("csv", to_csv(groups)),
                       ("html", to_html(groups))):  # fmt: skip
        atomic_write_text(out / f"leaderboard.{name}", text)
        written.append(out / f"leaderboard.{name}")
    return written
