"""One typed config tree shared by the CLI, the Python API and the presets.

Every number of the thesis that the code uses lives here once, with the section it comes from.
Presets (`configs/*.yaml`, shipped inside the package) only change scale, never method. Unknown
keys are errors (with a "did you mean"), values are type-checked, and `--set a.b=value`
overrides any field.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml

from smoothrecon.errors import UserError

# Mini-ImageNet statistics used by the thesis' code (thesis-code-notes.md, "Data").
MINI_IMAGENET_MEAN = (0.4882, 0.4431, 0.3946)
MINI_IMAGENET_STD = (0.2777, 0.2665, 0.2739)

# Section A.4: the sigma_g grid M.
THESIS_SIGMA_G_GRID = (
    0.0,
    0.05,
    0.1,
    0.15,
    0.2,
    0.25,
    0.3,
    0.4,
    0.5,
    0.6,
    0.7,
    0.75,
    0.8,
    0.9,
    1.0,
    1.1,
    1.2,
)
# Section 4.4: attack levels of Tables 4.1-4.4.
THESIS_EPS_RELS = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2)
# Section 4.4: the thesis' evaluation attack (10 iterations of eps/4, last iterate, 1 start).
THESIS_EVAL_STEPS, THESIS_EVAL_STEP_FACTOR = 10, 0.25
# Section 4.2.2: sigma_f of the models trained for randomized smoothing.
THESIS_SIGMA_FS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 1.0)
# Section 4.2.3: eps_rel of the adversarially trained models.
THESIS_AT_EPS_RELS = (0.01, 0.02, 0.05, 0.1, 0.2)


# Keys earlier versions wrote (into checkpoints and run folders) and this one no longer has:
# dropped when a saved config is read back, refused with this reason in a user's config.
RETIRED_KEYS = {
    "attack.target": "it was never read (every attack aims at the clean truth)",
    "attack.loss": "use attack.losses, a list (e.g. [ssim]; several run as an ensemble)",
}


@dataclass
class DataConfig:
    """Photos -> crops (section 4.1)."""

    source: str = "default"  # "default" (the 28 default photos, DATA.md) or a folder of images
    cache_dir: str = ""  # "" -> $SMOOTHRECON_CACHE or ~/.cache/smoothrecon
    crop_size: int = 160  # section 4.1: 160x160 crops
    # Resize every photo so its short side is this many pixels (never enlarging; 0: off, use
    # `prescale`). A fixed short side treats a 5000 px wallpaper and a 500 px photo alike, as
    # ImageNet-style data does (short sides mostly 300-500 px); 192 puts the default photos'
    # evaluation crops in the natural-image regime (docs/choices.md: bilinear x2 ~28 dB).
    short_side: int = 192
    prescale: float = 1.0  # a fixed scale factor instead, when short_side is 0
    # train / validation / test proportions, by photo: the 28 default photos -> 14 / 6 / 8.
    split: tuple[float, float, float] = (0.5, 0.2, 0.3)
    train_crops: Literal["random", "center"] = "random"  # "center": the thesis code's protocol
    flips: bool = True  # random horizontal flips of training crops
    crops_per_epoch: int = 2048  # an epoch is this many training crops
    eval_crops_per_photo: int = 8  # fixed crops per test photo ("center": 1)
    val_crops_per_photo: int = 0  # fixed crops per validation photo (0: eval_crops_per_photo)
    max_eval_crops: int = 0  # cap on validation/test crops per split (0: no cap)
    normalization: Literal["dataset", "mini-imagenet"] = "dataset"
    seed: int = 0


@dataclass
class OperatorConfig:
    """The forward operator A and its noise (docs/operators.md). Each operator reads only its
    own fields: super_resolution (section 4.1: bilinear down by `factor`, bilinear back up)
    factor, quantize; deblurring blur_std; inpainting keep_fraction, mask_seed;
    compressed_sensing acceleration, center_fraction, mask_seed, grayscale; all sigma_y."""

    name: Literal[
        "super_resolution", "denoising", "deblurring", "inpainting", "compressed_sensing"
    ] = "super_resolution"
    factor: int = 2  # thesis: 2 and 4
    quantize: bool = False  # round the low-resolution image to 8 bits as the thesis code did
    # Measurement noise std in pixel units; "default": the operator's own (denoising 0.1,
    # Krainovic et al. 2023 use 0.05-0.2; deblurring 0.01; the others 0, as in the thesis).
    sigma_y: float | str = "default"
    blur_std: float = 1.5  # Gaussian blur std in pixels (literature: 1 to 2)
    keep_fraction: float = 0.5  # inpainting: fraction of pixels kept (literature: 0.3 to 0.7)
    acceleration: float = 4.0  # compressed sensing: W / sampled k-space columns (MRI: 4x)
    center_fraction: float = 0.08  # compressed sensing: fully sampled centre (fastMRI at 4x)
    mask_seed: int = 0  # seed of the inpainting / k-space masks (one mask per image size)
    grayscale: bool = False  # compressed sensing: measure the luminance, not every channel


# The OperatorConfig fields each operator takes (sigma_y = "default" keeps the operator's own).
OPERATOR_FIELDS: dict[str, tuple[str, ...]] = {
    "super_resolution": ("factor", "quantize", "sigma_y"),
    "denoising": ("sigma_y",),
    "deblurring": ("blur_std", "sigma_y"),
    "inpainting": ("keep_fraction", "mask_seed", "sigma_y"),
    "compressed_sensing": ("acceleration", "center_fraction", "mask_seed", "grayscale", "sigma_y"),
}


def problem_factor(o: OperatorConfig) -> int:
    """The factor records carry: super-resolution's, 1 for every other operator."""
    return o.factor if o.name == "super_resolution" else 1


# The no-learning baselines of each operator (models/baselines.py), the first one being the
# identity on the back-projection A_dagger(y).
BASELINES: dict[str, tuple[str, ...]] = {
    "super_resolution": ("bilinear", "bicubic"),
    "denoising": ("noisy", "gaussian"),
    "deblurring": ("wiener",),
    "inpainting": ("fill",),
    "compressed_sensing": ("zero_filled",),
}


@dataclass
class ModelConfig:
    """The U-Net of section 4.2.1 / Fig 4.1 (or a no-learning baseline)."""

    # "unet" or a no-learning baseline of the operator (BASELINES)
    name: Literal[
        "unet", "bilinear", "bicubic", "noisy", "gaussian", "wiener", "fill", "zero_filled"
    ] = "unet"
    channels: tuple[int, ...] = (8, 16, 32, 64, 128)  # section 4.2.1
    activation: Literal["relu", "leaky_relu"] = "relu"  # text: ReLU; authors' code: LeakyReLU
    residual: bool = False  # global skip x_hat = y + U-Net(y); the thesis has none


# The losses an attack can maximize (`attacks.pgd.LOSSES` holds their functions).
Loss = Literal["mse", "ssim"]


@dataclass
class AttackConfig:
    """The attack of `evaluate`, `attack` and `certify` (a sweep's "strong" attack takes its
    kind and steps from the convergence study); eps = sqrt(d) * eps_rel (eq 4.4).

    The default is an ensemble of APGD-L2 (Croce & Hein 2020) on the MSE and on SSIM, 100
    steps each from one random start, scored per crop and metric by the worst (AutoAttack's
    rule on the metric the report shows; docs/choices.md). The thesis' attack (appendix A.2,
    section 4.4: L2 PGD, 10 steps of eps/4, last iterate; THESIS_EVAL_*) is `--attack thesis`.
    """

    # "apgd" (APGD-L2: steps and restarts only, its step size follows its own schedule;
    # attacks/apgd.py) or "pgd" (L2 PGD with the step fields below; appendix A.2, eq A.15).
    kind: Literal["pgd", "apgd"] = "apgd"
    # What it maximizes, one attack per loss: "mse" (the PSNR attack, on the model's outputs)
    # and "ssim" (1 - SSIM on the outputs de-normalized and clamped to [0, 1], as the report
    # measures it). Several losses run as an ensemble (attacks/ensemble.py): the PSNR column is
    # per crop the member of the largest MSE, the SSIM column the member of the lowest SSIM.
    losses: tuple[Loss, ...] = ("mse", "ssim")
    steps: int = 100  # per loss and start; the thesis: 10 (section 4.4)
    step_factor: float = 0.25  # PGD: step size = step_factor * eps; section 4.4: eps/4
    random_start: Literal["ball", "sphere", "none"] = "ball"  # PGD: uniform in the ball
    restarts: int = 1  # random starts per loss, the per-sample worst kept
    keep: Literal["best", "last"] = "best"  # PGD: the thesis kept the last iterate
    k_attack: int = 10  # appendix A.3: k = 10 noise draws when attacking g
    # RS-PGD noise held across steps or redrawn: the EOT study (docs/choices.md) found fixed
    # draws weaker than fresh ones at every k_attack and budget (the attack overfits its draws)
    noise: Literal["fixed", "fresh"] = "fresh"
    # PGD's per-sample early stopping: a sample stops once its best loss has not risen by
    # more than rel_tol (relative) over its last `patience` steps; 0 turns it off.
    patience: int = 0
    rel_tol: float = 1e-3
    # The threat model (docs/threat-models.md): perturb the network input (the thesis) or the
    # measurement A(x); eps = eps_rel * sqrt(values perturbed) in both.
    space: Literal["input", "measurement"] = "input"
    # An attack that cannot beat random noise of its own norm (or whose first gradient is zero
    # or not finite on a share of the crops) is flagged, and a gradient-free attack (SPSA) with
    # this many forward queries per crop runs beside it; the per-crop worse of the two counts.
    fallback_queries: int = 2000


@dataclass
class TrainConfig:
    """One training loop; the mode is the input perturbation (sections 4.2.1-4.2.3), or
    "denoiser": a Gaussian denoiser of the network input at noise sigma_f (its target is the
    clean network input y, not x) for denoised smoothing (Salman et al. 2020)."""

    mode: Literal["standard", "gaussian", "adversarial", "denoiser"] = "standard"
    attack_space: Literal["input", "measurement"] = "input"  # the training attack's space
    sigma_f: float = 0.1  # eq 4.2, normalized input space
    eps_rel: float = 0.02  # eq 4.4/4.5
    pgd_steps: int = 5  # section 4.2.3: 5 iterations
    pgd_step_factor: float = 0.5  # section 4.2.3: step eps/2
    epochs: int = 50  # section 4.2.2
    batch_size: int = 128  # section 4.2.2
    lr: float = 1e-4  # section 4.2.2 (the authors' scripts: 1e-3)
    adam_eps: float = 1e-8  # torch default (the authors' smoothing script: 1e-5)
    seed: int = 0


@dataclass
class SmoothingConfig:
    """The smoothed estimator g (eq 2.7) and its sigma_g grid (appendix A.4)."""

    k: int | Literal["auto"] = 50  # section 4.4; "auto": adaptive per image and sigma_g
    sigma_grid: tuple[float, ...] = THESIS_SIGMA_G_GRID
    chunk_size: int = 0  # inputs per forward pass; 0: automatic
    antithetic: bool = False
    # k: auto draws noise in rounds until the Monte-Carlo share of each image's MSE
    # (mc_share) is at most mc_tolerance, with k_min <= k <= k_max (smoothing.predict_adaptive).
    k_min: int = 8
    k_max: int = 256
    mc_tolerance: float = 0.05


@dataclass
class EvalConfig:
    """Section 4.4: attack levels, batch size, and which splits are evaluated."""

    eps_rels: tuple[float, ...] = THESIS_EPS_RELS
    batch_size: int = 64  # section 4.4
    select_on: Literal["val"] = "val"  # sigma_g is chosen on validation, never on test
    seed: int = 1234


@dataclass
class RuntimeConfig:
    """Where and how fast: device, threads, precision. Never changes the method."""

    device: str = "auto"  # "auto", "cpu", "cuda", "cuda:1", ...
    threads: int = 0  # 0: torch's default
    # bf16 autocast (CPU or CUDA); "auto": bf16 only where the hardware computes it natively
    # (a CUDA device with bf16, a CPU with AVX512-BF16), else fp32: emulated bf16 on an AVX2
    # CPU trained ~13x slower than fp32 (44 against ~600 crops/s at the cpu preset).
    precision: Literal["fp32", "bf16", "auto"] = "fp32"
    channels_last: bool = True


@dataclass
class ExperimentConfig:
    """The thesis' sweep as data (chapter 4): which models are trained and evaluated."""

    factors: tuple[int, ...] = (2, 4)
    sigma_fs: tuple[float, ...] = THESIS_SIGMA_FS
    at_eps_rels: tuple[float, ...] = THESIS_AT_EPS_RELS
    variants: tuple[str, ...] = ("thesis",)  # "thesis" (no global skip) and/or "residual"
    baselines: tuple[str, ...] = ()  # empty: every baseline of the operator (BASELINES)
    rs_pgd: bool = True  # also attack each RS model's smoothed g (worst case reported)
    image_grid_count: int = 3  # rows of the Fig 4.2/4.3 image grids
    # Attack convergence study: best-so-far loss after these PGD step counts, for these
    # step sizes (x eps) and 1 vs `convergence_restarts` restarts, on the first
    # `convergence_images` validation crops of one model per family, at these eps_rel.
    convergence_steps: tuple[int, ...] = (5, 10, 20, 50, 100)
    convergence_step_factors: tuple[float, ...] = (0.25, 0.5)
    convergence_restarts: int = 5
    convergence_eps_rels: tuple[float, ...] = (0.02, 0.1)
    convergence_images: int = 16
    # Early stopping in the study: the longest run again with per-sample early
    # stopping (patience in steps, relative tolerance); patience 0 leaves it out.
    convergence_patience: int = 10
    convergence_rel_tol: float = 1e-3
    # ... APGD-L2 of these lengths (each its own run: its schedule depends on its length),
    # with 1 and `convergence_restarts` starts, as candidates beside PGD ...
    convergence_apgd_steps: tuple[int, ...] = (25, 50, 100)
    # ... and the reference no setting is tuned on: APGD and PGD (the smallest step factor)
    # of this many steps from this many starts each (0 steps: none). The best loss found,
    # which every setting is a share of, is per crop the largest of all rows.
    convergence_reference_steps: int = 1000
    convergence_reference_restarts: int = 5
    # The "strong" setting is the cheapest (steps x restarts) whose loss is within this fraction
    # of the best loss found, for every model and eps_rel of the study.
    strong_within: float = 0.01
    # Cost cap of the strong setting (0: none): gradient steps per crop, steps x restarts, or
    # for an early-stopped setting the mean it spent per crop in the study. When no setting
    # under the cap comes within `strong_within`, the one closest to the best loss is used and
    # the report says how close it gets.
    strong_max_cost: int = 0
    # RS-PGD (the attack on g) runs on the test split at these eps_rel (empty: all > 0).
    rs_pgd_eps_rels: tuple[float, ...] = ()
    # Threat models evaluated: "input" perturbs the network input (the thesis);
    # "measurement" adds the setting "strong-measurement": the strong attack on the
    # measurement A(x) (docs/threat-models.md).
    attack_spaces: tuple[str, ...] = ("input",)
    # ... and the spaces of adversarial training: one model per (at_eps_rels, at_spaces);
    # "measurement" models are labelled "at<eps>-meas" (train.attack_space).
    at_spaces: tuple[str, ...] = ("input",)
    # The consistency baseline: the standard model behind the orthogonal projection
    # of its input onto the range of the back-projection, f o P, labelled "std+proj".
    projected: bool = False
    # Denoised smoothing: per sigma, a Gaussian denoiser D of the network input is
    # trained, and the standard model behind it (f o D) is evaluated like an RS model.
    denoiser_sigmas: tuple[float, ...] = ()
    # Median smoothing (defenses.median): the Gaussian-trained (RS) models of these sigma_f are
    # also evaluated behind percentile smoothing at p = 0.5 (labelled "+med"), on the same
    # sigma_g grid with sigma_g* chosen on validation, attacked through the mean and the median
    # of the draws (empty: none).
    median_sigma_fs: tuple[float, ...] = ()
    # Certificates in the sweep: every Gaussian-trained (RS) model at sigma_g = its
    # sigma_f, by `certify_methods`, on `certify_crops` test crops spread over the test photos
    # (0: all), with `certify_n` samples, at these eps_rel (empty: no certificates).
    certify_eps_rels: tuple[float, ...] = ()
    certify_crops: int = 24
    certify_n: int = 1000
    # ... by these methods (certification.certify.METHODS: pixel, median, loss; center needs
    # certify_n >= 1659 at alpha 0.001), from one stream of certify_n samples per crop.
    certify_methods: tuple[str, ...] = ("pixel",)
    # The EOT study: the attack on g, checked for convergence like the attack on f.
    # On one Gaussian-trained model per family, at eot_sigmas (empty: its sigma_f and the
    # largest sigma_g of the grid) and eot_eps_rels (empty: convergence_eps_rels): every
    # k_attack with fixed and fresh noise (and fresh noise with eot_restarts starts) at an equal
    # budget of eot_budget network gradient passes (steps x k_attack x restarts) per crop (and
    # per loss of the attack: the chosen setting runs on each of attack.losses), best
    # iterate after 1/4, 1/2 and all of it and the last iterate; a reference attack of
    # 2 x eot_budget (fresh noise, k 4). Each setting is scored on fresh draws of g at
    # eot_eval_k (never the draws it optimized); the attack on g is the cheapest within
    # strong_within of the best loss found everywhere.
    eot_k_attacks: tuple[int, ...] = (1, 2, 4, 8, 16)
    eot_noises: tuple[str, ...] = ("fixed", "fresh")
    eot_restarts: int = 2
    eot_budget: int = 512
    eot_step_factor: float = 0.5
    eot_eval_k: int = 64
    eot_sigmas: tuple[float, ...] = ()
    eot_eps_rels: tuple[float, ...] = ()
    # The threat models (attack.space) in which RS-PGD attacks g (empty: all); findings that
    # need g attacked elsewhere say so and give no verdict.
    rs_pgd_spaces: tuple[str, ...] = ()
    # Also evaluate every model under the thesis' own attack (section 4.4: 10 steps of eps/4,
    # last iterate) as the setting "thesis", beside the strong one.
    thesis_setting: bool = True


@dataclass
class Config:
    """The whole tree. `Config()` is the thesis' paper-scale setting."""

    preset: str = "paper"
    data: DataConfig = field(default_factory=DataConfig)
    operator: OperatorConfig = field(default_factory=OperatorConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    attack: AttackConfig = field(default_factory=AttackConfig)
    smoothing: SmoothingConfig = field(default_factory=SmoothingConfig)
    evaluation: EvalConfig = field(default_factory=EvalConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    experiment: ExperimentConfig = field(default_factory=ExperimentConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def hash(self, *sections: str) -> str:
        """Short hash of the named sections (all when none): the key of cached work."""
        d = self.to_dict()
        d["data"].pop("cache_dir")  # a location, not a setting
        picked = {s: d[s] for s in sections} if sections else d
        blob = json.dumps(picked, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


PRESETS = ("smoke", "cpu", "cpu-long", "cpu-operators", "cpu-full", "paper")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check `value` against the annotation `tp`, converting lists to tuples and ints to floats."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin is Literal:
        if value not in typing.get_args(tp):
            allowed = ", ".join(repr(a) for a in typing.get_args(tp))
            raise UserError(f"config {where} = {value!r} is not one of {allowed}")
        return value
    if origin is tuple:
        if not isinstance(value, list | tuple):
            value = [value]
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise UserError(f"config {where} needs {len(args)} values, got {len(value)}")
        return tuple(
            _coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True))
        )
    if origin in (types.UnionType, typing.Union):
        for a in typing.get_args(tp):
            try:
                return _coerce(value, a, where)
            except UserError:
                continue
        raise UserError(f"config {where} = {value!r} has the wrong type")
    if tp is bool:
        if not isinstance(value, bool):
            raise UserError(f"config {where} = {value!r} must be true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"config {where} = {value!r} must be an integer")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            with contextlib.suppress(ValueError):
                value = float(value)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise UserError(f"config {where} = {value!r} must be a number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise UserError(f"config {where} = {value!r} must be a string")
        return value
    raise AssertionError(f"unsupported config type {tp} at {where}")


def _merge(obj: Any, data: dict[str, Any], where: str) -> None:
    """Set fields of the dataclass `obj` from `data`, recursively, refusing unknown keys."""
    hints = typing.get_type_hints(type(obj))
    names = [f.name for f in dataclasses.fields(obj)]
    for key, value in data.items():
        path = f"{where}.{key}" if where else key
        if key not in names:
            if path in RETIRED_KEYS:
                raise UserError(f"config key '{path}' was removed: {RETIRED_KEYS[path]}; delete it")
            close = difflib.get_close_matches(key, names, n=1)
            hint = (
                f" (did you mean '{close[0]}'?)" if close else f"; known keys: {', '.join(names)}"
            )
            raise UserError(f"unknown config key '{path}'{hint}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise UserError(f"config {path} must be a mapping of its fields")
            _merge(current, value, path)
        else:
            setattr(obj, key, _coerce(value, hints[key], path))


def _read_preset(name: str) -> dict[str, Any]:
    if name not in PRESETS:
        close = difflib.get_close_matches(name, PRESETS, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise UserError(f"unknown preset '{name}'{hint}; choose one of {', '.join(PRESETS)}")
    text = resources.files("smoothrecon").joinpath("configs", f"{name}.yaml").read_text()
    return yaml.safe_load(text) or {}


def parse_override(item: str) -> dict[str, Any]:
    """'train.epochs=5' -> {'train': {'epochs': 5}} (values parsed as YAML, never eval'd)."""
    if "=" not in item:
        raise UserError(f"--set expects KEY=VALUE (e.g. train.epochs=5), got '{item}'")
    key, raw = item.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    out: dict[str, Any] = {}
    node = out
    parts = key.strip().split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = value
    return out


def load_config(
    preset: str = "cpu",
    file: str | Path | None = None,
    overrides: list[str] | None = None,
    extra: dict[str, Any] | list[dict[str, Any]] | None = None,
) -> Config:
    """Build a validated config: defaults <- preset <- YAML file <- `extra` (one mapping or a
    list applied in order) <- `--set` overrides. The preset defaults to "cpu", as on the
    command line; `Config()` alone is the thesis' paper scale."""
    cfg = Config(preset=preset)
    _merge(cfg, _read_preset(preset), "")
    if file is not None:
        p = Path(file)
        if not p.is_file():
            raise UserError(f"config file '{p}' does not exist")
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as exc:
            raise UserError(f"config file '{p}' is not valid YAML: {exc}") from None
        if not isinstance(data, dict):
            raise UserError(f"config file '{p}' must hold a mapping of sections")
        _merge(cfg, data, "")
    for layer in [extra] if isinstance(extra, dict) else extra or []:
        _merge(cfg, layer, "")
    for item in overrides or []:
        _merge(cfg, parse_override(item), "")
    validate(cfg)
    return cfg


def config_from_dict(data: dict[str, Any]) -> Config:
    """Rebuild a Config from `Config.to_dict()` output (e.g. from a checkpoint's metadata); the
    keys earlier versions wrote and this one retired (`RETIRED_KEYS`) are dropped."""
    cfg = Config()
    _merge(cfg, _without_retired(data), "")
    validate(cfg)
    return cfg


def _without_retired(data: dict[str, Any]) -> dict[str, Any]:
    """`data` (section -> fields) without the retired keys."""
    out = {}
    for section, fields in data.items():
        if isinstance(fields, dict):
            fields = {k: v for k, v in fields.items() if f"{section}.{k}" not in RETIRED_KEYS}
        out[section] = fields
    return out


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise UserError(message)


def _validate_operator(o: OperatorConfig, crop_size: int) -> None:
    """The operator's fields; the factor must divide the crop only for super-resolution. A
    parameter of another operator, changed from its default, is refused: it would be ignored."""
    defaults, own = OperatorConfig(), {"name", *OPERATOR_FIELDS[o.name]}
    for f in dataclasses.fields(o):
        value = getattr(o, f.name)
        if f.name not in own and value != getattr(defaults, f.name):
            owners = [n for n, fields in OPERATOR_FIELDS.items() if f.name in fields]
            raise UserError(
                f"operator.{f.name} = {value!r} is a parameter of {' and '.join(owners)}, not of "
                f"{o.name}, which would ignore it; leave it out or set operator.name"
            )
    _check(o.factor >= 1, f"operator.factor = {o.factor} must be a positive integer")
    if o.name == "super_resolution":
        _check(
            crop_size % o.factor == 0,
            f"data.crop_size = {crop_size} is not divisible by operator.factor = {o.factor}",
        )
    _check(
        o.sigma_y == "default" or (isinstance(o.sigma_y, float) and o.sigma_y >= 0),
        f"operator.sigma_y = {o.sigma_y!r} must be a number >= 0 or 'default'",
    )
    _check(o.blur_std > 0, f"operator.blur_std = {o.blur_std} must be > 0 pixels")
    _check(
        0 < o.keep_fraction <= 1, f"operator.keep_fraction = {o.keep_fraction} must be in (0, 1]"
    )
    _check(o.acceleration >= 1, f"operator.acceleration = {o.acceleration} must be >= 1")
    _check(
        0 <= o.center_fraction <= 1,
        f"operator.center_fraction = {o.center_fraction} must be in [0, 1]",
    )


def _validate_eot(e: ExperimentConfig) -> None:
    _check(
        len(e.eot_k_attacks) >= 1 and all(k >= 1 for k in e.eot_k_attacks),
        f"experiment.eot_k_attacks = {e.eot_k_attacks} must hold draws >= 1",
    )
    _check(
        len(e.eot_noises) >= 1 and set(e.eot_noises) <= {"fixed", "fresh"},
        f"experiment.eot_noises = {e.eot_noises} must hold 'fixed' and/or 'fresh'",
    )
    _check(e.eot_restarts >= 1, f"experiment.eot_restarts = {e.eot_restarts} must be >= 1")
    _check(
        e.eot_budget >= max(e.eot_k_attacks),
        f"experiment.eot_budget = {e.eot_budget} must be at least the largest k_attack "
        f"{max(e.eot_k_attacks)} (one step)",
    )
    _check(e.eot_step_factor > 0, f"experiment.eot_step_factor = {e.eot_step_factor} must be > 0")
    _check(e.eot_eval_k >= 2, f"experiment.eot_eval_k = {e.eot_eval_k} must be >= 2")


def validate(cfg: Config) -> None:
    """Range checks a type cannot express; each failure is one sentence naming the value."""
    _validate_data(cfg.data)
    _validate_operator(cfg.operator, cfg.data.crop_size)
    _validate_model(cfg)
    _validate_train(cfg)
    _validate_attack(cfg.attack)
    _validate_smoothing(cfg.smoothing)
    _validate_eot(cfg.experiment)
    _check(
        all(0 <= e <= 1 for e in cfg.evaluation.eps_rels),
        f"evaluation.eps_rels = {cfg.evaluation.eps_rels} must lie in [0, 1]",
    )
    _check(
        cfg.evaluation.batch_size >= 1,
        f"evaluation.batch_size = {cfg.evaluation.batch_size} must be >= 1",
    )
    _validate_experiment(cfg)
    _check(cfg.runtime.threads >= 0, f"runtime.threads = {cfg.runtime.threads} must be >= 0")


def _validate_data(d: DataConfig) -> None:
    _check(d.crop_size >= 8, f"data.crop_size = {d.crop_size} must be at least 8")
    _check(0 < d.prescale <= 1, f"data.prescale = {d.prescale} must be in (0, 1]")
    _check(
        d.short_side == 0 or d.short_side >= d.crop_size,
        f"data.short_side = {d.short_side} must be 0 (off) or at least data.crop_size = "
        f"{d.crop_size}",
    )
    _check(
        d.short_side == 0 or d.prescale == 1.0,
        f"data.short_side = {d.short_side} and data.prescale = {d.prescale}: set one of them "
        f"(short_side 0 turns the short-side resizing off)",
    )
    _check(d.val_crops_per_photo >= 0, f"data.val_crops_per_photo = {d.val_crops_per_photo} < 0")
    _check(
        all(p >= 0 for p in d.split) and sum(d.split) > 0,
        f"data.split = {d.split} must be three non-negative proportions",
    )
    _check(d.crops_per_epoch >= 1, f"data.crops_per_epoch = {d.crops_per_epoch} must be >= 1")
    _check(
        d.eval_crops_per_photo >= 1,
        f"data.eval_crops_per_photo = {d.eval_crops_per_photo} must be >= 1",
    )


def _validate_model(cfg: Config) -> None:
    d = cfg.data
    _check(
        all(c >= 1 for c in cfg.model.channels) and len(cfg.model.channels) >= 2,
        f"model.channels = {cfg.model.channels} needs at least two positive widths",
    )
    if cfg.model.name == "unet":
        div = 2 ** (len(cfg.model.channels) - 1)
        _check(
            d.crop_size % div == 0,
            f"data.crop_size = {d.crop_size} is not divisible by {div}, which the U-Net with "
            f"{len(cfg.model.channels) - 1} pooling steps needs",
        )


def _validate_train(cfg: Config) -> None:
    t, a = cfg.train, cfg.attack
    _check(t.sigma_f >= 0, f"train.sigma_f = {t.sigma_f} must be >= 0")
    _check(0 <= t.eps_rel <= 1, f"train.eps_rel = {t.eps_rel} must be in [0, 1]")
    _check(t.pgd_steps >= 1, f"train.pgd_steps = {t.pgd_steps} must be >= 1")
    _check(t.epochs >= 1, f"train.epochs = {t.epochs} must be >= 1")
    _check(t.batch_size >= 1, f"train.batch_size = {t.batch_size} must be >= 1")
    _check(t.lr > 0, f"train.lr = {t.lr} must be > 0")
    _check(
        not (
            cfg.operator.quantize
            and "measurement"
            in (t.attack_space, a.space, *cfg.experiment.attack_spaces, *cfg.experiment.at_spaces)
        ),
        "attack.space / train.attack_space / experiment.attack_spaces / experiment.at_spaces = "
        "'measurement' needs operator.quantize = false (rounding has no gradient)",
    )


# The AttackConfig fields only PGD reads: with kind "apgd" they must stay at their defaults.
PGD_ONLY = ("step_factor", "random_start", "keep", "patience", "rel_tol")


def _validate_attack(a: AttackConfig) -> None:
    if a.kind == "apgd":
        defaults = AttackConfig()
        for name in PGD_ONLY:
            value = getattr(a, name)
            _check(
                value == getattr(defaults, name),
                f"attack.{name} = {value!r} is a PGD setting, which APGD (attack.kind = apgd) "
                "does not read; leave it out or set attack.kind = pgd",
            )
    _check(bool(a.losses), "attack.losses needs at least one of mse, ssim")
    _check(len(set(a.losses)) == len(a.losses), f"attack.losses = {list(a.losses)} repeats a loss")
    _check(a.steps >= 1, f"attack.steps = {a.steps} must be >= 1")
    _check(a.step_factor > 0, f"attack.step_factor = {a.step_factor} must be > 0")
    _check(a.restarts >= 1, f"attack.restarts = {a.restarts} must be >= 1")
    _check(a.k_attack >= 1, f"attack.k_attack = {a.k_attack} must be >= 1")
    _check(a.fallback_queries >= 1, f"attack.fallback_queries = {a.fallback_queries} must be >= 1")
    _check(a.patience >= 0, f"attack.patience = {a.patience} must be >= 0")
    _check(a.rel_tol >= 0, f"attack.rel_tol = {a.rel_tol} must be >= 0")


def _validate_smoothing(s: SmoothingConfig) -> None:
    _check(s.k == "auto" or s.k >= 1, f"smoothing.k = {s.k} must be >= 1 or 'auto'")
    _check(
        2 <= s.k_min <= s.k_max,
        f"smoothing.k_min = {s.k_min}, k_max = {s.k_max}: need 2 <= k_min <= k_max",
    )
    _check(0 < s.mc_tolerance < 1, f"smoothing.mc_tolerance = {s.mc_tolerance} not in (0, 1)")
    _check(
        s.k != "auto" or not s.antithetic or (s.k_min % 2 == 0 and s.k_max % 2 == 0),
        f"antithetic pairs need even smoothing.k_min and k_max, got {s.k_min} and {s.k_max}",
    )
    _check(s.chunk_size >= 0, f"smoothing.chunk_size = {s.chunk_size} must be >= 0")
    _check(
        all(v >= 0 for v in s.sigma_grid) and len(s.sigma_grid) >= 1,
        f"smoothing.sigma_grid = {s.sigma_grid} must hold sigmas >= 0",
    )


def _validate_experiment(cfg: Config) -> None:
    _check(
        all(v in ("thesis", "residual") for v in cfg.experiment.variants),
        f"experiment.variants = {cfg.experiment.variants}: use 'thesis' and/or 'residual'",
    )
    known = BASELINES[cfg.operator.name]
    _check(
        all(b in known for b in cfg.experiment.baselines),
        f"experiment.baselines = {cfg.experiment.baselines}: {cfg.operator.name} has the "
        f"baselines {', '.join(known)}",
    )
    _check(
        cfg.model.name == "unet" or cfg.model.name in known,
        f"model.name = '{cfg.model.name}' is not a baseline of {cfg.operator.name} "
        f"({', '.join(known)}) nor 'unet'",
    )
    e = cfg.experiment
    _check(
        len(e.attack_spaces) >= 1
        and e.attack_spaces[0] == "input"
        and set(e.attack_spaces) <= {"input", "measurement"},
        f"experiment.attack_spaces = {e.attack_spaces}: 'input' first, then 'measurement'",
    )
    _check(
        len(e.at_spaces) == len(set(e.at_spaces)) >= 1
        and set(e.at_spaces) <= {"input", "measurement"},
        f"experiment.at_spaces = {e.at_spaces}: 'input' and/or 'measurement', once each",
    )
    _check(
        all(s in e.sigma_fs for s in e.median_sigma_fs),
        f"experiment.median_sigma_fs = {list(e.median_sigma_fs)} must be among sigma_fs "
        f"{list(e.sigma_fs)} (the RS models behind median smoothing)",
    )
    _validate_convergence(e)
    _validate_certify(e)


def _validate_convergence(e: ExperimentConfig) -> None:
    """The attack-convergence study's candidates and the strong attack's choice."""
    _check(
        all(t >= 1 for t in e.convergence_steps) and len(e.convergence_steps) >= 1,
        f"experiment.convergence_steps = {e.convergence_steps} must be positive step counts",
    )
    _check(
        e.convergence_restarts >= 1,
        f"experiment.convergence_restarts = {e.convergence_restarts} must be >= 1",
    )
    _check(
        e.convergence_patience >= 0 and e.convergence_rel_tol >= 0,
        f"experiment.convergence_patience = {e.convergence_patience} and convergence_rel_tol "
        f"= {e.convergence_rel_tol} must be >= 0",
    )
    _check(
        e.convergence_images >= 1,
        f"experiment.convergence_images = {e.convergence_images} must be >= 1",
    )
    _check(
        all(t >= 1 for t in e.convergence_apgd_steps),
        f"experiment.convergence_apgd_steps = {e.convergence_apgd_steps} must be positive",
    )
    _check(
        e.convergence_reference_steps >= 0 and e.convergence_reference_restarts >= 1,
        f"experiment.convergence_reference_steps = {e.convergence_reference_steps} must be >= 0 "
        f"and convergence_reference_restarts = {e.convergence_reference_restarts} >= 1",
    )
    _check(0 <= e.strong_within < 1, f"experiment.strong_within = {e.strong_within} not in [0, 1)")
    _check(e.strong_max_cost >= 0, f"experiment.strong_max_cost = {e.strong_max_cost} must be >= 0")


def _validate_certify(e: ExperimentConfig) -> None:
    """The sweep's certificates."""
    _check(
        all(0 <= v <= 1 for v in e.certify_eps_rels) and e.certify_crops >= 0 and e.certify_n >= 2,
        f"experiment.certify_eps_rels = {e.certify_eps_rels} must lie in [0, 1], certify_crops "
        f"= {e.certify_crops} >= 0 and certify_n = {e.certify_n} >= 2",
    )
    _check(
        bool(e.certify_methods)
        and all(m in ("pixel", "center", "median", "loss") for m in e.certify_methods),
        f"experiment.certify_methods = {list(e.certify_methods)} must name methods among "
        "pixel, center, median, loss",
    )


def dump_config(cfg: Config, operator: dict[str, Any] | None = None) -> str:
    """The resolved config as YAML (saved beside every result); `operator`: the description
    of a user's operator, which the config's operator section cannot hold, in its place."""
    d = cfg.to_dict()
    if operator is not None:
        d["operator"] = operator
    return yaml.safe_dump(json.loads(json.dumps(d)), sort_keys=False)
