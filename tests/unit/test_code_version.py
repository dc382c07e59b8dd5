"""A card's code version is dirty only when the code that computes its numbers changed: not
when docs or the committed cards (which `make leaderboard-cards` copies in as it runs) did."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from smoothrecon.benchmark.run import code_version, describe


def _git(root: Path, *args: str) -> str:
    done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    (tmp_path / "src").mkdir()
    (tmp_path / "docs").mkdir()
    (tmp_path / "src" / "m.py").write_text("x = 1\n")
    (tmp_path / "docs" / "card.json").write_text("{}\n")
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "first")
    return tmp_path


def test_clean_checkout_is_its_commit(repo: Path) -> None:
    assert describe(repo) == _git(repo, "rev-parse", "--short", "HEAD")


def test_a_docs_change_leaves_the_code_clean(repo: Path) -> None:
    (repo / "docs" / "card.json").write_text('{"score": 1}\n')
    (repo / "docs" / "new.md").write_text("new\n")
    assert not describe(repo).endswith("-dirty")


def test_a_source_change_is_dirty(repo: Path) -> None:
    (repo / "src" / "m.py").write_text("x = 2\n")
    assert describe(repo).endswith("-dirty")


def test_a_new_source_file_is_dirty(repo: Path) -> None:
    (repo / "src" / "extra.py").write_text("y = 1\n")
    assert describe(repo).endswith("-dirty")


def test_no_checkout_gives_an_error_the_card_falls_back_on(tmp_path: Path) -> None:
    with pytest.raises(subprocess.SubprocessError):
        describe(tmp_path / "nowhere")
    assert code_version().startswith("0.")
