"""A driving video shorter than its scene, with real video files made by ffmpeg: the plan says what will
happen before anything is submitted (the last frame held, in the only window or only in the last one;
a window that would start past the video's end refused), and a driving video at another frame rate
is said to play faster or slower (the Animate workflows take its frames one for one)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from comfy_driver.cli import main
from comfy_driver.config.series import load_series
from comfy_driver.media.ffmpeg import probe, run_ffmpeg
from comfy_driver.paths import EXAMPLES
from comfy_driver.pipeline.plan import build_plan

SERIES = """\
title: Short Motion
backend: {backend}
output: out
defaults: {{width: 64, height: 64, fps: 16, params: {{steps: 2}}}}
characters:
  - {{name: Mira, description: a small red fox, reference_image: mira.png}}
episodes:
  - id: ep01
    scenes:
      - id: s1
        character: Mira
        prompt: dances in the rain
        driving_video: motion.mp4
        frames: {frames}
"""


def make_video(path: Path, frames: int, fps: int = 16) -> Path:
    run_ffmpeg(["-y", "-loglevel", "error", "-f", "lavfi", "-i", f"testsrc=size=64x64:rate={fps}",
                "-frames:v", str(frames), "-c:v", "libx264", "-pix_fmt", "yuv420p", str(path)], what="a test video")
    assert probe(path).frames == frames
    return path


def write_series(folder: Path, *, video_frames: int, frames: int, fps: int = 16,
                 backend: str = "wan22_animate") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(EXAMPLES / "assets" / "mira.png", folder / "mira.png")
    make_video(folder / "motion.mp4", video_frames, fps)
    path = folder / "series.yaml"
    path.write_text(SERIES.format(frames=frames, backend=backend))
    return path


def test_a_shortfall_in_the_only_window_is_said_before_submitting(sim: Any, tmp_path: Path) -> None:
    path = write_series(tmp_path, video_frames=20, frames=33)
    note = "driving video motion.mp4 has 20 frames, the scene 33: its last 13 frame(s) hold its last frame " \
           "(the video is not looped)"
    assert build_plan(load_series(path)).scenes[0].notes == [note]
    dry = CliRunner().invoke(main, ["run", str(path), "--dry-run"])
    assert dry.exit_code == 0 and f"note: {note}" in dry.output, dry.output
    result = CliRunner().invoke(main, ["run", str(path), "--server", sim.url])
    assert result.exit_code == 0, result.output
    said, done = result.output.index(note), result.output.index("ep01/s1 done")
    assert said < done  # said when the run began, before the scene was rendered
    report = json.loads((tmp_path / "out" / "short-motion" / "report.json").read_text())
    assert note in report["scenes"][0]["notes"]


def test_a_shortfall_only_in_the_last_window_is_said(tmp_path: Path) -> None:
    """121 frames: window 1 takes frames 0-76, window 2 starts at 77 (reading from 72, the five frames
    it carries over) and runs past the 90 frames the video has."""
    path = write_series(tmp_path, video_frames=90, frames=121)  # Wan makes 4·k+1 frames: 121, not 120
    scene = build_plan(load_series(path)).scenes[0]
    steps = scene.routes[0].steps
    assert [s.label for s in steps] == ["wan22_animate", "wan22_animate window 2"]
    assert steps[1].step.values == {"frames": 49, "video_frame_offset": 77}
    assert scene.notes == ["driving video motion.mp4 has 90 frames, the scene 121: its last 31 frame(s) hold its "
                           "last frame (the video is not looped)"]
    exact = write_series(tmp_path / "exact", video_frames=121, frames=121)
    assert build_plan(load_series(exact)).scenes[0].notes == []  # long enough: nothing to say


def test_a_window_that_would_start_past_the_end_is_refused(sim: Any, tmp_path: Path) -> None:
    path = write_series(tmp_path, video_frames=70, frames=120)
    result = CliRunner().invoke(main, ["run", str(path), "--server", sim.url])
    assert result.exit_code == 2, result.output
    assert f"{path}:10: driving video motion.mp4 has 70 frames, but wan22_animate window 2 of this scene would " \
           "start at its frame 77, past its end" in result.output
    assert "hint: make the scene at most 70 frames long, or use a longer driving video" in result.output
    assert sim.submissions == []  # refused before anything was submitted
    assert not (tmp_path / "out").exists()


def test_another_frame_rate_is_said(tmp_path: Path) -> None:
    path = write_series(tmp_path, video_frames=40, frames=33, fps=12)
    assert build_plan(load_series(path)).scenes[0].notes == [
        "driving video motion.mp4 runs at 12 fps, the scene at 16: its frames are taken one for one, so its "
        "motion plays 1.33x as fast"]


def test_a_reader_that_does_not_hold_the_last_frame_is_not_said_to(tmp_path: Path) -> None:
    """Kijai's wrapper pads the pose otherwise: the note says only that those frames follow no motion."""
    path = write_series(tmp_path, video_frames=20, frames=33, backend="wan22_animate_kj")
    assert build_plan(load_series(path)).scenes[0].notes == [
        "driving video motion.mp4 has 20 frames, the scene 33: its last 13 frame(s) follow no driving motion"]
