"""Quiet logs: progress bars redraw in place only on a terminal; in a pipe or a file they write
a whole line at most every `LOG_INTERVAL_S` seconds, and nothing for short work."""

from __future__ import annotations

import io
import re
import time
from pathlib import Path

from smoothrecon.util import progress

SRC = Path(progress.__file__).parent


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def slow(n: int, seconds: float):
    for i in range(n):
        time.sleep(seconds)
        yield i


def test_on_a_terminal_the_bar_redraws_in_place() -> None:
    out = Terminal()
    for _ in progress.bar(range(50), desc="work", file=out, mininterval=0):
        pass
    assert out.getvalue().count("\r") > 10


def test_in_a_pipe_short_work_writes_nothing() -> None:
    out = io.StringIO()
    b = progress.bar(range(1000), desc="work", file=out)
    for i in b:
        b.set_postfix(loss=i)  # a forced refresh on a terminal
    b.close()
    assert out.getvalue() == ""


def test_in_a_pipe_lines_come_at_most_once_per_interval(monkeypatch) -> None:
    interval, seconds = 0.25, 1.6
    monkeypatch.setattr(progress, "LOG_INTERVAL_S", interval)
    out = io.StringIO()
    b = progress.bar(slow(32, seconds / 32), total=32, desc="work", unit="step", file=out)
    for i in b:
        b.set_postfix(loss=i)
    b.close()
    text = out.getvalue()
    assert "\r" not in text and text.endswith("\n")
    lines = text.splitlines()
    assert 2 <= len(lines) <= seconds / interval + 1, lines
    assert all(line.startswith("work:") for line in lines)
    assert "32/32" in lines[-1]  # the final count is shown once
    assert sum("32/32" in line for line in lines) == 1


def test_disabled_bars_write_nothing() -> None:
    out = Terminal()
    b = progress.bar(range(10), file=out, disable=True)
    for _ in b:
        b.set_postfix(x=1)
    assert out.getvalue() == ""


def test_every_bar_in_src_goes_through_progress() -> None:
    """tqdm is used only through progress.bar (a type annotation may name it)."""
    offenders = []
    for path in SRC.rglob("*.py"):
        if path.name == "progress.py":
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"\btqdm\(", line):
                offenders.append(f"{path.relative_to(SRC)}:{n}: {line.strip()}")
    assert not offenders, offenders


def test_train_in_a_pipe_logs_few_progress_lines(cli, photo_dir: Path, tmp_path: Path) -> None:
    """`smoothrecon train --preset smoke` with stderr to a pipe: no redraws at all, and at most
    a line per bar per interval (today's smoke run is shorter than one)."""
    t0 = time.perf_counter()
    r = cli(
        "train", "--preset", "smoke", "--data", photo_dir, "--set", "data.short_side=0",
        "--out", tmp_path / "run",
    )  # fmt: skip
    seconds = time.perf_counter() - t0
    assert r.returncode == 0, r.stderr[-3000:]
    assert "\r" not in r.stderr
    bars = [line for line in r.stderr.splitlines() if "|" in line]
    # decoding photos, and one bar per epoch (2): each a line per interval at most
    assert len(bars) <= 3 * (seconds / progress.LOG_INTERVAL_S + 1), bars
    assert "epoch 2/2" in r.stdout  # the epoch summaries still reach the log
