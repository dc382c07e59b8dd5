"""Issue 8: the `strong` attack chosen from the convergence curves is at least as strong as the
thesis' evaluation attack (10 steps of eps/4, last iterate) on a trained smoke model."""

from __future__ import annotations

from pathlib import Path

import torch

from smoothrecon.attacks.pgd import eps_from_rel
from smoothrecon.attacks.setting import setting_from_config
from smoothrecon.data import prepare_data
from smoothrecon.evaluation.unit import split_inputs
from smoothrecon.experiments.convergence import choose_strong, convergence_rows, thesis_attack
from smoothrecon.experiments.training import train
from smoothrecon.models.checkpoint import load_model
from smoothrecon.operators import build_operator
from smoothrecon.util.runtime import Runtime
from smoothrecon.util.seeds import make_generator


def test_strong_setting_is_at_least_as_strong_as_the_thesis_setting(
    tmp_path: Path, make_config
) -> None:
    cfg = make_config(
        "train.epochs=3",
        "experiment.convergence_steps=[5,10,20,40]",
        "experiment.convergence_restarts=2",
        "experiment.convergence_images=8",
        "data.max_eval_crops=0",
    )
    train(cfg, tmp_path, progress=False)
    model, _ = load_model(tmp_path)
    for p in model.parameters():
        p.requires_grad_(False)
    runtime = Runtime(torch.device("cpu"), "fp32", False)
    data = prepare_data(cfg.data)
    op = build_operator(cfg.operator.name, cfg.operator.factor)
    inputs = split_inputs(data.val.x[:8], op, data.normalization, runtime)
    rows = []
    for eps_rel in (0.02, 0.1):
        rows += [
            {**r, "model": "m"}
            for r in convergence_rows(model, inputs, data.normalization, eps_rel, cfg.experiment)
        ]
    strong, _ = choose_strong(rows, cfg.experiment.strong_within, cfg.attack)
    thesis = thesis_attack(cfg.attack)
    n, d = inputs.y.shape[0], inputs.y[0].numel()
    for eps_rel in (0.02, 0.1):
        eps = eps_from_rel(eps_rel, inputs.y.shape[1:])
        # Rerun both attacks from the study's random start (seed 0) on the same crops.
        losses = {}
        for name, a in (("strong", strong), ("thesis", thesis)):
            res = setting_from_config(a).attack.run(
                model, inputs.y, inputs.target, eps, make_generator(0, "cpu")
            )
            losses[name] = res.loss.mean().item() / d
        # Both may reach the same maximum (at eps_rel 0.1 they agree to 1e-5 relative): the
        # strong setting must not fall below the thesis' beyond that optimisation noise.
        assert losses["strong"] >= losses["thesis"] * (1 - 1e-4), (eps_rel, losses, strong)
        # and the convergence curve itself never falls with more steps (best iterate)
        for factor in cfg.experiment.convergence_step_factors:
            curve = sorted(
                (r["steps"], r["loss"])
                for r in rows
                if r["eps_rel"] == eps_rel
                and r["step_factor"] == factor
                and r["restarts"] == 1
                and not r["thesis"]
                and not r.get("patience")
            )
            values = [loss for _, loss in curve]
            assert values == sorted(values), (eps_rel, factor, curve)
            # early stopping from the same starts: never above the full run, never more steps
            for restarts in (1, 2):
                full, stopped = (
                    next(
                        r
                        for r in rows
                        if (r["eps_rel"], r["step_factor"], r["restarts"], r["steps"])
                        == (eps_rel, factor, restarts, 40)
                        and bool(r.get("patience")) is early
                    )
                    for early in (False, True)
                )
                assert stopped["loss"] <= full["loss"] * (1 + 1e-6), (stopped, full)
                assert 0 < stopped["steps_used"] <= 40 * restarts
    assert n == 8 or n == len(data.val)
