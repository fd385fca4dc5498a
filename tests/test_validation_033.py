"""Validation as ComfyUI 0.33.0 answers: every recorded verdict, dynamic inputs, and preflight's stricter rule."""

from __future__ import annotations

import json
from typing import Any

import pytest

from comfy_driver.comfy.catalog import Catalog
from comfy_driver.comfy.versions import Version

from .conftest import shared_path
from .test_validation import no_files, without_tracebacks


def _trace() -> dict[str, Any]:
    return json.loads(shared_path("fixtures", "comfyui", "v0.33.0", "trace_validation_errors.json").read_text())


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog.from_file(shared_path("fixtures", "comfyui", "v0.33.0", "object_info.json"),
                             version=Version(0, 33, 0))


# Cases decided before validation (the body, the prompt_id): the simulator's tests replay those.
BODY_LEVEL = {"no_prompt_key", "invalid_prompt_id_not_uuid", "invalid_prompt_id_uppercase_uuid",
              "prompt_is_a_list", "body_not_json", "body_json_array"}
# The server takes output nodes from a set, so their order is arbitrary; where it matters (an error
# on a node is listed under every output validated after it), the graph is given in the order it took.
OUTPUT_ORDER = {"two_broken_branches": ["3", "4", "1", "2"]}


def graph_cases() -> list[str]:
    path = shared_path("fixtures", "comfyui", "v0.33.0", "trace_validation_errors.json")
    return [name for name in json.loads(path.read_text())["cases"] if name not in BODY_LEVEL]


@pytest.mark.parametrize("case", graph_cases())
def test_every_recorded_verdict(catalog: Catalog, case: str) -> None:
    recorded = _trace()["cases"][case]
    prompt = recorded["request_prompt"]
    if case in OUTPUT_ORDER:
        prompt = {k: prompt[k] for k in OUTPUT_ORDER[case]}
    result = catalog.validate(prompt, partial_targets=recorded["request_body"].get("partial_execution_targets"),
                              file_exists=no_files)
    if recorded["status"] == 200:
        assert result.ok and result.node_errors == recorded["response"]["node_errors"]
    else:
        assert not result.ok
        assert without_tracebacks(result.response()) == without_tracebacks(recorded["response"])


def test_unknown_node_is_missing_node_type_with_the_title(catalog: Catalog) -> None:
    prompt = {"1": {"class_type": "VHS_LoadVideo", "inputs": {}, "_meta": {"title": "Driving Video"}}}
    error = catalog.validate(prompt).error
    assert error == {"type": "missing_node_type", "message": "Node 'Driving Video' not found. The custom node may "
                     "not be installed.", "details": "Node ID '#1'",
                     "extra_info": {"node_id": "1", "class_type": "VHS_LoadVideo", "node_title": "Driving Video"}}
    old = Catalog(catalog.nodes, version=Version(0, 3, 64)).validate(prompt).error
    assert old is not None and old["type"] == "invalid_prompt" and "does not exist" in old["message"]


def _video(**save: Any) -> dict[str, Any]:
    return {"1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 48, "batch_size": 1, "color": 0}},
            "2": {"class_type": "CreateVideo", "inputs": {"images": ["1", 0], "fps": 8.0}},
            "3": {"class_type": "SaveVideo", "inputs": {"video": ["2", 0], "filename_prefix": "v", **save}}}


def _errors(result: Any) -> list[tuple[str, str]]:
    return [(e["type"], e["extra_info"].get("input_name")) for n in result.node_errors.values() for e in n["errors"]]


@pytest.mark.parametrize("trace", ["trace_success_video.json", "trace_success_video_auto.json",
                                   "trace_runtime_error.json", "trace_success_image.json"])
def test_accepted_graphs_validate(catalog: Catalog, trace: str) -> None:
    recorded = json.loads(shared_path("fixtures", "comfyui", "v0.33.0", trace).read_text())["post_prompt"]
    result = catalog.validate(recorded["request"]["json"]["prompt"], file_exists=no_files, stricter=True)
    assert result.ok and result.node_errors == {}


def test_dynamic_combo_nested_inputs_follow_the_chosen_option(catalog: Catalog) -> None:
    # Replies of the real 0.33.0 server (lab, CPU): mp4 brings a codec (itself a dynamic combo, which
    # may be left out or name no option: the node then runs with its default), h264 an optional
    # encoding, re-encode its crf and colour space, checked as plain inputs with their full names.
    for save in ({"format": "mp4"}, {"format": "mp4", "format.codec": "bogus"}):
        assert catalog.validate(_video(**save)).ok and catalog.validate(_video(**save), stricter=True).ok
    deep = catalog.validate(_video(format="mp4", **{"format.codec": "h264", "format.codec.encoding": "re-encode"}))
    assert deep.error == {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validation",
                          "details": "Required input is missing: crf\nRequired input is missing: color_space",
                          "extra_info": {}}
    assert deep.node_errors["3"]["errors"] == [
        {"type": "required_input_missing", "message": "Required input is missing", "details": "crf",
         "extra_info": {"input_name": "format.codec.encoding.crf"}},
        {"type": "required_input_missing", "message": "Required input is missing", "details": "color_space",
         "extra_info": {"input_name": "format.codec.encoding.color_space"}}]
    bad = catalog.validate(_video(format="mp4", **{
        "format.codec": "h264", "format.codec.encoding": "re-encode", "format.codec.encoding.crf": 99,
        "format.codec.encoding.color_space": "P3"}))
    assert bad.error is not None and bad.error["details"] == (
        "Value 99.0 bigger than max of 51.0: format.codec.encoding.crf\nValue not in list: "
        "format.codec.encoding.color_space: 'P3' not in ['auto', 'sRGB', 'HDR', 'HDR PQ']")
    assert [(e["type"], e["details"], e["extra_info"]["received_value"]) for e in bad.node_errors["3"]["errors"]] == [
        ("value_bigger_than_max", "format.codec.encoding.crf", 99.0),
        ("value_not_in_list", "format.codec.encoding.color_space: 'P3' not in ['auto', 'sRGB', 'HDR', 'HDR PQ']",
         "P3")]


def test_autogrow_inputs(catalog: Catalog) -> None:
    graph = {"1": {"class_type": "ComfyMathExpression", "inputs": {"expression": "a + b", "values.a": 1,
                                                                    "values.b": 2}},
             "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}}
    assert catalog.validate(graph).ok
    del graph["1"]["inputs"]["values.a"]
    assert _errors(catalog.validate(graph)) == [("required_input_missing", "values.a")]
    graph["1"]["inputs"]["values.a"] = ["9", 0]  # a link to a node that is not there
    result = catalog.validate(graph)
    assert not result.ok and result.node_errors["1"]["errors"][0]["type"] == "exception_during_inner_validation"


def test_cycle_is_reported_on_every_node_only_from_0_33(catalog: Catalog) -> None:
    recorded = _trace()["cases"]["dependency_cycle"]
    result = catalog.validate(recorded["request_prompt"])
    assert set(result.node_errors) == {"1", "2"}
    old = Catalog(catalog.nodes, version=Version(0, 3, 64)).validate(recorded["request_prompt"])
    assert not old.ok and all(e["type"] != "dependency_cycle" for n in old.node_errors.values() for e in n["errors"])
