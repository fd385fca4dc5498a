"""A full disk and a read-only folder, for real: the output folder on a small tmpfs (needs the right to
mount one, as root in a container; skipped elsewhere). One clear message, no thread traceback, and
everything finished is kept: the next run renders nothing again."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.simproc import SimProcess, drive, resubmitted_after_success

SERIES = """\
title: Full Disk
backend: svd
output: disk/out
defaults: {width: 64, height: 64, fps: 8, frames: 4, params: {steps: 2}}
episodes:
  - id: one
    scenes:
      - {id: a, prompt: first, seed: 1}
      - {id: b, prompt: second, seed: 2}
      - {id: c, prompt: third, seed: 3}
  - id: two
    scenes:
      - {id: d, prompt: fourth, seed: 4}
      - {id: e, prompt: fifth, seed: 5}
      - {id: f, prompt: sixth, seed: 6}
"""


def _mount(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["mount", *args], capture_output=True, text=True, check=False)


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    """tmp_path/disk: a small file system of its own (a clip is about 12 KiB)."""
    point = tmp_path / "disk"
    point.mkdir()
    try:
        mounted = _mount("-t", "tmpfs", "-o", "size=8m", "tmpfs", str(point))
    except FileNotFoundError:
        pytest.skip("needs mount(8)")
    if mounted.returncode != 0:
        pytest.skip(f"needs the right to mount a small tmpfs ({mounted.stderr.strip()})")
    yield point
    subprocess.run(["umount", "-l", str(point)], check=False)


def _run(tmp_path: Path, sim: SimProcess) -> tuple[int, str]:
    """`comfy-drive run series.yaml` as its own process: (exit status, output, checked for tracebacks)."""
    proc = drive("run", "series.yaml", "--server", sim.url, cwd=tmp_path)
    out, _ = proc.communicate(timeout=120)
    assert "Traceback" not in out and "Exception in thread" not in out, out
    return proc.returncode, out


def test_a_full_disk_stops_with_one_message_and_keeps_what_is_finished(tmp_path: Path, disk: Path) -> None:
    first_episode = SERIES.split("  - id: two")[0]
    (tmp_path / "series.yaml").write_text(first_episode)
    sim = SimProcess(tmp_path / "sim", time_scale=0.02)
    try:
        code, out = _run(tmp_path, sim)
        assert code == 0, out
        finished = {p: p.read_bytes() for p in disk.rglob("*.mp4")}
        (tmp_path / "series.yaml").write_text(SERIES)
        free = subprocess.run(["df", "--output=avail", "-B1", str(disk)], capture_output=True, text=True)
        ballast = int(free.stdout.split()[-1]) - 96 * 1024  # room for about one more scene
        with open(disk / "ballast", "wb") as fh:
            fh.write(b"\0" * ballast)
        code, out = _run(tmp_path, sim)
        assert code == 1, out
        errors = [line for line in out.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1 and "no space left while writing" in errors[0], out
        assert "finished files are kept" in errors[0] and out.count("no space left") == 1, out
        assert {p: p.read_bytes() for p in finished} == finished
        (disk / "ballast").unlink()
        code, out = _run(tmp_path, sim)
        assert code == 0, out
        stats = sim.stats()
        assert resubmitted_after_success(stats) == []
        assert len({s["graph"] for s in stats["submissions"]}) == 6
        assert {p: p.read_bytes() for p in finished} == finished
    finally:
        sim.stop()


def test_a_read_only_folder_is_one_clear_message(tmp_path: Path, disk: Path) -> None:
    (tmp_path / "series.yaml").write_text(SERIES)
    sim = SimProcess(tmp_path / "sim", time_scale=0.02)
    try:
        code, out = _run(tmp_path, sim)
        assert code == 0, out
        before = {p: p.read_bytes() for p in disk.rglob("*.mp4")}
        assert _mount("-o", "remount,ro", str(disk)).returncode == 0
        (tmp_path / "series.yaml").write_text(SERIES + "      - {id: g, prompt: seventh, seed: 7}\n")
        code, out = _run(tmp_path, sim)
        assert code == 2, out
        assert out.startswith("error: cannot write ") and "the file system is read-only" in out, out
        assert {p: p.read_bytes() for p in disk.rglob("*.mp4")} == before
        assert _mount("-o", "remount,rw", str(disk)).returncode == 0
        code, out = _run(tmp_path, sim)
        assert code == 0, out
        stats = sim.stats()
        assert resubmitted_after_success(stats) == [] and len(stats["submissions"]) == 7
    finally:
        sim.stop()
