"""One run per output folder (two real processes), one series per output folder."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from comfy_driver.cli import main
from comfy_driver.errors import UserError
from comfy_driver.pipeline.outlock import FolderBusy, claim_output
from tests.simproc import SimProcess, drive
from tests.test_run import SERIES, series_file


def test_a_second_claim_is_refused_naming_the_holder(tmp_path: Path) -> None:
    with claim_output(tmp_path / "out", series="A"):
        note = json.loads((tmp_path / "out" / ".lock").read_text())
        assert note["pid"] == os.getpid()
        with pytest.raises(FolderBusy, match=f"in use by another run: pid {os.getpid()} on "):
            with claim_output(tmp_path / "out", series="A"):
                pass
    with claim_output(tmp_path / "out", series="A"):  # released at the end
        pass


def test_the_note_never_holds_credentials(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setattr(sys, "argv", ["comfy-drive", "run", "s.yaml", "--server", "https://me:s3cret@gpu.example/c"])
    with claim_output(tmp_path / "out"):
        note = (tmp_path / "out" / ".lock").read_text()
    assert "s3cret" not in note and "https://gpu.example/c" in note


def test_a_killed_holder_leaves_no_stale_lock(tmp_path: Path) -> None:
    folder = tmp_path / "out"
    code = ("import sys, time; from pathlib import Path; from comfy_driver.pipeline.outlock import claim_output\n"
            "with claim_output(Path(sys.argv[1])):\n    print('held', flush=True); time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(folder)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    with pytest.raises(FolderBusy, match=f"pid {proc.pid}"):
        with claim_output(folder):
            pass
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    with claim_output(folder):
        pass


def test_titles_that_make_the_same_folder_name_do_not_share_it(tmp_path: Path) -> None:
    first = series_file(tmp_path, SERIES.replace("title: Run Test", "title: Fox Story!"))
    assert CliRunner().invoke(main, ["run", str(first), "--simulate", "instant"]).exit_code == 0
    clip = tmp_path / "out" / "fox-story" / "one" / "a" / "clip.mp4"
    before = clip.read_bytes()
    second = series_file(tmp_path, SERIES.replace("title: Run Test", "title: fox-story")
                         .replace("first scene", "another scene"))
    result = CliRunner().invoke(main, ["run", str(second), "--simulate", "instant"])
    assert result.exit_code == 2, result.output
    assert "holds the output of another series, 'Fox Story!'" in result.output
    assert "Traceback" not in result.output
    assert clip.read_bytes() == before


def test_a_folder_of_a_corrupt_identity_is_not_taken_over(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "series.json").write_text("[1, 2")
    with pytest.raises(UserError, match="not a series record"):
        with claim_output(tmp_path / "out", series="A"):
            pass


def _running(tmp_path: Path) -> tuple[SimProcess, Path, subprocess.Popen[str]]:
    """A simulator and a `run` of the test series on it, once that run holds its output folder."""
    sim = SimProcess(tmp_path / "sim", time_scale=0.05)
    path = series_file(tmp_path)
    first = drive("run", str(path), "--server", sim.url, cwd=tmp_path)
    note = tmp_path / "out" / "run-test" / ".lock"  # holds the holder's note for the whole run
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (note.is_file() and note.stat().st_size):
        time.sleep(0.005)
    return sim, path, first


def test_two_runs_of_one_series_at_once(tmp_path: Path) -> None:
    """The second run exits 2 naming the first; nothing is rendered twice; the first finishes."""
    sim, path, first = _running(tmp_path)
    try:
        first.send_signal(signal.SIGSTOP)  # mid-run, however slowly the second one starts
        second = drive("run", str(path), "--server", sim.url, cwd=tmp_path)
        out_second, _ = second.communicate(timeout=60)
        first.send_signal(signal.SIGCONT)
        out_first, _ = first.communicate(timeout=120)
        assert second.returncode == 2, out_second
        assert f"is in use by another run: pid {first.pid} on " in out_second
        assert "Traceback" not in out_second
        assert first.returncode == 0, out_first
        stats: dict[str, Any] = sim.stats()
        graphs = [s["graph"] for s in stats["submissions"]]
        assert len(graphs) == 3 and len(set(graphs)) == 3
        third = drive("run", str(path), "--server", sim.url, cwd=tmp_path)  # the lock was released
        assert third.wait(60) == 0
        assert len(sim.stats()["submissions"]) == 3
    finally:
        sim.stop()


def test_a_killed_run_leaves_the_folder_free(tmp_path: Path) -> None:
    """A run killed with SIGKILL holds nothing: the next run starts at once and resumes."""
    sim, path, first = _running(tmp_path)
    try:
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        started = time.monotonic()
        again = drive("run", str(path), "--server", sim.url, cwd=tmp_path)
        out, _ = again.communicate(timeout=120)
        assert again.returncode == 0, out
        assert time.monotonic() - started < 60
    finally:
        sim.stop()
