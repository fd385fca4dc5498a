"""Mixed pools: native simulators and API v2 targets (the real comfy-api-proxy, a fake Cloud) render one
series together; a target that goes away or runs out of credits loses nothing; a driver killed while
submitting to or downloading from a v2 target re-attaches to its job."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from click.testing import CliRunner

from comfy_driver import run_series
from comfy_driver.cli import main
from comfy_driver.media.ffmpeg import ffmpeg_exe
from comfy_driver.pipeline.control import RunOptions
from comfy_driver.sim.executor import Timing

from .fakecloud import KEY, FakeCloud
from .simproc import SimProcess

ROOT = Path(__file__).resolve().parents[1]
HEAD = """\
title: Pool Test
backend: svd
output: out
defaults: {width: 64, height: 64, fps: 8, frames: 4, params: {steps: 2}}
episodes:
"""


def many_scenes(tmp_path: Path, episodes: int, per_episode: int) -> Path:
    lines = [HEAD]
    for e in range(episodes):
        lines.append(f"  - id: e{e}\n    scenes:\n")
        lines += [f"      - {{id: s{s}, prompt: scene {e}-{s}, seed: {100 * e + s}}}\n" for s in range(per_episode)]
    path = tmp_path / "series.yaml"
    path.write_text("".join(lines), encoding="utf-8")
    return path


def successes(log: list[dict[str, Any]]) -> list[str]:
    return [f["graph"] for f in log if f["status"] == "success"]


def test_a_mixed_pool_keeps_every_target_busy_and_a_killed_one_loses_nothing(tmp_path: Path, behind_proxy: Any) -> None:
    natives = [SimProcess(tmp_path / f"n{i}", time_scale=0.02) for i in range(2)]
    sim, proxy = behind_proxy(Timing.realistic(0.02))
    path = many_scenes(tmp_path, 3, 10)
    killed: dict[str, Any] = {}

    def kill_the_first_after_two() -> None:
        while len(successes(natives[0].stats()["finished"])) < 2:
            time.sleep(0.02)
        killed["before"] = natives[0].stats()
        natives[0].proc.kill()

    killer = threading.Thread(target=kill_the_first_after_two, daemon=True)
    killer.start()
    try:
        report = run_series(path, servers=[n.url for n in natives] + [f"v2+{proxy.url}"],
                            options=RunOptions(move_after=0.3, server_timeout=60))
    finally:
        for n in natives[1:]:
            survivor = n.stats()
            n.stop()
    killer.join(5)
    assert "before" in killed
    assert report.complete, report.summary()
    assert len(report.scenes) == 30 and all(s.status == "done" and s.clip for s in report.scenes)
    by_target = {t.name: t for t in report.targets}
    assert [t.status for t in report.targets] == ["gone", "open", "open"]
    assert report.targets[0].scenes >= 1 and all(t.scenes >= 5 for t in report.targets[1:]), report.targets
    assert sum(t.scenes for t in report.targets) == 30
    assert by_target[f"v2+{proxy.url}"].api == "v2" and by_target[f"v2+{proxy.url}"].seconds > 0
    # nothing rendered twice where the run saw it finish: each surviving target made exactly its scenes
    assert len(successes(survivor["finished"])) == by_target[natives[1].url].prompts
    assert len(successes(sim.finished_log)) == by_target[f"v2+{proxy.url}"].prompts
    from_dead = {s.key for s in report.scenes if s.server == natives[0].url}
    assert from_dead and len(from_dead) <= len(successes(killed["before"]["finished"])) + 2
    moved = [s for s in report.scenes if any(h.startswith("moved:") for h in s.history)]
    assert moved and all(s.server != natives[0].url for s in moved)
    assert all((tmp_path / "out" / "pool-test" / f"e{e}" / f"e{e}.mp4").is_file() for e in range(3))


def _clip(tmp_path: Path) -> bytes:
    out = tmp_path / "cloud.mp4"
    subprocess.run([ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i", "testsrc=size=64x64:rate=8", "-frames:v", "4",
                    "-pix_fmt", "yuv420p", "-c:v", "libx264", str(out)], check=True)
    return out.read_bytes()


def test_a_target_out_of_credits_takes_no_more_work_and_the_others_finish(tmp_path: Path, sim_factory: Any,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    sim = sim_factory(timing=Timing(node=0.03))  # as slow as the cloud, so both have work
    cloud = FakeCloud(data=_clip(tmp_path), credits=1)
    cloud.start()
    monkeypatch.setenv("COMFY_API_KEY", KEY)
    try:
        result = CliRunner().invoke(main, ["run", str(many_scenes(tmp_path, 1, 6)), "--server", sim.url,
                                           "--server", f"v2+{cloud.url}", "--depth", "1", "--json"])
    finally:
        cloud.stop()
    assert result.exit_code == 0, result.output
    report = json.loads(result.output[result.output.index("{"):])
    cloud_record = next(t for t in report["targets"] if t["api"] == "v2")
    assert cloud_record["status"].startswith("refused: insufficient credits") and cloud_record["scenes"] == 1
    assert len(successes(sim.finished_log)) == 5  # the five others, each once
    assert all(s["status"] == "done" for s in report["scenes"])
    assert sum(1 for s in report["scenes"] if any(h.startswith("moved:") for h in s["history"])) == 1
    assert all(auth is None for site, _, auth, _ in cloud.seen if site == "storage")  # the key stayed home
    assert KEY not in result.output


KILLING_DRIVER = textwrap.dedent("""\
    import os, signal, sys
    from comfy_driver.cli import main
    from comfy_driver.comfy import v2download, v2http

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    if sys.argv[1] == "submit":  # the job is made, the answer never read
        real = v2http.V2Http.json
        def json_then_die(self, method, path, **kw):
            answer = real(self, method, path, **kw)
            if method == "POST" and path == "/jobs":
                die()
            return answer
        v2http.V2Http.json = json_then_die
    else:  # part of an output is on disk
        v2download._CHUNK = 512
        real_write = os.write
        class _Os:
            def __getattr__(self, name):
                return getattr(os, name)
            def write(self, fd, data):
                real_write(fd, data)
                die()
        v2download.os = _Os()
    main(sys.argv[2:])
""")


@pytest.mark.parametrize("when", ["submit", "download"])
def test_a_driver_killed_mid_submit_or_download_reattaches_to_its_v2_job(tmp_path: Path, behind_proxy: Any,
                                                                         when: str) -> None:
    sim, proxy = behind_proxy()
    path = many_scenes(tmp_path, 1, 1)
    args = ["run", str(path), "--server", f"v2+{proxy.url}"]
    killed = subprocess.run([sys.executable, "-c", KILLING_DRIVER, when, *args], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    assert len(sim.history) == 1 or when == "submit"
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 0, again.output
    assert "re-attached to" in again.output
    jobs = requests.get(f"{proxy.url}/api/v2/jobs", timeout=5).json()["jobs"]
    assert len(jobs) == 1 and len(sim.submission_log) == 1  # one job, never a second
    clip = tmp_path / "out" / "pool-test" / "e0" / "s0" / "clip.mp4"
    assert clip.is_file() and not list(clip.parent.glob("*.v2part"))
    report = json.loads((tmp_path / "out" / "pool-test" / "report.json").read_text())
    assert report["scenes"][0]["outputs"][0]["size"] == clip.stat().st_size
    if when == "download":
        assert os.path.getsize(clip) > 512  # the partial file was resumed, not the job redone


def test_the_animate_example_renders_through_the_real_proxy(tmp_path: Path, behind_proxy: Any) -> None:
    """The bundled Wan 2.2 Animate series (a character image and a driving video sent as assets, windows
    and stages chained) on a v2 target alone."""
    import shutil

    sim, proxy = behind_proxy()
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    result = CliRunner().invoke(main, ["run", str(tmp_path / "examples" / "wan_animate.yaml"), "--server",
                                       f"v2+{proxy.url}", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output[result.output.index("{"):])
    assert [e["status"] for e in report["episodes"]] == ["done"]
    assert all(s["status"] == "done" and s["server"] == f"v2+{proxy.url}" for s in report["scenes"])
    assert report["targets"][0]["prompts"] == sum(len(s["steps"]) for s in report["scenes"])
    uploaded = sorted(p.suffix for p in (sim.root / "input").iterdir())
    assert ".png" in uploaded and ".mp4" in uploaded  # the reference image and the driving video, as assets
    assert "validation skipped" in result.output  # the proxy alone names no node catalogue


def test_doctor_reports_on_every_target_of_a_series(tmp_path: Path, sim: Any, behind_proxy: Any) -> None:
    behind, proxy = behind_proxy()
    path = tmp_path / "series.yaml"
    path.write_text(HEAD.replace("episodes:\n", f"servers:\n  - {sim.url}\n  - {{url: '{proxy.url}', api: v2, "
                                 f"native: '{behind.url}'}}\nepisodes:\n  - scenes: [{{prompt: a}}]\n"))
    result = CliRunner().invoke(main, ["doctor", "--series", str(path)])
    assert result.exit_code == 0, result.output
    native, v2 = result.output.split(f"== v2+{proxy.url}")
    assert native.startswith(f"== {sim.url}") and "all backends ready" in native
    assert f"node catalogue: the node catalogue of {behind.url}" in v2 and "validation skipped" not in v2


def test_a_dry_run_validates_for_a_v2_target(tmp_path: Path, behind_proxy: Any) -> None:
    _, proxy = behind_proxy()
    result = CliRunner().invoke(main, ["run", str(many_scenes(tmp_path, 1, 2)), "--dry-run", "--server",
                                       f"v2+{proxy.url}"])
    assert result.exit_code == 0, result.output
    assert "2 scene(s) valid; nothing submitted" in result.output
    assert requests.get(f"{proxy.url}/api/v2/jobs", timeout=5).json()["jobs"] == []


@pytest.mark.parametrize("pooled, then", [(True, "its work moves to the other targets after 1:00"),
                                          (False, "giving up after 10:00")])
def test_waiting_for_an_unreachable_target_says_what_happens_next(pooled: bool, then: str) -> None:
    # In a pool the work of a silent target moves after move_after; only a target alone waits out
    # server_timeout, so only then is "giving up after" what the user is told.
    from comfy_driver.comfy.errors import ServerUnreachable
    from comfy_driver.comfy.settings import Settings
    from comfy_driver.comfy.target import Target
    from comfy_driver.pipeline.lane import Lane
    from comfy_driver.pipeline.messages import Say, ServerGone

    said: list[Any] = []
    lane = Lane(Target(url="http://gpu0:8188"), "client", said.append, capacity=1, server_timeout=600, move_after=60,
                settings=Settings())
    lane.pooled = pooled

    def ping() -> None:
        if said:
            lane.abandon()
        raise ServerUnreachable("no answer")

    try:
        with pytest.raises(ServerGone):
            lane._wait_until_back(ping, "1 prompt")
    finally:
        lane.close()
    assert [s.text for s in said if isinstance(s, Say)] == [f"waiting for http://gpu0:8188 (unreachable for 0:00; {then})"]


def test_a_silent_target_gives_its_work_up_early_when_the_others_have_nothing_to_do(tmp_path: Path, sim: Any) -> None:
    slow = SimProcess(tmp_path / "slow", time_scale=3.0)  # its scene runs for many seconds: killed mid-way
    path = many_scenes(tmp_path, 1, 2)
    threading.Thread(target=lambda: (slow.wait_until_running(), time.sleep(0.3), slow.proc.kill()),
                     daemon=True).start()
    started = time.monotonic()
    try:
        report = run_series(path, servers=[slow.url, sim.url],
                            options=RunOptions(depth=1, move_after=60, server_timeout=120))
    finally:
        slow.proc.kill()
        slow.proc.wait(10)
    took = time.monotonic() - started
    assert report.complete and [t.status for t in report.targets] == ["gone", "open"]
    assert all(s.server == sim.url for s in report.scenes)
    assert took < 30, took  # moved once the idle target had waited ~5 s, not after move_after (60 s)


def test_every_target_is_validated_and_alike_ones_once(tmp_path: Path, sim_factory: Any,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from comfy_driver.comfy.catalog import Catalog
    from comfy_driver.errors import UserError
    from comfy_driver.models.catalog import bundled_catalog
    from comfy_driver.models.lock import load_lock
    from comfy_driver.pipeline import targets

    from .conftest import MODELS_LOCK

    calls: list[str] = []
    real = targets.preflight
    monkeypatch.setattr(targets, "preflight", lambda plan, catalog, server: (calls.append(server),
                                                                            real(plan, catalog, server=server)))
    alike = [sim_factory(), sim_factory()]
    path = many_scenes(tmp_path, 1, 2)
    assert run_series(path, servers=[s.url for s in alike]).complete
    assert calls == [alike[0].url]  # the second serves the same catalogue: validated once
    full = bundled_catalog(load_lock(MODELS_LOCK))
    lacking = sim_factory(catalog=Catalog({k: v for k, v in full.nodes.items() if k != "SVD_img2vid_Conditioning"},
                                          version=full.version))
    with pytest.raises(UserError, match=f"{lacking.url} lacks the node types these workflows use"):
        run_series(path, servers=[alike[0].url, lacking.url], options=RunOptions(force={"all"}))
    assert lacking.submission_log == [] and len(alike[0].submission_log) == 1  # nothing sent this time


def test_a_stop_while_a_target_of_the_pool_is_down_ends_the_run(tmp_path: Path, sim: Any) -> None:
    """The silent target never answers the stop's unqueue; once it is given up, the run ends (it hung)."""
    from comfy_driver.pipeline.control import RunControl, RunStopped

    slow = SimProcess(tmp_path / "slow", time_scale=3.0)
    control = RunControl()

    def kill_then_stop() -> None:
        slow.wait_until_running()
        slow.proc.kill()
        time.sleep(1.0)
        control.stop()

    threading.Thread(target=kill_then_stop, daemon=True).start()
    started = time.monotonic()
    try:
        with pytest.raises(RunStopped) as stopped:
            run_series(many_scenes(tmp_path, 1, 2), servers=[slow.url, sim.url],
                       options=RunOptions(depth=1, move_after=60, server_timeout=60), control=control)
    finally:
        slow.proc.kill()
        slow.proc.wait(10)
    assert time.monotonic() - started < 30
    report = stopped.value.report
    assert report is not None and [t.status for t in report.targets] == ["gone", "open"]
    assert any(s.status == "done" for s in report.scenes)  # the other target's scene is kept
