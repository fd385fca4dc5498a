"""Kijai's wrapper graph, the GGUF Animate graph and Wan Animate 2: valid for the real catalogues, run
end to end on the simulator (windows and stages), and refused clearly where the release is too old."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from comfy_driver.cli import main
from comfy_driver.comfy.catalog import Catalog
from comfy_driver.config.series import load_series
from comfy_driver.errors import UserError
from comfy_driver.media.ffmpeg import probe
from comfy_driver.models.catalog import bundled_catalog, merge_object_info
from comfy_driver.models.folders import fill_model_inputs, mark_model_inputs
from comfy_driver.models.lock import load_lock
from comfy_driver.paths import EXAMPLES, MODELS_LOCK
from comfy_driver.pipeline.plan import build_plan
from comfy_driver.pipeline.supervisor import Supervisor

from .conftest import shared_path

ASSETS = EXAMPLES / "assets"
REF = f"reference_image: {ASSETS / 'mira.png'}"
DRIVE = f"driving_video: {ASSETS / 'dance.mp4'}"
NEW = ["wan22_animate_kj", "wan22_animate_gguf", "wan_animate2", "wan_animate2_distilled"]
# (backend, its release, stages)
CASES = [(b, "0.33.0" if b.startswith("wan_animate2") else "0.3.64", s)
         for b in NEW for s in ("", "+upscale")] + [("wan22_animate_kj", "0.3.64", "+denoise_kj")]


def series(folder: Path, backend: str, extra: str, frames: int = 9, params: str = "steps: 2") -> Path:
    text = (f"title: New\nbackend: {backend}\noutput: out\n"
            f"defaults: {{width: 64, height: 64, fps: 8, frames: {frames}, params: {{{params}}}}}\n"
            f"episodes:\n  - scenes:\n      - {{id: one, prompt: a fox dances, seed: 3, {extra}}}\n")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "series.yaml"
    path.write_text(text)
    return path


def catalog_of(release: str) -> Catalog:
    return bundled_catalog(load_lock(MODELS_LOCK), release)


@pytest.fixture(scope="module")
def real_catalog() -> Catalog:
    """The real 0.33.0 server with the packs models.lock pins (its recording), GGUF's loader added."""
    info = json.loads(shared_path("fixtures", "oracle-fe1.49", "object_info.json").read_text())
    gguf = {"UnetLoaderGGUF": catalog_of("0.33.0").nodes["UnetLoaderGGUF"]}
    merged = merge_object_info(info, gguf)
    return Catalog(fill_model_inputs(mark_model_inputs(merged), load_lock(MODELS_LOCK).by_folder()),
                   version=catalog_of("0.33.0").version)


@pytest.mark.parametrize("backend", NEW)
@pytest.mark.parametrize("extra", [f"{REF}, {DRIVE}", REF])
def test_prompts_validate_against_the_real_catalogue(real_catalog: Catalog, tmp_path: Path, backend: str,
                                                     extra: str) -> None:
    frames = 16 if "driving_video" in extra else 100  # the driving video lasts 2 s; without one: windows
    plan = build_plan(load_series(series(tmp_path, backend, extra, frames=frames)), catalog=real_catalog)
    for job in [step.first for scene in plan.scenes for step in scene.steps]:
        uploads = set(job.uploads)
        result = real_catalog.validate(job.graph, file_exists=lambda kind, name: name in uploads)
        assert result.ok and not result.node_errors, (job.template.name, json.dumps(result.response())[:1500])
        files = {v for node in job.graph.values() for v in node["inputs"].values()
                 if isinstance(v, str) and v.endswith((".safetensors", ".gguf")) and "sam2" not in v}
        assert files <= {m.name for m in load_lock(MODELS_LOCK).models}


@pytest.mark.parametrize("backend,release,stages", CASES)
def test_runs_on_the_simulator_with_windows_and_stages(sim_factory: Any, tmp_path: Path, backend: str, release: str,
                                                       stages: str) -> None:
    sim = sim_factory(catalog=catalog_of(release))
    loaded = load_series(series(tmp_path, backend + stages, REF, frames=100))  # longer than the driving video
    report = Supervisor(build_plan(loaded, catalog=catalog_of(release)), [sim.url]).run()
    (scene,) = report.scenes
    assert scene.status == "done", scene.error
    info = probe(tmp_path / "out" / "new" / scene.clip)
    scale = 2 if "upscale" in stages else 1
    assert (info.frames, info.width, info.height) == (101, 64 * scale, 64 * scale)  # Wan makes 4·k+1 frames
    assert any("the clip has 101 frames (100 asked)" in note for note in scene.notes)
    submitted = [h for h in scene.history if h.startswith("submitted")]
    windows = 1 if backend == "wan22_animate_kj" else 2  # the wrapper renders its windows in one prompt
    assert len(submitted) == windows + stages.count("+"), scene.history


def test_gguf_quant_level_is_a_parameter(tmp_path: Path) -> None:
    def model(params: str) -> str:
        path = series(tmp_path, "wan22_animate_gguf", f"{REF}, {DRIVE}", params=params)
        (scene,) = build_plan(load_series(path)).scenes
        graph = scene.routes[0].steps[0].first.graph
        (name,) = [n["inputs"]["unet_name"] for n in graph.values() if n["class_type"] == "UnetLoaderGGUF"]
        return name

    assert model("steps: 2") == "Wan2.2-Animate-14B-Q3_K_M.gguf"
    assert model("quant: Q2_K") == "Wan2.2-Animate-14B-Q2_K.gguf"
    with pytest.raises(UserError, match=r"parameter 'quant': 'Q9' is not one of"):
        model("quant: Q9")


def test_kj_memory_settings_are_parameters(tmp_path: Path) -> None:
    params = "blocks_to_swap: 35, attention_mode: sageattn, vae_tiling: true, window_frames: 49"
    (scene,) = build_plan(load_series(series(tmp_path, "wan22_animate_kj", f"{REF}, {DRIVE}", params=params))).scenes
    graph = scene.routes[0].steps[0].first.graph
    by_class = {n["class_type"]: n["inputs"] for n in graph.values()}
    assert by_class["WanVideoBlockSwap"]["blocks_to_swap"] == 35
    assert by_class["WanVideoModelLoader"]["attention_mode"] == "sageattn"
    assert by_class["WanVideoDecode"]["enable_vae_tiling"] is True
    assert by_class["WanVideoAnimateEmbeds"]["frame_window_size"] == 49
    # the result is the decoded frames, saved to the output folder (not the example's collage preview)
    (save,) = [n for n in graph.values() if n["class_type"] == "VHS_VideoCombine"]
    assert save["inputs"]["save_output"] is True
    assert graph[save["inputs"]["images"][0]]["class_type"] == "WanVideoDecode"
    assert not any(n["class_type"] == "PointsEditor" for n in graph.values())


def test_animate2_on_an_older_comfyui_names_the_version(sim: Any, tmp_path: Path) -> None:
    path = series(tmp_path, "wan_animate2", f"{REF}, {DRIVE}")
    with pytest.raises(UserError, match=r"backend wan_animate2 needs ComfyUI 0.33.0 or newer; the server runs "
                                        r"ComfyUI 0.3.64"):
        build_plan(load_series(path), catalog=catalog_of("0.3.64"))
    result = CliRunner().invoke(main, ["run", str(path), "--server", sim.url, "--dry-run"])
    assert result.exit_code != 0 and "needs ComfyUI 0.33.0 or newer" in result.output
    assert "Traceback" not in result.output and sim.submissions == []


def test_setup_dry_run_lists_each_backends_steps_and_the_release_it_needs(tmp_path: Path) -> None:
    comfyui = tmp_path / "ComfyUI"
    comfyui.mkdir()
    (comfyui / "main.py").write_text("")
    (comfyui / "comfyui_version.py").write_text('__version__ = "0.3.64"\n')

    def setup(backend: str) -> Any:
        return CliRunner().invoke(main, ["setup", "--comfyui", str(comfyui), "--backend", backend,
                                         "--python", "/usr/bin/python3", "--dry-run"])

    old = setup("wan_animate2")
    assert old.exit_code != 0 and f"{comfyui} is ComfyUI 0.3.64; wan_animate2 needs ComfyUI 0.33.0 or newer" \
        in old.output
    gguf = setup("wan22_animate_gguf")
    assert gguf.exit_code == 0, gguf.output
    assert "clone https://github.com/city96/ComfyUI-GGUF at 795e45156ece" in gguf.output
    assert "WanVideoWrapper" not in gguf.output and "version " not in gguf.output
    kj = setup("wan22_animate_kj+denoise_kj")
    assert "clone https://github.com/kijai/ComfyUI-WanVideoWrapper at 088128b22424" in kj.output
    (comfyui / "comfyui_version.py").write_text('__version__ = "0.33.0"\n')
    new = setup("wan_animate2_distilled")
    assert new.exit_code == 0, new.output
    lines = new.output.splitlines()
    assert lines[0].startswith("version ") and "wan_animate2_distilled needs 0.33.0 or newer" in lines[0]
    assert lines[1].startswith("models ") and not any(line.startswith("clone") for line in lines)
