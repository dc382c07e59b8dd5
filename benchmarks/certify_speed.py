"""Issue 26: the certificate's sampling speed against the smoothing forward's, n = 10^4.

`certify` streams its statistics (sums, per-value histograms, per-image losses) beside the
noisy forwards; this measures what that costs: samples per second of `certify` with the
pixel, median and loss methods from one stream, against `predict_many` drawing the same number
of noisy forwards (k = n) through the same runtime, on the same crop, interleaved.
"""

from __future__ import annotations

import torch

from benchmarks.common import compare, project_runtime
from smoothrecon.certification.certify import CertifySettings, certify
from smoothrecon.config import Config
from smoothrecon.data import DataBundle
from smoothrecon.defenses.smoothing import predict_many
from smoothrecon.evaluation.unit import split_inputs
from smoothrecon.models import build_model
from smoothrecon.operators import build_operator
from smoothrecon.util.seeds import make_generator


def bench_certify(cfg: Config, data: DataBundle, n: int = 10_000):
    """samples/s of certify (pixel+median+loss, one crop, n samples) / samples/s of the
    smoothing forward (k = n)."""
    from benchmarks.run import Row

    runtime = project_runtime(cfg)
    torch.manual_seed(0)
    op = build_operator(cfg.operator)
    model = runtime.prepare_model(build_model(cfg.model, op)).eval()
    f = runtime.forward(model)
    inputs = split_inputs(data.val.x[:1], op, data.normalization, runtime)
    s = CertifySettings(sigma=0.25, eps=(0.0, 0.1), n=n, alpha=0.001, method="pixel+median+loss")

    def certified() -> None:
        certify(f, inputs.y, inputs.x, data.normalization, s, make_generator(0, "cpu"))

    def smoothed() -> None:
        with torch.no_grad():
            predict_many(f, inputs.y, [0.25], n, make_generator(0, "cpu"))

    t_c, t_s = compare(certified, smoothed, rounds=1)
    return Row.at_least(
        f"certify n={n} (pixel+median+loss): samples/s / smoothing forward samples/s",
        t_s / t_c,
        0.8,
        f"{n / t_c:.0f} vs {n / t_s:.0f} samples/s, one {cfg.data.crop_size}px crop",
    )
