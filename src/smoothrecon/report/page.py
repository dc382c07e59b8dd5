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

from smoothrecon.evaluation.check import FAILED_TEXT
from smoothrecon.evaluation.records import ON_F, ON_G, runtimes
from smoothrecon.metrics import mean_and_ci
from smoothrecon.report.records import Run, headline
from smoothrecon.report.tables import Table
from smoothrecon.util.runtime import annotate_precision


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
    run: Run,
    factor: int,
    eps: float,
    mode: str,
    metric: str = "ssim",
    variant: str = "",
    setting: str = "",
) -> dict | None:
    """The headline record (under `setting`, default the primary) with the best `metric`
    among models of `mode` (and `variant`)."""
    models = [m for m in run.models(factor) if m["role"] == mode and variant in ("", m["variant"])]
    return _top(run, models, eps, setting, metric)


def _top(run: Run, models: list[dict], eps: float, setting: str, metric: str) -> dict | None:
    """The headline record at `eps` under `setting` with the best `metric` among `models`."""
    found: list[dict[str, Any]] = [
        dict(r) for m in models if (r := headline(run, m, eps, setting)) is not None
    ]
    return max(found, key=lambda r: r[metric]) if found else None


# One number format per quantity (PSNR in dB with 2 decimals, SSIM with 4, MSE in 3 digits).
METRIC_FORMAT = {"psnr": ("{:.2f}", " dB"), "ssim": ("{:.4f}", ""), "mse": ("{:.3g}", "")}


def fmt_metric(metric: str, value: float, signed: bool = False) -> str:
    spec, unit = METRIC_FORMAT[metric]
    text = spec.format(value)
    return f"{'+' if signed and value >= 0 else ''}{text}{unit}"


def _paired_n(a: dict, b: dict, metric: str) -> int:
    pa, pb = a.get("per_image", {}).get(metric), b.get("per_image", {}).get(metric)
    return len(pa) if pa and pb and len(pa) == len(pb) else 0


G_NOT_ATTACKED = "g not attacked at this eps_rel: optimistic"


def caveat(r: dict) -> str:
    """Why a record's robustness is not evidence, or '': its attack did not beat random noise
    (`attack_check`), or it is a smoothed output that only the attack on f reached."""
    if r.get("attack_failed"):
        return FAILED_TEXT
    if r["eps_rel"] > 0 and r["sigma_g"] > 0 and r["attack"] == ON_F:
        return G_NOT_ATTACKED
    return ""


def _verdict(a: dict | None, b: dict | None, metric: str, claim_a_better: bool = True) -> str:
    """'holds' / 'does NOT hold' when the 95% CI of the paired difference excludes 0, else
    'inconclusive'; always with the numbers, the CI and the number of paired crops."""
    if a is None or b is None:
        return "not measured in this run"
    better = a[metric] > b[metric] if metric != "mse" else a[metric] < b[metric]
    diff, half = difference_ci(a, b, metric)
    n = _paired_n(a, b, metric)
    over = f"{n} paired test crops" if n else "unpaired records (sum of the two CIs)"
    numbers = (
        f"{a['model']} {fmt_metric(metric, a[metric])} vs {b['model']} "
        f"{fmt_metric(metric, b[metric])} (difference {fmt_metric(metric, diff, True)} "
        f"± {fmt_metric(metric, half)}, 95% CI over {over})"
    )
    caveats = [f"{r['model']}: {c}" for r in (a, b) if (c := caveat(r))]
    if caveats:
        return f"no verdict ({'; '.join(caveats)}): {numbers}"
    if abs(diff) <= half:
        return f"inconclusive: {numbers}"
    holds = better == claim_a_better
    return f"{'holds' if holds else 'does NOT hold'}: {numbers}"


def _attacked_findings(run: Run, factor: int, variant: str, setting: str) -> list[str]:
    """The thesis' findings about attacked models, under one attack setting."""
    hi = max(run.eps_rels)

    def best(mode: str, metric: str = "ssim") -> dict | None:
        return _best(run, factor, hi, mode, metric, variant, setting)

    where = f"{variant}, {setting}" if len(run.settings) > 1 else variant
    tag = f"{run.problem(factor)} [{where}]"
    return [
        f"{tag} — RS reaches a higher SSIM than adversarial training at the largest attack "
        f"(eps_rel {hi:g}; section 4.4.1): "
        + _verdict(best("gaussian"), best("adversarial"), "ssim"),
        f"{tag} — adversarial training reaches a higher PSNR than RS at eps_rel {hi:g} "
        "(section 4.4.1): "
        + _verdict(best("adversarial", "psnr"), best("gaussian", "psnr"), "psnr"),
        f"{tag} — smoothing makes the Gaussian-trained models more robust than the standard "
        f"model at eps_rel {hi:g}: " + _verdict(best("gaussian"), best("standard"), "ssim"),
        *_defence_findings(
            run, [m for m in run.models(factor) if m["variant"] == variant], setting, tag
        ),
    ]


def _defence_findings(run: Run, models: list[dict], setting: str, tag: str) -> list[str]:
    """Issue 17, under one attack setting at the largest eps_rel (PSNR): does the range
    projection (f o P) make the standard model more robust, and does adversarial training
    against the attacked space beat the same eps_rel trained against the other space? Issue
    26: does median smoothing of an RS model beat its mean smoothing (PSNR and SSIM)?"""
    hi, space = max(run.eps_rels), run.space(setting)

    def rec(m: dict | None) -> dict | None:
        return _top(run, [m] if m else [], hi, setting, "psnr")

    def first(mode: str) -> dict | None:
        return next((m for m in models if m["role"] == mode), None)

    out = []
    if first("+projection") and first("standard"):
        out.append(
            f"{tag} — the range projection (f o P) makes the standard model more robust at "
            f"eps_rel {hi:g} (PSNR; not in the thesis): "
            + _verdict(rec(first("+projection")), rec(first("standard")), "psnr")
        )
    for m in (m for m in models if m["role"] == "+median"):
        rs = next((o for o in models if o["role"] == "gaussian" and o["value"] == m["value"]), None)
        if rs is None:
            continue
        for metric in ("psnr", "ssim"):
            out.append(
                f"{tag} — median smoothing of {rs['model']} beats its mean smoothing at eps_rel "
                f"{hi:g} ({metric.upper()}, each at its own sigma_g*; not in the thesis): "
                + _verdict(
                    _top(run, [m], hi, setting, metric),
                    _top(run, [rs], hi, setting, metric),
                    metric,
                )
            )
    ats = [m for m in models if m["role"] == "adversarial"]
    for m in (m for m in ats if m["train_space"] == space):
        for o in (o for o in ats if o["value"] == m["value"] and o["train_space"] != space):
            out.append(
                f"{tag} — adversarial training against the attacked space ({space}) beats "
                f"training against the {o['train_space']} space at eps_rel {hi:g} (PSNR; not "
                "in the thesis): " + _verdict(rec(m), rec(o), "psnr")
            )
    return out


def _g_vs_f(run: Run, factor: int, setting: str) -> list[str]:
    """Appendix A.3 under one setting: whether attacking g leaves a higher PSNR than
    attacking f, from the per-crop paired differences PSNR(g attacked) - PSNR(f attacked)
    pooled over every (model, eps_rel) pair where both ran (95% CI), with the sign count over
    the pairs beside it."""
    gf = [
        (r, s)
        for r in run.records
        if r["factor"] == factor and r["attack"] == ON_F and r["setting"] == setting
        for s in run.records
        if s["model"] == r["model"]
        and s["attack"] == ON_G
        and s["setting"] == setting
        and s["eps_rel"] == r["eps_rel"]
        and s["split"] == r["split"] == run.reported
        and s["sigma_g"] == r["sigma_g"]
    ]
    if not gf:
        return []
    diffs = [
        g_psnr - f_psnr
        for f, g in gf
        for f_psnr, g_psnr in zip(f["per_image"]["psnr"], g["per_image"]["psnr"], strict=True)
    ]
    mean, _, half = mean_and_ci(diffs)
    verdict = "inconclusive" if abs(mean) <= half else ("holds" if mean > 0 else "does NOT hold")
    weaker = sum(1 for f, g in gf if g["mse"] < f["mse"])
    where = f" [{setting}]" if len(run.settings) > 1 else ""
    return [
        f"{run.problem(factor)}{where} — attacking g is weaker than attacking f (appendix "
        f"A.3): {verdict}: PSNR after the attack on g minus after the attack on f "
        f"{fmt_metric('psnr', mean, True)} ± {fmt_metric('psnr', half)} (95% CI over "
        f"{len(diffs)} paired crops of {len(gf)} (model, eps_rel) pairs; the attack on g was "
        f"the weaker one in {weaker} of the {len(gf)} pairs)"
    ]


def findings(run: Run) -> list[str]:
    """The thesis' qualitative findings, checked on this run's test records: the clean ones
    once, the attacked ones under every attack setting (threat model) of the run."""
    out = []
    for factor in run.factors:
        for variant in sorted({m["variant"] for m in run.models(factor) if m["kind"] == "unet"}):
            others = [
                r
                for r in (
                    _best(run, factor, 0.0, m, "ssim", variant) for m in ("gaussian", "adversarial")
                )
                if r
            ]
            other_clean = max(others, key=lambda r: r["ssim"], default=None)
            out.append(
                f"{run.problem(factor)} [{variant}] — standard training has the best clean "
                "SSIM among the U-Nets (Tables 4.1/4.3): "
                + _verdict(
                    _best(run, factor, 0.0, "standard", "ssim", variant), other_clean, "ssim"
                )
            )
            for setting in run.settings:
                out += _attacked_findings(run, factor, variant, setting)
        bl = _best(run, factor, 0.0, "none", "psnr")
        un = _best(run, factor, 0.0, "standard", "psnr")
        out.append(
            f"{run.problem(factor)} — a learned model beats the no-learning baseline on clean "
            "inputs (PSNR; not reported by the thesis): " + _verdict(un, bl, "psnr")
        )
        for setting in run.settings:
            out += _robust_vs_baseline(run, factor, setting)
            out += _g_vs_f(run, factor, setting)
    return out


def _robust_vs_baseline(run: Run, factor: int, setting: str) -> list[str]:
    """Whether the most robust learned model (best PSNR at the largest eps_rel, smoothed at
    its sigma_g*) beats the best no-learning baseline there: a defence only counts against
    doing nothing."""
    hi = max(run.eps_rels)
    if hi == 0:
        return []

    def top(learned: bool) -> dict | None:
        models = [m for m in run.models(factor) if (m["role"] != "none") == learned]
        return _top(run, models, hi, setting, "psnr")

    where = f" [{setting}]" if len(run.settings) > 1 else ""
    return [
        f"{run.problem(factor)}{where} — the most robust learned model beats the best "
        f"no-learning baseline at eps_rel {hi:g} (PSNR; not in the thesis): "
        + _verdict(top(True), top(False), "psnr")
    ]


def _against_baselines(run: Run, factor: int) -> list[tuple[str, dict]]:
    """(name, model) compared with 'do nothing': the standard U-Net of each variant in a sweep,
    every learned model of an evaluation."""
    models = run.models(factor)
    if run.kind == "evaluate":
        return [(m["model"], m) for m in models if m["role"] != "none"]
    return [
        (f"{m['variant']} U-Net (standard training)", m) for m in models if m["role"] == "standard"
    ]


def baseline_lines(run: Run) -> list[str]:
    """The first lines of the report: does each learned model beat 'do nothing' when clean?"""
    lines = []
    for factor in run.factors:
        base = _best(run, factor, 0.0, "none", "psnr")
        if base is None:
            continue
        for name, m in _against_baselines(run, factor):
            r = headline(run, m, 0.0)
            if r is None:
                continue
            beats = r["psnr"] > base["psnr"]
            lines.append(
                f"{run.problem(factor)}, {name}: clean {run.reported} PSNR {r['psnr']:.2f} ± "
                f"{r['psnr_ci95']:.2f} dB, SSIM {r['ssim']:.4f} vs the best no-learning baseline "
                f"({base['model']}) {base['psnr']:.2f} dB, SSIM {base['ssim']:.4f}: it "
                + ("beats" if beats else "does NOT beat")
                + " the baseline in PSNR."
            )
    return lines


def _md_table(t: Table) -> str:
    note = f"{t.note}\n\n" if t.note else ""
    return f"**{t.title}**\n\n{t.markdown()}\n\n{note}[CSV](tables/{t.name}.csv)\n"


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
            v = html.escape(v).replace(" ± ", "&nbsp;±&nbsp;")  # a cell breaks between values
            cells.append(f"<td><b>{v}</b></td>" if (i, j) in t.bold else f"<td>{v}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (
        f"<p class='caption'>{html.escape(t.title)} <a href='tables/{html.escape(t.name)}.csv'>"
        f"CSV</a></p><div class='table-wrap'><table>"
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>"
        + (f"<p class='note'>{html.escape(t.note)}</p>" if t.note else "")
    )


CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;line-height:1.5;color:#222;
max-width:1100px;margin:2em auto;padding:0 1.5em}
h1{font-size:1.7em;margin-bottom:.3em}h2{margin-top:2em;border-bottom:1px solid #ddd;
padding-bottom:.2em}
nav{background:#f7f7f9;border:1px solid #e3e3e8;border-radius:6px;padding:.6em 1.2em;
margin:1em 0;display:inline-block}nav ol{margin:.3em 0;padding-left:1.4em}
nav a{text-decoration:none;color:#245}nav a:hover{text-decoration:underline}
li{margin:.25em 0}
.caption{font-weight:600;margin:1.4em 0 .4em}
.table-wrap{overflow-x:auto;margin-bottom:1em}
table{border-collapse:collapse;font-size:13px;font-variant-numeric:tabular-nums}
td,th{border:1px solid #d6d6dc;padding:3px 8px;text-align:right}
th{background:#eef0f4;position:sticky;top:0}
td:first-child,th:first-child{text-align:left}
tbody tr:nth-child(even){background:#fafafc}
figure{margin:1.5em 0;text-align:center}
figure img{max-width:100%;width:auto;max-height:80vh;border:1px solid #eee}
figcaption{font-size:.9em;color:#555;margin-top:.3em}
pre{background:#f6f6f6;padding:1em;overflow:auto;font-size:12px}
"""


def _anchor(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")


def _contents(blocks: list[Block]) -> str:
    items = "".join(
        f"<li><a href='#{_anchor(str(b.content))}'>{html.escape(str(b.content))}</a></li>"
        for b in blocks
        if b.kind == "h2"
    )
    return f"<nav><b>Contents</b><ol>{items}</ol></nav>"


def _html_block(b: Block, folder: Path) -> str:
    if b.kind == "h1":
        return f"<h1>{html.escape(str(b.content))}</h1>"
    if b.kind == "h2":
        return f"<h2 id='{_anchor(str(b.content))}'>{html.escape(str(b.content))}</h2>"
    if b.kind == "p":
        return f"<p>{html.escape(str(b.content))}</p>"
    if b.kind == "list":
        return "<ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in b.content) + "</ul>"
    if b.kind == "table":
        return _html_table(b.content)
    if b.kind == "image":
        path, caption = b.content
        data = base64.b64encode((folder / path).read_bytes()).decode()
        return (
            f"<figure><img src='data:image/png;base64,{data}' alt='{html.escape(caption)}'>"
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        )
    assert b.kind == "code", b.kind
    return f"<details><summary>show</summary><pre>{html.escape(str(b.content))}</pre></details>"


def render_html(blocks: list[Block], folder: Path) -> str:
    """One self-contained page: the title, a contents list of the sections, then the blocks."""
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>smoothrecon report</title><style>{CSS}</style></head><body>"
    ]
    for i, b in enumerate(blocks):
        parts.append(_html_block(b, folder))
        if i == 0:
            parts.append(_contents(blocks))
    parts.append("</body></html>")
    return "\n".join(parts)


def config_text(run: Run) -> str:
    """The run's config as YAML, `precision: auto` followed by what it resolved to."""
    text = yaml.safe_dump(run.manifest["config"], sort_keys=False)
    resolved = sorted({rt["precision"] for rt in runtimes(run.records)})
    if not resolved and run.manifest.get("runtime"):
        resolved = [run.manifest["runtime"]["precision"]]
    return annotate_precision(text, " and ".join(resolved)) if resolved else text
