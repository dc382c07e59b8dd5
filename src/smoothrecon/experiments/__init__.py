"""The thesis' experiment as data (`grid`) and its resumable runner (`runner`)."""

from smoothrecon.experiments.grid import ModelSpec, thesis_grid
from smoothrecon.experiments.runner import plan_evaluation, plan_training, reproduce

__all__ = ["ModelSpec", "plan_evaluation", "plan_training", "reproduce", "thesis_grid"]
