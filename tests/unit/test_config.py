"""The config tree: presets, unknown keys, types, ranges, `--set` parsing and the config hash."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from smoothrecon.config import (
    PRESETS,
    Config,
    config_from_dict,
    dump_config,
    load_config,
    parse_override,
)
from smoothrecon.errors import UserError


def user_error(*overrides: str, preset: str = "smoke") -> str:
    """The message of the UserError that `overrides` must raise; checked to be one line."""
    with pytest.raises(UserError) as info:
        load_config(preset, overrides=list(overrides))
    message = str(info.value)
    assert message and "\n" not in message, f"not a one-line message: {message!r}"
    return message


@pytest.mark.parametrize("preset", PRESETS)
def test_every_advertised_preset_loads(preset: str) -> None:
    cfg = load_config(preset)
    assert cfg.preset == preset
    assert cfg.data.crop_size % cfg.operator.factor == 0


def test_presets_change_scale_not_method() -> None:
    smoke, cpu, paper = (load_config(p) for p in ("smoke", "cpu", "paper"))
    assert smoke.model.channels == (4, 8, 16)
    assert smoke.data.crop_size == 32
    assert paper.data.crop_size == 160  # section 4.1
    assert paper.model.channels == (8, 16, 32, 64, 128)  # section 4.2.1
    assert cpu.data.crop_size < paper.data.crop_size
    for cfg in (smoke, cpu, paper):
        assert cfg.operator.name == "super_resolution"
        assert cfg.train.mode == "standard"


def test_unknown_preset_suggests_the_closest() -> None:
    message = user_error(preset="smok")
    assert "smoke" in message


def test_unknown_key_says_did_you_mean() -> None:
    message = user_error("train.epoch=3")
    assert "train.epoch" in message
    assert "did you mean 'epochs'" in message


def test_unknown_section_is_an_error() -> None:
    message = user_error("trian.epochs=3")
    assert "trian" in message
    assert "did you mean 'train'" in message


def test_unknown_key_without_close_match_lists_the_known_keys() -> None:
    message = user_error("train.zzzzzz=1")
    assert "known keys" in message and "epochs" in message


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("train.epochs=abc", "must be an integer"),
        ("train.epochs=2.5", "must be an integer"),
        ("train.epochs=true", "must be an integer"),
        ("train.lr=true", "must be a number"),
        ("train.lr=fast", "must be a number"),
        ("data.flips=1", "must be true or false"),
        ("data.source=3", "must be a string"),
        ("train.mode=__import__('os')", "is not one of"),
        ("model.channels=4,8", "must be an integer"),
        ("data.split=[0.5, 0.5]", "needs 3 values"),
        ("train=5", "must be a mapping"),
    ],
)
def test_wrong_types_are_one_line_errors(override: str, expected: str) -> None:
    message = user_error(override)
    assert expected in message
    assert override.split("=", 1)[0] in message


@pytest.mark.parametrize(
    ("override", "names"),
    [
        ("train.sigma_f=-0.1", "train.sigma_f"),
        ("smoothing.k=0", "smoothing.k"),
        ("train.eps_rel=1.5", "train.eps_rel"),
        ("train.eps_rel=-0.01", "train.eps_rel"),
        ("evaluation.eps_rels=[0, 2]", "evaluation.eps_rels"),
        ("smoothing.sigma_grid=[0.1, -0.2]", "smoothing.sigma_grid"),
        ("data.crop_size=33", "operator.factor"),
        ("data.prescale=0", "data.prescale"),
        ("train.lr=0", "train.lr"),
        ("train.epochs=0", "train.epochs"),
        ("model.channels=[4]", "model.channels"),
    ],
)
def test_out_of_range_values_are_one_line_errors(override: str, names: str) -> None:
    assert names in user_error(override)


def test_crop_size_not_divisible_by_factor_names_both() -> None:
    message = user_error("operator.factor=4", "data.crop_size=42")
    assert "42" in message and "4" in message


def test_eps_rel_boundaries_are_allowed() -> None:
    assert load_config("smoke", overrides=["train.eps_rel=0"]).train.eps_rel == 0.0
    assert load_config("smoke", overrides=["train.eps_rel=1"]).train.eps_rel == 1.0


def test_set_parses_lists_and_scalars() -> None:
    cfg = load_config(
        "smoke",
        overrides=[
            "evaluation.eps_rels=[0, 0.01, 0.05]",
            "model.channels=[2, 4, 8, 16]",
            "smoothing.sigma_grid=0.25",
            "data.split=[2, 1, 1]",
            "train.lr=0.002",
            "data.flips=false",
        ],
    )
    assert cfg.evaluation.eps_rels == (0.0, 0.01, 0.05)
    assert all(isinstance(v, float) for v in cfg.evaluation.eps_rels)  # ints become floats
    assert cfg.model.channels == (2, 4, 8, 16)
    assert cfg.smoothing.sigma_grid == (0.25,)  # a scalar is a one-element list
    assert cfg.data.split == (2.0, 1.0, 1.0)
    assert cfg.train.lr == pytest.approx(2e-3)
    assert cfg.data.flips is False


@pytest.mark.parametrize(("text", "value"), [("1e-3", 1e-3), ("3E-4", 3e-4), ("1e30", 1e30)])
def test_set_accepts_numbers_in_scientific_notation(text: str, value: float) -> None:
    # The usual way to write a learning rate; YAML 1.1 alone reads "1e-3" as a string.
    cfg = load_config("smoke", overrides=[f"train.lr={text}"])
    assert cfg.train.lr == pytest.approx(value)


def test_parse_override_keeps_text_after_the_first_equals_sign() -> None:
    assert parse_override("data.source=/a=b/c") == {"data": {"source": "/a=b/c"}}
    assert parse_override("a.b.c=[1, 2]") == {"a": {"b": {"c": [1, 2]}}}


def test_parse_override_without_equals_sign_is_an_error() -> None:
    with pytest.raises(UserError, match="KEY=VALUE"):
        parse_override("train.epochs")


def test_later_overrides_win_and_file_layers_apply(tmp_path) -> None:
    f = tmp_path / "mine.yaml"
    f.write_text("train:\n  epochs: 7\n  lr: 0.01\n")
    cfg = load_config("smoke", file=f, overrides=["train.epochs=9"])
    assert (cfg.train.epochs, cfg.train.lr) == (9, 0.01)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("train: [1, 2\n", "not valid YAML"),
        ("- 1\n- 2\n", "mapping"),
        ("train:\n  epoch: 1\n", "epoch"),
    ],
)
def test_bad_config_files_are_user_errors(tmp_path, text: str, expected: str) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(UserError, match=expected):
        load_config("smoke", file=f)


def test_missing_config_file_is_a_user_error(tmp_path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        load_config("smoke", file=tmp_path / "nope.yaml")


def test_hash_is_stable_and_changes_with_a_field() -> None:
    a, b = load_config("smoke"), load_config("smoke")
    assert a.hash() == b.hash()
    assert a.hash("train") == b.hash("train")
    c = load_config("smoke", overrides=["train.lr=0.002"])
    assert c.hash() != a.hash()
    assert c.hash("train") != a.hash("train")
    assert c.hash("data", "model") == a.hash("data", "model")  # other sections unaffected
    d = load_config("smoke", overrides=["evaluation.eps_rels=[0, 0.02, 0.05]"])
    assert d.hash() != a.hash()


def test_hash_ignores_the_cache_location() -> None:
    a = load_config("smoke")
    b = load_config("smoke", overrides=["data.cache_dir=/somewhere/else"])
    assert a.hash() == b.hash()
    assert a.hash("data") == b.hash("data")


def test_config_round_trips_through_its_dict_and_yaml() -> None:
    import yaml

    cfg = load_config("smoke", overrides=["train.mode=gaussian", "train.sigma_f=0.3"])
    again = config_from_dict(cfg.to_dict())
    assert again == cfg
    assert again.hash() == cfg.hash()
    from_yaml = config_from_dict(yaml.safe_load(dump_config(cfg)))
    assert from_yaml == cfg


def test_default_config_is_the_paper_setting() -> None:
    cfg = Config()
    assert dataclasses.asdict(cfg)["train"]["epochs"] == 50  # section 4.2.2
    assert cfg.train.pgd_steps == 5  # section 4.2.3
    assert cfg.smoothing.k == 50  # section 4.4


def test_precision_auto_is_bf16_only_where_the_hardware_computes_it() -> None:
    import torch

    from smoothrecon.util.runtime import Runtime, native_bf16, resolve_precision

    cpu = torch.device("cpu")
    assert resolve_precision("fp32", cpu) == "fp32" and resolve_precision("bf16", cpu) == "bf16"
    assert resolve_precision("auto", cpu) == ("bf16" if native_bf16(cpu) else "fp32")
    cfg = load_config("cpu", overrides=["runtime.device=cpu"])
    assert cfg.runtime.precision == "auto"
    assert Runtime.from_config(cfg.runtime).precision in ("fp32", "bf16")


def test_a_runtime_describes_what_ran_resolved() -> None:
    import torch

    from smoothrecon.util.runtime import Runtime

    d = Runtime(torch.device("cpu"), "fp32", True).describe()
    assert d["device"] == "cpu" and d["precision"] == "fp32" and "bf16" not in d
    assert d["channels_last"] is True and d["threads"] == torch.get_num_threads()
    assert d["torch"] == torch.__version__ and d["cpu"]
    assert Runtime(torch.device("cpu"), "bf16").describe()["bf16"] in ("native", "emulated")


def test_config_yaml_never_says_auto_alone(monkeypatch) -> None:
    from smoothrecon.util import runtime

    monkeypatch.setattr(runtime, "native_bf16", lambda device: False)
    text = runtime.config_yaml(load_config("cpu"))
    assert "  precision: auto  # resolved: fp32\n" in text
    assert yaml.safe_load(text)["runtime"]["precision"] == "auto"  # still a loadable config
    explicit = runtime.config_yaml(load_config("cpu", overrides=["runtime.precision=bf16"]))
    assert "  precision: bf16\n" in explicit and "resolved" not in explicit


def test_a_retired_key_is_dropped_from_saved_configs_and_refused_in_a_users_one():
    """Checkpoints written before a key was retired still load; a user's config that still
    sets it gets one line saying the key is gone (not "unknown key")."""
    saved = Config().to_dict()
    saved["attack"]["target"] = "clean"  # what checkpoints before its removal hold
    assert config_from_dict(saved) == Config()
    with pytest.raises(UserError, match=r"'attack\.target' was removed: it was never read"):
        load_config("smoke", overrides=["attack.target=clean"])


@pytest.mark.parametrize(("native", "expected"), [(False, "fp32"), (True, "bf16")])
def test_a_sweep_sends_its_units_the_precision_it_resolved(monkeypatch, native, expected):
    """reproduce resolves `auto` once, on the machine that owns the run folder: units run by
    other machines (distributed executors) compute in that precision, not in their own."""
    from smoothrecon.attacks.setting import setting_from_config
    from smoothrecon.experiments.runner import plan_evaluation, resolved
    from smoothrecon.util import runtime

    monkeypatch.setattr(runtime, "native_bf16", lambda device: native)
    cfg = resolved(load_config("cpu"))
    assert cfg.runtime.precision == expected
    monkeypatch.setattr(runtime, "native_bf16", lambda device: not native)  # another machine
    strong = {"strong": setting_from_config(cfg.attack, "strong")}
    units = plan_evaluation(cfg, Path("runs/x"), strong)
    assert units and {u.cfg.runtime.precision for u in units} == {expected}


def test_an_unknown_precision_is_one_clear_error() -> None:
    import torch

    from smoothrecon.util.runtime import resolve_precision

    with pytest.raises(UserError, match=r"runtime\.precision = 'fp16': use auto, fp32 or bf16"):
        resolve_precision("fp16", torch.device("cpu"))
