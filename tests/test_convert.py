"""GUI (UI format) -> API conversion: equal to the real frontend's output on every oracle case."""

from __future__ import annotations

import json
from pathlib import Path


import pytest

from comfy_driver.comfy.catalog import Catalog
from comfy_driver.errors import UserError
from comfy_driver.paths import WORKFLOWS
from comfy_driver.workflow.convert import ConversionError, ui_to_api
from comfy_driver.workflow.files import detect_format
from comfy_driver.workflow.layout import api_to_ui

from .conftest import SHARED, shared_path

ORACLE = SHARED / "fixtures" / "oracle"


def _cases() -> list[str]:
    index = ORACLE / "index.json"
    if not index.exists():
        return ["(../shared/fixtures/oracle missing)"]
    return [c["case"] for c in json.loads(index.read_text())["cases"]]


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog.from_file(shared_path("fixtures", "comfyui", "object_info.json"))


@pytest.mark.parametrize("fmt", ["ui", "v1.ui"])
@pytest.mark.parametrize("case", _cases())
def test_oracle_case(catalog: Catalog, case: str, fmt: str) -> None:
    source = shared_path("fixtures", "oracle", f"{case}.{fmt}.json")
    expected = json.loads((ORACLE / f"{case}.api.json").read_text())
    workflow = json.loads(source.read_text())
    assert detect_format(workflow) == "ui"
    assert ui_to_api(workflow, catalog, missing="frontend") == expected


def test_missing_node_types_are_one_clear_error(catalog: Catalog) -> None:
    workflow = json.loads(shared_path("fixtures", "oracle", "audio_stable_audio_example.ui.json").read_text())
    with pytest.raises(ConversionError) as info:
        ui_to_api(workflow, catalog)
    message = str(info.value)
    assert "node types the server does not have" in message
    assert "EmptyLatentAudio" in message and "SaveAudio" in message
    assert isinstance(info.value, UserError)  # bad input: the CLI exits 2


def test_missing_custom_node_names_its_pack(catalog: Catalog) -> None:
    workflow = {"nodes": [{"id": 1, "type": "FancyNode", "mode": 0, "inputs": [], "outputs": [],
                           "properties": {"cnr_id": "comfyui-fancy-pack"}, "widgets_values": [1]}],
                "links": [], "version": 0.4}
    with pytest.raises(ConversionError, match=r"FancyNode \(from comfyui-fancy-pack\)"):
        ui_to_api(workflow, catalog)


def test_api_to_ui_round_trips_the_oracle_graphs(catalog: Catalog) -> None:
    checked = 0
    for path in sorted(ORACLE.glob("*.api.json"))[::7]:
        graph = json.loads(path.read_text())
        if not all(k.isdigit() for k in graph) or not all("class_type" in n for n in graph.values()):
            continue
        ui = api_to_ui(graph, catalog)
        assert ui_to_api(ui, catalog) == graph, path.name
        checked += 1
    assert checked > 20


def test_shipped_workflows_are_gui_workflows(catalog: Catalog) -> None:
    for path in WORKFLOWS.glob("*.json"):
        workflow = json.loads(path.read_text())
        assert detect_format(workflow) == "ui", path.name
        ids = {n["id"] for n in workflow["nodes"]}
        for link in workflow["links"]:
            assert link[1] in ids and link[3] in ids
        for node in workflow["nodes"]:
            assert len(node["pos"]) == 2 and node["size"][0] > 0 and node.get("title")
        assert ui_to_api(workflow, catalog)  # converts with the real server's catalogue


def test_cli_convert(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from comfy_driver.cli import main

    object_info = shared_path("fixtures", "comfyui", "object_info.json")
    source = shared_path("fixtures", "oracle", "default.v1.ui.json")
    out = tmp_path / "api.json"
    result = CliRunner().invoke(main, ["convert", str(source), "--object-info", str(object_info), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text()) == json.loads((ORACLE / "default.api.json").read_text())
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    result = CliRunner().invoke(main, ["convert", str(bad)])
    assert result.exit_code == 2 and "not a ComfyUI workflow" in result.output


def test_not_json_is_clear(tmp_path: Path) -> None:
    from comfy_driver.workflow.files import load_json

    path = tmp_path / "x.json"
    path.write_text("{nope")
    with pytest.raises(UserError, match="x.json: not valid JSON"):
        load_json(path)


