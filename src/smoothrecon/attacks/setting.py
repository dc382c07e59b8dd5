"""An attack as an evaluation runs it: the attack, its threat model, its EOT on smoothed models.

`AttackSetting` is the one object every front end hands down (evaluate, attack, certify, the
sweep): the attack (`protocol.Attack`: the built-in `PGD` or anyone's), the space it perturbs
(`threat`: the network input or the measurement), how it attacks a smoothed model g
(`EOT`: k_attack draws of g's noise per forward, held fixed or fresh), and the query budget of
the gradient-free attack that backs it when it fails (`evaluation.check`).

`setting_from_config` / `setting_to_config` are the one conversion between an `AttackConfig`
(the config's `attack:` section) and a setting of a built-in attack (PGD or APGD, `kind`, on
one loss, or their ensemble over several `losses`); it is lossless:
setting_to_config(setting_from_config(cfg, name)) == cfg.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any

from smoothrecon.attacks.apgd import APGD
from smoothrecon.attacks.ensemble import Ensemble
from smoothrecon.attacks.pgd import PGD
from smoothrecon.attacks.protocol import Attack, check_attack, describe_attack
from smoothrecon.attacks.threat import SPACES, Space
from smoothrecon.config import AttackConfig, Loss

NOISES = ("fixed", "fresh")
# The built-in attack kinds, each with a config form (`setting_from_config`); SPSA, the
# gradient-free check the evaluation runs when an attack fails (`evaluation.attacking`), is no
# setting of its own.
ATTACKS: dict[str, type] = {"pgd": PGD, "apgd": APGD, "ensemble": Ensemble}


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

    def on_mse(self) -> AttackSetting:
        """The setting aimed at the MSE alone (what a certificate bounds): of an ensemble, the
        members whose `loss` is "mse", or every member where none says so; any other attack
        unchanged."""
        a = self.attack
        if not isinstance(a, Ensemble):
            return self
        kept = tuple(m for m in a.members if getattr(m, "loss", None) == "mse")
        if not kept or len(kept) == len(a.members):
            return self
        return self.with_attack(dataclasses.replace(a, members=kept))


def setting_from_config(cfg: AttackConfig, name: str = "strong") -> AttackSetting:
    """The built-in setting of the config's `attack:` section, called `name`: PGD or APGD
    (`cfg.kind`) on its one loss, or for several losses their `Ensemble`, whose members are
    named "<kind>-<loss>" (e.g. "apgd-ssim")."""
    eot = EOT(cfg.k_attack, cfg.noise)
    if len(cfg.losses) == 1:
        attack: Attack = _built_in(cfg, cfg.losses[0], name)
    else:
        members = tuple(_built_in(cfg, loss, f"{cfg.kind}-{loss}") for loss in cfg.losses)
        attack = Ensemble(members, name=name)
    return AttackSetting(attack, cfg.space, eot, cfg.fallback_queries)


def _built_in(cfg: AttackConfig, loss: str, name: str) -> Attack:
    """The config's PGD or APGD (`cfg.kind`) on `loss`, called `name`."""
    if cfg.kind == "apgd":
        return APGD(steps=cfg.steps, restarts=cfg.restarts, loss=loss, name=name)
    return PGD(
        steps=cfg.steps,
        step_factor=cfg.step_factor,
        random_start=cfg.random_start,
        restarts=cfg.restarts,
        keep=cfg.keep,
        patience=cfg.patience,
        rel_tol=cfg.rel_tol,
        loss=loss,
        name=name,
    )


def setting_to_config(setting: AttackSetting) -> AttackConfig:
    """The `attack:` section of a built-in setting (its name aside: the caller keeps it): a
    PGD or APGD, or an ensemble of one kind whose members differ only in their loss and are
    named "<kind>-<loss>". Any other attack has no config form: ValueError."""
    a = setting.attack
    members = a.members if isinstance(a, Ensemble) else (a,)
    first = members[0]
    if not isinstance(first, PGD | APGD):
        raise ValueError(
            f"attack '{a.name}' ({type(a).__name__}) is not a built-in one and has no "
            "config form; pass the object itself (evaluate(attacks=[...]))"
        )
    cfg = _fields(first, setting)
    if isinstance(a, Ensemble):
        cfg.losses = tuple(_loss_of(m, cfg, setting, a.name) for m in members)
    return cfg


def _loss_of(m: Attack, cfg: AttackConfig, setting: AttackSetting, ensemble: str) -> Loss:
    """The loss of member `m` of a built-in ensemble whose first member's fields are `cfg`;
    ValueError where `m` is not that attack on another loss, named "<kind>-<loss>"."""
    if isinstance(m, PGD | APGD):
        fields = dataclasses.replace(_fields(m, setting), losses=cfg.losses)
        if fields == cfg and m.name == f"{cfg.kind}-{m.loss}":
            return typing.cast(Loss, m.loss)  # PGD and APGD accept only LOSSES
    raise ValueError(
        f"ensemble '{ensemble}' is not one built-in attack on several losses (member "
        f"'{m.name}'); it has no config form: pass the object itself"
    )


def _fields(a: PGD | APGD, setting: AttackSetting) -> AttackConfig:
    """The config fields of one PGD or APGD attack in `setting` (its loss the only one)."""
    common = {
        "losses": (a.loss,),
        "steps": a.steps,
        "restarts": a.restarts,
        "k_attack": setting.eot.k_attack,
        "noise": setting.eot.noise,
        "space": setting.space,
        "fallback_queries": setting.fallback_queries,
    }
    if isinstance(a, APGD):
        return AttackConfig(kind="apgd", **common)  # type: ignore[arg-type]
    return AttackConfig(
        kind="pgd",
        step_factor=a.step_factor,
        random_start=a.random_start,  # type: ignore[arg-type]
        keep=a.keep,  # type: ignore[arg-type]
        patience=a.patience,
        rel_tol=a.rel_tol,
        **common,  # type: ignore[arg-type]
    )


def setting_record(setting: AttackSetting) -> dict[str, Any]:
    """What a run folder's run.json says of a setting: the `attack:` fields of a PGD setting
    (as configs and earlier runs wrote them), else its full description; with its name."""
    try:
        fields = dataclasses.asdict(setting_to_config(setting))
    except ValueError:
        fields = {**setting.describe(), "space": setting.space}
    return {"name": setting.name, **fields}
