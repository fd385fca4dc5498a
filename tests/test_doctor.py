"""`doctor --server` validates every workflow each backend may submit, and names drifted nodes with the fix."""

from __future__ import annotations

import copy
from typing import Any

from click.testing import CliRunner

from comfy_driver.cli import main
from comfy_driver.comfy.catalog import Catalog
from comfy_driver.models.catalog import bundled_catalog
from comfy_driver.models.lock import load_lock
from comfy_driver.paths import MODELS_LOCK


def doctor(url: str) -> Any:
    return CliRunner().invoke(main, ["doctor", "--server", url])


def test_every_workflow_passes_on_both_releases(sim_factory: Any) -> None:
    for release in ("0.3.64", "0.33.0"):
        sim = sim_factory(catalog=bundled_catalog(load_lock(MODELS_LOCK), release), vram_gb=48)
        result = doctor(sim.url)
        assert result.exit_code == 0, result.output
        assert result.output.startswith(f"server: ComfyUI {release}")
        names = ["svd", "svd_from_image", "wan22_5b", "wan22_animate", "wan22_animate_prompt", "wan22_animate_extend",
                 "wan22_animate_prompt_extend", "denoise", "upscale", "wan22_animate_kj", "wan22_animate_kj_prompt",
                 "denoise_kj", "wan22_animate_gguf", "wan22_animate_gguf_extend"]
        animate2 = ["wan_animate2", "wan_animate2_extend", "wan_animate2_distilled_prompt"]
        for name in names + (animate2 if release == "0.33.0" else []):
            assert f"workflow {name}: passes this server's validation" in result.output
        if release == "0.3.64":  # the backend's needs (backends.yaml) rule it out before any node check
            assert "  not for this server: needs ComfyUI 0.33.0 or newer (the server runs 0.3.64)" in result.output
            assert "not for this server (backend: auto passes them over): wan_animate2, wan_animate2_distilled" \
                in result.output
        drifted = 'node 29 "Save Video" (SaveVideo): schema changed on this server'
        assert (drifted in result.output) == (release == "0.33.0")
        if release == "0.33.0":
            assert "'format' required COMBO -> required COMFY_DYNAMICCOMBO_V3" in result.output
            assert "'codec' required COMBO -> optional COMFY_DYNAMICCOMBO_V3" in result.output
            assert "fix: handled: converted against this server's catalogue" in result.output
        assert result.output.rstrip().endswith("all backends ready")


def test_a_gpu_too_small_is_named_per_backend(sim_factory: Any) -> None:
    sim = sim_factory(vram_gb=12)
    result = doctor(sim.url)
    assert "wan22_animate:\n  not for this server: needs 24 GB of VRAM (the server's GPU has 12 GB)" in result.output
    assert "workflow wan22_animate_gguf: passes this server's validation" in result.output
    assert result.exit_code == 0, result.output


def test_a_drift_the_conversion_cannot_fill_is_named_with_the_fix(sim_factory: Any) -> None:
    nodes = copy.deepcopy(bundled_catalog(load_lock(MODELS_LOCK), "0.33.0").nodes)
    create = nodes["CreateVideo"]  # a server whose CreateVideo now needs a linked track
    create["input"]["required"]["track"] = ["AUDIO", {}]
    create["input_order"]["required"].append("track")
    sim = sim_factory(catalog=Catalog(nodes, version=bundled_catalog(release="0.33.0").version))
    result = doctor(sim.url)
    assert result.exit_code == 1
    assert "workflow svd: this server would refuse it:" in result.output
    assert "node 12 \"Create Video\" (CreateVideo) input 'track': Required input is missing: track" in result.output
    assert "node 12 \"Create Video\" (CreateVideo): schema changed on this server (gained 'track' (required)," \
        in result.output
    assert "fix: open the workflow in this server's GUI, set the inputs named above on this node and save it" \
        in result.output
    assert "all backends ready" not in result.output


def test_a_model_missing_on_the_server_is_reported_once(sim_factory: Any) -> None:
    lock = load_lock(MODELS_LOCK)
    nodes = copy.deepcopy(bundled_catalog(lock).nodes)
    nodes["UpscaleModelLoader"]["input"]["required"]["model_name"][0] = []  # the upscaler's file is absent
    sim = sim_factory(catalog=Catalog(nodes))
    result = doctor(sim.url)
    assert "model upscale_models/RealESRGAN_x4plus.safetensors: NOT on the server" in result.output
    assert "workflow upscale: passes this server's validation once the model files above are there" in result.output
    assert result.output.rstrip().endswith("1 problem(s) found") and result.exit_code == 1


def test_a_missing_node_is_named_by_its_pack_or_as_comfyuis_own() -> None:
    from comfy_driver.models.doctor import pack_of

    assert pack_of("WanAnimate2ToVideo") == "ComfyUI itself (update ComfyUI)"  # only 0.33.0 has it
    assert pack_of("UnetLoaderGGUF") == "ComfyUI-GGUF"
    assert pack_of("NoSuchNode") == "an unknown pack"
