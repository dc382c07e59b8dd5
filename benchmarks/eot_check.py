"""An independent check of the report's smoothed PSNR under attack (issue 23).

The evaluation attacks g with the project's PGD (`attacks.pgd_l2_run`) through the setting the
EOT study chose. This script attacks the same smoothed model on the same test crops with an
attack written here from scratch, sharing no attack code with the library: L2 PGD on g_hat
with `--k-attack` fresh Gaussian draws per step (expectation over transformation), `--steps`
steps of eps * `--step-factor` from zero, the last iterate, then scores g at `--k-eval` fresh
draws. Its mean PSNR should agree with the report's record (the per-crop worse of the attacks
on f and on g at sigma_g*) within the record's 95% CI, or be weaker: an independent attack
that is clearly stronger shows the report's attack is not converged. Not a timing.

    python -m benchmarks.eot_check runs/demo x2/residual/rs0.25 0.1
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch

from benchmarks.common import machine
from smoothrecon.config import config_from_dict
from smoothrecon.data import prepare_data
from smoothrecon.experiments.evaluate import eval_inputs
from smoothrecon.metrics import mean_and_ci, psnr
from smoothrecon.models.checkpoint import load_model
from smoothrecon.operators import build_operator
from smoothrecon.report.records import load_run
from smoothrecon.util.runtime import Runtime


def _g(f, y: torch.Tensor, sigma: float, k: int, gen: torch.Generator) -> torch.Tensor:
    """mean over k of f(y + sigma z_j), z_j fresh standard normals; y: (B, C, H, W)."""
    z = torch.randn((k, *y.shape), generator=gen)
    out = f((y.unsqueeze(0) + sigma * z).flatten(0, 1))
    return out.view(k, *y.shape).mean(0)


def independent_eot(f, y, target, eps: float, sigma: float, a: argparse.Namespace) -> torch.Tensor:
    """The perturbation e (B, C, H, W), ||e_i|| <= eps, after a.steps normalized-gradient
    ascent steps on ||g_hat(y + e) - target||^2 with fresh draws each step (last iterate)."""
    gen = torch.Generator().manual_seed(a.seed)
    e = torch.zeros_like(y)
    for _ in range(a.steps):
        e.requires_grad_(True)
        loss = (_g(f, y + e, sigma, a.k_attack, gen) - target).pow(2).sum()
        (grad,) = torch.autograd.grad(loss, e)
        n = grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
        e = e.detach() + a.step_factor * eps * grad / n
        en = e.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
        e = e * (eps / en).clamp(max=1.0)
    return e.detach()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path)
    p.add_argument("model")
    p.add_argument("eps_rel", type=float)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--step-factor", type=float, default=0.25)
    p.add_argument("--k-attack", type=int, default=4)
    p.add_argument("--k-eval", type=int, default=64)
    p.add_argument("--seed", type=int, default=12345)
    a = p.parse_args()
    run = load_run(a.run)
    rec = next(
        r
        for r in run.records
        if r["model"] == a.model
        and r["eps_rel"] == a.eps_rel
        and r["attack"] == "worst"
        and r["split"] == "test"
        and r["setting"] == run.primary
    )
    cfg = config_from_dict(json.loads((a.run / "run.json").read_text())["config"])
    folder = next(m["folder"] for m in run.manifest["models"] if m["label"] == a.model)
    model, _ = load_model(a.run / folder / "best.safetensors")
    runtime = Runtime(torch.device("cpu"), "fp32", True)
    model = runtime.prepare_model(model).eval()
    for q in model.parameters():
        q.requires_grad_(False)
    data = prepare_data(cfg.data, progress=False)
    test = eval_inputs(data, build_operator(cfg.operator), data.normalization, runtime, ("test",))
    t = test["test"]
    eps = a.eps_rel * math.sqrt(t.y[0].numel())
    sigma = rec["sigma_g"]
    values: list[float] = []
    gen = torch.Generator().manual_seed(a.seed + 1)
    for s in range(0, t.y.shape[0], 16):
        y, target, x = t.y[s : s + 16], t.target[s : s + 16], t.x[s : s + 16]
        e = independent_eot(model, y, target, eps, sigma, a)
        with torch.no_grad():
            out = _g(model, y + e, sigma, a.k_eval, gen)
        x_hat = data.normalization.denormalize(out).clamp(0, 1)
        values += psnr(x_hat, x).tolist()
    mean, _, half = mean_and_ci(values)
    print(machine())
    print(
        f"{a.model} eps_rel {a.eps_rel:g} sigma_g {sigma:g}: independent EOT ({a.steps} steps of "
        f"{a.step_factor:g} eps, {a.k_attack} fresh draws, scored at k = {a.k_eval}) "
        f"{mean:.2f} ± {half:.2f} dB; the report's record {rec['psnr']:.2f} ± "
        f"{rec['psnr_ci95']:.2f} dB (difference {mean - rec['psnr']:+.2f} dB)"
    )


if __name__ == "__main__":
    main()
