"""Tables, figures and the one-page report, built from a run's records only.

`build_report(run)` writes into `<run>/report/`: tables/*.md|csv|tex, figures/*.png,
report.md and report.html (self-contained), and returns the HTML page's path.
"""

from __future__ import annotations

from pathlib import Path

from smoothrecon.io import atomic_write_text
from smoothrecon.report.figures import (
    attack_comparison,
    convergence_figure,
    image_grid,
    sigma_curves,
)
from smoothrecon.report.page import (
    Block,
    baseline_lines,
    config_text,
    findings,
    render_html,
    render_markdown,
)
from smoothrecon.report.records import Run, chosen_sigma, headline, load_run
from smoothrecon.report.tables import (
    Table,
    convergence_table,
    headline_tables,
    sigma_tables,
    table_a1,
    thesis_tables,
)

__all__ = ["build_report", "load_run"]


def _write_table(t: Table, folder: Path) -> None:
    atomic_write_text(folder / f"{t.name}.md", f"{t.title}\n\n{t.markdown()}\n")
    atomic_write_text(folder / f"{t.name}.csv", t.csv())
    atomic_write_text(folder / f"{t.name}.tex", t.latex())


def _figures(run: Run, folder: Path) -> list[Block]:
    blocks: list[Block] = []
    rel = Path("figures")
    if convergence_figure(run, folder / rel / "attack_convergence.png"):
        blocks.append(
            Block(
                "image",
                (
                    str(rel / "attack_convergence.png"),
                    "Attack convergence per model family (issue 8)",
                ),
            )
        )
    for factor in run.factors:
        models = run.models(factor)
        for m in models:
            if m["mode"] in ("gaussian", "standard", "none"):
                name = f"sigma_curves_{m['model'].replace('/', '_')}.png"
                sigma_curves(run, m["model"], folder / rel / name)
                blocks.append(
                    Block(
                        "image",
                        (
                            str(rel / name),
                            f"(Figs A.3-A.8 analogue) {m['model']}: PSNR/SSIM vs sigma_g",
                        ),
                    )
                )
        for m in models:
            has_g = any(r["model"] == m["model"] and r["attack"] == "pgd_g" for r in run.records)
            if m["mode"] == "gaussian" and has_g:
                name = f"attack_f_vs_g_{m['model'].replace('/', '_')}.png"
                attack_comparison(run, m["model"], folder / rel / name)
                blocks.append(
                    Block(
                        "image",
                        (
                            str(rel / name),
                            f"(Figs A.1-A.2 analogue) {m['model']}: RS-PGD vs Vanilla PGD",
                        ),
                    )
                )
        for e in run.eps_rels:
            if e == 0:
                continue
            ats = [m for m in models if m["mode"] == "adversarial"]
            rss = [m for m in models if m["mode"] == "gaussian"]
            if not ats or not rss:
                continue
            at = min(ats, key=lambda m: (abs(m["value"] - e), m["variant"] != "thesis"))
            rs = max(rss, key=lambda m: (headline(run, m, e) or {"ssim": -1})["ssim"])
            name = f"images_x{factor}_eps{e:g}.png"
            if image_grid(run, at["model"], rs["model"], e, folder / rel / name):
                s = chosen_sigma(run, rs["model"], e)
                blocks.append(
                    Block(
                        "image",
                        (
                            str(rel / name),
                            f"(Figs 4.2/4.3 layout) x{factor}, "
                            f"eps_rel {e:g}: {at['model']} vs {rs['model']} "
                            f"smoothed at sigma_g {s:g}",
                        ),
                    )
                )
    return blocks


def attack_text(manifest: dict) -> str:
    """The attack settings of the run and how close the strong one is to convergence."""
    attacks = manifest.get("attacks", {})
    strong, score = attacks.get("strong"), manifest.get("strong_score")
    if not strong or not score:
        return ""
    cap = manifest["config"]["experiment"].get("strong_max_cost", 0)
    where = f"under the cost cap of {cap} gradient steps" if cap else "among those studied"
    verdict = (
        f"within {score['within']:.0%} of it"
        if score["converged"]
        else f"NOT within {score['within']:.0%} of it: the closest setting {where}"
    )
    return (
        f"Headline attack ('strong', chosen from the convergence study): {strong['steps']} "
        f"steps of {strong['step_factor']:g} eps, {strong['restarts']} random start(s), best "
        f"iterate; it reaches at least {score['min_ratio']:.1%} (mean {score['mean_ratio']:.1%}) "
        f"of the best attack loss found for every model family and eps_rel, {verdict}. "
        "Second column set ('thesis'): 10 steps of eps/4, last iterate, as in section 4.4."
    )


def build_report(run_folder: str | Path) -> Path:
    run = load_run(run_folder)
    folder = run.folder / "report"
    tables = headline_tables(run)
    thesis = thesis_tables(run, tables)
    second = [t for s in run.settings[1:] for t in headline_tables(run, s)]
    extra = [table_a1(run), *sigma_tables(run), convergence_table(run)]
    for t in [*tables, *thesis, *second, *extra]:
        _write_table(t, folder / "tables")
    m = run.manifest
    cfg = m["config"]
    data = m["data"]
    n_photos = {k: len(v) for k, v in data["photos"].items()}
    hours = (run.train_seconds + run.eval_seconds) / 3600
    blocks: list[Block] = [
        Block("h1", f"smoothrecon report — preset '{m['preset']}'"),
        Block("list", baseline_lines(run)),
        Block(
            "p",
            (
                f"Scale: {sum(n_photos.values())} photos ({n_photos['train']} train / "
                f"{n_photos['val']} validation / {n_photos['test']} test, split by photo), "
                f"{cfg['data']['crop_size']}x{cfg['data']['crop_size']} crops, "
                f"{data['crops']['val']} validation and {data['crops']['test']} test crops, "
                f"{cfg['train']['epochs']} epochs of {cfg['data']['crops_per_epoch']} crops, "
                f"k = {cfg['smoothing']['k']}. {attack_text(m)} "
                f"Compute: {run.train_seconds / 60:.1f} min training + "
                f"{run.eval_seconds / 60:.1f} min evaluation ({hours:.2f} h) on "
                f"{m['machine'].get('gpu') or m['machine']['cpu']} "
                f"({m['machine']['cores']} threads, torch {m['machine']['torch']})."
            ),
        ),
        Block(
            "p",
            (
                "The thesis used Mini-ImageNet (34,745 training and 3,923 test images, 160x160) "
                "and chose sigma_g on its test set; this run uses other photos, another scale and "
                "chooses sigma_g on a validation split disjoint from the test split, so absolute "
                "numbers differ. Compare orderings and trends, not digits. Cells are mean ± 95% "
                "confidence half-width over test crops; the best value per column is bold. "
                "Findings compare two models on the same crops (paired differences)."
            ),
        ),
        Block("h2", "Which of the thesis' findings hold in this run"),
        Block("list", findings(run)),
        Block("h2", "Tables 4.1-4.4 (our run, then the thesis' published numbers)"),
    ]
    for t in tables:
        blocks.append(Block("table", t))
        match = [x for x in thesis if x.name == t.name + "_published"]
        if match:
            blocks.append(Block("table", match[0]))
    if second:
        blocks.append(Block("h2", "The same tables under the thesis' attack setting"))
        blocks.append(
            Block(
                "p",
                "10 steps of eps/4 from a random start in the ball, last "
                "iterate, as in section 4.4; compare with the strong attack "
                "above to see how much the thesis' setting overstates "
                "robustness.",
            )
        )
        blocks += [Block("table", t) for t in second]
    blocks.append(Block("h2", "Appendix tables"))
    blocks += [Block("table", t) for t in extra]
    blocks.append(Block("h2", "Figures"))
    blocks += _figures(run, folder)
    blocks += [Block("h2", "Resolved config of this run"), Block("code", config_text(run))]
    atomic_write_text(folder / "report.md", render_markdown(blocks))
    page = folder / "report.html"
    atomic_write_text(page, render_html(blocks, folder))
    return page
