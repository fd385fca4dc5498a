"""Validation is the server's, rule for rule: every recorded validation reply is reproduced exactly."""

from __future__ import annotations

import json
from typing import Any

import pytest

from comfy_driver.comfy.catalog import Catalog
from comfy_driver.comfy.versions import Version
from comfy_driver.models.folders import fill_model_inputs, mark_model_inputs

from .conftest import load_trace, shared_path


@pytest.fixture(scope="module")
def full_catalog() -> Catalog:
    return Catalog.from_file(shared_path("fixtures", "comfyui", "object_info.json"), version=Version(0, 3, 64))


def without_tracebacks(value: Any) -> Any:
    """Tracebacks hold the server's source lines; everything else must match exactly."""
    if isinstance(value, dict):
        return {k: without_tracebacks(v) for k, v in value.items() if k != "traceback"}
    if isinstance(value, list):
        return [without_tracebacks(v) for v in value]
    return value


def no_files(kind: str, name: str) -> bool:
    return False


CASES = ["required_input_missing", "value_not_in_list", "value_smaller_than_min", "combo_bad_option"]


@pytest.mark.parametrize("case", CASES)
def test_validation_case_matches_server(full_catalog: Catalog, case: str) -> None:
    recorded = load_trace("trace_validation_cases.json")[case]
    result = full_catalog.validate(recorded["request_prompt"], file_exists=no_files)
    assert result.ok == (recorded["status"] == 200)  # the server refused it; so do we
    assert result.response() == recorded["response"]


@pytest.mark.parametrize("trace", ["trace_validation_errors.json", "trace_unknown_node.json",
                                   "trace_no_output_node.json", "trace_missing_input_file.json"])
def test_validation_trace_matches_server(full_catalog: Catalog, trace: str) -> None:
    recorded = load_trace(trace)["post_prompt"]
    result = full_catalog.validate(recorded["request"]["prompt"], file_exists=no_files)
    assert not result.ok
    assert without_tracebacks(result.response()) == without_tracebacks(recorded["response"])


def test_several_branches_report_dependent_outputs(full_catalog: Catalog) -> None:
    recorded = load_trace("trace_validation_errors.json")["post_prompt"]["response"]
    result = full_catalog.validate(load_trace("trace_validation_errors.json")["post_prompt"]["request"]["prompt"],
                                   file_exists=no_files)
    assert result.node_errors["2"]["dependent_outputs"] == recorded["node_errors"]["2"]["dependent_outputs"]
    assert len(result.node_errors["2"]["dependent_outputs"]) > 1
    assert result.error == recorded["error"]


@pytest.mark.parametrize("trace", ["trace_success_image.json", "trace_success_video.json"])
def test_accepted_prompts_validate(full_catalog: Catalog, trace: str) -> None:
    prompt = load_trace(trace)["post_prompt"]["request"]["prompt"]
    result = full_catalog.validate(prompt, file_exists=no_files)
    assert result.ok and result.node_errors == {}


def test_wan_animate_graph_validates_when_model_files_are_present(full_catalog: Catalog) -> None:
    """The real server accepted this 44-node graph once its model folders held files of those names."""
    recorded = load_trace("trace_wan_animate_placeholder_models.json")["post_prompt"]
    prompt = recorded["request"]["prompt"]
    # Without the model files, validation names them as missing.
    bare = full_catalog.validate(prompt, file_exists=lambda kind, name: True)
    assert not bare.ok
    assert any(e["type"] == "value_not_in_list" for n in bare.node_errors.values() for e in n["errors"])
    # With every combo value the graph uses present on "disk", it passes, as it did on the server.
    files: dict[str, list[str]] = {}
    marked = mark_model_inputs(full_catalog.nodes)
    for node in prompt.values():
        for name, spec in marked.get(node["class_type"], {}).get("input", {}).get("required", {}).items():
            if isinstance(spec, list) and len(spec) > 1 and isinstance(spec[1], dict) and "model_folder" in spec[1]:
                files.setdefault(spec[1]["model_folder"], []).append(node["inputs"][name])
    with_models = Catalog(fill_model_inputs(marked, files), version=Version(0, 3, 64))
    inputs = {n["inputs"].get("image") or n["inputs"].get("file") or n["inputs"].get("video")
              for n in prompt.values() if n["class_type"].startswith(("LoadImage", "LoadVideo", "VHS_LoadVideo"))}
    result = with_models.validate(prompt, file_exists=lambda kind, name: name in inputs)
    assert result.ok == (recorded["status"] == 200), json.dumps(result.response())[:2000]


def test_partial_execution_targets_limit_outputs(full_catalog: Catalog) -> None:
    prompt = load_trace("trace_success_video.json")["post_prompt"]["request"]["prompt"]
    result = full_catalog.validate(prompt, partial_targets=["5"], file_exists=no_files)
    assert result.ok and result.good_outputs == ["5"]
