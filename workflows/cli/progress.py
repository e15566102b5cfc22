"""Progress of a long command on stderr: a line redrawn in place on a terminal, whole lines at
most every few seconds in a log."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

LOG_INTERVAL_S = 5.0  # a log or CI gets a progress line at most this often
BAR = 20  # characters of the bar drawn on a terminal


class ProgressPrinter:
    """A ``progress(fraction, what)`` for a command: ``name:  42% what``. On a terminal one line
    redrawn in place, with a bar (``name: |████████▌           |  42% what``); to a file or a pipe (a log, CI) whole lines, the first at once and then at most
    one every ``interval`` seconds: a training log was thousands of carriage-return updates on one line.
    :meth:`finish` ends it: the terminal's line is cleared (or kept), a log gets the latest state."""

    def __init__(self, name: str, *, stream: TextIO | None = None, width: int = 80,
                 interval: float = LOG_INTERVAL_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.name, self.width, self.interval, self.clock = name, width, interval, clock
        self._stream = stream
        self._last: float | None = None  # when a log line was last written
        self._pending = ""  # a log's latest text not written yet
        self._drawn = False  # a terminal line is showing

    @property
    def stream(self) -> TextIO:
        return self._stream if self._stream is not None else sys.stderr  # sys.stderr as it is at each call

    @property
    def tty(self) -> bool:
        isatty = getattr(self.stream, "isatty", None)
        return bool(isatty and isatty())

    @property
    def _line(self) -> int:
        return len(self.name) + self.width + 7 + BAR + 3

    def __call__(self, fraction: float, what: str) -> None:
        text = f"{self.name}: {fraction:4.0%} {what[:self.width]}"
        if self.tty:
            filled = min(max(fraction, 0.0), 1.0) * BAR
            bar = "█" * int(filled) + ("▌" if filled - int(filled) >= 0.5 else "")
            text = f"{self.name}: |{bar:<{BAR}}| {fraction:4.0%} {what[:self.width]}"
            print(f"\r{text:<{self._line}}", end="", file=self.stream, flush=True)
            self._drawn = True
            return
        now = self.clock()
        if self._last is not None and now - self._last < self.interval:
            self._pending = text
            return
        print(text, file=self.stream, flush=True)
        self._last, self._pending = now, ""

    def finish(self, *, keep: bool = False) -> None:
        """The end of this progress: a terminal's line cleared (ended with a newline when ``keep``),
        a log's latest state written if the rate limit held it back."""
        if self.tty:
            if self._drawn:
                end = "\n" if keep else "\r" + " " * self._line + "\r"
                print(end, end="", file=self.stream, flush=True)
        elif self._pending:
            print(self._pending, file=self.stream, flush=True)
        self._drawn, self._pending, self._last = False, "", None
