"""Every backend and stage combination: valid for a real server's catalogue, and run on the simulator."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from comfy_driver.cli import main
from comfy_driver.comfy.catalog import Catalog
from comfy_driver.config.series import load_series
from comfy_driver.errors import UserError
from comfy_driver.media.ffmpeg import probe
from comfy_driver.models.folders import fill_model_inputs, mark_model_inputs
from comfy_driver.models.lock import load_lock
from comfy_driver.paths import EXAMPLES, MODELS_LOCK
from comfy_driver.pipeline.plan import build_plan
from comfy_driver.pipeline.supervisor import Supervisor
from comfy_driver.sim.server import Faults

from .conftest import shared_path

ASSETS = EXAMPLES / "assets"
# name -> (backend, the scene's extra fields)
BASES = {
    "wan22_animate": ("wan22_animate", f"reference_image: {ASSETS / 'mira.png'}, driving_video: {ASSETS / 'dance.mp4'}"),
    "wan22_animate_prompt": ("wan22_animate", f"reference_image: {ASSETS / 'mira.png'}"),
    "wan22_animate_long": ("wan22_animate", f"reference_image: {ASSETS / 'mira.png'}, frames: 100"),
    "wan22_5b": ("wan22_5b", f"reference_image: {ASSETS / 'mira.png'}"),
    "svd": ("svd", ""),
    "svd_from_image": ("svd", f"reference_image: {ASSETS / 'mira.png'}"),
}
STAGES = ["", "+denoise", "+upscale", "+denoise+upscale"]
COMBOS = list(itertools.product(BASES, STAGES))


def series(folder: Path, base: str, stages: str, frames: int = 9) -> Path:
    backend, extra = BASES[base]
    extra = f", {extra}" if extra else ""
    text = (f"title: Combo\nbackend: {backend}{stages}\noutput: out\n"
            f"defaults: {{width: 64, height: 64, fps: 8, frames: {frames}, params: {{steps: 2}}}}\n"
            f"episodes:\n  - scenes:\n      - {{id: one, prompt: a fox dances, seed: 3{extra}}}\n")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "series.yaml"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def real_catalog() -> Catalog:
    info = json.loads(shared_path("fixtures", "comfyui", "object_info.json").read_text())
    return Catalog(fill_model_inputs(mark_model_inputs(info), load_lock(MODELS_LOCK).by_folder()))


@pytest.mark.parametrize("base,stages", COMBOS)
def test_every_prompt_validates_against_the_real_catalogue(real_catalog: Catalog, tmp_path: Path, base: str,
                                                            stages: str) -> None:
    plan = build_plan(load_series(series(tmp_path, base, stages)))
    prompts = [(step.name, step.first) for scene in plan.scenes for step in scene.steps]
    assert len(prompts) >= 1 + stages.count("+")
    for name, job in prompts:
        uploads = set(job.uploads)
        result = real_catalog.validate(job.graph, file_exists=lambda kind, name: name in uploads)
        assert result.ok and not result.node_errors, (name, json.dumps(result.response())[:1500])
        for node in job.graph.values():  # the models are models.lock's, the titles the parameters'
            for value in node["inputs"].values():
                if isinstance(value, str) and value.endswith(".safetensors") and "sam2" not in value:
                    assert value in {m.name for m in load_lock(MODELS_LOCK).models}


@pytest.mark.parametrize("base,stages", COMBOS)
def test_every_combination_runs_on_the_simulator(sim: Any, tmp_path: Path, base: str, stages: str) -> None:
    frames = 100 if base == "wan22_animate_long" else 9
    loaded = load_series(series(tmp_path, base, stages, frames))
    report = Supervisor(build_plan(loaded), [sim.url]).run()
    (scene,) = report.scenes
    assert scene.status == "done", scene.error
    info = probe(tmp_path / "out" / "combo" / scene.clip)
    scale = 2 if "upscale" in stages else 1
    made = 101 if base == "wan22_animate_long" else frames  # Wan makes 4·k+1 frames: 100 asked, 101 made
    assert (info.frames, info.width, info.height, info.fps) == (made, 64 * scale, 64 * scale, 8.0)


def test_out_of_memory_on_animate_falls_back_to_svd(sim_factory: Any, tmp_path: Path) -> None:
    sim = sim_factory(faults=Faults(error_at={"KSampler": "oom"}, error_times=1))  # the Animate sampler
    loaded = load_series(series(tmp_path, "wan22_animate", "+upscale"))
    report = Supervisor(build_plan(loaded), [sim.url]).run()
    (scene,) = report.scenes
    assert scene.status == "done" and scene.backend == "svd+upscale"
    assert any(h.startswith("fallback: oom on wan22_animate+upscale: trying svd+upscale") for h in scene.history)
    assert probe(tmp_path / "out" / "combo" / scene.clip).width == 128


def test_fallbacks_chain_without_loops(tmp_path: Path) -> None:
    path = series(tmp_path, "wan22_5b", "")
    path.write_text(path.read_text() + "backends:\n  backends:\n    svd: {workflow: svd, "
                    "with_reference_image: svd_from_image, fallback: wan22_5b}\n")
    (scene,) = build_plan(load_series(path)).scenes
    assert [r.backend for r in scene.routes] == ["wan22_5b", "svd"]


def test_driving_video_on_the_5b_backend_names_the_ones_that_take_it(tmp_path: Path) -> None:
    path = series(tmp_path, "wan22_5b", "")
    path.write_text(path.read_text().replace("seed: 3,", f"seed: 3, driving_video: {ASSETS / 'dance.mp4'},"))
    with pytest.raises(UserError, match="backend 'wan22_5b' cannot follow a driving video; backends that can: "
                                        "wan22_animate"):
        build_plan(load_series(path))


def test_stage_names_and_stage_parameters_are_checked(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="unknown stage 'denoize'; did you mean 'denoise'"):
        build_plan(load_series(series(tmp_path, "svd", "+denoize")))
    path = series(tmp_path, "svd", "")
    path.write_text(path.read_text().replace("params: {steps: 2}", "params: {steps: 2, upscale.per_batch: 4}"))
    (scene,) = build_plan(load_series(path)).scenes  # a stage outside the pipeline: skipped, and said so
    assert scene.routes[0].skipped == ("upscale.per_batch (upscale is not in this pipeline)",)
    path.write_text(path.read_text().replace("upscale.per_batch", "upscale.per_batsh"))
    with pytest.raises(UserError, match="unknown parameter 'upscale.per_batsh' for 'upscale'; did you mean "
                                        "'upscale.per_batch'"):
        build_plan(load_series(path))


def test_missing_node_pack_is_named_before_any_gpu_time(sim_factory: Any, tmp_path: Path) -> None:
    from comfy_driver.models.catalog import bundled_catalog

    nodes = {k: v for k, v in bundled_catalog(load_lock(MODELS_LOCK)).nodes.items()
             if k not in ("Sam2Segmentation", "DownloadAndLoadSAM2Model")}
    sim = sim_factory(catalog=Catalog(nodes))
    loaded = load_series(series(tmp_path, "wan22_animate", ""))
    with pytest.raises(UserError, match=r"ComfyUI-segment-anything-2 \(DownloadAndLoadSAM2Model, Sam2Segmentation\)"):
        Supervisor(build_plan(loaded), [sim.url]).run()
    assert sim.submissions == []


def test_the_wan_example_runs(tmp_path: Path) -> None:
    text = (EXAMPLES / "wan_animate.yaml").read_text().replace("output: ../out", f"output: {tmp_path}")
    text = text.replace("assets/", f"{ASSETS}/")
    path = tmp_path / "wan.yaml"
    path.write_text(text)
    result = CliRunner().invoke(main, ["run", str(path), "--simulate", "instant", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    clips = {s["key"]: probe(tmp_path / "mira-dances" / s["clip"]) for s in report["scenes"]}
    assert (clips["ep01/dance"].frames, clips["ep01/dance"].width) == (33, 512)
    assert (clips["ep01/wave"].frames, clips["ep01/wave"].height) == (97, 320)
    assert probe(tmp_path / "mira-dances" / report["episodes"][0]["path"]).frames == 130
    again = CliRunner().invoke(main, ["run", str(path), "--simulate", "instant", "--json", "--force", "ep01/dance"])
    assert again.exit_code == 0, again.output
    assert [s["status"] for s in json.loads(again.stdout)["scenes"]] == ["done", "skipped"]


def test_a_window_carry_that_cannot_work_is_refused_in_backends_yaml() -> None:
    from pydantic import ValidationError

    from comfy_driver.config.backends import Backend

    for fields, message in [({"carry_frames": 9}, "carry_frames 9: a window repeats fewer frames than it has (9)"),
                            ({"carry_frames": 2}, "carry_frames 2: this model makes 4·k+1 frames"),
                            ({"window_frames": 10, "carry_frames": 1}, "window_frames 10: this model makes 4·k+1")]:
        with pytest.raises(ValidationError, match=re.escape(message)):
            Backend.model_validate({"workflow": "w", "window_frames": 9, "frame_step": 4, **fields})
