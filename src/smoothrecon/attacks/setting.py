"""An attack as an evaluation runs it: the attack, its threat model, its EOT on smoothed models.

`AttackSetting` is the one object every front end hands down (evaluate, attack, certify, the
sweep): the attack (`protocol.Attack`: the built-in `PGD` or anyone's), the space it perturbs
(`threat`: the network input or the measurement), how it attacks a smoothed model g
(`EOT`: k_attack draws of g's noise per forward, held fixed or fresh), and the query budget of
the gradient-free attack that backs it when it fails (`evaluation.check`).

`setting_from_config` / `setting_to_config` are the one conversion between an `AttackConfig`
(the config's `attack:` section) and a setting of a built-in attack (PGD or APGD, `kind`); it
is lossless:
setting_to_config(setting_from_config(cfg, name)) == cfg.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from smoothrecon.attacks.apgd import APGD
from smoothrecon.attacks.pgd import PGD
from smoothrecon.attacks.protocol import Attack, check_attack, describe_attack
from smoothrecon.attacks.threat import SPACES, Space
from smoothrecon.config import AttackConfig

NOISES = ("fixed", "fresh")


@dataclass(frozen=True)
class EOT:
    """How an attack runs on a smoothed model (expectation over transformation): k_attack draws
    of g's noise per forward pass (appendix A.3: 10), held fixed across the attack's steps or
    drawn fresh at each one (the EOT study found fresh stronger)."""

    k_attack: int = 10
    noise: str = "fresh"

    def __post_init__(self) -> None:
        if self.k_attack < 1:
            raise ValueError(f"k_attack must be >= 1, got {self.k_attack}")
        if self.noise not in NOISES:
            raise ValueError(f"noise must be 'fixed' or 'fresh', got '{self.noise}'")


@dataclass(frozen=True)
class AttackSetting:
    """One attack setting of an evaluation (see the module docstring). Its name, which records
    and tables show, is the attack's name, with "-measurement" in the measurement space."""

    attack: Attack = field(default_factory=PGD)
    space: Space = "input"
    eot: EOT = field(default_factory=EOT)
    fallback_queries: int = 2000

    def __post_init__(self) -> None:
        check_attack(self.attack)
        if self.space not in SPACES:
            raise ValueError(f"attack space must be 'input' or 'measurement', got {self.space!r}")
        if self.fallback_queries < 1:
            raise ValueError(f"fallback_queries must be >= 1, got {self.fallback_queries}")

    @property
    def name(self) -> str:
        return self.attack.name + ("-measurement" if self.space == "measurement" else "")

    def describe(self) -> dict[str, Any]:
        """Every parameter: the attack's own description, the space, EOT and the fallback."""
        return {
            "attack": describe_attack(self.attack),
            "space": self.space,
            "eot": dataclasses.asdict(self.eot),
            "fallback_queries": self.fallback_queries,
        }

    def with_attack(self, attack: Attack) -> AttackSetting:
        """The same setting with another attack (e.g. the attack on g the EOT study chose)."""
        return dataclasses.replace(self, attack=attack)


def setting_from_config(cfg: AttackConfig, name: str = "strong") -> AttackSetting:
    """The built-in setting (PGD or APGD, `cfg.kind`) of the config's `attack:` section, called
    `name`."""
    eot = EOT(cfg.k_attack, cfg.noise)
    if cfg.kind == "apgd":
        apgd = APGD(steps=cfg.steps, restarts=cfg.restarts, loss=cfg.loss, name=name)
        return AttackSetting(apgd, cfg.space, eot, cfg.fallback_queries)
    pgd = PGD(
        steps=cfg.steps,
        step_factor=cfg.step_factor,
        random_start=cfg.random_start,
        restarts=cfg.restarts,
        keep=cfg.keep,
        patience=cfg.patience,
        rel_tol=cfg.rel_tol,
        loss=cfg.loss,
        name=name,
    )
    return AttackSetting(pgd, cfg.space, eot, cfg.fallback_queries)


def setting_to_config(setting: AttackSetting) -> AttackConfig:
    """The `attack:` section of a PGD setting (its name aside: the caller keeps it). A
    setting of any other attack has no config form: ValueError."""
    a = setting.attack
    if isinstance(a, APGD):
        return AttackConfig(
            kind="apgd",
            loss=a.loss,  # type: ignore[arg-type]
            steps=a.steps,
            restarts=a.restarts,
            k_attack=setting.eot.k_attack,
            noise=setting.eot.noise,  # type: ignore[arg-type]
            space=setting.space,
            fallback_queries=setting.fallback_queries,
        )
    if not isinstance(a, PGD):
        raise ValueError(
            f"attack '{a.name}' ({type(a).__name__}) is not a built-in one and has no "
            "config form; pass the object itself (evaluate(attacks=[...]))"
        )
    return AttackConfig(
        loss=a.loss,  # type: ignore[arg-type]
        steps=a.steps,
        step_factor=a.step_factor,
        random_start=a.random_start,  # type: ignore[arg-type]
        restarts=a.restarts,
        keep=a.keep,  # type: ignore[arg-type]
        k_attack=setting.eot.k_attack,
        noise=setting.eot.noise,  # type: ignore[arg-type]
        patience=a.patience,
        rel_tol=a.rel_tol,
        space=setting.space,
        fallback_queries=setting.fallback_queries,
    )


def setting_record(setting: AttackSetting) -> dict[str, Any]:
    """What a run folder's run.json says of a setting: the `attack:` fields of a PGD setting
    (as configs and earlier runs wrote them), else its full description; with its name."""
    try:
        fields = dataclasses.asdict(setting_to_config(setting))
    except ValueError:
        fields = {**setting.describe(), "space": setting.space}
    return {"name": setting.name, **fields}
