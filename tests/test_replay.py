"""Replaying saved workflows: from JSON, and from the PNG / WebP / MP4 files ComfyUI (here: the
simulator, writing metadata the way ComfyUI does) produced."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from comfy_driver.cli import main
from comfy_driver.errors import UserError
from comfy_driver.models.catalog import bundled_catalog
from comfy_driver.models.lock import load_lock
from comfy_driver.paths import MODELS_LOCK
from comfy_driver.api import Client
from comfy_driver.pipeline.replay import apply_sets, load_replayable, parse_set
from comfy_driver.workflow.convert import ui_to_api
from comfy_driver.workflow.layout import api_to_ui
from comfy_driver.workflow.metadata import parse_ffmetadata, read_embedded

from .conftest import IMAGE_GRAPH, load_trace

CATALOG = bundled_catalog(load_lock(MODELS_LOCK))


def run(sim: Any, path: Path, dest: Path, sets: list[str] | None = None) -> list[Any]:
    changes = {f"{title}.{name}": value for title, name, value in map(parse_set, sets or [])}
    with Client(sim.url) as client:
        return client.submit(path, sets=changes).download(dest)


def test_gui_json_replays_and_its_png_carries_the_workflow(sim: Any, tmp_path: Path) -> None:
    ui = api_to_ui(IMAGE_GRAPH, CATALOG)
    source = tmp_path / "saved.json"
    source.write_text(json.dumps(ui))
    (png,) = run(sim, source, tmp_path / "out")
    embedded = read_embedded(png.path)
    assert embedded["prompt"] == ui_to_api(ui, CATALOG)
    assert embedded["workflow"]["nodes"][0]["type"] == "EmptyImage"
    # replay the PNG itself, with a change by node title
    (again,) = run(sim, png.path, tmp_path / "again", ["Blank.color=255"])
    assert read_embedded(again.path)["prompt"]["1"]["inputs"]["color"] == 255


@pytest.mark.parametrize("node,suffix", [("4", ".mp4"), ("5", ".webp"), ("2", ".mp4")])
def test_videos_carry_their_prompt(sim: Any, tmp_path: Path, node: str, suffix: str) -> None:
    graph = load_trace("trace_success_video.json")["post_prompt"]["request"]["prompt"]
    source = tmp_path / "video.json"
    source.write_text(json.dumps(graph))
    outputs = run(sim, source, tmp_path / "out")
    prefix = graph[node]["inputs"]["filename_prefix"].split("/")[-1]
    (made,) = [o for o in outputs if o.path.name.startswith(prefix) and o.path.suffix == suffix]
    assert read_embedded(made.path)["prompt"] == graph
    outputs_again = run(sim, made.path, tmp_path / "again")
    assert len(outputs_again) == len(outputs)


def test_cli_replay_simulated(tmp_path: Path) -> None:
    source = tmp_path / "api.json"
    source.write_text(json.dumps(IMAGE_GRAPH))
    result = CliRunner().invoke(main, ["replay", str(source), "--simulate", "instant", "-o", str(tmp_path / "out"),
                                       "--set", "Blank.width=32"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "trace" / "img_00001_.png").is_file()


def test_set_errors_are_clear() -> None:
    with pytest.raises(UserError) as info:
        apply_sets(IMAGE_GRAPH, ["Blnk.width=3", "Blank.widht=3", "nonsense"], CATALOG)
    lines = str(info.value).splitlines()
    assert len(lines) == 3, lines  # every problem, each once
    assert "no node is titled 'Blnk'; did you mean 'Blank'?" in lines[0]
    assert "has no input 'widht'; did you mean 'width'?" in lines[1]
    assert "--set 'nonsense': write it as 'Node Title.input=value'" in lines[2]
    with pytest.raises(UserError, match="did you mean 'width'"):
        apply_sets(IMAGE_GRAPH, ["Blank.widht=3"], CATALOG)


def test_file_without_workflow_is_refused(tmp_path: Path) -> None:
    from PIL import Image

    plain = tmp_path / "plain.png"
    Image.new("RGB", (4, 4)).save(plain)
    with pytest.raises(UserError, match="carries no ComfyUI workflow"):
        load_replayable(plain, CATALOG)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(UserError, match="not an image, video or workflow"):
        load_replayable(text, CATALOG)


def test_ffmetadata_escapes() -> None:
    text = ";FFMETADATA1\nprompt={\"a\"\\=1\\; \"b\": \"x\\\\y\"}\ncomment=line1\\\nline2\n"
    meta = parse_ffmetadata(text)
    assert meta["prompt"] == '{"a"=1; "b": "x\\y"}'
    assert meta["comment"] == "line1\nline2"
