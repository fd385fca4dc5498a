"""State that can be rebuilt: with state.db lost or damaged mid-series, a rerun re-attaches to what the
server still holds (deterministic prompt ids, /history, /queue) and to clips on disk whose recorded
hashes match; nothing finished is rendered again. Outputs are identified by node, subfolder and name."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import pytest

from comfy_driver.config.series import load_series
from comfy_driver.pipeline.plan import build_plan
from comfy_driver.pipeline.supervisor import Supervisor

from .simproc import SimProcess, drive, resubmitted_after_success
from .test_reliability import outputs_of, write_series


def _lose(db: Path, how: str) -> None:
    """Delete the state (with its journal), or leave garbage where it was (a journal would repair it)."""
    for suffix in ("", "-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    if how == "corrupted":
        db.write_bytes(b"this is not a database" * 100)


@pytest.mark.parametrize("how", ["deleted", "corrupted"])
def test_state_lost_mid_series_renders_nothing_again(tmp_path: Path, how: str) -> None:
    server = SimProcess(tmp_path / "sim", time_scale=0.2)
    try:
        path = write_series(tmp_path / "run")
        db = tmp_path / "run" / "out" / "reliable" / "state.db"
        for _ in range(2):  # twice in one series: after the first scene, then later again
            before = len(server.stats()["finished"])
            proc = drive("run", str(path), "--server", server.url, "--depth", "3")
            if not server.wait_for_more("finished", before, proc):
                break
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            _lose(db, how)
        _lose(db, how)
        final = drive("run", str(path), "--server", server.url)
        output = final.communicate(timeout=120)[0]
        assert final.returncode == 0, output
        if how == "corrupted":
            assert "is damaged" in output and "nothing finished is rendered again" in output
            assert list(db.parent.glob("state.db.damaged-*"))
        stats = server.stats()
        assert resubmitted_after_success(stats) == []
        succeeded = [f["graph"] for f in stats["finished"] if f["status"] == "success"]
        assert len(succeeded) == len(set(succeeded)) == 4  # each scene rendered exactly once
        assert len(outputs_of(tmp_path / "run")) == 6
        _lose(db, how)  # lost once more after the end: the clips on disk are recognised by their hashes
        again = drive("run", str(path), "--server", server.url)
        output = again.communicate(timeout=120)[0]
        assert again.returncode == 0, output
        assert len(server.stats()["submissions"]) == len(stats["submissions"])
    finally:
        server.stop()


TWO_SAVES = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 32, "height": 32, "batch_size": 1, "color": 255},
          "_meta": {"title": "Blank"}},
    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "a/x"}, "_meta": {"title": "A"}},
    "3": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
    "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "b/x"}, "_meta": {"title": "B"}},
}


def test_two_outputs_with_the_same_file_name_coexist(sim: Any, tmp_path: Path) -> None:
    workflows = tmp_path / "wf"
    workflows.mkdir()
    (workflows / "twosaves.json").write_text(json.dumps(TWO_SAVES))
    path = tmp_path / "series.yaml"
    path.write_text(f"title: Two Saves\nbackend: twosaves\noutput: out\nworkflows: {workflows}\n"
                    "episodes:\n  - scenes:\n      - {id: a}\n")
    report = Supervisor(build_plan(load_series(path)), [sim.url]).run()
    (scene,) = report.scenes
    assert scene.status == "done", scene.error
    paths = sorted(o.path for o in scene.outputs)
    assert paths == ["ep01/a/a/x_00001_.png", "ep01/a/b/x_00001_.png"]
    assert sorted(o.node_id for o in scene.outputs) == ["2", "4"]
    root = tmp_path / "out" / "two-saves"
    for out in scene.outputs:  # each is the file its own node wrote on the server
        subfolder = "a" if out.node_id == "2" else "b"
        assert (root / out.path).read_bytes() == (sim.root / "output" / subfolder / "x_00001_.png").read_bytes()
    again = Supervisor(build_plan(load_series(path)), [sim.url]).run()
    assert [s.status for s in again.scenes] == ["skipped"] and len(sim.submissions) == 1
