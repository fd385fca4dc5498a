"""backend: auto picks, per server, the best backend it can run for the scene: from the GPU's memory
(system_stats), the ComfyUI release, the node packs and the model files the server lists."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from comfy_driver.cli import main
from comfy_driver.comfy.catalog import Catalog
from comfy_driver.comfy.client import ComfyClient
from comfy_driver.config.series import load_series
from comfy_driver.errors import UserError
from comfy_driver.media.ffmpeg import probe
from comfy_driver.models.catalog import bundled_catalog
from comfy_driver.models.lock import load_lock
from comfy_driver.paths import EXAMPLES, MODELS_LOCK
from comfy_driver.models.needs import ServerFacts
from comfy_driver.pipeline.plan import build_plan
from comfy_driver.pipeline.supervisor import Supervisor

ASSETS = EXAMPLES / "assets"
REF = f"reference_image: {ASSETS / 'mira.png'}"
DRIVE = f"driving_video: {ASSETS / 'dance.mp4'}"


def series(folder: Path, scenes: list[str], backend: str = "auto") -> Path:
    lines = "".join(f"      - {{id: s{i}, prompt: a fox dances, seed: 3{', ' + extra if extra else ''}}}\n"
                    for i, extra in enumerate(scenes))
    text = (f"title: Auto\nbackend: {backend}\noutput: out\n"
            f"defaults: {{width: 64, height: 64, fps: 8, frames: 9, params: {{steps: 2}}}}\n"
            f"episodes:\n  - scenes:\n{lines}")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "series.yaml"
    path.write_text(text)
    return path


def facts_of(sim: Any) -> ServerFacts:
    client = ComfyClient(sim.url)
    try:
        return ServerFacts.read(sim.url, client.system_stats(), client.catalog())
    finally:
        client.close()


def catalog_of(release: str, drop: tuple[str, ...] = ()) -> Catalog:
    catalog = bundled_catalog(load_lock(MODELS_LOCK), release)
    return Catalog({k: v for k, v in catalog.nodes.items() if k not in drop}, version=catalog.version)


def chosen(scene: Any) -> str:
    """What auto chose for a planned scene, and why (one of its notes)."""
    return next(n for n in scene.notes if n.startswith("auto chose"))


def template(scene: Any) -> Any:
    return scene.routes[0].steps[0].first.template


# (GPU memory, ComfyUI release) -> what auto picks with a driving video, and with a reference image only
EXPECTED = [
    (48, "0.33.0", "wan_animate2", "wan_animate2"),
    (48, "0.3.64", "wan22_animate", "wan22_animate"),
    (24, "0.3.64", "wan22_animate", "wan22_animate"),
    (16, "0.3.64", "wan22_animate_kj", "wan22_animate_kj"),
    (12, "0.3.64", "wan22_animate_gguf", "wan22_animate_gguf"),
]


@pytest.mark.parametrize("vram,release,with_video,without_video", EXPECTED)
def test_auto_picks_per_gpu_memory_and_release(sim_factory: Any, tmp_path: Path, vram: int, release: str,
                                               with_video: str, without_video: str) -> None:
    sim = sim_factory(catalog=catalog_of(release), vram_gb=vram)
    loaded = load_series(series(tmp_path, [f"{REF}, {DRIVE}", REF, ""]))
    scenes = build_plan(loaded, catalog=catalog_of(release), servers=[facts_of(sim)]).scenes
    assert [s.routes[0].backend for s in scenes] == [with_video, without_video, "svd"]
    why = chosen(scenes[0])
    assert why.startswith(f"auto chose {with_video} for {sim.url} (ComfyUI {release}, {vram} GB GPU) "
                          "(follows the driving video)")
    assert "driving_video" in template(scenes[0]).params  # the variant that takes the video
    assert "driving_video" not in template(scenes[1]).params
    if vram < 24:
        assert f"wan22_animate: needs 24 GB of VRAM (the server's GPU has {vram} GB)" in why
    if release == "0.3.64":
        assert "wan_animate2: needs ComfyUI 0.33.0 or newer (the server runs 0.3.64)" in why


def test_a_16gb_series_with_driving_videos_runs_on_auto(sim_factory: Any, tmp_path: Path) -> None:
    sim = sim_factory(vram_gb=16)
    loaded = load_series(series(tmp_path, [f"{REF}, {DRIVE}", f"{REF}, {DRIVE}, frames: 16"]))
    report = Supervisor(build_plan(loaded, servers=[facts_of(sim)]), [sim.url]).run()
    assert [s.status for s in report.scenes] == ["done", "done"]
    assert {s.backend for s in report.scenes} == {"wan22_animate_kj"}  # a 14B Animate model, driving video used
    assert all(any("follows the driving video" in n for n in s.notes) for s in report.scenes)
    assert probe(tmp_path / "out" / "auto" / report.scenes[1].clip).frames == 17  # 16 asked: Wan makes 4·k+1
    saved = json.loads((tmp_path / "out" / "auto" / "report.json").read_text())
    assert any(n.startswith("auto chose wan22_animate_kj") for n in saved["scenes"][0]["notes"])


def test_missing_pack_or_model_moves_auto_down_the_list(sim_factory: Any, tmp_path: Path) -> None:
    no_wrapper = catalog_of("0.3.64", drop=("WanVideoSampler",))
    sim = sim_factory(catalog=no_wrapper, vram_gb=16)
    (scene,) = build_plan(load_series(series(tmp_path, [f"{REF}, {DRIVE}"])), servers=[facts_of(sim)]).scenes
    assert scene.routes[0].backend == "wan22_animate_gguf"
    assert "wan22_animate_kj: node pack ComfyUI-WanVideoWrapper missing (WanVideoSampler)" in chosen(scene)
    facts = facts_of(sim)
    folder = dict(facts.models)
    folder["diffusion_models"] = frozenset(n for n in folder["diffusion_models"] if not n.endswith(".gguf"))
    without_gguf = ServerFacts(facts.url, facts.vram_gb, facts.comfyui, facts.nodes, folder)
    (scene,) = build_plan(load_series(series(tmp_path, [f"{REF}, {DRIVE}"])), servers=[without_gguf]).scenes
    assert scene.routes[0].backend == "wan22_5b" and "the driving video is not used" in chosen(scene)
    assert "model files missing: diffusion_models/Wan2.2-Animate-14B-Q3_K_M.gguf" in chosen(scene)
    assert scene.routes[0].skipped[0] == "driving_video (wan22_5b takes none)"


def test_several_servers_get_a_backend_each_can_run(sim_factory: Any, tmp_path: Path) -> None:
    big, small = sim_factory(vram_gb=48), sim_factory(vram_gb=12)
    (scene,) = build_plan(load_series(series(tmp_path, [f"{REF}, {DRIVE}"])),
                          servers=[facts_of(big), facts_of(small)]).scenes
    assert scene.routes[0].backend == "wan22_animate_gguf"
    assert f"wan22_animate: {small.url}: needs 24 GB of VRAM" in chosen(scene)


def test_auto_needs_a_server_and_names_why_nothing_fits(sim_factory: Any, tmp_path: Path) -> None:
    path = series(tmp_path, [f"{REF}, {DRIVE}"])
    with pytest.raises(UserError, match="backend auto chooses for a server: pass --server URL or --simulate"):
        build_plan(load_series(path))
    sim = sim_factory(vram_gb=4)
    with pytest.raises(UserError, match="no backend of the auto: list can run this scene") as err:
        build_plan(load_series(path), servers=[facts_of(sim)])
    assert "svd: needs 8 GB of VRAM (the server's GPU has 4 GB)" in str(err.value)


def test_dry_run_and_stages_say_what_auto_chose(tmp_path: Path) -> None:
    from comfy_driver.sim.server import SimServer

    sim = SimServer(tmp_path / "sim", bundled_catalog(load_lock(MODELS_LOCK)), vram_gb=12)
    sim.start()
    try:
        path = series(tmp_path, [f"{REF}, {DRIVE}"], backend="auto+upscale")
        result = CliRunner().invoke(main, ["run", str(path), "--server", sim.url, "--dry-run"])
    finally:
        sim.stop()
    assert result.exit_code == 0, result.output
    assert "auto chose wan22_animate_gguf for" in result.output and "12 GB GPU" in result.output
    assert "1 scene(s) valid" in result.output and sim.submissions == []


def test_sim_reports_the_vram_it_is_given(sim_factory: Any) -> None:
    sim = sim_factory(vram_gb=24)
    client = ComfyClient(sim.url)
    try:
        (device,) = client.system_stats()["devices"]
    finally:
        client.close()
    assert device["vram_total"] == 24 << 30


def test_compare_can_put_auto_beside_a_named_backend(sim_factory: Any, tmp_path: Path) -> None:
    sim = sim_factory(vram_gb=16)
    path = series(tmp_path, [f"{REF}, {DRIVE}"], backend="svd")
    result = CliRunner().invoke(main, ["compare", str(path), "--backends", "auto,wan22_animate_gguf",
                                       "--server", sim.url, "--json"])
    assert result.exit_code == 0, result.output
    medians = json.loads(result.stdout)["medians"]
    assert set(medians) == {"auto", "wan22_animate_gguf"} and medians["auto"]["scenes"] == "1/1"
    (graph,) = [json.loads(json.dumps(sim.history[p]["prompt"][2])) for p in sim.submissions[:1]]
    assert any(n["class_type"] == "WanVideoSampler" for n in graph.values())  # auto rendered wan22_animate_kj
