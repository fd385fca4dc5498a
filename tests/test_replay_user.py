"""Replay as a user does it: local files named in --set are uploaded content-addressed, each replay
gets a new output folder, and Kijai's real workflows replay headlessly against a 0.33 catalogue."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from PIL import Image

from comfy_driver.cli import main
from comfy_driver.comfy.catalog import Catalog
from comfy_driver.comfy.client import file_sha256, upload_name
from comfy_driver.comfy.versions import Version
from comfy_driver.models.in_workflow import rewrite_model_names
from comfy_driver.paths import EXAMPLES
from comfy_driver.pipeline.replay import apply_sets, load_replayable

from .conftest import shared_path

GRAPH = {
    "1": {"class_type": "LoadImage", "inputs": {"image": "example.png"}, "_meta": {"title": "Photo"}},
    "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
    "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "replayed"}},
}


def test_local_file_in_set_is_uploaded_and_each_replay_gets_a_new_folder(sim: Any, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "wf.json").write_text(json.dumps(GRAPH))
    Image.new("RGB", (40, 30), (200, 10, 10)).save(tmp_path / "me.png")
    args = ["replay", "wf.json", "--server", sim.url, "--set", "Photo.image=me.png"]
    first = CliRunner().invoke(main, args)
    assert first.exit_code == 0, first.output
    stored = upload_name(tmp_path / "me.png", file_sha256(tmp_path / "me.png"))
    (entry,) = sim.history.values()
    assert entry["prompt"][2]["1"]["inputs"]["image"] == stored and sim.uploads == 1
    second = CliRunner().invoke(main, args)
    assert second.exit_code == 0, second.output
    assert sim.uploads == 1  # the server has those bytes already: not sent again
    folders = sorted(p for p in tmp_path.iterdir() if p.name.startswith("replay-wf-"))
    assert len(folders) == 2 and all(len(list(f.rglob("*.png"))) == 1 for f in folders)
    third = CliRunner().invoke(main, [*args, "-o", "mine"])
    assert third.exit_code == 0 and len(list((tmp_path / "mine").rglob("*.png"))) == 1
    with Image.open(next((tmp_path / "mine").rglob("*.png"))) as img:
        assert img.size == (40, 30)


def test_a_name_that_is_no_local_file_stays_a_server_name(sim: Any, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "wf.json").write_text(json.dumps(GRAPH))
    result = CliRunner().invoke(main, ["replay", "wf.json", "--server", sim.url, "--set", "Photo.image=absent.png"])
    assert result.exit_code != 0 and "Invalid image file: absent.png" in result.output
    assert "Traceback" not in result.output and sim.submissions == []


@pytest.fixture(scope="module")
def catalog033() -> Catalog:
    """ComfyUI 0.33.0 with the six packs (the 1.49 oracle's server), model files in place (that server
    lacked the two detection models; here they are in models/detection, one in a sub-folder)."""
    nodes = json.loads(shared_path("fixtures", "oracle-fe1.49", "object_info.json").read_text())
    for name in ("vitpose_model", "yolo_model"):
        nodes["OnnxDetectionModelLoader"]["input"]["required"][name][0] = ["vitpose-l-wholebody.onnx",
                                                                           "onnx/yolov10m.onnx"]
    return Catalog(nodes, version=Version(0, 33, 0))


KIJAI_SETS = {
    "wanvideo_WanAnimate_example_01.json": ["WanVideo TextEncode Cached.positive_prompt=a fox dances in the rain",
                                            "WanVideo Sampler.seed=7"],
    "WanAnimate_native_example_01.json": ["CLIP Text Encode (Prompt).text=a fox dances in the rain",
                                          "RandomNoise.noise_seed=7"],
}


@pytest.mark.parametrize("name", sorted(KIJAI_SETS))
def test_kijai_workflows_replay_with_sets(sim_factory: Any, catalog033: Catalog, tmp_path: Path, name: str) -> None:
    source = shared_path("fixtures", "workflows", "third_party", name)
    sets = [f"Load Image.image={EXAMPLES / 'assets' / 'mira.png'}", f"63.video={EXAMPLES / 'assets' / 'dance.mp4'}",
            "63.frame_load_cap=17", *KIJAI_SETS[name]]
    # Without a server: every --set lands, the two files are to be uploaded, model names take the
    # catalogue's spelling, and preflight (stricter than the server) passes once the files are there.
    item = load_replayable(source, catalog033)
    local: dict[tuple[str, str], Path] = {}
    graph = apply_sets(item.graph, sets, catalog033, local_files=local)
    assert {k[1] for k in local} == {"image", "video"}
    changes = rewrite_model_names(graph, catalog033)
    assert changes and all("\\\\" not in line.split("->")[1] for line in changes)
    for (node_id, input_name), path in local.items():
        graph[node_id]["inputs"][input_name] = upload_name(path, file_sha256(path))
    uploaded = {n["inputs"][k] for (nid, k), _ in local.items() for n in [graph[nid]]}
    result = catalog033.validate(graph, file_exists=lambda kind, value: value in uploaded, stricter=True)
    assert result.ok and not result.node_errors, json.dumps(result.response())[:1500]
    # Headless, end to end, on a simulator that serves that catalogue.
    sim = sim_factory(catalog=catalog033)
    run = CliRunner().invoke(main, ["replay", str(source), "--server", sim.url, "-o", str(tmp_path / "out"),
                                    *[x for s in sets for x in ("--set", s)]])
    assert run.exit_code == 0, run.output
    (entry,) = sim.history.values()
    ran = entry["prompt"][2]
    assert ran["63"]["inputs"]["frame_load_cap"] == 17 and ran["63"]["inputs"]["video"].startswith("comfy_drive/")
    assert ran["57"]["inputs"]["image"].startswith("comfy_drive/") and sim.uploads == 2
    assert entry["status"]["status_str"] == "success"
