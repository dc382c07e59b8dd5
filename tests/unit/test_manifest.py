"""manifest.py: which run a folder belongs to, the fields that differ, and moving a run aside."""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from pathlib import Path

import pytest

from smoothrecon.errors import UserError
from smoothrecon.experiments import manifest
from smoothrecon.experiments.manifest import (
    REPRODUCE_SECTIONS,
    TRAIN_SECTIONS,
    build_manifest,
    claim,
    differences,
    refusal,
)


def train_manifest(cfg) -> dict:
    return build_manifest("train", cfg, TRAIN_SECTIONS, ignore=("train.epochs",))


# --- differences (pure) ------------------------------------------------------------------------


def test_the_same_config_has_no_differences(make_config) -> None:
    assert differences(train_manifest(make_config()), train_manifest(make_config())) == []


def test_each_differing_field_is_named_with_both_values(make_config) -> None:
    old = train_manifest(make_config())
    new = train_manifest(make_config("train.lr=0.005", "model.residual=true"))
    assert differences(old, new) == [
        ("model.residual", False, True),
        ("train.lr", 0.001, 0.005),
    ]


def test_identity_fields_come_first(make_config) -> None:
    old = build_manifest("train", make_config(), ("data", "train"))
    new = build_manifest(
        "reproduce", make_config("operator.factor=4", "data.crop_size=48"), ("data", "train")
    )
    names = [name for name, _, _ in differences(old, new)]
    assert names[:2] == ["kind", "operator.factor"]
    assert "data.crop_size" in names and names.count("operator.factor") == 1


def test_a_field_on_one_side_only_differs_with_none() -> None:
    old = {"kind": "train", "config": {"train": {"lr": 0.1}}}
    new = {"kind": "train", "config": {"train": {"lr": 0.1, "warmup": 3}}}
    assert differences(old, new) == [("train.warmup", None, 3)]


def test_epochs_do_not_decide_a_training_run(make_config) -> None:
    a, b = (train_manifest(make_config(f"train.epochs={n}")) for n in (2, 3))
    assert a == b
    c, d = (
        build_manifest("reproduce", make_config(f"train.epochs={n}"), REPRODUCE_SECTIONS)
        for n in (2, 3)
    )
    # A sweep is compared on its identity: its units are keyed by their own configs, so more
    # epochs retrain the models and keep everything else.
    assert differences(c, d) == []
    assert differences(c, build_manifest("reproduce", make_config("operator.factor=4"), ())) == [
        ("operator.factor", 2, 4)
    ]


def test_runtime_and_the_cache_folder_do_not_decide_a_run(make_config, tmp_path) -> None:
    a = build_manifest("reproduce", make_config(), REPRODUCE_SECTIONS)
    b = build_manifest(
        "reproduce",
        make_config("runtime.threads=1", f"data.cache_dir={tmp_path}"),
        REPRODUCE_SECTIONS,
    )
    assert differences(a, b) == []
    # the runtime block says what the call ran on, and is never compared
    assert b["runtime"]["threads"] == 1 and b["runtime"]["precision"] == b["precision"]
    assert {k: v for k, v in a.items() if k != "runtime"} == {
        k: v for k, v in b.items() if k != "runtime"
    }


def test_a_hash_change_without_field_changes_is_still_a_difference() -> None:
    old = {"kind": "train", "config_hash": "aaaa", "config": {}}
    new = {"kind": "train", "config_hash": "bbbb", "config": {}}
    assert differences(old, new) == [("config_hash", "aaaa", "bbbb")]


def test_refusal_is_one_line_with_both_values_and_a_new_out() -> None:
    diffs = [("preset", "smoke", "cpu")] + [(f"data.f{i}", i, i + 1) for i in range(8)]
    text = refusal("runs/R", diffs)
    assert "\n" not in text
    assert text.startswith("'runs/R' holds a run of another config")
    assert "preset 'smoke' there, 'cpu' now" in text
    assert "data.f0 0 there, 1 now" in text
    assert "and 3 more" in text  # 9 differences, 6 named
    assert "choose a new --out" in text and "--force-new" in text


# --- data --------------------------------------------------------------------------------------


def test_default_photos_hash_is_the_pinned_lists_hash_without_fetching() -> None:
    pins = resources.files("smoothrecon").joinpath("data", "default-photos.sha256").read_bytes()
    assert manifest.photos_hash("default") == hashlib.sha256(pins).hexdigest()


def test_photos_hash_follows_the_contents_not_the_names(photo_copy: Path) -> None:
    before = manifest.photos_hash(str(photo_copy))
    (photo_copy / "coffee.jpg").rename(photo_copy / "renamed.jpg")
    assert manifest.photos_hash(str(photo_copy)) == before
    (photo_copy / "camera.png").write_bytes((photo_copy / "astronaut.png").read_bytes())
    assert manifest.photos_hash(str(photo_copy)) != before


def test_a_relative_data_folder_is_the_same_source(photo_dir, make_config, monkeypatch) -> None:
    monkeypatch.chdir(photo_dir.parent)
    relative = train_manifest(make_config(f"data.source={photo_dir.name}"))
    absolute = train_manifest(make_config())
    assert relative == absolute
    assert relative["data"]["source"] == str(photo_dir.resolve())


# --- claim: resume, refuse, move aside ----------------------------------------------------------


def test_claim_writes_then_resumes_then_refuses(tmp_path: Path, make_config) -> None:
    spec = train_manifest(make_config())
    assert claim(tmp_path, spec) is None
    written = (tmp_path / "manifest.json").read_text()
    assert json.loads(written) == spec
    assert claim(tmp_path, train_manifest(make_config("train.epochs=5"))) is None  # resumes
    other = train_manifest(make_config("train.lr=0.005"))
    with pytest.raises(UserError, match=r"train\.lr 0\.001 there, 0\.005 now"):
        claim(tmp_path, other)
    assert (tmp_path / "manifest.json").read_text() == written  # the refused run wrote nothing


def test_another_precision_is_refused_naming_both_and_the_setting_that_resumes(
    tmp_path: Path, make_config
) -> None:
    fp32 = build_manifest("reproduce", make_config("runtime.precision=fp32"), REPRODUCE_SECTIONS)
    bf16 = build_manifest("reproduce", make_config("runtime.precision=bf16"), REPRODUCE_SECTIONS)
    assert (fp32["precision"], bf16["precision"]) == ("fp32", "bf16")
    assert differences(fp32, bf16)[0] == ("precision", "fp32", "bf16")  # an identity field
    claim(tmp_path, fp32)
    with pytest.raises(UserError) as err:
        claim(tmp_path, bf16)
    text = str(err.value)
    assert "\n" not in text and "precision 'fp32' there, 'bf16' now" in text
    assert "--set runtime.precision=fp32 to resume it as it ran" in text
    assert "--force-new" in text
    assert claim(tmp_path, fp32) is None  # the precision it ran in resumes


def test_auto_is_written_resolved(make_config, monkeypatch) -> None:
    monkeypatch.setattr(manifest, "resolved_precision", lambda rt: "bf16")
    m = build_manifest("train", make_config("runtime.precision=auto"), TRAIN_SECTIONS)
    assert m["precision"] == "bf16"


def test_a_folder_from_before_precisions_were_recorded_is_adopted_and_says_so(
    tmp_path: Path, make_config, capsys
) -> None:
    spec = train_manifest(make_config())
    old = {k: v for k, v in spec.items() if k != "precision"}
    (tmp_path / "manifest.json").write_text(json.dumps(old))
    assert claim(tmp_path, spec) is None
    assert f"resuming it in {spec['precision']}" in capsys.readouterr().out
    assert json.loads((tmp_path / "manifest.json").read_text()) == spec


def test_force_new_moves_everything_aside_and_deletes_nothing(tmp_path, make_config) -> None:
    claim(tmp_path, train_manifest(make_config()))
    (tmp_path / "last.safetensors").write_bytes(b"weights")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.json").write_text("{}")
    (tmp_path / ".lock").write_text("123")  # the lock of the run doing this stays
    other = train_manifest(make_config("train.lr=0.005"))
    moved = claim(tmp_path, other, force_new=True)
    assert moved == tmp_path / ".old-1"
    assert (moved / "last.safetensors").read_bytes() == b"weights"
    assert (moved / "sub" / "a.json").read_text() == "{}"
    assert json.loads((moved / "manifest.json").read_text())["config"]["train"]["lr"] == 0.001
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", ".old-1", "manifest.json"]
    assert json.loads((tmp_path / "manifest.json").read_text()) == other
    again = claim(tmp_path, train_manifest(make_config()), force_new=True)
    assert again == tmp_path / ".old-2"
    assert (tmp_path / ".old-1" / "last.safetensors").exists()  # earlier runs stay put


def test_force_new_on_an_empty_folder_moves_nothing(tmp_path: Path, make_config) -> None:
    assert claim(tmp_path, train_manifest(make_config()), force_new=True) is None
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]


def test_an_unreadable_manifest_is_a_clear_error(tmp_path: Path, make_config) -> None:
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(UserError, match="not a readable manifest"):
        claim(tmp_path, train_manifest(make_config()))
    assert claim(tmp_path, train_manifest(make_config()), force_new=True) == tmp_path / ".old-1"
