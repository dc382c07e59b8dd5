"""The bias of adaptive Monte-Carlo sampling (issue 16): `k: auto` stops drawing noise for an
image once its estimate looks precise, and optional stopping can bias what is measured.

On one trained smoothed model and the cpu preset's clean test crops, per sigma_g: the mean MSE
of g_hat with k: auto (the cpu preset's k_min, k_max, tolerance, antithetic) and its debiased
MSE (MSE less the Monte-Carlo variance), against a fixed large k (the reference: its own
Monte-Carlo variance is small and is removed the same way). Not a timing: an accuracy check.

    python -m benchmarks.adaptive_bias runs/demo/models/x2-residual-rs0.25-*/best.safetensors
"""

from __future__ import annotations

import sys

import torch

from benchmarks.common import machine
from smoothrecon.config import load_config
from smoothrecon.data import prepare_data
from smoothrecon.defenses.smoothing import AdaptiveK, mc_share_fn, predict_adaptive, predict_many
from smoothrecon.evaluation.inputs import split_inputs, to_pixels
from smoothrecon.metrics import mse
from smoothrecon.models.checkpoint import load_model, model_normalization
from smoothrecon.operators import SuperResolution
from smoothrecon.util.runtime import Runtime
from smoothrecon.util.seeds import make_generator


def measure(path: str, k_ref: int = 512) -> list[str]:
    cfg = load_config("cpu")
    model, meta = load_model(path)
    norm, s = model_normalization(meta), cfg.smoothing
    runtime = Runtime(torch.device("cpu"), "fp32", True)
    f = runtime.forward(runtime.prepare_model(model))
    data = split_inputs(prepare_data(cfg.data).test.x, SuperResolution(2), norm, runtime)
    sigmas = [v for v in s.sigma_grid if v > 0]
    std = torch.tensor(norm.std).view(1, -1, 1, 1)
    lines = [
        f"machine: {machine()}; model {path}; {data.y.shape[0]} clean test crops (cpu preset)",
        f"| sigma_g | k: auto mean k | MSE auto | debiased auto | MSE k={k_ref} | debiased "
        f"k={k_ref} | bias of debiased auto |",
        "|---|---|---|---|---|---|---|",
    ]
    with torch.no_grad():
        auto = predict_adaptive(
            f, data.y, sigmas, mc_share_fn(data.x, norm),
            AdaptiveK(s.k_min, s.k_max, s.mc_tolerance), make_generator(1, "cpu"),
            antithetic=s.antithetic,
        )  # fmt: skip
        ref = predict_many(
            f, data.y, sigmas, k_ref, make_generator(2, "cpu"), antithetic=True, with_se=True
        )
    for sigma in sigmas:
        rows = []
        for mean, se in ((auto[sigma].mean, auto[sigma].se), (ref[sigma].mean, ref[sigma].se)):
            assert se is not None
            err = mse(to_pixels(mean, norm), data.x)
            var = (se * std).pow(2).flatten(1).mean(1)
            rows.append((float(err.mean()), float((err - var).mean())))
        (raw_a, deb_a), (raw_r, deb_r) = rows
        lines.append(
            f"| {sigma:g} | {auto[sigma].k.float().mean():.1f} | {raw_a:.6f} | {deb_a:.6f} | "
            f"{raw_r:.6f} | {deb_r:.6f} | {(deb_a - deb_r) / deb_r:+.2%} |"
        )
    return lines


if __name__ == "__main__":
    print("\n".join(measure(sys.argv[1])))
