"""Figures as PNG (matplotlib, no display): robustness curves (quality vs attack strength, one
line per model), sigma_g curves (Figs A.3-A.8), RS-PGD vs Vanilla PGD (Figs A.1-A.2) and image
grids in the layout of Figs 4.2/4.3."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from smoothrecon.evaluation.records import NO_ATTACK, ON_F, ON_G, Record, value
from smoothrecon.experiments.convergence import best_found, study_key
from smoothrecon.report.records import Run, chosen_sigma, headline, pick
from smoothrecon.util.io import atomic_write


def _save(fig, path: Path) -> Path:
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=110, bbox_inches="tight"))
    plt.close(fig)
    return path


def robustness(run: Run, factor: int, setting: str, out: Path) -> Path | None:
    """PSNR and SSIM vs eps_rel, one line per model with its 95% CI band: each model's headline
    record (smoothed models at sigma_g*, worst case of the attacks on f and g); baselines
    dashed. None when no model has two eps_rel points."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    drawn = 0
    for m in run.models(factor):
        rows = [(e, headline(run, m, e, setting)) for e in run.eps_rels]
        pts = [(e, r) for e, r in rows if r is not None]
        if len(pts) < 2:
            continue
        drawn += 1
        xs = np.array([e for e, _ in pts])
        dashed = m["role"] == "none"  # a no-learning baseline
        name = m["model"] + (" (smoothed, sigma_g*)" if m["smoothed"] else "")
        for ax, metric in zip(axes, ("psnr", "ssim"), strict=True):
            v = np.array([value(r, metric) for _, r in pts])
            ci = np.array([value(r, metric + "_ci95") for _, r in pts])
            (line,) = ax.plot(xs, v, "--" if dashed else "-", marker="o", markersize=3, label=name)
            ax.fill_between(xs, v - ci, v + ci, alpha=0.15, color=line.get_color(), linewidth=0)
    if not drawn:
        plt.close(fig)
        return None
    for ax, name in zip(axes, ("PSNR (dB)", "SSIM"), strict=True):
        ax.set_xticks(run.eps_rels, [f"{e:g}" for e in run.eps_rels], rotation=45, fontsize=8)
        ax.set_xlabel("eps_rel (attack budget eps = sqrt(d) eps_rel)")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=3)
    fig.suptitle(
        f"{run.problem(factor)}: quality under attack ('{setting}' attack, {run.reported} "
        "crops, 95% CI bands)"
    )
    fig.tight_layout()
    return _save(fig, out)


def _sigma_rows(run: Run, model: str, e: float) -> list[Record]:
    """The reported split's records of `model` at eps_rel e along the sigma_g grid."""
    return sorted(
        (
            r
            for r in run.by_model[model]
            if r["eps_rel"] == e
            and r["split"] == run.reported
            and r["attack"] in (NO_ATTACK, ON_F)
            and (e == 0 or r["setting"] == run.primary)
        ),
        key=lambda r: r["sigma_g"],
    )


Limits = dict[str, tuple[float, float]]


def sigma_limits(run: Run, models: list[str]) -> Limits:
    """One y-range per metric (with the CI bands and a margin) over every curve of `models`,
    so the sigma_g figures of different models can be compared by eye."""
    out: Limits = {}
    for metric in ("psnr", "ssim"):
        lo, hi = [], []
        for model in models:
            for e in run.eps_rels:
                for r in _sigma_rows(run, model, e):
                    v, ci = value(r, metric), value(r, metric + "_ci95")
                    lo.append(v - ci)
                    hi.append(v + ci)
        if lo:
            pad = 0.04 * (max(hi) - min(lo) or 1.0)
            out[metric] = (min(lo) - pad, max(hi) + pad)
    return out


def sigma_curves(run: Run, model: str, out: Path, limits: Limits | None = None) -> Path:
    """PSNR and SSIM (reported split) vs sigma_g, one line per eps_rel; circles mark sigma_g*.
    `limits`: shared y-ranges (`sigma_limits`), else each axis fits its own curves."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for e in run.eps_rels:
        rows = _sigma_rows(run, model, e)
        if not rows:
            continue
        s = [r["sigma_g"] for r in rows]
        chosen = chosen_sigma(run, model, e)
        for ax, metric in zip(axes, ("psnr", "ssim"), strict=True):
            v = np.array([value(r, metric) for r in rows])
            ci = np.array([value(r, metric + "_ci95") for r in rows])
            (line,) = ax.plot(s, v, marker=".", label=f"eps_rel {e:g}")
            ax.fill_between(s, v - ci, v + ci, alpha=0.12, color=line.get_color())
            j = s.index(chosen)
            ax.plot([chosen], [v[j]], "o", color=line.get_color(), markersize=8, mfc="none")
    for ax, name, metric in zip(axes, ("PSNR (dB)", "SSIM"), ("psnr", "ssim"), strict=True):
        ax.set_xlabel("sigma_g")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        if limits and metric in limits:
            ax.set_ylim(*limits[metric])
    axes[1].legend(fontsize=7)
    fig.suptitle(
        f"{model}: {run.reported} metrics vs sigma_g (circles: sigma_g chosen on {run.roles[1]})"
    )
    return _save(fig, out)


def attack_comparison(run: Run, model: str, out: Path) -> Path:
    """PSNR/SSIM vs eps_rel at the chosen sigma_g under PGD on f and RS-PGD on g."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for attack, name in ((ON_F, "Vanilla PGD (on f)"), (ON_G, "RS-PGD (on g)")):
        xs, rows = [], []
        for e in run.eps_rels:
            r = pick(run, model, e, attack if e > 0 else "none", chosen_sigma(run, model, e))
            if r is not None:
                xs.append(e)
                rows.append(r)
        for ax, metric in zip(axes, ("psnr", "ssim"), strict=True):
            v = np.array([value(r, metric) for r in rows])
            ci = np.array([value(r, metric + "_ci95") for r in rows])
            ax.errorbar(xs, v, yerr=ci, marker="o", capsize=3, label=name)
    for ax, name in zip(axes, ("PSNR (dB)", "SSIM"), strict=True):
        ax.set_xlabel("eps_rel")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8)
    fig.suptitle(
        f"{model}: attack on f vs attack on g ({run.reported}, sigma_g chosen on {run.roles[1]})"
    )
    return _save(fig, out)


def image_grid(run: Run, models: list[str], eps_rel: float, out: Path) -> Path | None:
    """Fig 4.2/4.3 layout: input | per model (perturbed input, output) | ground truth, one row
    per reported crop; a smoothed model's output at its sigma_g*."""
    found = [(m, run.samples.get((m, eps_rel))) for m in models]
    if not found or any(s is None for _, s in found):
        return None
    first = found[0][1]
    assert first is not None
    cols = [("(a) input y", first["input"])]
    for m, s in found:
        assert s is not None
        sigma = float(s["sigma_g"][0])
        output = f"output, sigma_g={sigma:g}" if sigma > 0 else "output"
        cols += [(f"y+e, {m}", s["perturbed"]), (f"{m} {output}", s["output"])]
    cols.append(("ground truth", first["truth"]))
    n = cols[0][1].shape[0]
    fig, axes = plt.subplots(n, len(cols), figsize=(2.0 * len(cols), 2.0 * n), squeeze=False)
    for j, (title, images) in enumerate(cols):
        for i in range(n):
            ax = axes[i][j]
            ax.imshow(images[i].permute(1, 2, 0).clamp(0, 1).numpy(), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(title, fontsize=7)
    fig.suptitle(f"eps_rel = {eps_rel:g}", fontsize=9)
    return _save(fig, out)


def _stopped_points(ax, rows: list[dict], panel: tuple, best: float, color) -> None:
    """Early-stopped runs of `panel` (a `study_key`) as stars at the mean
    gradient steps they spent."""
    for r in rows:
        if r.get("patience") and study_key(r) == panel:
            ax.plot(
                r["steps_used"],
                r["loss"] / max(best, 1e-30),
                marker="*",
                markersize=8,
                color=color,
                linestyle="none",
                label=f"{panel[0]}, {r['step_factor']:g} eps, {r['restarts']} start(s), early stop",
            )


def convergence_figure(run: Run, out: Path) -> Path | None:
    """Attack loss as a share of the best any attack found per crop (`best_found`), vs
    gradient steps (log scale), one panel per eps_rel, loss (MSE, 1 - SSIM) and threat model
    (the measurement space where the evaluation attacks there): one colour per
    model family, solid PGD eps/4, dashed PGD eps/2, dash-dotted APGD; dots 1 start vs squares
    R; stars early-stopped runs at the mean steps they spent; crosses the long reference
    attacks."""
    rows = [r for r in run.convergence if not r.get("thesis")]
    if not rows:
        return None
    panels = sorted({(r["eps_rel"], r.get("objective", "mse"), r.get("space", "input"))
                     for r in rows})  # fmt: skip
    models = sorted({r["model"] for r in rows})
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    best = best_found(run.convergence)
    for ax, (e, objective, space) in zip(axes[0], panels, strict=True):
        for i, model in enumerate(models):
            key = (model, e, objective, space)
            if key in best:
                _model_curves(ax, [r for r in rows if study_key(r) == key], best[key],
                              colors[i % len(colors)])  # fmt: skip
        ax.axhline(0.99, color="grey", linewidth=0.8, linestyle=":")
        ax.set_xscale("log")
        ax.set_xlabel("gradient steps (per start)")
        ax.set_ylabel("attack loss / best loss found (per crop)")
        where = f", {space} space" if space != "input" else ""
        ax.set_title(f"eps_rel {e:g}, loss {'MSE' if objective == 'mse' else '1 - SSIM'}{where}")
        ax.grid(alpha=0.3)
    handles, labels = axes[0][-1].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=6, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.suptitle("Attack convergence (validation crops; dotted line: 99% of the best loss)", y=1.03)
    return _save(fig, out)


def _model_curves(ax, rows: list[dict], best: float, color) -> None:
    """One model's rows of one panel: the candidates' curves, early-stopped stars and the
    reference crosses, as shares of `best`."""
    model = rows[0]["model"]
    curves = sorted({(r.get("attack", "pgd"), r["step_factor"], r["restarts"]) for r in rows})
    for attack, factor, restarts in curves:
        pts = sorted(
            (r["steps"], r["loss"] / max(best, 1e-30))
            for r in rows
            if (r.get("attack", "pgd"), r["step_factor"], r["restarts"])
            == (attack, factor, restarts)
            and not r.get("patience")
            and not r.get("reference")
        )
        if not pts:
            continue
        style = "-." if attack == "apgd" else ("-" if factor <= 0.25 else "--")
        what = "APGD" if attack == "apgd" else f"PGD {factor:g} eps"
        ax.plot(*zip(*pts, strict=True), color=color, linestyle=style,
                marker="o" if restarts == 1 else "s", markersize=3,
                label=f"{model}, {what}, {restarts} start(s)")  # fmt: skip
    _stopped_points(ax, rows, study_key(rows[0]), best, color)
    for r in rows:
        if r.get("reference"):
            what = f"{model}, reference {r['attack'].upper()} x{r['restarts']}"
            ax.plot(r["steps"], r["loss"] / max(best, 1e-30), "x", color=color, label=what)
