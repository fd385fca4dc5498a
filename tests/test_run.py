"""`comfy-drive run` end to end against the simulator: clips, episodes, report, resume, queue-ahead."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from comfy_driver.cli import main
from comfy_driver.comfy.client import file_sha256
from comfy_driver.config.series import load_series
from comfy_driver.errors import UserError
from comfy_driver.media.ffmpeg import probe
from comfy_driver.paths import EXAMPLES
from comfy_driver.pipeline.plan import build_plan
from comfy_driver.pipeline.control import RunOptions
from comfy_driver.pipeline.supervisor import Supervisor
from comfy_driver.sim.executor import Timing
from comfy_driver.sim.server import Faults

SERIES = """\
title: Run Test
backend: svd
output: out
defaults:
  width: 64
  height: 64
  fps: 8
  frames: 4
  params: {steps: 2}
episodes:
  - id: one
    scenes:
      - {id: a, prompt: first scene, seed: 1}
      - {id: b, prompt: second scene, seed: 2}
  - id: two
    scenes:
      - {id: c, prompt: third scene, seed: 3, frames: 6}
"""


def series_file(tmp_path: Path, text: str = SERIES) -> Path:
    path = tmp_path / "series.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def run_series(path: Path, urls: list[str], **kw: Any) -> Any:
    loaded = load_series(path)
    return Supervisor(build_plan(loaded), urls, RunOptions(**kw)).run()


def test_run_renders_every_scene_and_joins_episodes(sim: Any, tmp_path: Path) -> None:
    report = run_series(series_file(tmp_path), [sim.url])
    assert [s.status for s in report.scenes] == ["done", "done", "done"]
    root = tmp_path / "out" / "run-test"
    assert (root / "one" / "a" / "clip.mp4").is_file()
    one = probe(root / "one" / "one.mp4")
    assert (one.frames, one.width, one.height, one.fps) == (8, 64, 64, 8.0)
    assert probe(root / "two" / "two.mp4").frames == 6
    saved = json.loads((root / "report.json").read_text())
    for scene in saved["scenes"]:
        assert scene["prompt_id"] and scene["queued_at"] <= scene["started_at"] <= scene["finished_at"]
        for out in scene["outputs"]:
            assert file_sha256(root / out["path"]) == out["sha256"]
    assert [e["status"] for e in saved["episodes"]] == ["done", "done"]
    assert len(sim.submissions) == 3


def test_rerun_resumes_and_a_changed_scene_is_redone(sim: Any, tmp_path: Path) -> None:
    path = series_file(tmp_path)
    run_series(path, [sim.url])
    again = run_series(path, [sim.url])
    assert [s.status for s in again.scenes] == ["skipped"] * 3
    assert len(sim.submissions) == 3
    path.write_text(SERIES.replace("second scene", "second scene rewritten"))
    third = run_series(path, [sim.url])
    assert [s.status for s in third.scenes] == ["skipped", "done", "skipped"]
    assert len(sim.submissions) == 4
    clip = tmp_path / "out" / "run-test" / "one" / "b" / "clip.mp4"
    clip.write_bytes(b"damaged")
    fourth = run_series(path, [sim.url])
    assert [s.status for s in fourth.scenes] == ["skipped", "done", "skipped"]


def test_queue_ahead_keeps_the_server_busy(sim_factory: Any, tmp_path: Path) -> None:
    ahead = sim_factory(timing=Timing(node=0.005))
    run_series(series_file(tmp_path), [ahead.url], depth=2)
    one_by_one = sim_factory(timing=Timing(node=0.005))
    (tmp_path / "b").mkdir()
    run_series(series_file(tmp_path / "b"), [one_by_one.url], depth=1)
    assert len(ahead.idle_gaps) == len(one_by_one.idle_gaps) == 2
    assert max(ahead.idle_gaps) < min(one_by_one.idle_gaps)


def test_several_servers_share_the_scenes(sim_factory: Any, tmp_path: Path) -> None:
    first, second = sim_factory(timing=Timing(node=0.01)), sim_factory(timing=Timing(node=0.01))
    report = run_series(series_file(tmp_path), [first.url, second.url], depth=1)
    assert all(s.status == "done" for s in report.scenes)
    assert first.submissions and second.submissions
    assert len(first.submissions) + len(second.submissions) == 3


def test_preflight_reports_every_scene_and_submits_nothing(sim: Any, tmp_path: Path) -> None:
    path = series_file(tmp_path, SERIES.replace("params: {steps: 2}", "params: {steps: 2, sampler: magic}"))
    with pytest.raises(UserError) as info:
        run_series(path, [sim.url])
    text = str(info.value)
    assert text.count("would be rejected") == 3
    assert "node 10 \"Video Sampler\" (KSampler) input 'sampler_name': Value not in list" in text
    assert sim.submissions == []


def test_failed_scene_does_not_stop_the_others(sim_factory: Any, tmp_path: Path) -> None:
    sim = sim_factory(faults=Faults(error_at={"SVD_img2vid_Conditioning": "oom"}, error_times=1))
    report = run_series(series_file(tmp_path), [sim.url], depth=1)
    assert [s.status for s in report.scenes] == ["failed", "done", "done"]
    assert report.scenes[0].error_kind == "oom" and "ran out of memory" in report.scenes[0].error
    assert [e.status for e in report.episodes] == ["incomplete", "done"]


def test_lost_prompts_are_submitted_again(sim_factory: Any, tmp_path: Path) -> None:
    sim = sim_factory(faults=Faults(crash_at="VAEDecode", crash_down_for=0.3))
    report = run_series(series_file(tmp_path), [sim.url], depth=1)
    assert all(s.status == "done" for s in report.scenes)


def test_cli_json_and_exit_codes(tmp_path: Path, monkeypatch: Any) -> None:
    path = series_file(tmp_path)
    result = CliRunner().invoke(main, ["run", str(path), "--simulate", "instant", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert [s["status"] for s in report["scenes"]] == ["done", "done", "done"]
    bad = CliRunner().invoke(main, ["run", str(tmp_path / "missing.yaml"), "--simulate"])
    assert bad.exit_code == 2 and "no such series file" in bad.output and "Traceback" not in bad.output


def test_cli_dead_server_is_one_clear_line(tmp_path: Path) -> None:
    path = series_file(tmp_path)
    (tmp_path / "out").mkdir()
    result = CliRunner().invoke(main, ["run", str(path), "--server", "http://127.0.0.1:9"])
    assert result.exit_code == 1
    assert result.output.startswith("error: http://127.0.0.1:9 did not answer")
    assert "Traceback" not in result.output
    assert len([line for line in result.output.splitlines() if line.strip()]) <= 2  # the message and a hint


def test_dry_run_validates_offline(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["run", str(series_file(tmp_path)), "--dry-run"])
    assert result.exit_code == 0 and "3 scene(s) valid" in result.output


def test_readme_quick_start_example(tmp_path: Path) -> None:
    """The bundled example, through the installed console script, as the README runs it."""
    shutil.copy(EXAMPLES / "series.yaml", tmp_path / "series.yaml")
    text = (tmp_path / "series.yaml").read_text().replace("output: ../out", "output: out")
    (tmp_path / "series.yaml").write_text(text)
    exe = Path(sys.executable).with_name("comfy-drive")
    proc = subprocess.run([str(exe), "run", "series.yaml", "--simulate"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    episode = probe(tmp_path / "out" / "tiny-adventures" / "ep01" / "ep01.mp4")
    assert (episode.frames, episode.width, episode.height) == (32, 320, 192)
    assert "episode ep02: done" in proc.stdout


def test_a_run_imports_only_what_it_uses(sim: Any, tmp_path: Path) -> None:
    """A fresh `comfy-drive run` pays for its own modules only: not for the other commands' modules, the
    simulator, or libraries other commands use (its start is a fixed cost of every run)."""
    workflows = Path(__file__).parent / "workflows"
    series = tmp_path / "series.yaml"
    series.write_text(f"title: lean\nbackend: tiny\noutput: out\nworkflows: {workflows}\n"
                      "episodes:\n  - id: e\n    scenes:\n      - {id: s, seed: 7}\n", encoding="utf-8")
    listing = tmp_path / "modules.txt"
    script = ("import sys\nfrom comfy_driver.cli import main\ntry:\n    main()\nfinally:\n"
              f"    print(*sorted(sys.modules), file=open({str(listing)!r}, 'w'))\n")
    done = subprocess.run([sys.executable, "-c", script, "run", str(series), "--server", sim.url],
                          capture_output=True, text=True, cwd=tmp_path)
    assert "1 scene(s) rendered" in done.stdout, done.stdout + done.stderr
    loaded = set(listing.read_text().split())
    unused = ["comfy_driver.cli.compare", "comfy_driver.cli.graphs", "comfy_driver.cli.models",
              "comfy_driver.cli.servers", "comfy_driver.sim", "aiohttp", "PIL", "requests", "jinja2"]
    assert [name for name in unused if name in loaded] == []


def test_every_command_is_in_the_table_the_group_loads_them_from() -> None:
    """A command registered by a cli module but missing from COMMAND_MODULES would be neither listed nor
    found; one listed there must be registered by the module named."""
    import importlib
    import pkgutil

    import comfy_driver.cli as cli
    from comfy_driver.cli.base import COMMAND_MODULES, main

    for info in pkgutil.iter_modules(cli.__path__):
        if info.name != "__main__":  # (it runs the command line)
            importlib.import_module(f"comfy_driver.cli.{info.name}")
    assert set(main.commands) == set(COMMAND_MODULES)
    for name, module in COMMAND_MODULES.items():
        assert main.commands[name].callback.__module__.startswith(f"comfy_driver.cli.{module}"), name
