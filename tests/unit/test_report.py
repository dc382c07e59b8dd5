"""The report's rules on a small synthetic set of records: the headline (worst case at the
sigma_g chosen on validation), the verdicts with their paired CIs, and one table cell by cell.

Numbers are chosen so that every rule has a wrong answer nearby: the test-set oracle differs
from the validation choice, the attack on g is worse than on f for some crops only, and an
unpaired interval would call a paired-significant difference inconclusive.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path

from smoothrecon.evaluation.records import Condition, Record, make_record, upgrade
from smoothrecon.models.info import ModelInfo
from smoothrecon.report.page import _verdict, difference_ci, fmt_metric
from smoothrecon.report.records import Run, chosen_sigma, headline
from smoothrecon.report.tables import headline_tables

RS = ModelInfo("x2/thesis/rs0.1", 2, "unet", "thesis", "gaussian", 0.1, smoothed=True)
STD = ModelInfo("x2/thesis/std", 2, "unet", "thesis", "standard", 0.0)
BILINEAR = ModelInfo("x2/bilinear", 2, "bilinear")


def _per_image(psnr: list[float], ssim: list[float]) -> dict[str, list[float]]:
    return {"mse": [10 ** (-p / 10) for p in psnr], "psnr": psnr, "ssim": ssim}


def _rec(
    info: ModelInfo,
    split: str,
    eps_rel: float,
    attack: str,
    sigma: float,
    psnr: list[float],
    ssim: list[float],
    setting: str = "strong",
) -> Record:
    cond = Condition(split, eps_rel, eps_rel * 10, attack, setting, sigma, 4 if sigma else 1)
    return make_record(info, cond, _per_image(psnr, ssim))


def _records() -> list[Record]:
    r: list[Record] = []
    for info, base in ((STD, 30.0), (BILINEAR, 28.0), (RS, 29.0)):
        sigmas = (0.0, 0.1, 0.2) if info is not BILINEAR else (0.0,)
        for s in sigmas:
            # validation: sigma 0.2 is best for RS (and for STD, which is not smoothed);
            # test: sigma 0.1 would be best, the oracle the headline must not use.
            val_ssim = 0.5 + (s if info is not BILINEAR else 0)
            test_ssim = 0.6 + (0.2 if s == 0.1 else 0)
            r.append(_rec(info, "val", 0.0, "none", s, [base] * 3, [val_ssim] * 3))
            r.append(
                _rec(info, "test", 0.0, "none", s, [base, base + 1, base + 2], [test_ssim] * 3)
            )
            for setting, drop in (("strong", 3.0), ("thesis", 1.0)):
                val = [val_ssim - 0.1] * 3
                r.append(_rec(info, "val", 0.02, "pgd_f", s, [base - drop] * 3, val, setting))
                psnr = [base - drop, base - drop + 1, base - drop + 2]
                test = [test_ssim - 0.1] * 3
                r.append(_rec(info, "test", 0.02, "pgd_f", s, psnr, test, setting))
    # RS-PGD at the validation choice 0.2 and the per-crop worst case of the two attacks.
    r.append(_rec(RS, "test", 0.02, "pgd_g", 0.2, [27.0, 24.0, 29.0], [0.5, 0.4, 0.6]))
    r.append(_rec(RS, "test", 0.02, "worst", 0.2, [26.0, 24.0, 28.0], [0.7, 0.4, 0.7]))
    return r


def _run(records: list[Record] | None = None) -> Run:
    manifest = {
        "kind": "reproduce",
        "config": {"data": {"crop_size": 8}},
        "attacks": {"strong": {}, "thesis": {}},
    }
    return Run(Path("/nowhere"), manifest, records or _records())


def test_headline_is_the_worst_case_at_the_validation_choice() -> None:
    run = _run()
    rs = run.models(2)[1]
    assert rs["model"] == RS.model
    assert chosen_sigma(run, RS.model, 0.02) == 0.2
    assert chosen_sigma(run, RS.model, 0.02, split="test") == 0.1  # the oracle differs
    row = headline(run, rs, 0.02)
    assert row is not None
    assert (row["attack"], row["sigma_g"], row["split"]) == ("worst", 0.2, "test")
    assert row["psnr"] == statistics.mean([26.0, 24.0, 28.0])
    # Without the attack on g, the attack on f at the same sigma_g.
    no_g = _run([r for r in _records() if r["attack"] not in ("pgd_g", "worst")])
    row = headline(no_g, rs, 0.02)
    assert row is not None and (row["attack"], row["sigma_g"]) == ("pgd_f", 0.2)
    # The thesis setting has no worst-case record: its attack on f at its own choice.
    row = headline(run, rs, 0.02, "thesis")
    assert row is not None and (row["attack"], row["setting"]) == ("pgd_f", "thesis")
    # Clean: the validation choice at eps_rel 0, no attack.
    row = headline(run, rs, 0.0)
    assert row is not None and (row["attack"], row["sigma_g"]) == ("none", 0.2)


def test_models_that_are_not_smoothed_are_shown_without_smoothing() -> None:
    run = _run()
    std = next(m for m in run.models(2) if m["model"] == STD.model)
    row = headline(run, std, 0.02)
    # sigma 0.2 scores higher on validation, but the standard model is not a smoothed one.
    assert row is not None and (row["attack"], row["sigma_g"]) == ("pgd_f", 0.0)


def _ci(values: list[float]) -> tuple[float, float]:
    """Mean and 95% half-width, computed independently of the code under test."""
    return statistics.mean(values), 1.96 * statistics.stdev(values) / math.sqrt(len(values))


def test_verdicts_use_paired_intervals() -> None:
    a = _rec(STD, "test", 0.0, "none", 0.0, [30.0, 20.0, 25.0, 35.0], [0.9, 0.5, 0.7, 0.8])
    b = _rec(BILINEAR, "test", 0.0, "none", 0.0, [29.0, 19.5, 24.0, 34.5], [0.8, 0.6, 0.6, 0.7])
    diffs = [1.0, 0.5, 1.0, 0.5]
    mean, half = _ci(diffs)
    assert difference_ci(a, b, "psnr") == (mean, half)
    # The unpaired intervals overlap widely; the paired one excludes zero.
    assert a["psnr_ci95"] + b["psnr_ci95"] > abs(mean) > half
    text = _verdict(a, b, "psnr")
    assert text.startswith("holds: ")
    assert f"(difference {fmt_metric('psnr', mean, True)} ± {fmt_metric('psnr', half)}," in text
    assert _verdict(b, a, "psnr").startswith("does NOT hold: ")
    assert _verdict(a, b, "psnr", claim_a_better=False).startswith("does NOT hold: ")
    # SSIM differences +0.1, -0.1, +0.1, +0.1: the interval contains zero.
    mean, half = _ci([0.1, -0.1, 0.1, 0.1])
    assert abs(mean) <= half
    assert _verdict(a, b, "ssim").startswith("inconclusive: ")
    assert _verdict(a, None, "ssim") == "not measured in this run"


def test_lower_mse_is_better_in_verdicts() -> None:
    a = _rec(STD, "test", 0.0, "none", 0.0, [30.0, 31.0, 32.0], [0.9] * 3)
    b = _rec(BILINEAR, "test", 0.0, "none", 0.0, [20.0, 21.0, 22.0], [0.5] * 3)
    assert _verdict(a, b, "mse").startswith("holds: ")  # a's MSE is lower


def test_headline_table_cell_by_cell() -> None:
    run = _run()
    tables = headline_tables(run)
    assert len(tables) == 1
    t = tables[0]
    assert (t.name, t.factor, t.eps_rels, t.setting) == ("table_4_1", 2, (0.0, 0.02), "strong")
    assert t.header == [
        "model",
        "MSE @ 0",
        "PSNR @ 0",
        "SSIM @ 0",
        "MSE @ 0.02",
        "PSNR @ 0.02",
        "SSIM @ 0.02",
    ]

    def cells(values: list[float], fmt: str) -> str:
        mean, half = _ci(values) if len(set(values)) > 1 else (values[0], 0.0)
        return f"{fmt.format(mean)} ± {fmt.format(half)}"

    def row(name: str, clean: list[float], ssim0: float, attacked: list[float], ssim: list[float]):
        mse = [10 ** (-p / 10) for p in clean]
        mse_a = [10 ** (-p / 10) for p in attacked]
        return [
            name,
            cells(mse, "{:.4f}"),
            cells(clean, "{:.2f}"),
            cells([ssim0] * 3, "{:.4f}"),
            cells(mse_a, "{:.4f}"),
            cells(attacked, "{:.2f}"),
            cells(ssim, "{:.4f}"),
        ]

    expected = [
        row("bilinear (no learning)", [28.0, 29.0, 30.0], 0.6, [25.0, 26.0, 27.0], [0.5] * 3),
        row(
            "RS sigma_f=0.1 [thesis]", [29.0, 30.0, 31.0], 0.6, [26.0, 24.0, 28.0], [0.7, 0.4, 0.7]
        ),
        row("standard [thesis]", [30.0, 31.0, 32.0], 0.6, [27.0, 28.0, 29.0], [0.5] * 3),
    ]
    assert t.rows == expected
    # Bold: the best mean per column (lowest MSE, highest PSNR / SSIM), every tie.
    assert t.bold == {(2, 1), (2, 2), (0, 3), (1, 3), (2, 3), (2, 4), (2, 5), (1, 6)}


def test_records_of_earlier_runs_are_upgraded_on_reading() -> None:
    new = _rec(RS, "test", 0.02, "pgd_f", 0.2, [20.0, 21.0], [0.5, 0.6])
    old = {k: v for k, v in new.items() if k not in ("schema", "eps", "smoothed", "input_space")}
    up = upgrade(old, crop_size=32)
    assert up["eps"] == 0.02 * math.sqrt(3 * 32 * 32)  # those runs: 3-channel SR only
    assert up["smoothed"] is True and up["input_space"] == "normalized"  # RS models only
    assert upgrade({**old, "mode": "standard"}, 32)["smoothed"] is False
    assert upgrade(dict(new), 32) == new  # current records pass unchanged


def test_headline_csv_has_one_row_per_cell_with_its_numbers() -> None:
    import csv
    import io

    t = headline_tables(_run())[0]
    rows = list(csv.DictReader(io.StringIO(t.csv())))
    shown = sum(1 for r in t.rows for v in r[1:] if v != "-")
    assert len(rows) == shown and len(rows) > 0
    for r in rows:
        mean, half = float(r["mean"]), float(r["ci95_half_width"])
        text_mean, text_half = r["text"].split(" ± ")
        digits = len(text_mean.split(".")[1])
        assert float(text_mean) == round(mean, digits) and float(text_half) == round(half, digits)
        assert r["metric"] in ("mse", "psnr", "ssim") and int(r["n"]) >= 1
        assert r["column"].lower().startswith(r["metric"])


def test_findings_are_checked_under_every_attack_setting() -> None:
    from smoothrecon.report.page import findings

    lines = findings(_run())
    attacked = [ln for ln in lines if "more robust than the standard model" in ln]
    assert len(attacked) == 2  # one per setting (threat model) of the run
    assert "[thesis, strong]" in attacked[0] and "[thesis, thesis]" in attacked[1]
    # the clean finding does not depend on the attack: stated once
    assert sum("best clean SSIM" in ln for ln in lines) == 1


def test_sigma_figures_share_one_y_range_covering_every_model() -> None:
    from smoothrecon.report.figures import sigma_limits

    run = _run()
    limits = sigma_limits(run, [RS.model, STD.model])
    shown = [
        r["psnr"] + sign * r["psnr_ci95"]
        for r in run.records
        if r["split"] == "test"
        and r["attack"] in ("none", "pgd_f")
        and r["model"] != "x2/bilinear"
        and (r["eps_rel"] == 0 or r["setting"] == "strong")
        for sign in (-1, 1)
    ]
    lo, hi = limits["psnr"]
    assert lo < min(shown) and hi > max(shown)
    assert limits == sigma_limits(run, [STD.model, RS.model])


def test_monte_carlo_table_marks_estimates_above_the_tolerance() -> None:
    from smoothrecon.report.tables import monte_carlo_table

    def mc(split: str, sigma: float, share: float) -> Record:
        cond = Condition(split, 0.0, 0.0, "none", "strong", sigma, 8)
        extra = {"mc_share": share, "mc_share_median": share, "k_mean": 8.0, "k_max_used": 32}
        per = _per_image([30.0, 31.0], [0.8 + sigma, 0.8 + sigma])
        return make_record(RS, cond, per, mse_debiased=0.0009, **extra)

    records = [mc(s, sig, share) for s in ("val", "test") for sig, share in ((0.1, 0.02),)]
    run = _run(records)
    run.manifest["config"]["smoothing"] = {"mc_tolerance": 0.05}
    table = monte_carlo_table(run)
    assert table.rows == [
        [RS.model, "0", "0.1", "8.0", "32", "2.0%", f"{records[1]['mse']:.5f}", "0.00090", ""]
    ]
    run.manifest["config"]["smoothing"] = {"mc_tolerance": 0.01}
    assert monte_carlo_table(run).rows[0][-1] == "yes"


def test_attack_on_g_vs_f_uses_paired_crops() -> None:
    from smoothrecon.report.page import findings

    line = next(ln for ln in findings(_run()) if "attacking g is weaker" in ln)
    # per crop: g 27, 24, 29 against f 26, 27, 28 dB: differences +1, -3, +1
    assert "inconclusive" in line and "3 paired crops of 1 (model, eps_rel) pairs" in line
    assert "-0.33 dB" in line
    records = [r for r in _records() if not (r["attack"] == "pgd_g" and r["model"] == RS.model)]
    records.append(_rec(RS, "test", 0.02, "pgd_g", 0.2, [27.0, 28.0, 29.0], [0.5, 0.5, 0.5]))
    line = next(ln for ln in findings(_run(records)) if "attacking g is weaker" in ln)
    assert "holds" in line and "+1.00 dB ± 0.00 dB" in line


def test_the_compute_line_names_the_runtime_and_warns_only_when_precisions_mix() -> None:
    from smoothrecon.report import runtime_text

    rt = {"device": "cpu", "precision": "fp32", "channels_last": True, "threads": 2,
          "torch": "2.13.0+cpu", "cpu": "AMD EPYC"}  # fmt: skip
    rows = _records()
    same = [{**r, "runtime": rt} for r in rows]
    assert runtime_text(_run(same)) == (
        "on AMD EPYC (2 threads, fp32, channels_last, torch 2.13.0+cpu)."
    )
    threads = [*same[:1], *({**r, "runtime": {**rt, "threads": 1}} for r in same[1:])]
    assert "WARNING" not in runtime_text(_run(threads)) and "1 threads" in runtime_text(
        _run(threads)
    )
    mixed = [*same[:1], *({**r, "runtime": {**rt, "precision": "bf16"}} for r in same[1:])]
    text = runtime_text(_run(mixed))
    assert "WARNING: the records mix" in text and "bf16" in text and "fp32" in text
    # a run from before records said it: run.json's machine and the config's precision
    old = _run(rows)
    old.manifest["machine"] = {"cpu": "AMD EPYC", "cores": 2, "torch": "2.13.0+cpu"}
    old.manifest["config"]["runtime"] = {"precision": "auto"}
    assert runtime_text(old) == (
        "on AMD EPYC (2 threads, precision not recorded (config: auto), torch 2.13.0+cpu)."
    )
