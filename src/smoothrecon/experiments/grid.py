"""The thesis' sweep as data: which models exist and how each is trained and evaluated.

Chapter 4: per factor, one standard model, one Gaussian-trained model per sigma_f (for
randomized smoothing) and one adversarially trained model per eps_rel; plus, beyond the thesis,
the no-learning baselines and the global-residual U-Net variant. A preset only changes
the lists in `ExperimentConfig`, never this logic.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass

from smoothrecon.config import BASELINES, Config
from smoothrecon.models.info import ModelInfo

# The defences of the sweep (`defenses`): "denoised" puts the denoiser of sigma =
# defense_value in front of the standard model (denoised smoothing), "projection" the range
# projection P (f o P, the consistency baseline), "median" aggregates an RS model's draws by
# their median (percentile smoothing) instead of their mean.
SWEEP_DEFENSES = ("denoised", "projection", "median")


@dataclass(frozen=True)
class ModelSpec:
    """One row family of the thesis' tables."""

    factor: int
    kind: str  # "unet" or a no-learning baseline of the operator (config.BASELINES)
    variant: str  # "thesis", "residual", or "-" for baselines
    # how the network is trained: "standard", "gaussian", "adversarial", "denoiser" (trained,
    # not evaluated: the D of denoised smoothing); "none" for baselines
    mode: str
    value: float = 0.0  # sigma_f (gaussian, denoiser) or eps_rel (adversarial)
    problem: str = ""  # the inverse problem in labels: "" for "x<factor>" (super-resolution)
    space: str = "input"  # adversarial training's attack space: "input" or "measurement"
    defense: str = ""  # "" or a kind of SWEEP_DEFENSES around the network
    defense_value: float = 0.0  # the denoiser's sigma of "denoised"

    @property
    def defense_name(self) -> str:
        """The defence's name, as `DenoisedSmoothing` / `Projection` / `MedianSmoothing` call
        themselves."""
        names = {"denoised": f"den{self.defense_value:g}", "projection": "proj", "median": "med"}
        return names.get(self.defense, "")

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
        }[self.mode]
        behind = f"+{self.defense_name}" if self.defense else ""
        return f"{where}/{self.variant}/{tag}{behind}"

    @property
    def slug(self) -> str:
        return self.label.replace("/", "-")

    @property
    def smoothed(self) -> bool:
        """Reported smoothed (at sigma_g*): RS models and denoised smoothing."""
        return self.mode == "gaussian" or self.defense == "denoised"

    @property
    def grid_evaluated(self) -> bool:
        """Whether the sigma_g grid is evaluated (RS models; standard and baselines as
        references). Adversarially trained models and f o P are evaluated without smoothing."""
        return self.mode != "adversarial" and self.defense != "projection"

    def info(self) -> ModelInfo:
        """The record fields of this model; only smoothed models are reported smoothed."""
        return ModelInfo(
            self.label,
            self.factor,
            self.kind,
            self.variant,
            self.mode,
            self.value,
            smoothed=self.smoothed,
            train_space=self.space,
            defense=self.defense_name,
            defense_kind=self.defense,
        )

    @property
    def trained(self) -> bool:
        return self.kind == "unet" and not self.defense

    @property
    def evaluated(self) -> bool:
        """A denoiser is not a reconstruction: only the models behind it are evaluated."""
        return self.mode != "denoiser"

    def parts(self) -> tuple[ModelSpec, ModelSpec | None]:
        """(the trained network, the denoiser of a "denoised" defence or None)."""
        if not self.defense:
            return self, None
        net = dataclasses.replace(self, defense="", defense_value=0.0)
        if self.defense != "denoised":
            return net, None
        den = ModelSpec(
            self.factor, self.kind, self.variant, "denoiser", self.defense_value, self.problem
        )
        return net, den

    def config(self, base: Config) -> Config:
        """The full config of this model's network: `base` with operator, model and train."""
        cfg = copy.deepcopy(base)
        if not self.problem:  # super-resolution: the factor is the operator's
            cfg.operator.factor = self.factor
        cfg.model.name = self.kind  # type: ignore[assignment]
        cfg.model.residual = self.variant == "residual"
        if self.kind == "unet":
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
    for factor in e.factors if sr else (1,):
        p = "" if sr else name
        specs += [ModelSpec(factor, b, "-", "none", problem=p) for b in baselines]
        for variant in e.variants:
            specs.append(ModelSpec(factor, "unet", variant, "standard", problem=p))
            if e.projected:
                specs.append(
                    ModelSpec(factor, "unet", variant, "standard", problem=p, defense="projection")
                )
            specs += [
                ModelSpec(factor, "unet", variant, "gaussian", s, problem=p) for s in e.sigma_fs
            ]
            specs += [  # median smoothing of RS models
                ModelSpec(factor, "unet", variant, "gaussian", s, problem=p, defense="median")
                for s in e.median_sigma_fs
            ]
            specs += [
                ModelSpec(factor, "unet", variant, "adversarial", a, p, space)
                for a in e.at_eps_rels
                for space in e.at_spaces
            ]
            for s in e.denoiser_sigmas:  # denoised smoothing of the standard model
                specs.append(ModelSpec(factor, "unet", variant, "denoiser", s, problem=p))
                specs.append(
                    ModelSpec(
                        factor,
                        "unet",
                        variant,
                        "standard",
                        0.0,
                        p,
                        defense="denoised",
                        defense_value=s,
                    )
                )
    return specs
