"""A progress bar for long single-process work (`cytoray masks`, `fid`, `generate`, `train`).

Dependency-free on purpose: the commands must not pull in a UI library, and the same helper has
to behave in two places. On a terminal it redraws one line in place (`\\r`); in a log file or CI
(not a TTY) it prints a plain line at most every 10% so the log stays readable, never one line
per item. It writes to stderr: stdout stays the command's result (JSON, tables) for pipes.

    for path in progress(paths, desc="masks"):
        ...
    with Progress(total=n, desc="fid") as bar:
        bar.update(k)
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TextIO, TypeVar

T = TypeVar("T")


def fmt_seconds(s: float) -> str:
    """'0:42', '12:05', '1:02:03' (what a person reads at a glance)."""
    s = max(0, int(round(s)))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


class Progress:
    """Counts done items of `total`; shows count, percent, elapsed and the remaining time."""

    def __init__(
        self,
        total: int | None,
        desc: str = "",
        *,
        stream: TextIO | None = None,
        enabled: bool = True,
        width: int = 24,
        tty: bool | None = None,
    ) -> None:
        self.total, self.desc, self.width = total, desc, width
        self.stream = stream or sys.stderr
        # CYTORAY_PROGRESS=0 silences bars (scripts that
        # parse stderr); a closed/odd stream is not a TTY.
        self.enabled = enabled and os.environ.get("CYTORAY_PROGRESS", "1") != "0"
        self.tty = tty if tty is not None else bool(getattr(self.stream, "isatty", lambda: False)())
        self.n, self.t0, self._last_decile, self._last_draw = 0, time.perf_counter(), -1, 0.0

    # -- what it shows ------------------------------------------------------------
    def line(self) -> str:
        el = time.perf_counter() - self.t0
        head = f"{self.desc} " if self.desc else ""
        if not self.total:
            return f"{head}{self.n} done, {fmt_seconds(el)} elapsed"
        frac = min(1.0, self.n / self.total)
        bar = "#" * int(frac * self.width) + "." * (self.width - int(frac * self.width))
        eta = (
            ""
            if self.n == 0 or self.n >= self.total
            else f", {fmt_seconds(el / self.n * (self.total - self.n))} left"
        )
        return f"{head}[{bar}] {self.n}/{self.total} ({frac:.0%}), {fmt_seconds(el)} elapsed{eta}"

    def update(self, k: int = 1) -> None:
        self.n += k
        if not self.enabled:
            return
        if self.tty:
            now = time.perf_counter()
            if now - self._last_draw >= 0.1 or (
                self.total and self.n >= self.total
            ):  # redraw at most 10x a second
                self._last_draw = now
                self.stream.write("\r" + self.line() + "\x1b[K")
                self.stream.flush()
        elif self.total:
            decile = int(10 * min(self.n, self.total) / self.total)
            if decile > self._last_decile and (decile > 0 or self.n == self.total):
                self._last_decile = decile
                print(self.line(), file=self.stream, flush=True)

    def close(self) -> None:
        if self.enabled and self.tty:
            self.stream.write("\r" + self.line() + "\x1b[K\n")
            self.stream.flush()
        elif self.enabled and not self.total:
            print(self.line(), file=self.stream, flush=True)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def progress(items: Iterable[T], desc: str = "", total: int | None = None, **kw) -> Iterator[T]:
    """Yield `items`, advancing a bar after each (total from `len(items)` when it has one)."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with Progress(total, desc, **kw) as bar:
        for x in items:
            yield x
            bar.update()
