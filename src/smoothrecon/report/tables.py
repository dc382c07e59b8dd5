"""The thesis' tables rebuilt from records, each as markdown, CSV and LaTeX.

Tables 4.1-4.4 (one per factor and group of three eps_rel columns): rows are the baselines,
then per U-Net variant the RS models (at their validation-chosen sigma_g), the standard model
and the adversarially trained models; cells are mean +- 95% CI half-width over test images;
the best value of each column is bold. Table A.1: perturbation norms of PGD on f and on g.
Tables A.2/A.3: the sigma_g chosen per RS model and eps_rel (validation) beside the test oracle.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from typing import Any

from smoothrecon.evaluation.records import NO_ATTACK, ON_F, ON_G, Record, value
from smoothrecon.experiments.convergence import reference_scores, setting_scores
from smoothrecon.experiments.eot_study import eot_scores
from smoothrecon.metrics import mean_and_ci
from smoothrecon.report.records import Run, chosen_sigma, headline, pick, thesis_row

METRIC_FMT = {"mse": "{:.4f}", "psnr": "{:.2f}", "ssim": "{:.4f}"}
HIGHER_IS_BETTER = {"mse": False, "psnr": True, "ssim": True}
CELL_COLUMNS = (
    "model", "column", "text", "metric", "eps_rel", "mean", "ci95_half_width", "n", "unit_file"
)  # fmt: skip


@dataclass
class Table:
    name: str
    title: str
    header: list[str]
    rows: list[list[str]]
    bold: set[tuple[int, int]] = field(default_factory=set)
    note: str = ""
    factor: int | None = None  # the operator factor of every row, when one
    eps_rels: tuple[float, ...] = ()  # the eps_rel of the column groups, in order
    setting: str = ""  # the attack setting of the cells, when one
    # Per cell, for machines (headline tables): row, column, metric, mean, ci95_half_width, n
    # and the unit file of the record behind it; the CSV then has one row per cell.
    cells: list[dict[str, Any]] = field(default_factory=list)

    def markdown(self) -> str:
        def cell(i: int, j: int, v: str) -> str:
            return f"**{v}**" if (i, j) in self.bold else v

        lines = ["| " + " | ".join(self.header) + " |", "|" + "---|" * len(self.header)]
        for i, row in enumerate(self.rows):
            lines.append("| " + " | ".join(cell(i, j, v) for j, v in enumerate(row)) + " |")
        return "\n".join(lines)

    def csv(self) -> str:
        """The table as CSV: with per-cell numbers, one row per cell (the formatted text beside
        mean, ci95_half_width, n and the unit file of its record); else the rows as shown."""
        buf = io.StringIO()
        writer = csv.writer(buf)
        if self.cells:
            writer.writerow(CELL_COLUMNS)
            writer.writerows([c.get(k, "") for k in CELL_COLUMNS] for c in self.cells)
            return buf.getvalue()
        writer.writerow(self.header)
        writer.writerows(self.rows)
        return buf.getvalue()

    def latex(self) -> str:
        def esc(v: str) -> str:
            return v.replace("±", r"$\pm$").replace("_", r"\_").replace("%", r"\%")

        cols = "l" * len(self.header)
        out = [
            r"\begin{table}[ht]",
            r"\centering",
            f"\\caption{{{esc(self.title)}}}",
            f"\\begin{{tabular}}{{{cols}}}",
            r"\hline",
            " & ".join(map(esc, self.header)) + r" \\",
            r"\hline",
        ]
        for i, row in enumerate(self.rows):
            cells = [
                f"\\textbf{{{esc(v)}}}" if (i, j) in self.bold else esc(v)
                for j, v in enumerate(row)
            ]
            out.append(" & ".join(cells) + r" \\")
        out += [r"\hline", r"\end{tabular}", r"\end{table}"]
        return "\n".join(out) + "\n"


def _row_name(m: dict) -> str:
    """Sweep models by what they are; models of an evaluation by their label first."""
    if m["kind"] == "own":
        return f"{m['model']} (your model)"
    if m["kind"] != "unet":
        return f"{m['kind']} (no learning)"
    what = _trained_as(m, m["mode"], m["value"])
    name = f"{what} [{m['variant']}]"
    return name if "/" in m["model"] else f"{m['model']}: {name}"


def _trained_as(m: dict, mode: str, value: float) -> str:
    """What a U-Net row is: its training, and for f behind a defence what the defence is."""
    space = m.get("train_space", "input")
    what = {
        "gaussian": f"RS sigma_f={value:g}",
        "standard": "standard",
        "adversarial": f"AT eps_rel={value:g}" + (f" ({space} attack)" if space != "input" else ""),
        "own": "your model",
    }[mode]
    kind = m.get("defense_kind", "")
    if not kind:
        return what
    text = {
        "denoised": f"denoiser ({m['defense']})",
        "projection": "range projection (f o P)",
        "median": "median smoothing",
    }
    return f"{what} + {text.get(kind, m['defense'])}"


def _bold_best(rows_values: list[list[float | None]], metrics: list[str]) -> set[tuple[int, int]]:
    """(row, column) of the best value of each metric column; every row that ties is bold."""
    bold = set()
    for j, metric in enumerate(metrics):
        col = [x for v in rows_values if (x := v[j]) is not None]
        if col:
            best = max(col) if HIGHER_IS_BETTER[metric] else min(col)
            bold |= {(i, j + 1) for i, v in enumerate(rows_values) if v[j] == best}
    return bold


# Two budgets in one table (issue 24 item 8): eps = sqrt(d) eps_rel lives in each model's input
PIXEL_NOTE = (
    "Rows marked (pixel-space eps) take inputs in pixels [0, 1], the others the data's "
    "normalized ones: at the same eps_rel their perturbation is 1/std (about 4x) smaller in "
    "pixels, so they are compared under different budgets."
)


def headline_tables(run: Run, setting: str = "", per_table: int = 3) -> list[Table]:
    """Tables 4.1-4.4 analogues: per factor, eps_rel columns in groups of `per_table`, under
    the attack setting `setting` (default: the run's primary, "strong")."""
    setting = setting or run.primary
    suffix = "" if setting == run.primary else f"_{setting}_attack"
    tables = []
    number = 1
    for factor in run.factors:
        eps = run.eps_rels
        for start in range(0, len(eps), per_table):
            group = eps[start : start + per_table]
            header = ["model"] + [f"{m.upper()} @ {e:g}" for e in group for m in METRIC_FMT]
            metrics = [m for _ in group for m in METRIC_FMT]
            rows, values, numbers = [], [], []
            models = run.models(factor)
            mixed = len({m["input_space"] for m in models}) > 1
            for m in models:
                pixel = mixed and m["input_space"] == "pixel"
                name = _row_name(m) + (" (pixel-space eps)" if pixel else "")
                cells, vals = [name], list[float | None]()
                for e in group:
                    r = headline(run, m, e, setting)
                    for metric, fmt in METRIC_FMT.items():
                        if r is None:
                            cells.append("-")
                            vals.append(None)
                            continue
                        mean, half = value(r, metric), value(r, metric + "_ci95")
                        cells.append(f"{fmt.format(mean)} ± {fmt.format(half)}")
                        vals.append(mean)
                        numbers.append(_cell(m["model"], header[len(cells) - 1], cells[-1], r))
                rows.append(cells)
                values.append(vals)
            thesis_no = f"4.{number}" if number <= 4 else f"4.{number}*"
            columns = ", ".join(f"{e:g}" for e in group)
            reported, chosen_on = run.roles
            tables.append(
                Table(
                    f"table_4_{number}{suffix}",
                    f"(Table {thesis_no} analogue) {run.problem(factor)}, "
                    f"eps_rel in {{{columns}}}: "
                    f"{reported} crops, mean ± 95% CI; smoothed rows at the sigma_g chosen on "
                    f"{chosen_on}, worst case of the attacks on f and on g; attack setting "
                    f"'{setting}'",
                    header,
                    rows,
                    _bold_best(values, metrics),
                    note=PIXEL_NOTE if mixed else "",
                    factor=factor,
                    eps_rels=tuple(group),
                    setting=setting,
                    cells=numbers,
                )
            )
            number += 1
    return tables


def _cell(model: str, column: str, text: str, r: Record) -> dict[str, Any]:
    metric = column.split(" @ ")[0].lower()
    return {
        "model": model,
        "column": column,
        "text": text,
        "metric": metric,
        "eps_rel": r["eps_rel"],
        "mean": value(r, metric),
        "ci95_half_width": value(r, metric + "_ci95"),
        "n": r["n"],
        "unit_file": r.get("unit_file", ""),
    }


def thesis_tables(run: Run, ours: list[Table]) -> list[Table]:
    """The thesis' published numbers for the same rows and columns (where it has them)."""
    out: list[Table] = []
    if not run.problem(2).startswith("x"):
        return out  # the thesis published super-resolution numbers only
    for t in ours:
        assert t.factor is not None, "headline tables carry their factor"
        group, rows = t.eps_rels, []
        for m in run.models(t.factor):
            if m["kind"] != "unet" or m["variant"] != "thesis" or m["train_space"] != "input":
                continue  # the thesis trained against input-space attacks only
            cells = [_row_name(m).replace(" [thesis]", "")]
            found = False
            for e in group:
                vals = thesis_row(t.factor, m["role"], m["value"], e)
                found |= vals is not None
                cells += (
                    [METRIC_FMT[k].format(v) for k, v in zip(METRIC_FMT, vals, strict=True)]
                    if vals
                    else ["-"] * 3
                )
            if found:
                rows.append(cells)
        if rows:
            out.append(
                Table(
                    t.name + "_published",
                    "The thesis' published numbers (Mini-ImageNet, "
                    "160x160, sigma_g tuned on the test set) for the same rows",
                    t.header,
                    rows,
                    factor=t.factor,
                    eps_rels=t.eps_rels,
                )
            )
    return out


def monte_carlo_table(run: Run) -> Table:
    """Issue 16: how precise the smoothed estimates are, per smoothed model and eps_rel at
    sigma_g* (the attack on f, reported split): draws k used, the Monte-Carlo share of the MSE
    (mc_share), the MSE of the estimate and of the exact g (the MSE less the Monte-Carlo
    variance); rows whose median mc_share is above the tolerance are marked."""
    tol = run.manifest.get("config", {}).get("smoothing", {}).get("mc_tolerance", 0.05)
    header = ["model", "eps_rel", "sigma_g*", "k mean", "k max", "mc_share median", "MSE",
              "MSE of exact g", "above tolerance"]  # fmt: skip
    rows = []
    for factor in run.factors:
        for m in (m for m in run.models(factor) if m["smoothed"]):
            for e in run.eps_rels:
                s = chosen_sigma(run, m["model"], e)
                r = pick(run, m["model"], e, ON_F if e > 0 else NO_ATTACK, s)
                if r is None or s == 0 or "mc_share_median" not in r:
                    continue
                share = r["mc_share_median"]
                rows.append(
                    [m["model"], f"{e:g}", f"{s:g}", f"{r['k_mean']:.1f}",
                     f"{r['k_max_used']:g}", f"{share:.1%}", f"{r['mse']:.5f}",
                     f"{r['mse_debiased']:.5f}", "yes" if share > tol else ""]
                )  # fmt: skip
    return Table(
        "table_monte_carlo",
        f"Monte-Carlo precision of the smoothed estimates at sigma_g* ({run.reported} crops, "
        f"attack on f): the MSE of the exact g is the estimate's MSE less its Monte-Carlo "
        f"variance; 'above tolerance' marks a median mc_share above {tol:.0%}",
        header,
        rows,
    )


def table_a1(run: Run) -> Table:
    """Perturbation norms and effect of Vanilla PGD (on f) vs RS-PGD (on g), smoothed models,
    reported split."""
    header = [
        "model",
        "eps_rel",
        "eps",
        "‖e_f‖ mean",
        "‖e_g‖ mean",
        "PSNR f-attack",
        "PSNR g-attack",
        "SSIM f-attack",
        "SSIM g-attack",
        "stronger",
    ]
    rows = []
    for factor in run.factors:
        for m in run.models(factor):
            if not m["smoothed"]:
                continue
            for e in run.eps_rels:
                if e == 0:
                    continue
                s = chosen_sigma(run, m["model"], e)
                rf = pick(run, m["model"], e, ON_F, s)
                rg = pick(run, m["model"], e, ON_G, s)
                if rf is None or rg is None:
                    continue
                eps = rf["eps"]
                stronger = "g (RS-PGD)" if rg["mse"] > rf["mse"] else "f (Vanilla)"
                rows.append(
                    [
                        m["model"],
                        f"{e:g}",
                        f"{eps:.6f}",
                        f"{rf['e_norm_mean']:.6f}",
                        f"{rg['e_norm_mean']:.6f}",
                        f"{rf['psnr']:.2f}",
                        f"{rg['psnr']:.2f}",
                        f"{rf['ssim']:.4f}",
                        f"{rg['ssim']:.4f}",
                        f"{stronger}, ΔPSNR {abs(rf['psnr'] - rg['psnr']):.2f} dB",
                    ]
                )
    return Table(
        "table_a_1",
        "(Table A.1 analogue) Perturbation norms and effect of PGD on the "
        f"base model f vs on the smoothed model g, at the chosen sigma_g ({run.reported}); eps "
        "in the model's input space",
        header,
        rows,
    )


def sigma_tables(run: Run) -> list[Table]:
    """Tables A.2/A.3 analogues: sigma_g* (chosen on validation) and the reported split's
    oracle, per smoothed model and eps_rel."""
    out = []
    reported, chosen_on = run.roles
    for i, factor in enumerate(run.factors):
        header = ["model"] + [f"eps_rel {e:g}" for e in run.eps_rels]
        rows = []
        for m in run.models(factor):
            if not m["smoothed"]:
                continue
            cells = [_row_name(m)]
            for e in run.eps_rels:
                v = chosen_sigma(run, m["model"], e)
                t = chosen_sigma(run, m["model"], e, split=reported)
                cells.append(f"{v:g} ({reported} {t:g})")
            rows.append(cells)
        out.append(
            Table(
                f"table_a_{i + 2}",
                f"(Table A.{i + 2} analogue) {run.problem(factor)}: sigma_g chosen by "
                f"{chosen_on} SSIM "
                f"(the {reported}-set oracle in brackets)",
                header,
                rows,
                factor=factor,
                eps_rels=tuple(run.eps_rels),
            )
        )
    return out


def _study_key(r: dict) -> tuple:
    return (
        r["model"],
        r["eps_rel"],
        r.get("objective", "mse"),
        r.get("space", "input"),
        bool(r.get("thesis")),
        r.get("attack", "pgd"),
        r["step_factor"],
        r["restarts"],
        r.get("patience", 0),
        bool(r.get("reference")),
    )


def strength_table(run: Run) -> Table:
    """Every candidate attack of the convergence study as a share of the best loss any attack
    found (per crop, the long reference included): smallest and mean over model families and
    eps_rel, with its cost; the chosen one marked; the reference attacks' own shares last."""
    if not run.convergence:
        return Table("table_attack_strength", "", [], [])
    score = run.manifest.get("strong_score") or {}
    chosen = (score.get("attack", "pgd"), score.get("steps"), score.get("restarts"),
              score.get("step_factor"), score.get("patience", 0))  # fmt: skip
    spaces = sorted({r.get("space", "input") for r in run.convergence})
    per_space = [f"min share, {sp} space" for sp in spaces] if len(spaces) > 1 else []
    header = ["attack", "steps", "starts", "step", "early stop", "passes/crop (one loss)",
              "min share", *per_space, "mean share", "chosen"]  # fmt: skip
    rows = []
    for s in setting_scores(run.convergence):
        key = (s["attack"], s["steps"], s["restarts"], s["step_factor"], s["patience"])
        by_space = [f"{s['min_ratio_by_space'][sp]:.1%}" for sp in spaces] if per_space else []
        rows.append([
            s["attack"].upper(), str(s["steps"]), str(s["restarts"]),
            f"{s['step_factor']:g} eps" if s["attack"] == "pgd" else "schedule",
            f"patience {s['patience']}" if s["patience"] else "-", f"{s['cost']:.0f}",
            f"{s['min_ratio']:.1%}", *by_space, f"{s['mean_ratio']:.1%}",
            "yes" if key == chosen else "",
        ])  # fmt: skip
    for ref in reference_scores(run.convergence):
        r0 = next(r for r in run.convergence if r.get("reference") and r["attack"] == ref["attack"])
        rows.append([
            f"reference {ref['attack'].upper()}", str(r0["steps"]), str(r0["restarts"]), "-", "-",
            str(r0["steps"] * r0["restarts"]), f"{ref['min_ratio']:.1%}",
            *(f"{ref['min_ratio_by_space'][sp]:.1%}" for sp in spaces if per_space),
            f"{ref['mean_ratio']:.1%}", "",
        ])  # fmt: skip
    return Table(
        "table_attack_strength",
        "Attack strength across families (validation crops): each setting's mean loss as a "
        "share of the best loss any attack found per crop (long APGD and PGD references "
        "included), smallest and mean over model families, eps_rel, the losses studied "
        "(the MSE, and 1 - SSIM where the evaluation attacks SSIM too) and the threat models "
        "the evaluation attacks in (the smallest per threat model when there are two)",
        header,
        rows,
    )


def member_table(run: Run) -> Table:
    """The MSE and the SSIM member of an ensemble attack alone (reported split, the primary
    setting): per model, eps_rel and attacked model (f, or g at its sigma_g), the mean PSNR and
    SSIM each leaves, and their paired gaps with 95% CIs: how much lower SSIM the SSIM attack
    leaves, and how much lower PSNR the MSE attack leaves."""
    recs = [
        r
        for r in run.records
        if r["split"] == run.reported and r["setting"] == run.primary and r.get("by_member")
    ]
    header = ["model", "eps_rel", "attacked", "PSNR / SSIM, MSE attack",
              "PSNR / SSIM, SSIM attack", "SSIM: MSE attack - SSIM attack",
              "PSNR: SSIM attack - MSE attack"]  # fmt: skip
    rows = []
    for r in recs:
        own, pair = r["by_member"], _mse_ssim_pair(list(r["by_member"]))
        if pair is None:
            continue
        where = "f" if r["attack"] == ON_F else f"g, sigma_g {r['sigma_g']:g}"
        rows.append([
            r["model"], f"{r['eps_rel']:g}", f"{where} ({pair[0]}, {pair[1]})",
            _member_cell(own[pair[0]]), _member_cell(own[pair[1]]),
            _gap(own, pair, "ssim"), _gap(own, pair[::-1], "psnr"),
        ])  # fmt: skip
    return Table(
        "table_attack_members",
        "The MSE and the SSIM attack of the ensemble alone (mean over the reported crops): the "
        "SSIM column under attack is per crop the lower of their SSIM, the PSNR column the "
        "lower PSNR; gaps paired per crop, mean ± 95% CI",
        header,
        rows,
    )


def _mse_ssim_pair(names: list[str]) -> tuple[str, str] | None:
    """(the member aimed at the MSE, the one aimed at SSIM), named "<kind>-mse" and
    "<kind>-ssim", when both are there."""
    mse = next((n for n in names if n.endswith("-mse")), None)
    ssim = next((n for n in names if n.endswith("-ssim")), None)
    return (mse, ssim) if mse and ssim else None


def _member_cell(own: dict | None) -> str:
    if not own:
        return "-"
    return f"{mean_and_ci(own['psnr'])[0]:.2f} / {mean_and_ci(own['ssim'])[0]:.4f}"


def _gap(own: dict, pair: tuple[str, str], metric: str) -> str:
    """Mean ± 95% CI over crops of metric under pair[0] minus under pair[1]."""
    a, b = (own.get(n, {}).get(metric) for n in pair)
    if not a or not b:
        return "-"
    m, _, ci = mean_and_ci([x - y for x, y in zip(a, b, strict=True)])
    fmt = METRIC_FMT[metric]
    return f"{fmt.format(m)} ± {fmt.format(ci)}"


def convergence_table(run: Run) -> Table:
    """Attack loss (normalized-space MSE) and PSNR vs PGD steps, per model family;
    early-stopped runs in their own rows, with the mean steps they spent."""
    rows_in = [r for r in run.convergence if not r.get("reference")]
    steps = sorted({r["steps"] for r in rows_in})
    header = ["model", "eps_rel", "loss", "step", "restarts"]
    header += [f"loss/PSNR @ {t}" for t in steps]
    rows = []
    for key in sorted({_study_key(r) for r in rows_in}):
        model, eps, objective, space, thesis, attack, factor, restarts, patience, _ = key
        index = {r["steps"]: r for r in rows_in if _study_key(r) == key}
        starts = "thesis attack (last iterate)" if thesis else str(restarts)
        if patience:
            used = next(iter(index.values()))["steps_used"]
            starts += f", early stop (patience {patience}): {used:.0f} steps/crop"
        step = "APGD" if attack == "apgd" else f"{factor:g} eps"
        loss = "MSE" if objective == "mse" else "1 - SSIM"
        loss += f" ({space} space)" if space != "input" else ""
        cells = [model, f"{eps:g}", loss, step, starts]
        for t in steps:
            r = index.get(t)
            cells.append(f"{r['loss']:.4g} / {r['psnr']:.2f}" if r else "-")
        rows.append(cells)
    strong = run.manifest.get("attacks", {}).get("strong")
    note = ""
    if strong and strong.get("kind") == "apgd":
        note = (
            f"; strong setting chosen: APGD, {strong['steps']} steps, {strong['restarts']} start(s)"
        )
    elif strong:
        note = (
            f"; strong setting chosen: {strong['steps']} steps of {strong['step_factor']:g} "
            f"eps, {strong['restarts']} restart(s), best iterate"
            + (f", early stop (patience {strong['patience']})" if strong.get("patience") else "")
        )
    return Table(
        "table_attack_convergence",
        "Attack convergence on validation crops: mean "
        "attack loss (per-pixel MSE in the normalized space, or 1 - SSIM) / PSNR (dB) of the "
        f"best iterate after t steps{note}",
        header,
        rows,
    )


def eot_table(run: Run) -> Table:
    """The attack on g's study: per setting, the share of the best loss found that
    it reaches (smallest over models, sigma_g and eps_rel; scored on fresh draws of g), at
    each budget of network gradient passes per crop."""
    scores = eot_scores(run.eot) if run.eot else []
    budgets = sorted({s["budget"] for s in scores})
    header = ["noise", "k_attack", "starts", "iterate"] + [f"@ {b} passes" for b in budgets]
    keys = sorted({(s["noise"], s["k_attack"], s["restarts"], s["keep"]) for s in scores})
    chosen = run.manifest.get("attacks_g", {}).get("strong")
    rows = []
    for key in keys:
        index = {
            s["budget"]: s
            for s in scores
            if (s["noise"], s["k_attack"], s["restarts"], s["keep"]) == key
        }
        cells = [key[0], str(key[1]), str(key[2]), key[3]]
        for b in budgets:
            sc = index.get(b)
            mark = ""
            if sc and chosen and _is_chosen(sc, chosen):
                mark = " (chosen)"
            cells.append(f"{sc['min_ratio']:.1%} / {sc['mean_ratio']:.1%}{mark}" if sc else "-")
        rows.append(cells)
    ref = [r for r in run.eot if r["reference"]]
    note = ""
    if ref:
        top = max(r["budget"] for r in ref)
        note = (
            f"; the reference attack (fresh noise, k {ref[0]['k_attack']}, {top} passes) is "
            "part of the best loss found"
        )
    return Table(
        "table_eot_convergence",
        "The attack on g (EOT) on validation crops: smallest / mean share of the best loss "
        "found, scored on fresh draws of g (never those the attack optimized), per budget of "
        f"network gradient passes per crop (steps x k_attack x starts){note}",
        header,
        rows,
    )


def _is_chosen(score: dict, chosen: dict) -> bool:
    return (
        score["noise"] == chosen["noise"]
        and score["k_attack"] == chosen["k_attack"]
        and score["restarts"] == chosen["restarts"]
        and score["keep"] == chosen["keep"]
        and score["steps"] == chosen["steps"]
    )
