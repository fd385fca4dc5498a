"""The live status line on a real terminal (a pseudo-terminal): it stays one line however narrow the
window, its clock moves between server events, its count of prompts left covers every window and
stage, and what is printed after it (a message, a stop) starts on a line of its own."""

from __future__ import annotations

import fcntl
import io
import os
import pty
import select
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path
from typing import Any

from comfy_driver.config.series import load_series
from comfy_driver.pipeline.control import RunOptions
from comfy_driver.pipeline.plan import build_plan
from comfy_driver.pipeline.progress import Progress, cells
from comfy_driver.pipeline.supervisor import Supervisor
from comfy_driver.sim.executor import Timing

from .simproc import SimProcess
from .test_plan import wan_example
from .test_reliability import TINY_SERIES, WORKFLOWS, write_series


def set_width(fd: int, columns: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))


def read_all(fd: int) -> str:
    """What the terminal has been sent so far."""
    chunks = []
    while select.select([fd], [], [], 0.05)[0]:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # the other side is closed
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks).decode("utf-8")


def screen(text: str, columns: int) -> tuple[list[str], int, int]:
    """A terminal of `columns` columns shown `text`: its rows, how often a line wrapped, and the most
    cells written between two returns to the first column."""
    rows: list[list[str]] = [[]]
    col = wraps = widest = 0
    for ch in text:
        if ch == "\r":
            col = 0
        elif ch == "\n":
            rows.append([])
            col = 0
        else:
            width = cells(ch)
            if col + width > columns:  # the cursor passed the last column: the terminal wraps
                wraps += 1
                rows.append([])
                col = 0
            row = rows[-1]
            row.extend(" " * (col + width - len(row)))
            row[col:col + width] = [ch] + [""] * (width - 1)
            col += width
            widest = max(widest, col)
    return ["".join(r).rstrip() for r in rows], wraps, widest


def test_a_redraw_never_wraps_in_a_narrow_terminal() -> None:
    master, slave = pty.openpty()
    set_width(slave, 30)
    stream = os.fdopen(slave, "w", encoding="utf-8", closefd=True)
    try:
        progress = Progress(12, stream=stream)
        progress.prompt_seconds, progress.prompts_left = [95.0], 30
        assert progress.tty
        long_key = "episode-with-a-long-id/scene-with-a-long-id:2-upscale"
        for step in range(1, 6):
            progress.update(3, long_key, "WanVideo Sampler", (step, 20), time.time() - 75)
        progress.update(3, long_key, "采样器 ノード 第二段", (6, 20), time.time() - 80)  # two cells a character
        progress.tick()
        text = read_all(master)
        rows, wraps, widest = screen(text, 30)
        assert wraps == 0 and widest <= 29, rows
        assert len(rows) == 1 and rows[0].startswith("scene 3/12 episode-with-a"), rows

        progress.message("scene 3/12 done")  # a message clears the line and takes one of its own
        progress.update(4, long_key, "Upscale", None, time.time())
        rows, wraps, widest = screen(read_all(master), 30)
        assert wraps == 0 and widest <= 29 and rows[0] == "scene 3/12 done", rows

        set_width(slave, 12)  # the window narrowed while the run goes on
        for _ in range(3):
            progress.tick()
        progress.end()
        rows, wraps, widest = screen(read_all(master), 12)
        assert wraps == 0 and widest <= 11, rows
        assert rows == [""]  # end() left the cursor on an empty line
    finally:
        stream.close()
        os.close(master)


class FakeTerminal(io.StringIO):
    """A stream that says it is a terminal (of the COLUMNS the test sets)."""

    def isatty(self) -> bool:
        return True


def test_the_clock_moves_between_server_events(sim_factory: Any, tmp_path: Path, monkeypatch: Any) -> None:
    """A node that runs 2.3 s sends no event meanwhile; the status line is redrawn with the time anyway."""
    monkeypatch.setenv("COLUMNS", "200")
    sim = sim_factory(timing=Timing(per_class={"EmptyImage": 2.3}))
    path = write_series(tmp_path, TINY_SERIES.replace("      - {{id: b, seed: 2}}\n      - {{id: c, seed: 3}}\n", ""))
    stream = FakeTerminal()
    progress = Progress(1, stream=stream)
    report = Supervisor(build_plan(load_series(path)), [sim.url], RunOptions(), progress=progress).run()
    assert report.complete
    drawn = [s.strip() for s in stream.getvalue().split("\r") if " | Canvas | " in s]
    clocks = {part for s in drawn for part in s.split(" | ") if part.endswith(" elapsed")}
    assert len(clocks) >= 3, drawn  # its first draw, then a redraw each second


class CountingProgress(Progress):
    def __init__(self, total: int) -> None:
        super().__init__(total, enabled=False)
        self.left_before: list[int] = []

    def prompt_done(self, seconds: float | None) -> None:
        self.left_before.append(self.prompts_left)
        super().prompt_done(seconds)


def test_the_prompts_left_count_every_window_and_stage(sim: Any, tmp_path: Path) -> None:
    """The bundled Animate episode: 'dance' is one window + denoise + upscale, 'wave' two windows +
    denoise + upscale; the ETA counts all seven prompts from the start."""
    plan = build_plan(load_series(wan_example(tmp_path)))
    progress = CountingProgress(len(plan.scenes))
    report = Supervisor(plan, [sim.url], RunOptions(), progress=progress).run()
    assert report.complete
    assert progress.left_before == [7, 6, 5, 4, 3, 2, 1]


def test_ctrl_c_twice_on_a_terminal_prints_the_stop_on_its_own_line(tmp_path: Path) -> None:
    server = SimProcess(tmp_path / "sim", time_scale=3.0)
    master, slave = pty.openpty()
    set_width(slave, 100)
    try:
        path = write_series(tmp_path / "run")
        proc = subprocess.Popen([sys.executable, "-m", "comfy_driver.cli", "run", str(path), "--server", server.url],
                                stdin=subprocess.DEVNULL, stdout=slave, stderr=slave)
        os.close(slave)
        output: list[bytes] = []

        def pump() -> None:  # keep the terminal drained, as a terminal does
            while True:
                if select.select([master], [], [], 0.1)[0]:
                    try:
                        chunk = os.read(master, 65536)
                    except OSError:  # every writer is gone
                        return
                    if not chunk:
                        return
                    output.append(chunk)
                elif proc.poll() is not None:
                    return

        reader = threading.Thread(target=pump)
        reader.start()
        server.wait_until_running()
        deadline = time.time() + 30
        while b"elapsed" not in b"".join(output) and time.time() < deadline:  # the status line is drawn
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 130
        reader.join(timeout=10)
        text = b"".join(output).decode("utf-8").replace("\r\n", "\n")
        rows, wraps, _ = screen(text, 100)
        assert "elapsed" in text and wraps == 0, rows
        assert rows[0].startswith("stopping: nothing more is queued"), rows
        assert rows[1] == "interrupting the running scene", rows
        assert rows[2].startswith("Reliable: 0 scene(s) rendered"), rows  # the summary
        assert rows[-2] == "stopped: stopped by the user; run the same command again to resume", rows
        assert not any("elapsed" in r or "error:" in r for r in rows), rows  # a stop the user asked for is no error
    finally:
        os.close(master)
        server.stop()


def test_the_upload_bar_never_wraps_in_a_narrow_terminal(monkeypatch: Any) -> None:
    from comfy_driver.cli.publish import UploadBar

    master, slave = pty.openpty()
    set_width(slave, 40)
    stream = os.fdopen(slave, "w", encoding="utf-8", closefd=True)
    try:
        monkeypatch.setattr(sys, "stderr", stream)
        bar = UploadBar()
        assert bar.tty
        total = 3_000_000_000
        for sent in (0, 1_000_000, 1_500_000_000, total):
            bar("episode-with-a-long-id", sent, total)
        stream.flush()
        rows, wraps, widest = screen(read_all(master), 40)
        assert wraps == 0 and widest <= 39, rows
        assert len(rows) == 2 and rows[0].startswith("episode episode-with-a-long-id: upl") and rows[1] == "", rows
    finally:
        stream.close()
        os.close(master)
