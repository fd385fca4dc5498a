"""Kijai's Wan Animate workflows: their model files from the loader widgets, with folders and the names
the server lists (`lock from-workflow`), and their names rewritten for a replay."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from comfy_driver.cli import main
from comfy_driver.comfy.catalog import Catalog
from comfy_driver.comfy.versions import Version
from comfy_driver.models.in_workflow import loader_models, rewrite_model_names, server_name
from comfy_driver.paths import MODELS_LOCK
from comfy_driver.workflow.files import load_json

from .conftest import shared_path

KIJAI = "wanvideo_WanAnimate_example_01.json"
NATIVE = "WanAnimate_native_example_01.json"


def third_party(name: str) -> Path:
    return shared_path("fixtures", "workflows", "third_party", name)


def test_server_names_for_windows_paths() -> None:
    listed = ["Wan2_2-Animate-14B_fp8_e4m3fn_scaled_KJ.safetensors", "wan/other.safetensors"]
    assert server_name("WanVideo\\2_2\\Wan2_2-Animate-14B_fp8_e4m3fn_scaled_KJ.safetensors", listed) == listed[0]
    assert server_name("wan\\other.safetensors", listed) == "wan/other.safetensors"
    assert server_name("x\\missing.safetensors", listed) is None
    assert server_name("a\\same.safetensors", ["b/same.safetensors", "c/same.safetensors"]) is None  # ambiguous


def test_loader_widgets_give_files_and_folders() -> None:
    found = {(m.folder, m.name): m for m in loader_models(load_json(third_party(KIJAI)))}
    assert ("diffusion_models", "WanVideo/2_2/Wan2_2-Animate-14B_fp8_e4m3fn_scaled_KJ.safetensors") in found
    assert ("vae", "wanvideo/Wan2_1_VAE_bf16.safetensors") in found
    assert ("text_encoders", "umt5-xxl-enc-bf16.safetensors") in found
    assert ("clip_vision", "clip_vision_h.safetensors") in found
    assert {n for f, n in found if f == "loras"} == {
        "WanVideo/WanAnimate_relight_lora_fp16.safetensors",
        "WanVideo/Lightx2v/lightx2v_I2V_14B_480p_cfg_step_distill_rank64_bf16.safetensors"}
    assert (None, "sam2_hiera_base_plus.safetensors") in found  # the SAM2 node downloads it itself
    native = {(m.folder, m.name) for m in loader_models(load_json(third_party(NATIVE)))}
    assert ("detection", "onnx/yolov10m.onnx") in native and ("text_encoders",
                                                               "umt5_xxl_fp8_e4m3fn_scaled.safetensors") in native


@pytest.mark.parametrize("name", [KIJAI, NATIVE])
def test_lock_from_workflow_lists_the_files_with_server_names(sim: Any, tmp_path: Path, name: str) -> None:
    lock = tmp_path / "models.lock"
    shutil.copy(MODELS_LOCK, lock)
    before = lock.read_text()
    result = CliRunner().invoke(main, ["lock", "from-workflow", str(third_party(name)), "--lock", str(lock),
                                       "--server", sim.url])
    assert result.exit_code == 0, result.output
    assert "no node lists models" not in result.output and lock.read_text() == before
    if name == KIJAI:
        assert ("in models.lock: diffusion_models/Wan2_2-Animate-14B_fp8_e4m3fn_scaled_KJ.safetensors [on the server]"
                in result.output)
        assert "saved as 'WanVideo\\\\2_2\\\\Wan2_2-Animate-14B_fp8_e4m3fn_scaled_KJ.safetensors'" in result.output
        assert "in models.lock: text_encoders/umt5-xxl-enc-bf16.safetensors [on the server]" in result.output
        assert "not in models.lock: vae/wanvideo/Wan2_1_VAE_bf16.safetensors [NOT on the server]" in result.output
        assert "--folder vae --name wanvideo/Wan2_1_VAE_bf16.safetensors" in result.output
        assert "downloaded by its node pack on first use: sam2_hiera_base_plus.safetensors" in result.output
    else:
        assert "in models.lock: text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors [on the server]" in result.output
        assert "not in models.lock: detection/onnx/yolov10m.onnx [NOT on the server]" in result.output


def test_a_workflow_naming_no_model_is_an_error(tmp_path: Path) -> None:
    wf = tmp_path / "plain.json"
    wf.write_text('{"nodes": [{"id": 1, "type": "EmptyImage", "widgets_values": [64, 64, 1, 0]}], "links": []}')
    result = CliRunner().invoke(main, ["lock", "from-workflow", str(wf), "--lock", str(MODELS_LOCK)])
    assert result.exit_code != 0 and "no model files found" in result.output


def test_replayed_model_names_take_the_servers_spelling() -> None:
    info = load_json(shared_path("fixtures", "oracle-fe1.49", "object_info.json"))
    nodes = copy.deepcopy({k: info[k] for k in ("WanVideoModelLoader", "VAELoader")})
    nodes["WanVideoModelLoader"]["input"]["required"]["model"][0] = ["Wan2_2-Animate-14B_fp8_e4m3fn_scaled_KJ.safetensors"]
    nodes["VAELoader"]["input"]["required"]["vae_name"][0] = ["wan/Wan2_1_VAE_bf16.safetensors"]
    catalog = Catalog(nodes, version=Version(0, 33, 0))
    graph = {"1": {"class_type": "WanVideoModelLoader",
                   "inputs": {"model": "WanVideo\\2_2\\Wan2_2-Animate-14B_fp8_e4m3fn_scaled_KJ.safetensors"}},
             "2": {"class_type": "VAELoader", "inputs": {"vae_name": "wanvideo\\Wan2_1_VAE_bf16.safetensors"}},
             "3": {"class_type": "VAELoader", "inputs": {"vae_name": "absent.safetensors"}}}
    changes = rewrite_model_names(graph, catalog)
    assert graph["1"]["inputs"]["model"] == "Wan2_2-Animate-14B_fp8_e4m3fn_scaled_KJ.safetensors"
    assert graph["2"]["inputs"]["vae_name"] == "wan/Wan2_1_VAE_bf16.safetensors"
    assert graph["3"]["inputs"]["vae_name"] == "absent.safetensors" and len(changes) == 2
