"""A series whose scenes make still images: every scene rendered is a finished run (exit 0), and each
episode is reported as having no video rather than as incomplete; an episode mixing stills with video
clips cannot be joined, and the report says which scenes are stills."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from comfy_driver.cli import main

from .test_reliability import WORKFLOWS

STILLS = """\
title: Stills
backend: tiny
output: out
workflows: {workflows}
episodes:
  - id: one
    scenes:
      - {{id: a, seed: 1}}
      - {{id: b, seed: 2}}
  - id: two
    scenes:
      - {{id: c, seed: 3}}
publish:
  title: "{{{{ episode.title }}}}"
"""
MIXED = """\
title: Mixed
backend: svd
output: out
workflows: {workflows}
defaults: {{width: 64, height: 64, fps: 8, frames: 4, params: {{steps: 2}}}}
episodes:
  - id: one
    scenes:
      - {{id: moving, prompt: a fox runs, seed: 1}}
      - {{id: still, backend: tiny, seed: 2}}
"""


def test_a_series_of_stills_finishes_with_exit_0_and_episodes_without_video(sim: Any, tmp_path: Path) -> None:
    path = tmp_path / "series.yaml"
    path.write_text(STILLS.format(workflows=WORKFLOWS))
    result = CliRunner().invoke(main, ["run", str(path), "--server", sim.url])
    assert result.exit_code == 0, result.output
    assert "episode one: no video (its scenes make still images, not video: there is nothing to join)" \
        in result.output
    root = tmp_path / "out" / "stills"
    report = json.loads((root / "report.json").read_text())
    assert [s["status"] for s in report["scenes"]] == ["done", "done", "done"]
    assert all(s["outputs"] and s["outputs"][0]["path"].endswith(".png") and s["clip"] is None
               for s in report["scenes"])
    assert [(e["status"], e["path"]) for e in report["episodes"]] == [("no video", None), ("no video", None)]
    assert not list(root.rglob("*.mp4"))  # nothing joined
    again = CliRunner().invoke(main, ["run", str(path), "--server", sim.url])
    assert again.exit_code == 0, again.output
    assert again.output.count("already done, kept") == 3
    publish = CliRunner().invoke(main, ["publish", str(path), "--episode", "one", "--dry-run"])
    assert publish.exit_code == 2
    assert "--episode one: its scenes make still images; there is no video to publish" in publish.output


def test_an_episode_mixing_stills_and_video_says_which_scenes_are_stills(sim: Any, tmp_path: Path) -> None:
    path = tmp_path / "series.yaml"
    path.write_text(MIXED.format(workflows=WORKFLOWS))
    result = CliRunner().invoke(main, ["run", str(path), "--server", sim.url])
    assert result.exit_code == 1, result.output  # the episode asked for cannot be made
    report = json.loads((tmp_path / "out" / "mixed" / "report.json").read_text())
    assert [s["status"] for s in report["scenes"]] == ["done", "done"]
    episode = report["episodes"][0]
    assert episode["status"] == "incomplete"
    assert episode["note"] == "one/still made still images, not video: an episode joins a video clip of each of " \
                              "its scenes"
    assert "episode one: incomplete (one/still made still images" in result.output
