"""The thesis' experiment as data (`grid`) and its resumable runner (`runner`)."""

from smoothrecon.experiments.grid import ModelSpec, thesis_grid
from smoothrecon.experiments.runner import plan, reproduce

__all__ = ["ModelSpec", "plan", "reproduce", "thesis_grid"]
