"""The thesis' sweep as data: which models exist and how each is trained and evaluated.

Chapter 4: per factor, one standard model, one Gaussian-trained model per sigma_f (for
randomized smoothing) and one adversarially trained model per eps_rel; plus, beyond the thesis,
the no-learning baselines and the global-residual U-Net variant. A preset only changes
the lists in `ExperimentConfig`, never this logic.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from smoothrecon.config import BASELINES, Config
from smoothrecon.records import ModelInfo


@dataclass(frozen=True)
class ModelSpec:
    """One row family of the thesis' tables."""

    factor: int
    kind: str  # "unet" or a no-learning baseline of the operator (config.BASELINES)
    variant: str  # "thesis", "residual", or "-" for baselines
    # "standard", "gaussian", "adversarial", "none" for baselines; "denoiser" (trained, not
    # evaluated) and "denoised" (the standard model behind that denoiser, evaluated);
    # "projected" (the standard model behind the range projection P, f o P, evaluated)
    mode: str
    value: float = 0.0  # sigma_f (gaussian, denoiser, denoised) or eps_rel (adversarial)
    problem: str = ""  # the inverse problem in labels: "" for "x<factor>" (super-resolution)
    space: str = "input"  # adversarial training's attack space: "input" or "measurement"

    @property
    def label(self) -> str:
        where = self.problem or f"x{self.factor}"
        if self.kind != "unet":
            return f"{where}/{self.kind}"
        tag = {
            "standard": "std",
            "gaussian": f"rs{self.value:g}",
            "adversarial": f"at{self.value:g}" + ("-meas" if self.space == "measurement" else ""),
            "denoiser": f"den{self.value:g}",
            "denoised": f"std+den{self.value:g}",
            "projected": "std+proj",
        }
        return f"{where}/{self.variant}/{tag[self.mode]}"

    @property
    def slug(self) -> str:
        return self.label.replace("/", "-")

    @property
    def grid_evaluated(self) -> bool:
        """Whether the sigma_g grid is evaluated (RS models; standard and baselines as
        references). Adversarially trained models and f o P are evaluated without smoothing."""
        return self.mode not in ("adversarial", "projected")

    def info(self) -> ModelInfo:
        """The record fields of this model; only RS models are reported smoothed."""
        return ModelInfo(
            self.label,
            self.factor,
            self.kind,
            self.variant,
            self.mode,
            self.value,
            smoothed=self.mode in ("gaussian", "denoised"),
            train_space=self.space,
        )

    @property
    def trained(self) -> bool:
        return self.kind == "unet" and self.mode not in ("denoised", "projected")

    @property
    def evaluated(self) -> bool:
        """A denoiser is not a reconstruction: only the models behind it are evaluated."""
        return self.mode != "denoiser"

    def parts(self) -> tuple[ModelSpec, ModelSpec | None]:
        """(the trained network, the denoiser in front of it or None); f o P is the standard
        network behind the projection."""
        std = ModelSpec(self.factor, self.kind, self.variant, "standard", problem=self.problem)
        if self.mode == "projected":
            return std, None
        if self.mode != "denoised":
            return self, None
        den = ModelSpec(self.factor, self.kind, self.variant, "denoiser", self.value, self.problem)
        return std, den

    def config(self, base: Config) -> Config:
        """The full config of this model: `base` with operator, model and train set."""
        cfg = copy.deepcopy(base)
        cfg.operator.factor = self.factor
        cfg.model.name = self.kind  # type: ignore[assignment]
        cfg.model.residual = self.variant == "residual"
        if self.trained:
            cfg.train.mode = self.mode  # type: ignore[assignment]
            if self.mode in ("gaussian", "denoiser"):
                cfg.train.sigma_f = self.value
            if self.mode == "adversarial":
                cfg.train.eps_rel = self.value
                cfg.train.attack_space = self.space  # type: ignore[assignment]
        return cfg


def thesis_grid(cfg: Config) -> list[ModelSpec]:
    """All models of the experiment config, baselines first: per factor for super-resolution,
    once for any other operator (labelled by its name, e.g. "denoising/residual/std")."""
    e = cfg.experiment
    name = cfg.operator.name
    sr = name == "super_resolution"
    baselines = e.baselines or BASELINES[name]
    specs: list[ModelSpec] = []
    for factor in e.factors if sr else (cfg.operator.factor,):
        p = "" if sr else name
        specs += [ModelSpec(factor, b, "-", "none", problem=p) for b in baselines]
        for variant in e.variants:
            specs.append(ModelSpec(factor, "unet", variant, "standard", problem=p))
            if e.projected:
                specs.append(ModelSpec(factor, "unet", variant, "projected", problem=p))
            specs += [
                ModelSpec(factor, "unet", variant, "gaussian", s, problem=p) for s in e.sigma_fs
            ]
            specs += [
                ModelSpec(factor, "unet", variant, "adversarial", a, p, space)
                for a in e.at_eps_rels
                for space in e.at_spaces
            ]
            for s in e.denoiser_sigmas:  # denoised smoothing of the standard model
                specs.append(ModelSpec(factor, "unet", variant, "denoiser", s, problem=p))
                specs.append(ModelSpec(factor, "unet", variant, "denoised", s, problem=p))
    return specs
