"""Live progress of a run: scene i/n, node, sampler step, elapsed and ETA.

On a terminal one status line is redrawn in place; elsewhere (CI logs, pipes) a line is printed
only when a scene starts a new node, so logs stay readable.

The status line is cut to the width of the terminal it is written to, asked again at each redraw
(a window can be narrowed while a run goes on), counting the cells each character takes (a CJK node
title takes two a character): a line that reached the last column would wrap, and every redraw
would then leave a line behind.
"""

from __future__ import annotations

import bisect
import os
import shutil
import sys
import threading
import time
import unicodedata
from typing import TextIO

from comfy_driver.units import fmt_seconds


class Progress:
    def __init__(self, total: int, *, stream: TextIO | None = None, enabled: bool = True) -> None:
        self.total = total
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = enabled and self.stream.isatty()
        self.started = time.monotonic()
        self.finished = 0
        self.scene_seconds: list[float] = []
        self.prompts_left = 0  # prompts still to render (every window, stage and step), when known
        self.prompt_seconds: list[float] = []  # sorted
        self._lock = threading.Lock()
        self._drawn = 0  # the cells of the status line on screen
        self._last_key: tuple[str, str] | None = None
        self._last_update: tuple[int, str, str, tuple[float, float] | None, float | None] | None = None

    def eta(self, running_fraction: float = 0.0) -> float | None:
        """The time left: prompts left (windows and stages included) times a prompt's median time; or,
        when prompts are not counted, scenes left times a scene's median time."""
        if self.prompt_seconds:
            median = self.prompt_seconds[len(self.prompt_seconds) // 2]
            return max(0.0, (self.prompts_left - running_fraction) * median)
        if not self.scene_seconds:
            return None
        avg = sorted(self.scene_seconds)[len(self.scene_seconds) // 2]
        return max(0.0, (self.total - self.finished - running_fraction) * avg)

    def prompt_done(self, seconds: float | None) -> None:
        with self._lock:
            self.prompts_left = max(0, self.prompts_left - 1)
            if seconds is not None:
                bisect.insort(self.prompt_seconds, seconds)  # kept sorted: the ETA reads its median

    def update(self, index: int, key: str, node: str, step: tuple[float, float] | None, scene_start: float | None) -> None:
        if not self.enabled:
            return
        self._last_update = (index, key, node, step, scene_start)
        if not self.tty and (key, node) == self._last_key:  # a log gets a line per node, not per event
            return
        now = time.monotonic()
        parts = [f"scene {index}/{self.total} {key}"]
        if node:
            parts.append(node + (f" step {int(step[0])}/{int(step[1])}" if step and step[1] else ""))
        if scene_start is not None:
            parts.append(f"{fmt_seconds(time.time() - scene_start)} in scene")
        parts.append(f"{fmt_seconds(now - self.started)} elapsed")
        frac = step[0] / step[1] if step and step[1] else 0.0
        eta = self.eta(frac)
        if eta is not None:
            parts.append(f"ETA {fmt_seconds(eta)}")
        line = " | ".join(parts)
        with self._lock:
            if self.tty:
                text, self._drawn = redrawn(line, self._drawn, self.stream)  # one line, however narrow
                self.stream.write(text)
                self.stream.flush()
            elif (key, node) != self._last_key:
                self._last_key = (key, node)
                self.stream.write(line + "\n")
                self.stream.flush()

    def _clear(self) -> None:
        if self.tty and self._drawn:
            self.stream.write("\r" + " " * min(self._drawn, room(self.stream)) + "\r")
            self._drawn = 0

    def tick(self) -> None:
        """Redraw the status line so the clock moves between server events (on a terminal)."""
        if self.tty and self._last_update is not None:
            self.update(*self._last_update)

    def end(self) -> None:
        """Clear the status line, so what is printed next starts on a line of its own."""
        with self._lock:
            self._clear()
            self.stream.flush()
        self._last_update = None

    def message(self, text: str) -> None:
        if not self.enabled:
            return
        with self._lock:
            self._clear()
            self.stream.write(text + "\n")
            self.stream.flush()

    def scene_done(self, seconds: float | None) -> None:
        with self._lock:
            self.finished += 1
            if seconds is not None:
                self.scene_seconds.append(seconds)


def room(stream: TextIO) -> int:
    """The cells a status line on `stream` may take: its terminal's width less one (the last column
    wraps); asked at each redraw, since a window can be narrowed while a run goes on."""
    try:
        columns = os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, OSError, ValueError):  # no file descriptor (a wrapper), or not a terminal
        columns = shutil.get_terminal_size().columns
    return max(1, columns - 1)


def redrawn(line: str, drawn: int, stream: TextIO) -> tuple[str, int]:
    """What redraws the status line on `stream` as `line` (cut to its terminal's width, blanking what is
    left of the `drawn` cells of the line before), and the cells the new line takes."""
    width = room(stream)
    line = fit(line, width)
    now = cells(line)
    return "\r" + line + " " * max(0, min(drawn, width) - now), now


def cells(text: str) -> int:
    """The terminal cells text takes: two for a wide (East Asian) character, none for a combining one."""
    return sum(_cells(c) for c in text)


def fit(text: str, width: int) -> str:
    """text on one line (a control character in a node's title becomes a space), cut to `width` cells."""
    text = "".join(c if c.isprintable() else " " for c in text)
    if len(text) * 2 <= width:  # the common case: surely fits, whatever its characters
        return text
    used = 0
    for i, c in enumerate(text):
        used += _cells(c)
        if used > width:
            return text[:i]
    return text


def _cells(c: str) -> int:
    if unicodedata.combining(c):
        return 0
    return 2 if unicodedata.east_asian_width(c) in ("W", "F") else 1
