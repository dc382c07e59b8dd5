"""smoothrecon: randomized smoothing as an adversarial defense for image reconstruction.

The Python API a researcher imports in a notebook; the CLI and the presets are thin skins over it.
"""

from smoothrecon.api import certify, evaluate
from smoothrecon.attacks.apgd import APGD
from smoothrecon.attacks.ensemble import Ensemble
from smoothrecon.attacks.pgd import PGD, eps_from_rel, pgd_l2
from smoothrecon.config import Config, load_config
from smoothrecon.data import prepare_data
from smoothrecon.defenses.smoothing import SmoothedEstimator
from smoothrecon.experiments.training import TrainResult, train
from smoothrecon.metrics import mse, psnr, ssim
from smoothrecon.models import UNet
from smoothrecon.models.checkpoint import load_model, model_normalization
from smoothrecon.operators import SuperResolution
from smoothrecon.util.version import VERSION as __version__

__all__ = [
    "APGD",
    "PGD",
    "Config",
    "Ensemble",
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
