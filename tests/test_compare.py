"""Comparing backends: side-by-side MP4s, benchmark tables, the page; reruns render nothing new."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from comfy_driver.cli import main
from comfy_driver.config.series import load_series
from comfy_driver.errors import UserError
from comfy_driver.media.ffmpeg import encode_rgb, probe
from comfy_driver.media.measure import measure
from comfy_driver.media.sidebyside import Column, layout, side_by_side
from comfy_driver.paths import EXAMPLES
from comfy_driver.pipeline.benchmark import write
from comfy_driver.pipeline.compare import compare, plan
from comfy_driver.sim.executor import Timing
from comfy_driver.sim.render import write_mp4
from comfy_driver.sim.server import Faults

MIRA = EXAMPLES / "assets" / "mira.png"


def test_side_by_side_normalises_size_fps_and_length(tmp_path: Path) -> None:
    big, small = tmp_path / "big.mp4", tmp_path / "small.mp4"
    write_mp4(big, 24, 256, 160, 16, "a fox, 1.5 s")
    write_mp4(small, 20, 160, 96, 8, "a fox, 2.5 s")
    info = side_by_side([Column(big, "wan22_animate", "3.1 s  256x160  16 fps"), Column(small, "svd")],
                        tmp_path / "sbs.mp4")
    plan = layout([probe(big), probe(small)])
    assert plan.widths == [256, 266] and plan.height == 160
    assert (info.width, info.height) == (256 + 266, 160 + plan.band)
    assert (info.fps, info.frames, info.duration) == (16, 40, 2.5)  # the longest clip; the shorter held
    assert (info.codec, info.pix_fmt, info.video_streams) == ("h264", "yuv420p", 1)


def test_flicker_is_measured_from_the_decoded_frames(tmp_path: Path) -> None:
    def frames(levels: list[int]) -> list[bytes]:
        return [bytes([v]) * (64 * 64 * 3) for v in levels]

    steady, flashing = tmp_path / "steady.mp4", tmp_path / "flashing.mp4"
    encode_rgb(frames([120] * 12), 64, 64, 8, steady)
    encode_rgb(frames([90, 150] * 6), 64, 64, 8, flashing)
    assert measure(steady).flicker < 1 and measure(flashing).flicker > 40
    assert measure(flashing).frame_change > 40 > measure(steady).frame_change
    assert measure(steady).blur is None  # flat frames have no edges to measure: no figure, not nan
    sharp = tmp_path / "sharp.mp4"
    write_mp4(sharp, 4, 64, 64, 8, "edges")
    assert measure(sharp).blur is not None


def sbs_widths(path: Path, clips: list[Path]) -> tuple[int, int]:
    return probe(path).width, sum(layout([probe(c) for c in clips]).widths)


def test_compare_the_wan_example_with_svd_then_rerun_renders_nothing(sim: Any, tmp_path: Path) -> None:
    loaded = load_series(EXAMPLES / "wan_animate.yaml")
    folder = tmp_path / "compare"
    first = compare(loaded, plan(loaded, ["wan22_animate", "svd"]), [sim.url], folder=folder, progress=False)
    paths = write(first, loaded.series.title)
    submitted = len(sim.submissions)
    assert submitted == 2 + 2 + 1  # wan: dance, wave in two windows; svd: dance, wave
    assert [r.rendered for r in first.backends] == [2, 2]
    assert not list(folder.glob("*/ep01/ep01.mp4"))  # scenes only: no episode is joined from a subset
    for key in ("ep01/dance", "ep01/wave"):
        video = first.videos[key]
        clips = [r.scenes[key].clip for r in first.backends]
        assert all(c is not None and c.is_file() for c in clips)
        width, columns = sbs_widths(video, clips)  # type: ignore[arg-type]
        assert width == columns
        assert probe(video).duration == max(probe(c).duration for c in clips)  # type: ignore[arg-type]
    data = json.loads(paths["json"].read_text())
    assert set(data["medians"]) == {"wan22_animate", "svd"}
    assert data["medians"]["svd"]["scenes"] == "2/2" and data["medians"]["svd"]["execution_s"] is not None
    assert data["medians"]["wan22_animate"]["nodes"]  # time per node, from the websocket
    assert "| execution (s) |" in paths["markdown"].read_text()
    page = paths["page"].read_text()
    assert page.count("data:video/mp4;base64,") == 2 and "<svg" in page and "data:image/png;base64," in page
    again = compare(loaded, plan(loaded, ["wan22_animate", "svd"]), [sim.url], folder=folder, progress=False)
    assert len(sim.submissions) == submitted and [r.rendered for r in again.backends] == [0, 0]
    assert again.backends[1].scenes["ep01/wave"].execution_s == first.backends[1].scenes["ep01/wave"].execution_s


def test_timings_come_from_the_websocket_and_the_server_stats(sim_factory: Any, tmp_path: Path) -> None:
    sim = sim_factory(timing=Timing(model_load=0.05, step=0.02))
    path = tmp_path / "series.yaml"
    path.write_text("title: T\noutput: out\nbackend: svd\ndefaults: {width: 64, height: 64, fps: 8, frames: 9, "
                    "params: {steps: 4}}\nepisodes:\n  - scenes:\n      - {id: one, prompt: a fox}\n")
    loaded = load_series(path)
    result = compare(loaded, plan(loaded, ["svd"]), [sim.url], progress=False).backends[0]
    scene = result.scenes["ep01/one"]
    assert scene.model_load_s is not None and scene.model_load_s >= 0.05
    assert scene.s_per_step is not None and 0.015 <= scene.s_per_step <= 0.5
    assert scene.queue_wait_s is not None and scene.execution_s is not None and scene.execution_s > 0.1
    assert scene.duration_s == pytest.approx(9 / 8, abs=0.01) and scene.frames == 9
    assert scene.render_s_per_output_s == pytest.approx(scene.execution_s / scene.duration_s)
    assert result.peak_vram == 1 << 30 and result.peak_ram == 5 << 30  # what the simulator reports


def test_try_with_two_backends_then_compare_from_report(sim: Any, tmp_path: Path) -> None:
    out = tmp_path / "quick"
    args = ["try", "--prompt", "a fox dances", "--image", str(MIRA), "--backend", "wan22_5b", "--vs", "svd",
            "--width", "64", "--height", "64", "--frames", "9", "--fps", "8", "--param", "steps=2",
            "--server", sim.url, "-o", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert f"page: {out / 'index.html'}" in result.output and "| execution (s) |" in result.output
    assert "backend 1/2 wan22_5b: 1 scene(s) rendered, 0 kept" in result.stderr  # progress per backend, with ETA
    assert "ETA" in result.stderr and "scene 1/1 try/scene" in result.stderr
    video = out / "side-by-side" / "try-scene.mp4"
    assert probe(video).width == 128 and len(sim.submissions) == 2
    again = CliRunner().invoke(main, ["compare", str(out / "series.yaml"), "--backends", "wan22_5b,svd",
                                      "--from-report", "--json", "-o", str(out)])
    assert again.exit_code == 0, again.output
    assert json.loads(again.output)["medians"]["wan22_5b"]["scenes"] == "1/1" and len(sim.submissions) == 2


def test_compare_errors_name_what_to_do(tmp_path: Path) -> None:
    loaded = load_series(EXAMPLES / "wan_animate.yaml")
    with pytest.raises(UserError, match="--scenes ep01/jump: no such scene"):
        plan(loaded, ["svd"], ["ep01/jump"])
    with pytest.raises(UserError, match="--backends: name each backend once"):
        plan(loaded, ["svd", "svd"])
    with pytest.raises(UserError, match="no renders of backend 'svd'"):
        compare(loaded, plan(loaded, ["svd"]), [], from_report=True, folder=tmp_path)
    result = CliRunner().invoke(main, ["compare", str(EXAMPLES / "wan_animate.yaml"), "--backends", "svd,svdd",
                                       "--from-report"])
    assert result.exit_code == 2 and "unknown backend 'svdd'; did you mean 'svd'?" in result.output
    assert not (EXAMPLES.parent / "out" / "mira-dances" / "compare").exists()  # nothing made before the error


def test_try_without_an_image_for_a_backend_that_needs_one_says_so(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["try", "--prompt", "a fox", "--simulate", "instant",
                                       "-o", str(tmp_path / "q")])
    assert result.exit_code == 2
    assert "wan22_animate, svd: a backend here animates a reference image, and none was given" in result.output
    assert "hint: pass --image FILE" in result.output and "Traceback" not in result.output


def test_a_fallback_is_labelled_and_a_failed_backend_leaves_a_comparison_and_exit_1(sim_factory: Any,
                                                                                  tmp_path: Path) -> None:
    def quick(server: str, out: Path) -> Any:
        return CliRunner().invoke(main, ["try", "--prompt", "a fox", "--image", str(MIRA), "--backend", "wan22_5b",
                                         "--vs", "svd", "--width", "64", "--height", "64", "--frames", "9", "--fps",
                                         "8", "--server", server, "-o", str(out), "--json"])

    oom = sim_factory(faults=Faults(error_at={"Wan22ImageToVideoLatent": "oom"}))  # the 5B runs out of memory
    result = quick(oom.url, tmp_path / "a")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["per_scene"]["wan22_5b"]["try/scene"]["rendered_by"] == "svd"  # its fallback made the clip
    assert "| try/scene | svd | done |" in (tmp_path / "a" / "benchmark.md").read_text()

    broken = sim_factory(faults=Faults(error_at={"SVD_img2vid_Conditioning": "error"}))  # svd always fails
    out = tmp_path / "b"
    result = quick(broken.url, out)
    assert result.exit_code == 1 and "not rendered: svd: try/scene (failed)" in result.stderr
    data = json.loads(result.stdout)
    assert data["medians"]["wan22_5b"]["scenes"] == "1/1" and data["medians"]["svd"]["scenes"] == "0/1"
    assert probe(out / "side-by-side" / "try-scene.mp4").width == 64  # the one column there is
    assert "data:video/mp4;base64," in (out / "index.html").read_text()
