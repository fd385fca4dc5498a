"""GUI (UI format) -> API conversion: equal to the real frontend's output on every oracle case."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from comfy_driver.comfy.catalog import Catalog
from comfy_driver.errors import UserError
from comfy_driver.paths import WORKFLOWS
from comfy_driver.workflow.convert import ConversionError, ui_to_api
from comfy_driver.workflow.files import detect_format
from comfy_driver.workflow.layout import api_to_ui

from .conftest import SHARED, shared_path

ORACLE = SHARED / "fixtures" / "oracle"  # frontend 1.27.10 on ComfyUI 0.3.64
ORACLE_149 = SHARED / "fixtures" / "oracle-fe1.49"  # frontend 1.49.6 on ComfyUI 0.33.0


def _cases(folder: Path) -> list[str]:
    index = folder / "index.json"
    if not index.exists():
        return [f"(../shared/fixtures/{folder.name} missing)"]
    return [c["case"] for c in json.loads(index.read_text())["cases"]]


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog.from_file(shared_path("fixtures", "comfyui", "object_info.json"))


@pytest.fixture(scope="module")
def bundled() -> Catalog:
    from comfy_driver.models.catalog import bundled_catalog

    return bundled_catalog(release="0.33.0")


@pytest.fixture(scope="module")
def catalog_149() -> Catalog:
    return Catalog.from_file(shared_path("fixtures", "oracle-fe1.49", "object_info.json"))


@pytest.fixture(scope="module")
def index_149() -> dict[str, dict]:
    return {c["case"]: c for c in json.loads(shared_path("fixtures", "oracle-fe1.49", "index.json").read_text())["cases"]}


@pytest.mark.parametrize("fmt", ["ui", "v1.ui"])
@pytest.mark.parametrize("case", _cases(ORACLE))
def test_oracle_case(catalog: Catalog, case: str, fmt: str) -> None:
    source = shared_path("fixtures", "oracle", f"{case}.{fmt}.json")
    expected = json.loads((ORACLE / f"{case}.api.json").read_text())
    workflow = json.loads(source.read_text())
    assert detect_format(workflow) == "ui"
    assert ui_to_api(workflow, catalog, missing="frontend", frontend_version="1.27.10") == expected


def _inputs_149() -> list[Any]:
    index = ORACLE_149 / "index.json"
    if not index.exists():
        return ["(../shared/fixtures/oracle-fe1.49 missing)"]
    params = []
    for case in json.loads(index.read_text())["cases"]:
        for name in case["inputs"]:
            params.append(pytest.param(case["case"], name, id=name))
    return params


@pytest.mark.parametrize(("case", "source_name"), _inputs_149())
def test_oracle_149_case(catalog_149: Catalog, index_149: dict[str, dict], case: str, source_name: str) -> None:
    source = shared_path("fixtures", "oracle-fe1.49", source_name)
    expected_file = ORACLE_149 / source_name.replace(".ui.json", ".api.json")
    if not expected_file.exists():  # a version 1 input that gives the same graph as the classic one
        expected_file = ORACLE_149 / f"{case}.api.json"
    expected = json.loads(expected_file.read_text())
    got = ui_to_api(json.loads(source.read_text()), catalog_149, missing="frontend", frontend_version="1.49.6")
    for unstable in index_149[case].get("unstable_inputs") or []:
        # a Load3D viewport capture: a fresh temp file name on every conversion in the GUI
        node_id, name = unstable.split(".", 1)
        got[node_id]["inputs"].pop(name)
        expected[node_id]["inputs"].pop(name)
    assert got == expected


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


def test_shipped_workflows_are_gui_workflows(bundled: Catalog) -> None:
    for path in WORKFLOWS.glob("*.json"):
        workflow = json.loads(path.read_text())
        assert detect_format(workflow) == "ui", path.name
        ids = {n["id"] for n in workflow["nodes"]}
        for link in workflow["links"]:
            assert link[1] in ids and link[3] in ids
        for node in workflow["nodes"]:
            assert len(node["pos"]) == 2 and node["size"][0] > 0 and node.get("title")
        assert ui_to_api(workflow, bundled)  # converts with the newest release's catalogue and the packs


def test_cli_convert(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from comfy_driver.cli import main

    object_info = shared_path("fixtures", "comfyui", "object_info.json")
    source = shared_path("fixtures", "oracle", "default.v1.ui.json")
    out = tmp_path / "api.json"
    result = CliRunner().invoke(main, ["convert", str(source), "--object-info", str(object_info),
                                       "--frontend", "1.27.10", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text()) == json.loads((ORACLE / "default.api.json").read_text())
    # the same graph as the newest GUI converts it: its bundled title for CheckpointLoaderSimple differs
    result = CliRunner().invoke(main, ["convert", str(ORACLE_149 / "tpl_api_kling2_6_t2v.ui.json"), "--object-info",
                                       str(ORACLE_149 / "object_info.json"), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text()) == json.loads((ORACLE_149 / "tpl_api_kling2_6_t2v.api.json").read_text())
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    result = CliRunner().invoke(main, ["convert", str(bad)])
    assert result.exit_code == 2 and "not a ComfyUI workflow" in result.output
    result = CliRunner().invoke(main, ["convert", str(source), "--object-info", str(object_info), "--frontend", "new"])
    assert result.exit_code == 2 and "frontend version 'new'" in result.output


def test_cli_convert_without_a_catalogue_says_so() -> None:
    from click.testing import CliRunner

    from comfy_driver.cli import main

    source = shared_path("fixtures", "oracle", "default.v1.ui.json")
    result = CliRunner().invoke(main, ["convert", str(source)])
    assert result.exit_code == 2
    assert "needs the node catalogue of the server" in result.output and "--server URL" in result.output
    assert "missing" not in result.output and "Traceback" not in result.output


def test_cli_convert_follows_the_servers_frontend(sim_factory: Any) -> None:
    """Against a server, the GUI it requires decides: 0.3.64's 1.27 writes PreviewAny's text widget,
    0.33.0's 1.49 does not (and titles the nodes by its own bundled names)."""
    from click.testing import CliRunner

    from comfy_driver.cli import main
    from comfy_driver.comfy.versions import Version

    source = shared_path("fixtures", "oracle", "api_openai_chat.ui.json")
    old = sim_factory(catalog=Catalog.from_file(shared_path("fixtures", "comfyui", "object_info.json"),
                                                version=Version(0, 3, 64)))
    new = sim_factory(catalog=Catalog.from_file(ORACLE_149 / "object_info.json", version=Version(0, 33, 0)))
    got_old = CliRunner().invoke(main, ["convert", str(source), "--server", old.url])
    got_new = CliRunner().invoke(main, ["convert", str(source), "--server", new.url])
    assert got_old.exit_code == 0 and got_new.exit_code == 0, got_old.output + got_new.output
    assert json.loads(got_old.stdout) == json.loads((ORACLE / "api_openai_chat.api.json").read_text())
    assert json.loads(got_new.stdout) == json.loads((ORACLE_149 / "api_openai_chat.api.json").read_text())
    forced = CliRunner().invoke(main, ["convert", str(source), "--server", new.url, "--frontend", "1.27.10"])
    assert "preview" in json.loads(forced.stdout)["2"]["inputs"]


def test_not_json_is_clear(tmp_path: Path) -> None:
    from comfy_driver.workflow.files import load_json

    path = tmp_path / "x.json"
    path.write_text("{nope")
    with pytest.raises(UserError, match="x.json: not valid JSON"):
        load_json(path)




def test_schema_drift_is_reported(catalog_149: Catalog) -> None:
    """Inputs a node gained, values left over or shifted, links into inputs that are gone: in words."""
    workflow = json.loads((ORACLE_149 / "wanvideo_480p_I2V_example_01.ui.json").read_text())
    notes: list[str] = []
    ui_to_api(workflow, catalog_149, frontend_version="1.49.6", notes=notes)
    assert any("WanVideoImageClipEncode" in n and "'clip' is not an input" in n for n in notes)
    assert any("WanVideoSampler" in n and "no saved value for" in n and "rope_function" in n for n in notes)
    saved = json.loads((ORACLE_149 / "tpl_api_seedance2_5_r2v.ui.json").read_text())
    notes = []
    ui_to_api(saved, catalog_149, frontend_version="1.49.6", notes=notes)
    assert any("saved as 'codec' lands in 'format.codec'" in n for n in notes)
    notes = []
    ui_to_api(json.loads((WORKFLOWS / "wan22_animate.json").read_text()), catalog_149, notes=notes)
    assert notes == []  # the shipped workflows fit the newest catalogue exactly


def test_empty_file_names_as_each_gui_opens_them(catalog: Catalog) -> None:
    """1.27 puts the first file of the server's list into an upload combo saved as '' (the text
    'undefined' when the list is empty); 1.49 keeps ''. Seen in both real GUIs."""
    def loader(node_id: int, class_type: str) -> dict[str, Any]:
        return {"id": node_id, "type": class_type, "mode": 0, "inputs": [], "outputs": [], "widgets_values": ["", "image"]}

    workflow = {"nodes": [loader(1, "LoadImage"), loader(2, "LoadVideo")], "links": [], "version": 0.4}
    images = catalog.nodes["LoadImage"]["input"]["required"]["image"]
    first = (images[0] if isinstance(images[0], list) else images[1]["options"])[0]
    empty = catalog.with_files([])
    old = ui_to_api(workflow, catalog, frontend_version="1.27.10")
    assert old["1"]["inputs"]["image"] == first
    assert ui_to_api(workflow, empty, frontend_version="1.27.10")["2"]["inputs"]["file"] == "undefined"
    new = ui_to_api(workflow, catalog, frontend_version="1.49.6")
    assert new["1"]["inputs"]["image"] == "" and new["2"]["inputs"]["file"] == ""
