"""The benchmark's frozen protocols (docs/benchmark.md): what a result card is measured under.

A protocol fixes everything a card's numbers depend on besides the model: the data (the pinned
default photos, their test split and a fixed list of crops), the scale, the eps_rel grid, both
threat models, the attack (the default ensemble, per crop and metric the worst), how sigma_g is
chosen for a smoothed defence (on validation, `records.choose_sigma`) and the certificate's
settings. No flag changes it: `Protocol` objects are frozen, registered by name, and a card
stores the name and the hash of the whole description (`Protocol.key`). Anything that changes
a protocol is a new name; the leaderboard never ranks cards of two protocols together.

"v1" is the benchmark. "smoke-v1" is the same protocol at toy scale, for the tests only.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from smoothrecon.config import Config, load_config
from smoothrecon.errors import UserError
from smoothrecon.util.io import short_hash


@dataclass(frozen=True)
class Protocol:
    """One frozen protocol (see the module docstring); `config(operator)` is its whole config."""

    name: str
    preset: str  # the scale: crop size, crops per photo, k, sigma_g grid of this preset
    overrides: tuple[str, ...]  # fixed changes to the preset (never from the command line)
    eps_rels: tuple[float, ...] = (0.0, 0.01, 0.02, 0.05, 0.1)
    spaces: tuple[str, ...] = ("input", "measurement")
    headline_eps: float = 0.05  # the robust headline numbers
    certify_eps_rel: float = 0.002  # the certificate of a smoothed defence (median method)
    certify_n: int = 2000
    certify_crops: int = 8
    certify_alpha: float = 0.001

    def sets(self) -> list[str]:
        """The protocol's changes to its preset, as `--set` items."""
        eps = "[" + ",".join(f"{e:g}" for e in self.eps_rels) + "]"
        return [f"evaluation.eps_rels={eps}", *self.overrides]

    def config(self, operator: str = "super_resolution") -> Config:
        """The protocol's config for `operator` (a name of `operators.OPERATORS`)."""
        return load_config(self.preset, overrides=[f"operator.name={operator}", *self.sets()])

    def describe(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def key(self) -> str:
        """A hash of the whole description: cards of one name must share it."""
        return short_hash(self.describe(), 16)


# the scale of v1: the cpu preset's 48x48 crops, 4 test crops per test photo (32) and 2
# validation crops per validation photo, the default attack, k auto up to 32 draws
_V1 = (
    "data.source=default",
    "data.eval_crops_per_photo=4",
    "data.val_crops_per_photo=2",
    "data.max_eval_crops=0",
    "attack.kind=apgd",
    "attack.losses=[mse,ssim]",
    "runtime.precision=fp32",
)

PROTOCOLS: dict[str, Protocol] = {
    "v1": Protocol("v1", "cpu", _V1),
    "smoke-v1": Protocol(
        "smoke-v1",
        "smoke",
        ("attack.kind=apgd", "attack.losses=[mse,ssim]", "attack.steps=3"),
        eps_rels=(0.0, 0.02, 0.05),
        certify_n=64,
        certify_crops=2,
        certify_alpha=0.5,
    ),
}


def protocol(name: str) -> Protocol:
    """The registered protocol `name`; an unknown name is one clear error."""
    if name not in PROTOCOLS:
        raise UserError(f"unknown benchmark protocol '{name}'; known: {', '.join(PROTOCOLS)}")
    return PROTOCOLS[name]
