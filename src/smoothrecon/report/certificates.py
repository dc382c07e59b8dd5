"""The certificate's report piece, from <run>/certificates.jsonl only.

Per model: a figure of the certified PSNR lower bound against eps_rel, beside the PSNR the EOT
attack on G reaches (an upper bound on the robust PSNR) and the clean smoothed PSNR, with the
mid-gray line below which a certificate says nothing (`vacuous`); a table of the same numbers
with the share of vacuous and informative crops and center smoothing's abstentions; and one
sentence per (sigma_g, method) saying up to which eps_rel the certificate is informative on most
crops and from which it is vacuous.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from smoothrecon.metrics import mean_and_ci
from smoothrecon.report.page import Block
from smoothrecon.report.tables import Table
from smoothrecon.util.io import atomic_write, read_jsonl

RECORDS = "certificates.jsonl"
INFORMATIVE_DB = 5.0  # a certificate this far above a constant mid-gray image says something
FIGURES = Path("figures")  # relative to <run>/report, as the rest of the report
Row = dict[str, Any]


def _finite(values: Sequence[float]) -> list[float]:
    return [v for v in values if v is not None and math.isfinite(v)]


def _groups(rows: Sequence[Row]) -> dict[tuple[float, str], dict[float, list[Row]]]:
    """{(sigma_g, method): {eps_rel: rows}} in sorted order."""
    out: dict[tuple[float, str], dict[float, list[Row]]] = {}
    for r in rows:
        out.setdefault((r["sigma_g"], r["method"]), {}).setdefault(r["eps_rel"], []).append(r)
    return {k: dict(sorted(v.items())) for k, v in sorted(out.items())}


def summarize(rows: Sequence[Row]) -> Row:
    """Means over crops of one (model, sigma_g, method, eps_rel): certified PSNR (non-abstained
    crops) with its 95% CI half-width, attacked, clean and mid-gray PSNR, share vacuous,
    abstentions and the invariant psnr_certified <= psnr_attacked."""
    cert = _finite([r["psnr_certified"] for r in rows if not r["abstained"]])
    c_mean, _, c_half = mean_and_ci(cert)
    checked = [r for r in rows if r.get("certified_le_attacked") is not None]
    return {
        "n_crops": len(rows),
        "certified": c_mean,
        "certified_ci95": c_half,
        "attacked": mean_and_ci([r["psnr_attacked"] for r in rows])[0],
        "clean": mean_and_ci([r["psnr_clean"] for r in rows])[0],
        "gray": mean_and_ci([r["psnr_gray"] for r in rows])[0],
        "baseline": mean_and_ci([r.get("psnr_backprojection_worst", math.nan) for r in rows])[0],
        "vacuous": sum(bool(r["vacuous"]) for r in rows) / len(rows),
        # informative: certified at least 5 dB above the mid-gray image (issue 26's bar)
        "informative": sum(
            bool(r["psnr_certified"] >= r["psnr_gray"] + INFORMATIVE_DB) for r in rows
        )
        / len(rows),
        # the band still unknown: attacked minus certified PSNR, mean over certified crops
        "gap": mean_and_ci(
            [r["psnr_attacked"] - r["psnr_certified"] for r in rows if not r["abstained"]]
        )[0],
        "abstained": sum(bool(r["abstained"]) for r in rows),
        "held": sum(bool(r["certified_le_attacked"]) for r in checked),
        "checked": len(checked),
    }


def _reach(by_eps: dict[float, list[Row]], holds: Callable[[Row], bool]) -> float | None:
    """The largest eps_rel up to which `holds(summary)` is true at every eps_rel measured from
    the smallest on; None if it fails already at the smallest."""
    last = None
    for eps_rel, rows in by_eps.items():
        if not holds(summarize(rows)):
            break
        last = eps_rel
    return last


def vacuous_from(by_eps: dict[float, list[Row]]) -> float | None:
    """The smallest eps_rel from which on at least half of the crops are vacuous (their
    certified PSNR below a constant mid-gray image's), None if none is."""
    for eps_rel, rows in by_eps.items():
        if summarize(rows)["vacuous"] >= 0.5:
            return eps_rel
    return None


def vacuous_sentence(model: str, sigma: float, method: str, by_eps: dict[float, list]) -> str:
    """Where the certificate of (model, sigma_g, method) stops being informative on most crops
    (more than half at least INFORMATIVE_DB above a constant mid-gray image) and where it turns
    vacuous (at least half of the crops below that image)."""
    name = f"{model}, {method} certificate at sigma_g {sigma:g}"
    eps = list(by_eps)
    informative = _reach(by_eps, lambda s: s["informative"] > 0.5)
    if informative is None:
        first = f"informative on most crops at no eps_rel measured (from {eps[0]:g})"
    else:
        first = f"informative on most crops up to eps_rel {informative:g}"
    at = vacuous_from(by_eps)
    if at is None:
        second = f"never vacuous up to {eps[-1]:g} (most crops above mid-gray at every eps_rel)"
    elif at == eps[0]:
        second = f"vacuous already at the smallest eps_rel measured, {at:g}"
    else:
        second = f"vacuous from eps_rel {at:g} (at least half of the crops below mid-gray)"
    return f"{name}: {first}; {second}."


def _fmt(v: float, half: float = math.nan) -> str:
    if not math.isfinite(v):
        return "-"
    return f"{v:.2f} ± {half:.2f}" if math.isfinite(half) else f"{v:.2f}"


def certificate_table(model: str, rows: Sequence[Row]) -> Table:
    header = [
        "sigma_g",
        "method",
        "eps_rel",
        "certified PSNR (lower bound)",
        "attacked PSNR (upper bound)",
        "clean PSNR",
        "back-projection, exact worst case",
        "mid-gray PSNR",
        "gap attacked - certified (dB)",
        "vacuous",
        f"informative (>= gray + {INFORMATIVE_DB:g} dB)",
        "abstained",
        "certified <= attacked",
    ]
    body = []
    for (sigma, method), by_eps in _groups(rows).items():
        for eps_rel, group in by_eps.items():
            s = summarize(group)
            body.append(
                [
                    f"{sigma:g}",
                    method,
                    f"{eps_rel:g}",
                    _fmt(s["certified"], s["certified_ci95"]),
                    _fmt(s["attacked"]),
                    _fmt(s["clean"]),
                    _fmt(s["baseline"]),
                    _fmt(s["gray"]),
                    _fmt(s["gap"]),
                    f"{s['vacuous']:.0%}",
                    f"{s['informative']:.0%}",
                    f"{s['abstained']}/{s['n_crops']}" if method == "center" else "-",
                    f"{s['held']}/{s['checked']}",
                ]
            )
    n, alpha = rows[0]["n"], rows[0]["alpha"]
    return Table(
        f"certificates_{_slug(model)}",
        f"{model}: certified vs attacked PSNR (dB, mean over crops, ± 95% CI; n = {n}, "
        f"alpha = {alpha:g} per crop); for reference the exact worst case of the no-learning "
        f"back-projection (bilinear for super-resolution) on the same crops and eps",
        header,
        body,
    )


def _slug(model: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in model)


def certificate_figure(model: str, rows: Sequence[Row], out: Path) -> Path:
    """Certified (solid, with its 95% CI band), attacked (dashed) and clean (dotted) PSNR
    against eps_rel, one colour per (sigma_g, method); the mid-gray PSNR in black."""
    fig, ax = plt.subplots(figsize=(7, 4.2))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    eps_all: set[float] = set()
    gray: list[float] = []
    for c, ((sigma, method), by_eps) in enumerate(_groups(rows).items()):
        color = colors[c % len(colors)]
        xs = list(by_eps)
        eps_all.update(xs)
        s = [summarize(g) for g in by_eps.values()]
        gray += [r["psnr_gray"] for g in by_eps.values() for r in g]
        cert = [v["certified"] for v in s]
        half = [v["certified_ci95"] if math.isfinite(v["certified_ci95"]) else 0 for v in s]
        label = f"sigma_g {sigma:g}, {method}"
        ax.plot(xs, cert, "-o", color=color, label=f"certified ({label})")
        ax.fill_between(
            xs, [a - h for a, h in zip(cert, half, strict=True)],
            [a + h for a, h in zip(cert, half, strict=True)], color=color, alpha=0.15,
        )  # fmt: skip
        ax.plot(xs, [v["attacked"] for v in s], "--s", color=color, label=f"attacked ({label})")
        ax.plot(xs, [v["clean"] for v in s], ":", color=color, label=f"clean ({label})")
        base = [v["baseline"] for v in s]
        if c == 0 and all(math.isfinite(v) for v in base):  # the same for every sigma_g
            ax.plot(xs, base, "-.", color="grey", label="back-projection (bilinear): exact worst")
    ax.axhline(mean_and_ci(gray)[0], color="black", lw=1, label="constant mid-gray (vacuous below)")
    if eps_all and min(eps_all) > 0:
        ax.set_xscale("log")
    ax.set_xlabel("eps_rel (eps = sqrt(d) eps_rel, model-input space)")
    ax.set_ylabel("PSNR (dB)")
    ax.set_title(f"{model}: certified lower bound vs attacked upper bound")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    atomic_write(out, lambda p: fig.savefig(p, format="png", dpi=110, bbox_inches="tight"))
    plt.close(fig)
    return out


def certificate_blocks(run_folder: str | Path) -> list[Block]:
    """The report's section on certificates ([] without run_folder/certificates.jsonl or, for
    a reproduce run, run_folder/certificates/<model>/certificates.jsonl): per
    model a figure (written to <run>/report/figures/), a table and the vacuous sentences."""
    root = Path(run_folder)
    rows = read_jsonl(root / RECORDS)
    for path in sorted(root.glob(f"certificates/*/{RECORDS}")):  # a reproduce run's (runner)
        rows += read_jsonl(path)
    if not rows:
        return []
    blocks = [
        Block("h2", "Certified robustness of the smoothed reconstruction"),
        Block(
            "p",
            "The certified PSNR is a lower bound that holds for every perturbation ||e|| <= eps "
            "with probability >= 1 - alpha per crop and eps_rel (pixel: G, the mean of the "
            "clamped samples, per-pixel bounds; loss: the same G, bounded through the smoothed "
            "MSE of the samples; median: the per-pixel median of the samples, percentile "
            "smoothing; center: the center-smoothed output, when it does not abstain); the "
            "attacked PSNR is what the EOT attack reaches on the same estimate (for the median "
            "the worse of attacking the mean and the median of the draws), an upper bound on "
            "the robust PSNR. The gap between them is what is still unknown. A certificate "
            "below the PSNR of a constant mid-gray image says nothing (vacuous); one at least "
            f"{INFORMATIVE_DB:g} dB above it is counted informative.",
        ),
    ]
    models: dict[str, list[Row]] = {}
    for r in rows:
        models.setdefault(r["model"], []).append(r)
    figures = Path(run_folder) / "report" / FIGURES
    for model, mine in models.items():
        name = f"certificates_{_slug(model)}.png"
        certificate_figure(model, mine, figures / name)
        caption = f"{model}: certified PSNR lower bound, attacked and clean PSNR vs eps_rel"
        blocks += [Block("image", (str(FIGURES / name), caption))]
        blocks += [Block("table", certificate_table(model, mine))]
        sentences = [
            vacuous_sentence(model, sigma, method, by_eps)
            for (sigma, method), by_eps in _groups(mine).items()
        ]
        blocks += [Block("list", sentences)]
    return blocks
