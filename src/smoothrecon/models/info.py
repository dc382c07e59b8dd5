"""What the records say about a model: its label and how it was made (`ModelInfo`).

mode: how f was trained ("standard", "gaussian", "adversarial", "denoiser"), "none" for a
no-learning baseline, "own" for a user's module; value: its sigma_f or eps_rel.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelInfo:
    """What a record says about its model (see `Record`)."""

    model: str
    factor: int
    kind: str
    variant: str = "-"
    mode: str = "none"
    value: float = 0.0
    smoothed: bool = False
    input_space: str = "normalized"
    train_space: str = "input"  # adversarial training's attack space
    # a defended model (f behind a defence, `defenses.base.Defense`): the defence's name, also
    # the label's suffix ("+den0.1"), and its kind ("denoised", "projection" or the class of
    # a user's defence); mode and value stay those of f
    defense: str = ""
    defense_kind: str = ""

    @property
    def slug(self) -> str:
        """The label as a folder name."""
        return self.model.replace("/", "-")
