"""A model's result card under a benchmark protocol: `card.json` (the numbers) and `card.md`.

Built from the evaluation records of one model (one setting per threat model of the protocol)
and, for a smoothed defence, its median certificates. The numbers are the evaluation's own
headline records (`evaluation.records.headline`: smoothed models at sigma_g* chosen on
validation, per crop and metric the worst of the attacks on f and on g), so a card agrees with
`evaluate` on the same settings.

Headline: clean PSNR / SSIM; robust PSNR / SSIM at the protocol's headline eps_rel per threat
model; the area under each PSNR-vs-eps_rel curve (per crop the trapezoid over the protocol's
grid divided by its width: a PSNR in dB, the mean over the grid); the score the leaderboard
ranks by, per crop the mean of the threat models' areas; the certified PSNR where it applies.
Every mean has its 95% CI over the crops.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from smoothrecon.benchmark.protocol import Protocol
from smoothrecon.evaluation.records import Record, headline, runtimes, split_roles
from smoothrecon.metrics import mean_and_ci
from smoothrecon.util.io import atomic_write_json, atomic_write_text
from smoothrecon.util.runtime import runtime_words

CARD_VERSION = 1
Card = dict[str, Any]


def _stat(values: Sequence[float]) -> dict[str, float]:
    mean, _, half = mean_and_ci(list(values))
    return {"mean": mean, "ci95": half}


def area(eps: Sequence[float], psnr: Sequence[float]) -> float:
    """The trapezoid area under PSNR(eps_rel) divided by the eps_rel range: a mean PSNR."""
    total = sum((eps[i + 1] - eps[i]) * (psnr[i] + psnr[i + 1]) / 2 for i in range(len(eps) - 1))
    return total / (eps[-1] - eps[0])


def _curve(records: Sequence[Record], setting: str, p: Protocol) -> list[Record]:
    splits = split_roles(r["split"] for r in records)
    rows = []
    for eps_rel in p.eps_rels:
        r = headline(records, eps_rel, setting, splits)
        if r is None:
            raise ValueError(f"no record of setting '{setting}' at eps_rel {eps_rel:g}")
        rows.append(r)
    return rows


def _per_space(records: Sequence[Record], settings: dict[str, str], p: Protocol):
    """{space: (curve rows, per-crop areas)}."""
    out = {}
    for space, setting in settings.items():
        rows = _curve(records, setting, p)
        per_crop = [
            area(p.eps_rels, [r["per_image"]["psnr"][i] for r in rows])
            for i in range(len(rows[0]["per_image"]["psnr"]))
        ]
        out[space] = (rows, per_crop)
    return out


def _runtime(records: Sequence[Record]) -> dict[str, Any] | None:
    """The runtime that computed the records (the first one, when a resumed card ran with
    other threads); records in several precisions are refused: a card is one precision."""
    rts = runtimes(records)
    precisions = sorted({rt["precision"] for rt in rts})
    if len(precisions) > 1:
        raise ValueError(f"the card's records were computed in {' and '.join(precisions)}")
    return rts[0] if rts else None


def _certified(certificates: Sequence[dict[str, Any]], p: Protocol) -> dict[str, Any] | None:
    """Mean ± CI over crops of the certified PSNR, per crop the tightest of the methods run
    (None without certificates)."""
    best: dict[int, float] = {}
    for c in certificates:
        if math.isfinite(c["psnr_certified"]):
            best[c["image"]] = max(best.get(c["image"], -math.inf), c["psnr_certified"])
    if not best:
        return None
    methods = "+".join(sorted({c["method"] for c in certificates}))
    return {**_stat(list(best.values())), "eps_rel": p.certify_eps_rel, "method": methods}


def build_card(
    records: Sequence[Record],
    settings: dict[str, str],
    p: Protocol,
    about: dict[str, Any],
    certificates: Sequence[dict[str, Any]] = (),
) -> Card:
    """The card of one model: `records` all of its evaluation records, `settings` {threat
    space: the setting name its attacks ran under}, `about` what identifies the model and the
    run (model, operator, model_hash, code_version, machine, ...), `certificates` its
    certificate records at the protocol's certify_eps_rel (empty: none; several methods: per
    crop the tightest, which holds with probability >= 1 - alpha per method run)."""
    spaces = _per_space(records, settings, p)
    first_rows = next(iter(spaces.values()))[0]
    clean = first_rows[p.eps_rels.index(0.0)] if 0.0 in p.eps_rels else first_rows[0]
    hi = p.eps_rels.index(p.headline_eps)
    n_crops = len(clean["per_image"]["psnr"])
    score = [sum(spaces[s][1][i] for s in spaces) / len(spaces) for i in range(n_crops)]
    return {
        "card": CARD_VERSION,
        "protocol": p.name,
        "protocol_key": p.key,
        **about,
        "runtime": _runtime(records),
        "smoothed": bool(clean["smoothed"]),
        "crops": n_crops,
        "headline": {
            "clean_psnr": _stat(clean["per_image"]["psnr"]),
            "clean_ssim": _stat(clean["per_image"]["ssim"]),
            "robust_eps_rel": p.headline_eps,
            "robust": {
                s: {
                    "psnr": _stat(rows[hi]["per_image"]["psnr"]),
                    "ssim": _stat(rows[hi]["per_image"]["ssim"]),
                }
                for s, (rows, _) in spaces.items()
            },
            "auc_psnr": {s: _stat(a) for s, (_, a) in spaces.items()},
            "score": _stat(score),
            "certified_psnr": _certified(certificates, p),
        },
        "curve": {s: [_point(r) for r in rows] for s, (rows, _) in spaces.items()},
    }


def _point(r: Record) -> dict[str, Any]:
    """One point of a card's curve: a headline record's means, CIs, sigma_g and attack."""
    keys = ("eps_rel", "psnr", "psnr_ci95", "ssim", "ssim_ci95", "sigma_g", "attack")
    return {k: r[k] for k in keys}  # type: ignore[literal-required]


def _pm(s: dict[str, float], digits: int = 2) -> str:
    return f"{s['mean']:.{digits}f} ± {s['ci95']:.{digits}f}"


def _machine_words(card: Card) -> str:
    """What computed the card (`runtime_words`), or for a card from before it said so, the
    machine's CPU and torch."""
    m, rt = card["machine"], card.get("runtime")
    return (
        runtime_words(rt)
        if rt
        else f"{m.get('gpu') or m.get('cpu', '?')}, torch {m.get('torch', '?')}"
    )


def card_markdown(card: Card) -> str:
    """The card as a short Markdown page."""
    h = card["headline"]
    lines = [
        f"# {card['model']} — benchmark protocol {card['protocol']}",
        "",
        f"Operator: {card['operator']}. Model hash: `{card['model_hash']}`. Code: "
        f"{card['code_version']}. Machine: {_machine_words(card)}. {card['crops']} test "
        "crops; mean ± 95% CI.",
        "",
        f"- clean: PSNR {_pm(h['clean_psnr'])} dB, SSIM {_pm(h['clean_ssim'], 4)}",
    ]
    for s, v in h["robust"].items():
        lines.append(
            f"- robust at eps_rel {h['robust_eps_rel']:g}, {s} threat model: PSNR "
            f"{_pm(v['psnr'])} dB, SSIM {_pm(v['ssim'], 4)}"
        )
    for s, v in h["auc_psnr"].items():
        lines.append(f"- area under PSNR vs eps_rel, {s}: {_pm(v)} dB")
    lines.append(f"- **score** (mean of the areas): {_pm(h['score'])} dB")
    c = h["certified_psnr"]
    if c:
        lines.append(f"- certified PSNR ({c['method']}, eps_rel {c['eps_rel']:g}): {_pm(c)} dB")
    lines += ["", "| threat model | eps_rel | PSNR | SSIM | sigma_g |", "|---|---|---|---|---|"]
    for s, rows in card["curve"].items():
        for r in rows:
            lines.append(
                f"| {s} | {r['eps_rel']:g} | {r['psnr']:.2f} ± {r['psnr_ci95']:.2f} | "
                f"{r['ssim']:.4f} ± {r['ssim_ci95']:.4f} | {r['sigma_g']:g} |"
            )
    return "\n".join(lines) + "\n"


def write_card(card: Card, out: str | Path) -> Path:
    """out/card.json and out/card.md, atomically; returns the JSON's path."""
    out = Path(out)
    atomic_write_json(out / "card.json", card)
    atomic_write_text(out / "card.md", card_markdown(card))
    return out / "card.json"
