"""smoothrecon: randomized smoothing as an adversarial defense for image reconstruction.

The Python API a researcher imports in a notebook; the CLI and the presets are thin skins over it.
"""

__version__ = "0.1.0"

from smoothrecon.attacks import PGDRun, eps_from_rel, pgd_l2
from smoothrecon.certification_run import certify_entry as certify
from smoothrecon.checkpoint import load_model, model_normalization
from smoothrecon.config import Config, load_config
from smoothrecon.data import prepare_data
from smoothrecon.experiments.evaluate import evaluate
from smoothrecon.metrics import mse, psnr, ssim
from smoothrecon.models import UNet
from smoothrecon.operators import SuperResolution
from smoothrecon.smoothing import SmoothedEstimator
from smoothrecon.training import TrainResult, train

__all__ = [
    "Config",
    "PGDRun",
    "SmoothedEstimator",
    "SuperResolution",
    "TrainResult",
    "UNet",
    "__version__",
    "certify",
    "eps_from_rel",
    "evaluate",
    "load_config",
    "load_model",
    "model_normalization",
    "mse",
    "pgd_l2",
    "prepare_data",
    "psnr",
    "ssim",
    "train",
]
