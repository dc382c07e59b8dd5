"""The default photos' fetch: one clear line when apt is missing, a refusal when the fetched
files differ from the pinned hashes, the photos shipped in wheels, and the pinned list itself
(28 photos)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from smoothrecon.data import sources
from smoothrecon.data.sources import (
    EXCLUDED,
    WHEEL_PHOTOS,
    fetch_default_photos,
    pinned_hashes,
    sha256_file,
    wheel_photo_paths,
)
from smoothrecon.errors import UserError


def test_the_pinned_list_holds_the_28_default_photos() -> None:
    pins = pinned_hashes()
    assert len(pins) == 28 and not set(EXCLUDED) & set(pins)
    assert set(WHEEL_PHOTOS) <= set(pins)  # 13 from wheels, 15 from the Debian packages
    assert len(set(pins) - set(WHEEL_PHOTOS)) == 15
    assert all(len(h) == 64 for h in pins.values())


def test_the_photos_shipped_in_wheels_match_their_pins() -> None:
    pins = pinned_hashes()
    paths = wheel_photo_paths()
    assert [p.name for p in paths] == list(WHEEL_PHOTOS)
    for p in paths:
        assert sha256_file(p) == pins[p.name], p


def test_a_missing_wheel_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    real = sources.importlib.util.find_spec
    monkeypatch.setattr(
        sources.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "sklearn" else real(name, *a),
    )
    with pytest.raises(UserError, match=r"scikit-learn, which is not installed.*--data PATH"):
        wheel_photo_paths()


def _fake_tools(bin_dir: Path, payload: str) -> None:
    """apt-get that 'downloads' a .deb and dpkg that 'unpacks' two wrong photos."""
    bin_dir.mkdir()
    (bin_dir / "apt-get").write_text("#!/bin/sh\ntouch fake.deb\n")
    (bin_dir / "dpkg").write_text(
        '#!/bin/sh\nmkdir -p "$3/usr/share/backgrounds/mate/nature"\n'
        f'echo {payload} > "$3/usr/share/backgrounds/Bridge_by_Sander_Klootwijk.jpg"\n'
        f'echo {payload} > "$3/usr/share/backgrounds/mate/nature/Aqua.jpg"\n'
    )
    for tool in ("apt-get", "dpkg"):
        (bin_dir / tool).chmod(0o755)


def test_fetched_files_that_differ_from_the_pins_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_tools(tmp_path / "bin", "not-the-real-photo")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(UserError, match="differ from the pinned list"):
        fetch_default_photos(str(tmp_path / "cache"), progress=False)
    assert not (tmp_path / "cache" / "photos" / "default").exists()  # nothing half-installed


def test_no_apt_is_one_line_pointing_to_data(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": str(tmp_path), "SMOOTHRECON_CACHE": str(tmp_path / "c")}
    r = subprocess.run(
        [sys.executable, "-m", "smoothrecon", "data", "info", "--preset", "smoke"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert len(lines) == 1 and "apt-get" in lines[0] and "--data PATH" in lines[0], r.stderr


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "smoothrecon",
            "--debug",
            "data",
            "info",
            "--data",
            str(tmp_path / "missing"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode != 0 and "Traceback" in r.stderr and "UserError" in r.stderr
