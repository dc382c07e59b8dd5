"""The one page to read: markdown and a self-contained HTML file from the same blocks.

It states the scale first (data, preset, machine, time), the baseline comparison in its first
lines, then the tables beside the thesis' numbers, the figures, which of the thesis'
qualitative findings hold in this run (a difference counts only when the 95% interval of the
paired per-crop differences excludes zero), and the resolved config.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from smoothrecon.metrics import mean_and_ci
from smoothrecon.report.records import Run, headline
from smoothrecon.report.tables import Table


@dataclass
class Block:
    kind: str  # "h1", "h2", "p", "list", "table", "image", "code"
    content: Any


def difference_ci(a: dict, b: dict, metric: str) -> tuple[float, float]:
    """Mean and 95% half-width of a - b. Both records cover the same test crops in the same
    order, so the interval is that of the per-image (paired) differences; records without
    per-image values fall back to the sum of the two half-widths."""
    pa, pb = a.get("per_image", {}).get(metric), b.get("per_image", {}).get(metric)
    if pa and pb and len(pa) == len(pb) and len(pa) > 1:
        mean, _, half = mean_and_ci([x - y for x, y in zip(pa, pb, strict=True)])
        return mean, half
    return a[metric] - b[metric], a[metric + "_ci95"] + b[metric + "_ci95"]


def _best(
    run: Run, factor: int, eps: float, mode: str, metric: str = "ssim", variant: str = ""
) -> dict | None:
    """The headline record with the best `metric` among models of `mode` (and `variant`)."""
    rows = [
        headline(run, m, eps)
        for m in run.models(factor)
        if m["mode"] == mode and variant in ("", m["variant"])
    ]
    found = [r for r in rows if r is not None]
    return max(found, key=lambda r: r[metric]) if found else None


def _verdict(a: dict | None, b: dict | None, metric: str, claim_a_better: bool = True) -> str:
    if a is None or b is None:
        return "not measured in this run"
    better = a[metric] > b[metric] if metric != "mse" else a[metric] < b[metric]
    diff, half = difference_ci(a, b, metric)
    numbers = (
        f"{a['model']} {a[metric]:.4g} vs {b['model']} {b[metric]:.4g} "
        f"(difference {diff:+.4g} ± {half:.2g}, 95% CI over the paired test crops)"
    )
    if abs(diff) <= half:
        return f"inconclusive: {numbers}"
    holds = better == claim_a_better
    return f"{'holds' if holds else 'does NOT hold'}: {numbers}"


def findings(run: Run) -> list[str]:
    """The thesis' qualitative findings, checked on this run's test records."""
    out = []
    for factor in run.factors:
        eps = run.eps_rels
        hi = max(eps)
        for variant in sorted({m["variant"] for m in run.models(factor) if m["kind"] == "unet"}):

            def best(e: float, mode: str, metric: str = "ssim", v: str = variant) -> dict | None:
                return _best(run, factor, e, mode, metric, v)  # noqa: B023

            tag = f"x{factor} [{variant}]"
            out.append(
                f"{tag} — RS reaches a higher SSIM than adversarial training at the "
                f"largest attack (eps_rel {hi:g}; section 4.4.1): "
                + _verdict(best(hi, "gaussian"), best(hi, "adversarial"), "ssim")
            )
            out.append(
                f"{tag} — adversarial training reaches a higher PSNR than RS at eps_rel "
                f"{hi:g} (section 4.4.1): "
                + _verdict(best(hi, "adversarial", "psnr"), best(hi, "gaussian", "psnr"), "psnr")
            )
            others = [r for r in (best(0.0, "gaussian"), best(0.0, "adversarial")) if r]
            other_clean = max(others, key=lambda r: r["ssim"], default=None)
            out.append(
                f"{tag} — standard training has the best clean SSIM among the U-Nets "
                "(Tables 4.1/4.3): " + _verdict(best(0.0, "standard"), other_clean, "ssim")
            )
            out.append(
                f"{tag} — smoothing makes the Gaussian-trained models more robust than "
                f"the standard model at eps_rel {hi:g}: "
                + _verdict(best(hi, "gaussian"), best(hi, "standard"), "ssim")
            )
        bl = _best(run, factor, 0.0, "none", "psnr")
        un = _best(run, factor, 0.0, "standard", "psnr")
        out.append(
            f"x{factor} — a learned model beats the no-learning baseline on clean inputs "
            "(PSNR; not reported by the thesis): " + _verdict(un, bl, "psnr")
        )
        gf = [
            (r, s)
            for r in run.records
            if r["factor"] == factor and r["attack"] == "pgd_f"
            for s in run.records
            if s["model"] == r["model"]
            and s["attack"] == "pgd_g"
            and s["eps_rel"] == r["eps_rel"]
            and s["split"] == r["split"] == "test"
            and s["sigma_g"] == r["sigma_g"]
        ]
        if gf:
            weaker = sum(1 for f, g in gf if g["mse"] < f["mse"])
            out.append(
                f"x{factor} — attacking g is weaker than attacking f (appendix A.3): "
                f"RS-PGD gave a smaller MSE than Vanilla PGD in {weaker} of {len(gf)} "
                "(model, eps_rel) pairs"
            )
    return out


def baseline_lines(run: Run) -> list[str]:
    """The first lines of the report: does each U-Net variant beat 'do nothing' when clean?"""
    lines = []
    for factor in run.factors:
        base = _best(run, factor, 0.0, "none", "psnr")
        if base is None:
            continue
        for variant in sorted({m["variant"] for m in run.models(factor) if m["kind"] == "unet"}):
            std = next(
                (
                    headline(run, m, 0.0)
                    for m in run.models(factor)
                    if m["mode"] == "standard" and m["variant"] == variant
                ),
                None,
            )
            if std is None:
                continue
            beats = std["psnr"] > base["psnr"]
            lines.append(
                f"x{factor}, {variant} U-Net (standard training): clean test PSNR "
                f"{std['psnr']:.2f} ± {std['psnr_ci95']:.2f} dB, SSIM {std['ssim']:.4f} vs the "
                f"best no-learning baseline ({base['model']}) {base['psnr']:.2f} dB, SSIM "
                f"{base['ssim']:.4f}: the U-Net "
                + ("beats" if beats else "does NOT beat")
                + " the baseline in PSNR."
            )
    return lines


def _md_table(t: Table) -> str:
    return f"**{t.title}**\n\n{t.markdown()}\n"


def render_markdown(blocks: list[Block]) -> str:
    parts = []
    for b in blocks:
        if b.kind == "h1":
            parts.append(f"# {b.content}\n")
        elif b.kind == "h2":
            parts.append(f"## {b.content}\n")
        elif b.kind == "p":
            parts.append(f"{b.content}\n")
        elif b.kind == "list":
            parts.append("\n".join(f"- {item}" for item in b.content) + "\n")
        elif b.kind == "table":
            parts.append(_md_table(b.content))
        elif b.kind == "image":
            path, caption = b.content
            parts.append(f"![{caption}]({path})\n\n*{caption}*\n")
        elif b.kind == "code":
            parts.append(f"```\n{b.content}\n```\n")
    return "\n".join(parts)


def _html_table(t: Table) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in t.header)
    body = []
    for i, row in enumerate(t.rows):
        cells = []
        for j, v in enumerate(row):
            v = html.escape(v)
            cells.append(f"<td><b>{v}</b></td>" if (i, j) in t.bold else f"<td>{v}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (
        f"<p><b>{html.escape(t.title)}</b></p><table><thead><tr>{head}</tr></thead>"
        f"<tbody>{''.join(body)}</tbody></table>"
    )


def render_html(blocks: list[Block], folder: Path) -> str:
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>smoothrecon report</title>"
        "<style>body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse;font-size:12px;margin-bottom:1em}td,th{border:1px "
        "solid #ccc;padding:2px 6px;text-align:right}td:first-child{text-align:left}"
        "img{max-width:100%}pre{background:#f6f6f6;padding:1em;overflow:auto}</style>"
        "</head><body>"
    ]
    for b in blocks:
        if b.kind in ("h1", "h2"):
            parts.append(f"<{b.kind}>{html.escape(str(b.content))}</{b.kind}>")
        elif b.kind == "p":
            parts.append(f"<p>{html.escape(str(b.content))}</p>")
        elif b.kind == "list":
            items = "".join(f"<li>{html.escape(i)}</li>" for i in b.content)
            parts.append(f"<ul>{items}</ul>")
        elif b.kind == "table":
            parts.append(_html_table(b.content))
        elif b.kind == "image":
            path, caption = b.content
            data = base64.b64encode((folder / path).read_bytes()).decode()
            parts.append(
                f"<figure><img src='data:image/png;base64,{data}'>"
                f"<figcaption>{html.escape(caption)}</figcaption></figure>"
            )
        elif b.kind == "code":
            parts.append(f"<pre>{html.escape(str(b.content))}</pre>")
    parts.append("</body></html>")
    return "\n".join(parts)


def config_text(run: Run) -> str:
    return yaml.safe_dump(run.manifest["config"], sort_keys=False)
