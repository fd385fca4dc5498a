"""The plan as data: a scene's identity covers every step's graph and its inputs' bytes; the final clip of
any scene is <episode>/<scene>/clip.<ext>; a fallback's own limits apply only when it is taken; dry runs
show every step and its prompt; a chained scene's report spans all its steps."""

from __future__ import annotations

import json
import shutil
import signal
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from PIL import Image

from comfy_driver.cli import main
from comfy_driver.config.series import load_series
from comfy_driver.media.ffmpeg import probe
from comfy_driver.paths import EXAMPLES
from comfy_driver.pipeline.plan import SceneKey, StepKey, build_plan
from comfy_driver.pipeline.control import RunOptions
from comfy_driver.pipeline.supervisor import Supervisor
from comfy_driver.sim.server import Faults

from .simproc import SimProcess, drive


def wan_example(tmp_path: Path) -> Path:
    """examples/wan_animate.yaml with its own copy of the assets (so a test can change them)."""
    shutil.copytree(EXAMPLES / "assets", tmp_path / "assets")
    path = tmp_path / "wan.yaml"
    text = (EXAMPLES / "wan_animate.yaml").read_text().replace("output: ../out", "output: out")
    path.write_text(text.replace("width: 256", "width: 64").replace("height: 160", "height: 64"))  # quick to encode
    return path


def run(path: Path, url: str, **options: Any) -> Any:
    return Supervisor(build_plan(load_series(path)), [url], RunOptions(**options)).run()


def test_steps_have_typed_keys_and_one_place_for_their_files(tmp_path: Path) -> None:
    plan = build_plan(load_series(wan_example(tmp_path)))
    dance, wave = plan.scenes
    assert [s.key for s in wave.routes[0].steps] == [StepKey(SceneKey("ep01", "wave"), 0, i) for i in range(4)]
    assert [s.label for s in wave.routes[0].steps] == ["wan22_animate", "wan22_animate window 2", "denoise",
                                                      "upscale"]
    root = plan.layout.root
    assert [s.folder.relative_to(root).as_posix() for s in wave.routes[0].steps] == [
        "ep01/wave/1-wan22_animate", "ep01/wave/2-wan22_animate-window-2", "ep01/wave/3-denoise", "ep01/wave"]
    assert [r.backend for r in dance.routes] == ["wan22_animate+denoise+upscale", "svd+denoise+upscale"]
    assert dance.routes[1].steps[-1].folder == plan.layout.scene_dir(dance.key)  # a fallback's clip lies there too
    assert SceneKey.parse("ep01/wave") == wave.key


def test_editing_a_chained_scene_renders_it_again(sim: Any, tmp_path: Path) -> None:
    """Each edit of what shapes a chained scene's output renders it again; no edit keeps it."""
    path = wan_example(tmp_path)
    first = run(path, sim.url)
    assert [s.status for s in first.scenes] == ["done", "done"]
    assert [s.status for s in run(path, sim.url).scenes] == ["skipped", "skipped"]
    previous = next(s for s in first.scenes if s.key == "ep01/dance")
    for old, new in [("dances on a rainy street", "dances in the snow"),  # the prompt
                     ("    steps: 4", "    steps: 4\n    seed: 99"),  # the seed
                     ("upscale.downscale_ratio: 0.5", "upscale.downscale_ratio: 0.25"),  # a stage's parameter
                     (None, None)]:  # the reference image's bytes
        if old is None:
            with Image.open(tmp_path / "assets" / "mira.png") as img:
                img.convert("RGB").rotate(90).save(tmp_path / "assets" / "mira.png")
        else:
            path.write_text(path.read_text().replace(old, new))
        again = run(path, sim.url)
        dance = next(s for s in again.scenes if s.key == "ep01/dance")
        assert dance.status == "done", (old, dance.status)
        assert dance.clip == "ep01/dance/clip.mp4"
        assert dance.graph_hash != previous.graph_hash and dance.outputs[0].sha256 != previous.outputs[0].sha256
        previous = dance
    assert "dances in the snow" in (previous.prompt or "")


def test_a_chained_scene_reports_all_its_steps(sim: Any, tmp_path: Path) -> None:
    report = run(wan_example(tmp_path), sim.url)
    wave = next(s for s in report.scenes if s.key == "ep01/wave")
    assert wave.clip == "ep01/wave/clip.mp4" and (tmp_path / "out" / "mira-dances" / wave.clip).is_file()
    assert wave.prompt_id and wave.attempts == 4 and len(wave.steps) == 4
    assert wave.started_at is not None and wave.finished_at is not None and wave.started_at < wave.finished_at
    assert wave.started_at == wave.steps[0].started_at and wave.finished_at == wave.steps[-1].finished_at
    assert [s.status for s in wave.steps] == ["done"] * 4
    assert report.episodes[0].title == "Mira Dances"
    info = probe(tmp_path / "out" / "mira-dances" / wave.clip)
    assert (info.frames, info.width) == (97, 128)  # every window, then upscaled
    for scene in report.scenes:  # the simulator's clip after the stages still shows its scene's prompt
        shown = probe(tmp_path / "out" / "mira-dances" / str(scene.clip)).metadata.get("comment", "")
        assert shown and shown == scene.prompt


def test_a_fallback_takes_the_frames_it_can_only_when_taken(sim_factory: Any, tmp_path: Path) -> None:
    path = wan_example(tmp_path)
    path.write_text(path.read_text().replace("frames: 97", "frames: 160"))
    plan = build_plan(load_series(path))  # svd's limit of 128 frames no longer refuses the Animate scene
    wave = plan.scenes[1]
    assert wave.routes[1].note == "svd takes at most 128 frames: its clip has 128 of 160"
    sim = sim_factory(faults=Faults(error_at={"KSampler": "oom"}, error_times=2))  # both Animate windows' sampler
    report = run(path, sim.url)
    wave_record = next(s for s in report.scenes if s.key == "ep01/wave")
    assert wave_record.status == "done" and wave_record.backend == "svd+denoise+upscale"
    assert "svd takes at most 128 frames: its clip has 128 of 160" in wave_record.notes
    assert probe(tmp_path / "out" / "mira-dances" / wave_record.clip).frames == 128


def test_dry_run_shows_every_step_with_its_prompt_and_json(tmp_path: Path) -> None:
    path = wan_example(tmp_path)
    result = CliRunner().invoke(main, ["run", str(path), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "4. upscale" in result.output and "2. wan22_animate window 2" in result.output
    assert "prompt: Mira, a small red fox in a yellow raincoat, dances on a rainy street at night" in result.output
    as_json = CliRunner().invoke(main, ["run", str(path), "--dry-run", "--json"])
    assert as_json.exit_code == 0, as_json.output
    plan = json.loads(as_json.stdout)
    wave = plan["scenes"][1]
    assert [s["label"] for s in wave["routes"][0]["steps"]] == ["wan22_animate", "wan22_animate window 2",
                                                               "denoise", "upscale"]
    assert wave["routes"][0]["steps"][0]["prompt"].startswith("Mira waves at the camera")


def test_ctrl_c_on_a_chained_scene_then_the_rerun_finishes(tmp_path: Path) -> None:
    """Stopped after a chained scene's first step: the report says 'stopped', a summary is printed, the
    stop is no error, and the rerun finishes the scene from its next step, exit 0."""
    server = SimProcess(tmp_path / "sim", time_scale=0.1)
    try:
        path = wan_example(tmp_path)
        proc = drive("run", str(path), "--server", server.url, "--force", "all")
        assert server.wait_for_more("finished", 0, proc)
        proc.send_signal(signal.SIGINT)
        output = proc.communicate(timeout=120)[0]
        assert proc.returncode == 130, output
        assert "error:" not in output and "stopped: stopped by the user" in output
        assert "Mira Dances:" in output  # the summary
        report = json.loads((tmp_path / "out" / "mira-dances" / "report.json").read_text())
        assert report["scenes"][0]["status"] in ("stopped", "done")
        again = drive("run", str(path), "--server", server.url)
        output = again.communicate(timeout=120)[0]
        assert again.returncode == 0, output
        report = json.loads((tmp_path / "out" / "mira-dances" / "report.json").read_text())
        assert [e["status"] for e in report["episodes"]] == ["done"]
        done = [f["graph"] for f in server.stats()["finished"] if f["status"] == "success"]
        assert len(done) == len(set(done))  # no step rendered twice
    finally:
        server.stop()


def test_a_wrong_backend_name_is_one_message_at_its_line_with_a_suggestion(tmp_path: Path) -> None:
    path = tmp_path / "series.yaml"
    path.write_text("title: Names\nbackend: wan22_animat\noutput: out\n"
                    "defaults: {width: 64, height: 64, fps: 8, frames: 4}\n"
                    "episodes:\n  - scenes:\n      - {id: a, prompt: x}\n      - {id: b, prompt: y}\n"
                    "      - id: c\n        prompt: z\n        backend: svd\n        params:\n          stepz: 3\n")
    result = CliRunner().invoke(main, ["run", str(path), "--dry-run"])
    assert result.exit_code == 2
    assert result.output.count("unknown backend") == 1
    assert f"{path}:2: unknown backend 'wan22_animat'; did you mean 'wan22_animate'?" in result.output
    assert "hint: backends: svd, wan22_5b, wan22_animate" in result.output and "wan22_animate_extend" not in \
        result.output
    assert f"{path}:13: unknown parameter 'stepz' for workflow 'svd'; did you mean 'steps'?" in result.output
    option = CliRunner().invoke(main, ["run", str(path), "--dry-run", "--backend", "sdv"])
    assert "error: unknown backend 'sdv'; did you mean 'svd'?" in option.output


def test_the_eta_counts_every_window_and_stage_left() -> None:
    import io

    from comfy_driver.pipeline.progress import Progress

    progress = Progress(2, stream=io.StringIO())
    progress.prompts_left = 7  # two chained scenes: 3 + 4 prompts
    progress.prompt_done(10.0)
    assert progress.eta() == 60.0  # six prompts left at 10 s each, not one scene at the first one's pace
    progress.prompt_done(20.0)
    assert progress.eta(0.5) == 4.5 * 20.0


def test_wan_scenes_and_windows_are_as_long_as_the_model_makes_them(tmp_path: Path) -> None:
    """Wan decodes 4·k+1 frames; Animate 2 carries one frame into the next window, Animate five."""
    from comfy_driver.errors import UserError
    from comfy_driver.models.catalog import bundled_catalog
    from comfy_driver.models.lock import load_lock
    from comfy_driver.paths import MODELS_LOCK

    path = wan_example(tmp_path)
    path.write_text(path.read_text().replace("frames: 97", "frames: 160"))
    wave = build_plan(load_series(path)).scenes[1]
    assert wave.spec.frames == 161 and "wan22_animate makes 4·k+1 frames: the clip has 161 frames (160 asked)" in \
        wave.notes
    windows = [s.step.values for s in wave.routes[0].steps[:3]]
    assert windows == [{"frames": 77}, {"frames": 77, "video_frame_offset": 77},
                       {"frames": 17, "video_frame_offset": 149}]  # 77 + 72 + 12 = 161, carrying 5
    assert wave.routes[1].note == "svd takes at most 128 frames: its clip has 128 of 160"  # the series' 160, not 161
    newer = bundled_catalog(load_lock(MODELS_LOCK), "0.33.0")
    two = build_plan(load_series(path), backend="wan_animate2", catalog=newer).scenes[1]
    assert [s.step.values.get("frames") for s in two.routes[0].steps[:3]] == [77, 77, 9]  # 77 + 76 + 8, carrying 1
    path.write_text(path.read_text().replace("    steps: 4\n", "    steps: 4\n    continue_motion_frames: 4\n"))
    try:
        build_plan(load_series(path))
    except UserError as exc:
        assert "continue_motion_frames: 4 would cut a window short" in exc.message and "1, 5, 9, 13" in exc.message
    else:
        raise AssertionError("a carry that is not 4·k+1 was taken")
