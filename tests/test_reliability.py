"""Never lose finished work: dropped websockets, server crashes, failing downloads, killed drivers,
Ctrl-C, a server gone for good. In every case all scenes complete (now or on the next run), no
output is lost, and no finished scene is submitted again."""

from __future__ import annotations

import json
import random
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from comfy_driver.comfy.client import file_sha256
from comfy_driver.config.series import load_series
from comfy_driver.pipeline.plan import SceneKey, StepKey, build_plan
from comfy_driver.pipeline.messages import ServerGone
from comfy_driver.pipeline.control import RunOptions
from comfy_driver.pipeline.supervisor import Supervisor
from comfy_driver.pipeline.state import StateStore
from comfy_driver.sim.executor import Timing
from comfy_driver.sim.server import Faults

from .simproc import SimProcess, drive, resubmitted_after_success

VIDEO_SERIES = """\
title: {title}
backend: svd
output: out
defaults: {{width: 64, height: 64, fps: 8, frames: 4, params: {{steps: 2}}}}
episodes:
  - id: one
    scenes:
      - {{id: a, prompt: first, seed: 1}}
      - {{id: b, prompt: second, seed: 2}}
  - id: two
    scenes:
      - {{id: c, prompt: third, seed: 3}}
      - {{id: d, prompt: fourth, seed: 4}}
"""
TINY_SERIES = """\
title: {title}
backend: tiny
output: out
workflows: {workflows}
episodes:
  - scenes:
      - {{id: a, seed: 1}}
      - {{id: b, seed: 2}}
      - {{id: c, seed: 3}}
"""
WORKFLOWS = Path(__file__).parent / "workflows"


def write_series(folder: Path, template: str = VIDEO_SERIES, title: str = "Reliable") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "series.yaml"
    path.write_text(template.format(title=title, workflows=WORKFLOWS))
    return path


def run(path: Path, urls: list[str], **options: Any) -> Any:
    loaded = load_series(path)
    return Supervisor(build_plan(loaded), urls, RunOptions(**options)).run()


def outputs_of(folder: Path, title: str = "reliable") -> dict[str, str]:
    root = folder / "out" / title
    return {p.relative_to(root).as_posix(): file_sha256(p) for p in sorted(root.rglob("*.mp4"))
            if not p.name.startswith(".")}


def step_key(scene: str, route: int = 0, index: int = 0) -> StepKey:
    return StepKey(SceneKey.parse(scene), route, index)


def finish_cleanly(path: Path, server: SimProcess) -> None:
    """Run the series to its end in a new driver: it must succeed without re-sending finished work."""
    final = drive("run", str(path), "--server", server.url)
    output = final.communicate(timeout=120)[0]
    assert final.returncode == 0, output
    assert resubmitted_after_success(server.stats()) == []


def test_websocket_dropped_at_random_points_over_100_runs(sim: Any, tmp_path: Path) -> None:
    rng = random.Random(7)
    for i in range(100):
        sim.faults = Faults(drop_ws_after=rng.randint(1, 30), drop_ws_times=rng.randint(1, 3))
        report = run(write_series(tmp_path / f"r{i}", TINY_SERIES, f"drop {i}"), [sim.url])
        assert [s.status for s in report.scenes] == ["done"] * 3, i
    assert len(sim.submissions) == 300 == len(set(sim.submissions))


def test_server_crash_and_restart_mid_scene(sim_factory: Any, tmp_path: Path) -> None:
    sim = sim_factory(timing=Timing(node=0.01), faults=Faults(crash_at="KSampler", crash_down_for=0.5, crash_times=1))
    report = run(write_series(tmp_path), [sim.url], depth=1)
    assert [s.status for s in report.scenes] == ["done"] * 4
    lost = [s for s in report.scenes if any(h.startswith("lost") for h in s.history)]
    assert len(lost) == 1 and lost[0].attempts == 2
    assert all(e.status == "done" for e in report.episodes)


def test_out_of_memory_is_recorded_and_does_not_stop_the_rest(sim_factory: Any, tmp_path: Path) -> None:
    sim = sim_factory(faults=Faults(error_at={"SVD_img2vid_Conditioning": "oom"}, error_times=1))
    report = run(write_series(tmp_path), [sim.url], depth=1)
    assert [s.status for s in report.scenes] == ["failed", "done", "done", "done"]
    assert report.scenes[0].error_kind == "oom" and "failed:oom" in report.scenes[0].history[-1]
    # the next run retries only the failed scene
    again = run(write_series(tmp_path), [sim.url], depth=1)
    assert [s.status for s in again.scenes] == ["done", "skipped", "skipped", "skipped"]
    assert again.scenes[0].attempts == 2


def test_out_of_memory_retries_with_the_configured_smaller_settings(sim_factory: Any, tmp_path: Path) -> None:
    sim = sim_factory(faults=Faults(error_at={"SVD_img2vid_Conditioning": "oom"}, error_times=1))
    text = VIDEO_SERIES + "on_oom: {{frames: 2, params: {{steps: 1}}}}\n"
    report = run(write_series(tmp_path, text), [sim.url], depth=1)
    assert [s.status for s in report.scenes] == ["done"] * 4
    first = report.scenes[0]
    assert any(h.startswith("fallback: oom on svd") for h in first.history), first.history
    from comfy_driver.media.ffmpeg import probe

    assert probe(tmp_path / "out" / "reliable" / first.clip).frames == 2
    assert probe(tmp_path / "out" / "reliable" / report.scenes[1].clip).frames == 4


def test_slow_and_failing_downloads(sim_factory: Any, tmp_path: Path) -> None:
    sim = sim_factory(faults=Faults(slow_view=0.2, fail_view=3))
    report = run(write_series(tmp_path), [sim.url])
    assert [s.status for s in report.scenes] == ["done"] * 4
    assert len(sim.submissions) == 4


def test_server_gone_stops_cleanly_and_the_rerun_resumes(sim: Any, tmp_path: Path) -> None:
    path = write_series(tmp_path)
    sim.faults = Faults(crash_at="VAEDecode", crash_down_for=4.0, crash_times=1)
    with pytest.raises(ServerGone, match="has not answered for"):
        run(path, [sim.url], server_timeout=1.0, depth=1)
    time.sleep(4)
    report = run(path, [sim.url])
    assert all(s.status in ("done", "skipped") for s in report.scenes)
    assert all(e.status == "done" for e in report.episodes)


def test_killed_driver_repeatedly_then_resumed_equals_a_clean_run(sim: Any, tmp_path: Path) -> None:
    """Each kill lands after the driver submitted a prompt of its own; every other one while an output is
    being downloaded (the simulator answers /view slowly then)."""
    run(write_series(tmp_path / "clean"), [sim.url])
    clean = outputs_of(tmp_path / "clean")
    assert len(clean) == 6  # four clips, two episodes
    server = SimProcess(tmp_path / "sim", time_scale=0.2)
    try:
        path = write_series(tmp_path / "killed")
        rng = random.Random(11)
        kills = {False: 0, True: 0}
        for i in range(20):
            during_download = i % 2 == 1
            server.set_faults({"slow_view": 0.4} if during_download else {})
            before = server.stats()
            proc = drive("run", str(path), "--server", server.url)
            what = "finished" if during_download else "submissions"
            if not server.wait_for_more(what, len(before[what]), proc):
                break  # the driver finished everything before anything new happened
            time.sleep(rng.uniform(0.0, 0.3 if during_download else 0.5))
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills[during_download] += 1
        assert kills[False] >= 2 and kills[True] >= 1, kills
        server.set_faults({})
        finish_cleanly(path, server)
        assert outputs_of(tmp_path / "killed") == clean
    finally:
        server.stop()


def test_ctrl_c_finishes_the_running_scene_and_unqueues_the_rest(tmp_path: Path) -> None:
    server = SimProcess(tmp_path / "sim", time_scale=1.0)
    try:
        path = write_series(tmp_path / "run")
        proc = drive("run", str(path), "--server", server.url, "--depth", "3")
        server.wait_until_running()
        deadline = time.time() + 10
        while not server.queue()["queue_pending"] and time.time() < deadline:  # the next ones follow at once
            time.sleep(0.01)
        assert server.queue()["queue_pending"], "queue-ahead should have put more on the server"
        proc.send_signal(signal.SIGINT)
        output = proc.communicate(timeout=60)[0]
        assert proc.returncode == 130, output
        assert "run the same command again to resume" in output and "Traceback" not in output
        assert server.queue() == {"queue_running": [], "queue_pending": []}
        state = StateStore(tmp_path / "run" / "out" / "reliable" / "state.db")
        statuses = [state.step(step_key(k)).status for k in ("one/a", "one/b", "two/c", "two/d")]
        state.close()
        assert statuses[0] == "done" and set(statuses[1:]) == {"pending"}
        finish_cleanly(path, server)
    finally:
        server.stop()


def test_second_ctrl_c_interrupts_the_running_scene(tmp_path: Path) -> None:
    server = SimProcess(tmp_path / "sim", time_scale=3.0)
    try:
        path = write_series(tmp_path / "run")
        proc = drive("run", str(path), "--server", server.url)
        server.wait_until_running()
        proc.send_signal(signal.SIGINT)
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        output = proc.communicate(timeout=60)[0]
        assert proc.returncode == 130, output
        statuses = [f["status"] for f in server.stats()["finished"]]
        assert statuses == ["error"]  # interrupted, not finished
        state = StateStore(tmp_path / "run" / "out" / "reliable" / "state.db")
        assert state.step(step_key("one/a")).status == "pending"
        state.close()
    finally:
        server.stop()


@pytest.mark.slow
def test_soak_200_scenes_with_random_faults(sim_factory: Any, tmp_path: Path) -> None:
    """python -m pytest -m slow tests/test_reliability.py -s  (prints completed / lost / duplicated)

    A chaos thread keeps changing the simulator's faults while the series runs: dropped websockets,
    out-of-memory errors, failing downloads, and crashes (queue and history lost). A run that stops
    (a failed scene, a crash outlasting the timeout) is simply run again, as a user would.
    """
    import threading

    rng = random.Random(2026)
    sim = sim_factory(timing=Timing(node=0.02))
    lines = ["title: Soak", "backend: tiny", "output: out", f"workflows: {WORKFLOWS}", "episodes:", "  - scenes:"]
    lines += [f"      - {{id: s{i:03d}, seed: {i}}}" for i in range(200)]
    path = tmp_path / "series.yaml"
    path.write_text("\n".join(lines) + "\n")
    done = threading.Event()
    crashes = 0

    def chaos() -> None:
        # A crash never follows a websocket drop within a second: a prompt that ends while the
        # driver's socket is down and whose server then dies before the driver asks cannot be told
        # apart from one that never ran (nothing of it is left to ask), and is rendered again.
        nonlocal crashes
        last_drop = 0.0
        while not done.wait(rng.uniform(0.05, 0.25)):
            roll = rng.random()
            if roll < 0.08 and time.monotonic() - last_drop > 1.0:
                crashes += 1
                sim.crash(rng.uniform(0.1, 0.5))
            else:
                if roll < 0.2:
                    last_drop = time.monotonic()
                sim.faults = Faults(drop_ws_after=rng.randint(3, 40) if roll < 0.2 else None, drop_ws_times=1,
                                    error_at={"SaveImage": "oom"} if roll > 0.9 else {}, error_times=1,
                                    fail_view=rng.randint(0, 2))

    thread = threading.Thread(target=chaos, daemon=True)
    thread.start()
    report, runs = None, 0
    try:
        for _ in range(30):
            runs += 1
            try:
                report = run(path, [sim.url], server_timeout=5)
            except ServerGone:
                continue
            if all(s.status in ("done", "skipped") for s in report.scenes):
                break
    finally:
        done.set()
        thread.join()
    assert report is not None
    completed = sum(s.status in ("done", "skipped") for s in report.scenes)
    files = sum(1 for s in report.scenes for o in s.outputs if (tmp_path / "out" / "soak" / o.path).is_file())
    duplicated = len(resubmitted_after_success({"submissions": sim.submission_log, "finished": sim.finished_log}))
    failures = sum(f["status"] == "error" for f in sim.finished_log)
    print(json.dumps({"completed": completed, "lost": 200 - files, "duplicated": duplicated, "runs": runs,
                      "crashes": crashes, "submissions": len(sim.submission_log), "failed_executions": failures}))
    assert (completed, 200 - files, duplicated) == (200, 0, 0)
