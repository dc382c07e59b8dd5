"""Tables, figures and the one-page report, built from a run's records only.

`build_report(run)` reads a `reproduce` run or an `evaluate` folder and writes into
`<run>/report/`: tables/*.md|csv|tex, figures/*.png, report.md and report.html
(self-contained), and returns the HTML page's path. The robustness curves come first.
"""

from __future__ import annotations

from pathlib import Path

from smoothrecon.evaluation.check import FAILED_TEXT
from smoothrecon.evaluation.records import ON_G, WORST, runtimes
from smoothrecon.report.certificates import certificate_blocks
from smoothrecon.report.figures import (
    attack_comparison,
    convergence_figure,
    image_grid,
    robustness,
    sigma_curves,
    sigma_limits,
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
    eot_table,
    headline_tables,
    member_table,
    monte_carlo_table,
    sigma_tables,
    strength_table,
    table_a1,
    thesis_tables,
)
from smoothrecon.util.io import atomic_write_text
from smoothrecon.util.runtime import runtime_words

__all__ = ["build_report", "load_run", "setting_section"]

FIGURES = Path("figures")


def _write_table(t: Table, folder: Path) -> None:
    atomic_write_text(folder / f"{t.name}.md", f"{t.title}\n\n{t.markdown()}\n")
    atomic_write_text(folder / f"{t.name}.csv", t.csv())
    atomic_write_text(folder / f"{t.name}.tex", t.latex())


def _image(path: Path | None, caption: str) -> list[Block]:
    return [] if path is None else [Block("image", (str(FIGURES / path.name), caption))]


def robustness_blocks(run: Run, folder: Path) -> list[Block]:
    """One robustness figure per factor and attack setting, the primary setting first."""
    blocks: list[Block] = []
    for setting in run.settings:
        for factor in run.factors:
            suffix = "" if setting == run.primary else f"_{setting}"
            path = folder / FIGURES / f"robustness_{run.problem(factor)}{suffix}.png"
            space = next(
                (r.get("space", "input") for r in run.records if r["setting"] == setting),
                "input",
            )
            where = "the measurement A(x)" if space == "measurement" else "the network input"
            caption = (
                f"{run.problem(factor)}, attack setting '{setting}' (perturbs {where}): "
                f"{run.reported} PSNR and SSIM against "
                "eps_rel, one line per model (95% CI bands); smoothed models at the sigma_g "
                f"chosen on {run.roles[1]}, worst case per crop of the attacks on f and on g "
                "where both ran; baselines dashed"
            )
            blocks += _image(robustness(run, factor, setting, path), caption)
    return blocks


def _model_figures(run: Run, factor: int, folder: Path) -> list[Block]:
    blocks: list[Block] = []
    curved = [
        m["model"]
        for m in run.models(factor)
        if m["smoothed"] or (run.kind == "reproduce" and m["role"] in ("standard", "none"))
    ]
    limits = sigma_limits(run, curved)  # one y-range for every model of the factor
    for m in run.models(factor):
        slug = m["model"].replace("/", "_")
        if m["model"] in curved:
            path = sigma_curves(
                run, m["model"], folder / FIGURES / f"sigma_curves_{slug}.png", limits
            )
            blocks += _image(path, f"(Figs A.3-A.8 analogue) {m['model']}: PSNR/SSIM vs sigma_g")
        if m["smoothed"] and any(r["attack"] == ON_G for r in run.by_model[m["model"]]):
            path = attack_comparison(
                run, m["model"], folder / FIGURES / f"attack_f_vs_g_{slug}.png"
            )
            caption = f"(Figs A.1-A.2 analogue) {m['model']}: RS-PGD vs Vanilla PGD"
            blocks += _image(path, caption)
    return blocks


def _grid_models(run: Run, factor: int, eps_rel: float) -> list[str]:
    """Models of an image grid: in a sweep the thesis' pair (the adversarially trained model
    closest to eps_rel, the RS model of the same variant with the best SSIM there); else every
    learned model."""
    models = run.models(factor)
    if run.kind == "evaluate":
        return [m["model"] for m in models if m["role"] != "none"][:3]
    ats = [m for m in models if m["role"] == "adversarial"]
    rss = [m for m in models if m["role"] == "gaussian"]
    if not ats or not rss:
        return []
    at = min(
        ats,
        key=lambda m: (
            abs(m["value"] - eps_rel),
            m["train_space"] != "input",  # the thesis' pair first
            m["variant"] != "thesis",
        ),
    )
    same = [m for m in rss if m["variant"] == at["variant"]] or rss  # compare like with like
    rs = max(same, key=lambda m: (headline(run, m, eps_rel) or {"ssim": -1})["ssim"])
    return [at["model"], rs["model"]]


def _grids(run: Run, factor: int, folder: Path) -> list[Block]:
    blocks: list[Block] = []
    for e in run.eps_rels:
        models = _grid_models(run, factor, e)
        if e == 0 or not models:
            continue
        name = f"images_{run.problem(factor)}_eps{e:g}.png"
        path = image_grid(run, models, e, folder / FIGURES / name)
        sigmas = ", ".join(f"{m} at sigma_g {chosen_sigma(run, m, e):g}" for m in models)
        caption = f"(Figs 4.2/4.3 layout) {run.problem(factor)}, eps_rel {e:g}: {sigmas}"
        blocks += _image(path, caption)
    return blocks


def _figures(run: Run, folder: Path) -> list[Block]:
    blocks = _image(
        convergence_figure(run, folder / FIGURES / "attack_convergence.png"),
        "Attack convergence per model family",
    )
    for factor in run.factors:
        blocks += _model_figures(run, factor, folder) + _grids(run, factor, folder)
    return blocks


def _describe(name: str, a: dict) -> str:
    losses = a.get("losses") or [a.get("loss", "mse")]
    on = (
        f" on each of {' and '.join(m.upper() for m in losses)} (an ensemble)"
        if len(losses) > 1
        else (f" on {losses[0].upper()}" if losses[0] != "mse" else "")
    )
    return _describe_one(name, a) + on


def _describe_one(name: str, a: dict) -> str:
    if a.get("kind") == "apgd":
        return f"'{name}': APGD-L2, {a['steps']} steps, {a['restarts']} start(s)"
    if "steps" not in a:  # not a built-in attack: its own description
        own = a.get("attack", {})
        params = ", ".join(f"{k} {v}" for k, v in own.items() if k not in ("kind", "name"))
        return f"'{name}': {own.get('kind', 'an attack')}" + (f" ({params})" if params else "")
    stop = (
        f", early stopping (a crop stops once its loss rose < {a['rel_tol']:g} in "
        f"{a['patience']} steps)"
        if a.get("patience")
        else ""
    )
    return (
        f"'{name}': at most {a['steps']} steps of {a['step_factor']:g} eps, {a['restarts']} "
        f"random start(s), {a['keep']} iterate{stop}"
    )


def attack_text(run: Run) -> str:
    """Which attack settings the run used (the first is the headline), how close the study
    found the strong one to convergence, and whether smoothed models were attacked through g."""
    m = run.manifest
    attacks, score = m.get("attacks", {}), m.get("strong_score")
    parts = [
        "Attack settings: " + "; ".join(_describe(k, a) for k, a in attacks.items()) + "."
        f" The headline uses '{run.primary}'."
    ]
    if score and "strong" in attacks:
        cap = m["config"]["experiment"].get("strong_max_cost", 0)
        where = f"under the cap of {cap} passes per crop" if cap else "among those studied"
        verdict = (
            f"within {score['within']:.0%} of it"
            if score["converged"]
            else f"NOT within {score['within']:.0%} of it: the closest setting {where}"
        )
        found = (
            "any attack found (per crop, a long reference included)"
            if any(r.get("reference") for r in run.convergence)
            else "the study's PGD settings found (a run before the study had a reference)"
        )
        parts.append(
            f"'strong' was chosen from the convergence study: its MSE attack reaches at least "
            f"{score['min_ratio']:.1%} (mean {score['mean_ratio']:.1%}) of the best loss "
            f"{found} for every model family and eps_rel, {verdict}, at {score['cost']:.0f} "
            "gradient passes per crop (all its losses) on the study's crops."
        )
    parts.append(columns_text(run))
    if any(r["attack"] == ON_G for r in run.records):
        parts.append("Smoothed models: per crop, the worse of the attacks on f and on g (EOT).")
        parts.append(_g_text(m))
    elif any(r["smoothed"] for r in run.records):
        parts.append("Smoothed models were attacked through f only (RS-PGD was off).")
    parts.append(failed_text(run))
    return " ".join(p for p in parts if p)


def columns_text(run: Run) -> str:
    """Which attack each metric column under attack shows, for an ensemble: per crop the
    member of the largest MSE (MSE and PSNR) and of the lowest SSIM (SSIM), with the share of
    the reported crops each member supplied (mean over the attacked records)."""
    rows = [r for r in run.records if r["split"] == run.reported and r.get("worst_of")]
    if not rows:
        return ""
    parts = []
    for metric, what in (("mse", "MSE and PSNR"), ("ssim", "SSIM")):
        shares: dict[str, float] = {}
        for r in rows:
            for name, v in r["worst_of"].get(metric, {}).items():
                shares[name] = shares.get(name, 0.0) + v / len(rows)
        listed = ", ".join(f"{n} {v:.0%}" for n, v in sorted(shares.items(), key=lambda t: -t[1]))
        worst = "largest MSE" if metric == "mse" else "lowest SSIM"
        parts.append(f"{what} from the member of the {worst} ({listed} of crops)")
    return (
        "Columns under attack: per crop, " + "; ".join(parts) + " — each column is the worst "
        "case on its own metric."
    )


def _g_text(m: dict) -> str:
    """The attack on g and how close the EOT study found it to the best loss."""
    g, score = m.get("attacks_g", {}).get("strong"), m.get("eot_score")
    if not g or not score:
        return ""
    verdict = (
        f"within {score['within']:.0%} of it"
        if score["converged"]
        else f"NOT within {score['within']:.0%} of it (the closest setting studied)"
    )
    losses = g.get("losses") or ["mse"]
    each = f" on each of {' and '.join(x.upper() for x in losses)}" if len(losses) > 1 else ""
    return (
        f"The attack on g{each}: {g['noise']} noise, k_attack {g['k_attack']}, "
        f"{g['steps']} steps of {g['step_factor']:g} eps, {g['restarts']} random start(s), "
        f"{g['keep']} iterate "
        f"({score['budget']} network gradient passes per crop{' and loss' if each else ''}), "
        f"chosen by the EOT study (on the MSE): it reaches at least {score['min_ratio']:.1%} "
        f"(mean {score['mean_ratio']:.1%}) of the best MSE loss found on g for every model "
        f"family, sigma_g and eps_rel studied, scored on "
        f"fresh draws of g, {verdict}."
    )


def failed_text(run: Run) -> str:
    """Which attacks did not beat random noise of their own norm (`attack_check`)."""
    checked = [r for r in run.records if r["split"] == run.reported and "attack_failed" in r]
    if not checked:
        return ""
    failed = [r for r in checked if r["attack_failed"] and r["attack"] != WORST]
    if not failed:
        return (
            f"Every attack beat random noise of its own norm ({len(checked)} attacked records "
            "checked; 95% CI of the per-crop PSNR gap above 0)."
        )
    names = "; ".join(
        f"{r['model']} at eps_rel {r['eps_rel']:g} ({r['setting']}, {r['attack']}, sigma_g "
        f"{r['sigma_g']:g}): PSNR gap to random noise {r.get('random_gap', float('nan')):+.2f} "
        f"dB, first gradient zero or not finite on {r['grad_bad_share']:.0%} of the crops"
        + (", gradient-free attack added" if r.get("gradient_free") else "")
        for r in failed
        if "random_gap" in r
    )
    return f"WARNING: {FAILED_TEXT}. Flagged: {names}."


def scale_text(run: Run) -> str:
    """Data, crops, k and compute of the run, in one paragraph."""
    m, cfg = run.manifest, run.manifest["config"]
    data = m["data"]
    n_photos = {k: len(v) for k, v in data["photos"].items()}
    crops = f"{cfg['data']['crop_size']}x{cfg['data']['crop_size']} crops"
    if run.kind == "evaluate":
        n = {r["split"]: r["n"] for r in run.records}
        scale = (
            f"Scale: {sum(n_photos.values())} photos of '{data['source']}', {crops}, "
            + ", ".join(f"{v} {k} crops" for k, v in n.items())
            + f", k = {m.get('evaluation', {}).get('k', cfg['smoothing']['k'])}."
        )
    else:
        scale = (
            f"Scale: {sum(n_photos.values())} photos ({n_photos['train']} train / "
            f"{n_photos['val']} validation / {n_photos['test']} test, split by photo), {crops}, "
            f"{data['crops']['val']} validation and {data['crops']['test']} test crops, "
            f"{cfg['train']['epochs']} epochs of {cfg['data']['crops_per_epoch']} crops, "
            f"k = {cfg['smoothing']['k']}."
        )
    phases = {
        "training": run.train_seconds,
        "attack-convergence study": run.study_seconds,
        "evaluation": run.eval_seconds,
        "certification": run.certify_seconds,
    }
    hours = sum(phases.values()) / 3600
    spent = " + ".join(f"{v / 60:.1f} min {k}" for k, v in phases.items() if v > 0)
    return (
        f"{scale} {attack_text(run)} Compute (measured per unit of work): {spent} "
        f"({hours:.2f} h) {runtime_text(run)}"
    )


def runtime_text(run: Run) -> str:
    """Where and in which precision the records were computed: from the records themselves
    (every unit says what ran), with a warning when their devices or precisions disagree; for
    a run from before records said it, the machine of run.json and its resolved precision."""
    rts = runtimes(run.records)
    words = "; ".join(runtime_words(rt) for rt in rts)
    if len({(rt["device"], rt["precision"]) for rt in rts}) > 1:
        return f"on several runtimes. WARNING: the records mix what computed them: {words}."
    if rts:  # one device and precision (threads or the machine may differ between units)
        return f"on {words}."
    machine = run.manifest["machine"]
    precision = run.manifest.get("runtime", {}).get("precision") or (
        f"precision not recorded (config: {run.manifest['config']['runtime']['precision']})"
    )
    return (
        f"on {machine.get('gpu') or machine['cpu']} ({machine['cores']} threads, {precision}, "
        f"torch {machine['torch']})."
    )


CAVEAT = (
    "The thesis used Mini-ImageNet (34,745 training and 3,923 test images, 160x160) and chose "
    "sigma_g on its test set; this run uses other photos, another scale and chooses sigma_g on a "
    "validation split disjoint from the test split, so absolute numbers differ. Compare "
    "orderings and trends, not digits. Cells are mean ± 95% confidence half-width over the "
    "reported crops; the best value per column is bold. Findings compare two models on the "
    "same crops (paired differences)."
)


def _tables(run: Run) -> tuple[list[Block], list[Block]]:
    """The blocks of the headline tables' sections and of
    the appendix (sigma_g, Table A.1 and the long attack-convergence table), which the page
    puts after the figures."""
    tables = headline_tables(run)
    thesis = thesis_tables(run, tables)
    second = {s: headline_tables(run, s) for s in run.settings[1:]}
    extra = [
        t
        for t in (
            table_a1(run),
            monte_carlo_table(run),
            *sigma_tables(run),
            member_table(run),
            strength_table(run),
            convergence_table(run),
            eot_table(run),
        )
        if t.rows
    ]
    title = "Tables 4.1-4.4 (this run, then the thesis' published numbers)"
    if not thesis:
        title = "Tables 4.1-4.4 analogues (this run)"
    blocks = [Block("h2", title)]
    for t in tables:
        blocks.append(Block("table", t))
        blocks += [Block("table", x) for x in thesis if x.name == t.name + "_published"]
    for setting, ts in second.items():
        heading, text = setting_section(run, setting)
        blocks += [Block("h2", heading), Block("p", text), *(Block("table", t) for t in ts)]
    appendix = [Block("h2", "Appendix tables"), *(Block("table", t) for t in extra)]
    return blocks, appendix if extra else []


def setting_section(run: Run, setting: str) -> tuple[str, str]:
    """The heading and first paragraph of the tables under another attack setting than the
    headline's: named after what the setting is, never after its position."""
    if setting == "thesis":
        return (
            "The same tables under the thesis' attack setting",
            "10 steps of eps/4 from a random start in the ball, last iterate, as in section "
            "4.4; compare with the strong attack above to see how much the thesis' setting "
            "overstates robustness.",
        )
    where = (
        "the measurement A(x) (the low-resolution image for super-resolution)"
        if run.space(setting) == "measurement"
        else "the network input"
    )
    return (
        f"The same tables under the attack setting '{setting}' (perturbs {where})",
        f"The attack setting '{setting}' with the same budget rule eps = eps_rel sqrt(d), d "
        f"counted in the space it perturbs; see the attack settings above and "
        "docs/threat-models.md.",
    )


def _write_page(folder: Path, blocks: list[Block]) -> Path:
    """report.md, report.html and the files of every table the page links (md, csv, tex):
    the one place tables are written, so no link points at a file that was not."""
    for b in blocks:
        if b.kind == "table":
            _write_table(b.content, folder / "tables")
    atomic_write_text(folder / "report.md", render_markdown(blocks))
    page = folder / "report.html"
    atomic_write_text(page, render_html(blocks, folder))
    return page


def build_report(run_folder: str | Path) -> Path:
    """report/report.md and report.html of a reproduce, evaluate or certify folder."""
    root = Path(run_folder)
    certificates = certificate_blocks(root)
    if certificates and not (root / "run.json").is_file():  # a folder of `certify` alone
        title = Block("h1", f"smoothrecon report — certificates in {root.name}")
        return _write_page(root / "report", [title, *certificates])
    run = load_run(run_folder)
    folder = run.folder / "report"
    m = run.manifest
    what = f"preset '{m['preset']}'"
    if run.kind == "evaluate":
        names = ", ".join(dict.fromkeys(r["model"] for r in run.records))
        what = f"evaluation of {names}, {what}"
    blocks: list[Block] = [
        Block("h1", f"smoothrecon report — {what}"),
        Block("list", baseline_lines(run)),
        Block("p", scale_text(run)),
        Block("p", CAVEAT),
        Block("h2", "Robustness curves"),
        *robustness_blocks(run, folder),
    ]
    if run.kind == "reproduce":
        blocks += [Block("h2", "Which of the thesis' findings hold in this run")]
        blocks += [Block("list", findings(run))]
    tables, appendix = _tables(run)
    blocks += tables
    blocks += [Block("h2", "Figures"), *_figures(run, folder)]
    blocks += certificates
    blocks += appendix
    blocks += [Block("h2", "Resolved config of this run"), Block("code", config_text(run))]
    return _write_page(folder, blocks)
