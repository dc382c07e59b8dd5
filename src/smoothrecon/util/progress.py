"""Progress bars that redraw on a terminal and keep logs short.

On a terminal a bar redraws in place, as tqdm does. In a pipe or a file (a log, CI, `nohup`)
every redraw would become part of the output, so there a bar writes one whole line at most every
`LOG_INTERVAL_S` seconds, and a bar that finishes sooner writes nothing at all.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Iterable
from typing import IO, Any

from tqdm import tqdm

LOG_INTERVAL_S = 5.0  # seconds between two lines of a bar in a pipe or a file


class _Lines:
    """A file for tqdm that turns each redraw ("\\r" + status) into one whole line; the
    blank redraws that erase a bar and a repeat of the last line write nothing."""

    def __init__(self, stream: IO[str]):
        self.stream = stream
        self.last = ""

    def write(self, text: str) -> None:
        line = text.replace("\r", "").rstrip()
        if line and line != self.last:
            self.stream.write(line + "\n")
            self.last = line

    def flush(self) -> None:
        self.stream.flush()


class _LogBar(tqdm):  # type: ignore[type-arg]
    """A tqdm bar for logs: `set_postfix` and friends refresh only when a line is due, and
    closing adds no line when the last one already showed the final count."""

    def __init__(self, *args: Any, **kwargs: Any):
        self._last_line = -math.inf
        super().__init__(*args, **kwargs)

    def refresh(self, nolock: bool = False, lock_args: Any = None) -> None:
        if self.disable:
            return
        now = time.time()  # tqdm's clock
        due = (self.start_t or 0.0) + (self.delay or 0.0)
        if now - self._last_line < self.mininterval or now < due:
            return
        self._last_line, self._last_n = now, self.n
        super().refresh(nolock, lock_args)

    def close(self) -> None:
        if getattr(self, "_last_n", None) == self.n:
            self.leave = False  # the last line already shows the final count
        super().close()


def is_terminal(stream: Any) -> bool:
    """Whether `stream` is an interactive terminal (a pipe, a file or a closed stream is not)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def bar(
    iterable: Iterable[Any] | None = None,
    total: float | None = None,
    desc: str | None = None,
    unit: str = "it",
    disable: bool = False,
    leave: bool = True,
    file: IO[str] | None = None,
    **kwargs: Any,
) -> tqdm[Any]:
    """A tqdm progress bar over `iterable` (or updated by hand when None) on `file` (stderr).

    On a terminal it redraws in place; elsewhere it writes a line at most every
    `LOG_INTERVAL_S` seconds and nothing for work that ends sooner. Other keyword arguments go
    to tqdm.
    """
    stream = sys.stderr if file is None else file
    common = dict(total=total, desc=desc, unit=unit, disable=disable, leave=leave, **kwargs)
    if is_terminal(stream):
        return tqdm(iterable, file=stream, **common)
    return _LogBar(
        iterable,
        file=_Lines(stream),
        mininterval=LOG_INTERVAL_S,
        delay=LOG_INTERVAL_S,
        **common,
    )
