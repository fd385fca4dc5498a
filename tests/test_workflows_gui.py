"""The shipped workflows as the GUI saves them, and what either GUI makes of them."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from comfy_driver.comfy.catalog import Catalog
from comfy_driver.config.backends import load_backends
from comfy_driver.models.catalog import bundled_catalog, merge_object_info
from comfy_driver.models.folders import MODEL_INPUTS
from comfy_driver.paths import BACKENDS, WORKFLOWS
from comfy_driver.workflow.convert import ui_to_api
from comfy_driver.workflow.layout import api_to_ui

from .conftest import shared_path

SHIPPED = sorted(WORKFLOWS.glob("*.json"))
FILE_INPUTS = {"LoadImage": "image", "LoadVideo": "file"}


@pytest.fixture(scope="module")
def old() -> Catalog:
    """ComfyUI 0.3.64's catalogue (its GUI: frontend 1.27.10), with the packs at the commits models.lock
    pins (recorded on the newer server; ComfyUI-GGUF's loader from the bundled catalogue)."""
    base = json.loads(shared_path("fixtures", "comfyui", "object_info.json").read_text())
    packs = json.loads(shared_path("fixtures", "oracle-fe1.49", "object_info.json").read_text())
    gguf = {"UnetLoaderGGUF": bundled_catalog(release="0.33.0").nodes["UnetLoaderGGUF"]}
    return Catalog({k: v for k, v in merge_object_info(base, packs, gguf).items()
                    if k in base or str(v.get("python_module", "")).startswith("custom_nodes.")})


def newer_only(name: str) -> bool:
    """Workflows of a backend that needs a newer ComfyUI than 0.3.64 (backends.yaml's needs)."""
    config = load_backends(BACKENDS)
    return any(name in b.workflows() and b.needs.comfyui for b in config.backends.values())


@pytest.fixture(scope="module")
def new() -> Catalog:
    """ComfyUI 0.33.0's catalogue with the custom packs the workflows use (its GUI: frontend 1.49.6)."""
    info = json.loads(shared_path("fixtures", "oracle-fe1.49", "object_info.json").read_text())
    gguf = {"UnetLoaderGGUF": bundled_catalog(release="0.33.0").nodes["UnetLoaderGGUF"]}
    return Catalog(merge_object_info(info, gguf))


def _problems(catalog: Catalog, graph: dict[str, Any]) -> list[tuple[str, str]]:
    """Validation errors apart from model files this machine's catalogue does not list."""
    result = catalog.validate(graph, file_exists=lambda kind, name: True)
    return [(node_id, e["type"]) for node_id, node in result.node_errors.items() for e in node["errors"]
            if not (e["type"] == "value_not_in_list" and (str(e["extra_info"].get("input_name")).endswith("_name") or (
                graph[node_id]["class_type"], e["extra_info"].get("input_name")) in MODEL_INPUTS))]


def _shape(node: dict[str, Any]) -> tuple[Any, ...]:
    inputs = [(i["name"], i.get("localized_name"), i["type"], i.get("shape"), i.get("widget"))
              for i in node.get("inputs") or []]
    outputs = [(o["name"], o.get("localized_name"), o["type"]) for o in node.get("outputs") or []]
    return inputs, outputs, list(node.get("widgets_values_named") or {})


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_workflow_runs_on_either_server(path: Any, old: Catalog, new: Catalog) -> None:
    workflow = json.loads(path.read_text())
    assert workflow["version"] == 0.4 and workflow["extra"]["frontendVersion"] == "1.49.6"
    for catalog, frontend in ((old, "1.27.10"), (new, "1.49.6")):
        if catalog is old and newer_only(path.stem):
            continue
        graph = ui_to_api(workflow, catalog, frontend_version=frontend)
        assert _problems(catalog, graph) == [], (path.name, frontend)
        for node in graph.values():
            if node["class_type"] in FILE_INPUTS:  # a named placeholder, which no GUI replaces
                value = node["inputs"][FILE_INPUTS[node["class_type"]]]
                assert value and value.rsplit(".", 1)[-1] in ("png", "mp4"), (path.name, value)
            if node["class_type"] == "SaveVideo":  # MP4 / H.264 in both layouts of SaveVideo
                codec = node["inputs"]["format.codec"] if frontend == "1.49.6" else node["inputs"]["codec"]
                assert (node["inputs"]["format"], codec) == ("mp4", "h264")


def test_shipped_workflows_have_the_saved_form_of_the_gui(new: Catalog) -> None:
    """Every node type the workflows use is written as frontend 1.49.6 saved it in the oracle."""
    used = {n["type"] for p in SHIPPED for n in json.loads(p.read_text())["nodes"]}
    oracle = shared_path("fixtures", "oracle-fe1.49", "index.json").parent
    seen: dict[str, list[tuple[Any, ...]]] = {}
    for saved_path in sorted(oracle.glob("*.saved.json")):
        for node in json.loads(saved_path.read_text())["nodes"]:
            if node["type"] in used and not node.get("mode"):
                seen.setdefault(node["type"], []).append(_shape(node))
    assert len(seen) >= 20
    compared = 0
    for path in SHIPPED:
        for node in json.loads(path.read_text())["nodes"]:
            same_widgets = [shape for shape in seen.get(node["type"], []) if shape[2] == _shape(node)[2]]
            if same_widgets:  # the oracle has this node type with the same widgets (a SaveVideo with MP4...)
                assert _shape(node) in same_widgets, (path.name, node["type"])
                compared += 1
    assert compared > 50


def test_the_saved_form_round_trips_the_new_oracle(new: Catalog) -> None:
    """API graphs of frontend 1.49.6 (dynamic combos included) -> GUI workflow -> the same graph."""
    oracle = shared_path("fixtures", "oracle-fe1.49", "index.json").parent
    checked = 0
    for path in sorted(oracle.glob("*.api.json"))[::3]:
        graph = json.loads(path.read_text())
        if not all(k.isdigit() and n.get("class_type") in new for k, n in graph.items()):
            continue
        if any(isinstance(v, dict) for n in graph.values() for v in n["inputs"].values()):
            continue  # Load3D viewport captures
        assert ui_to_api(api_to_ui(graph, new), new, frontend_version="1.49.6") == graph, path.name
        checked += 1
    assert checked > 40


def test_a_server_update_adding_an_input_keeps_templates_running(new: Catalog) -> None:
    """Templates are converted with the live catalogue: an input a node gains gets its default."""
    updated = copy.deepcopy(new.nodes)
    sampler = updated["KSampler"]
    sampler["input"].setdefault("optional", {})["noise_floor"] = ["FLOAT", {"default": 0.25, "min": 0, "max": 1}]
    sampler["input_order"].setdefault("optional", []).append("noise_floor")
    catalog = Catalog(updated)
    graph = ui_to_api(json.loads((WORKFLOWS / "svd.json").read_text()), catalog)
    samplers = [n for n in graph.values() if n["class_type"] == "KSampler"]
    assert samplers and all(n["inputs"]["noise_floor"] == 0.25 for n in samplers)
    assert _problems(catalog, graph) == []
