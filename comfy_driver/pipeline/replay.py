"""What a saved workflow gives to run again: a GUI or API JSON, or an output file that embeds one, with
changes by node title (`--set`). The public `Client.submit` runs it."""

from __future__ import annotations

import difflib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from comfy_driver import jsontext
from comfy_driver.comfy.catalog import Catalog
from comfy_driver.comfy.client import ComfyClient
from comfy_driver.errors import BadInputFile, UserError
from comfy_driver.workflow.convert import ui_to_api
from comfy_driver.workflow.files import detect_format, load_json
from comfy_driver.workflow.metadata import read_embedded


@dataclass
class Replayable:
    graph: dict[str, Any]
    workflow: dict[str, Any] | None  # the GUI workflow, when known, to embed again


def load_replayable(path: Path, catalog: Catalog) -> Replayable:
    """The graph to run from FILE: a UI/API JSON, or a PNG/WebP/MP4 that ComfyUI saved.

    From an output file the embedded API prompt (exactly what ran) is preferred; a file that
    carries only the GUI workflow is converted.
    """
    if path.suffix.lower() == ".json":
        data = load_json(path)
        kind = detect_format(data)
        if kind == "api":
            return Replayable(data, None)
        if kind == "ui":
            return Replayable(ui_to_api(data, catalog), data)
        raise BadInputFile(f"{path}: not a ComfyUI workflow (neither the API format nor a GUI-saved workflow)")
    embedded = read_embedded(path)
    prompt, workflow = embedded["prompt"], embedded["workflow"]
    if detect_format(prompt) == "api":
        return Replayable(prompt, workflow if detect_format(workflow) == "ui" else None)
    if detect_format(workflow) == "ui":
        return Replayable(ui_to_api(workflow, catalog), workflow)
    raise BadInputFile(f"{path}: carries no ComfyUI workflow", hint="was it saved by ComfyUI with metadata on?")


def parse_set(text: str) -> tuple[str, str, Any]:
    """'Node Title.input=value' -> (title, input, value); the value is read as JSON when it is JSON."""
    target, sep, raw = text.partition("=")
    title, dot, name = target.rpartition(".")
    if not sep or not dot or not title or not name:
        raise UserError(f"--set {text!r}: write it as 'Node Title.input=value'")
    try:
        value = jsontext.loads(raw)
    except ValueError:
        value = raw
    return title, name, value


def apply_sets(graph: dict[str, Any], sets: list[str], catalog: Catalog, *,
               local_files: dict[tuple[str, str], Path] | None = None) -> dict[str, Any]:
    """The graph with each --set applied, by node title (or node id); every problem reported.

    A value that names a file on this machine, set on a file input (LoadImage, LoadVideo,
    VHS_LoadVideo ...), is put in `local_files` under (node id, input): `upload_files` sends it to
    the server, content-addressed as `run` does, and puts the server's name in its place.
    """
    graph = json.loads(json.dumps(graph))
    titles: dict[str, list[str]] = {}
    for node_id, node in graph.items():
        titles.setdefault(str((node.get("_meta") or {}).get("title") or ""), []).append(node_id)
    errors = []
    for text in sets:
        try:
            title, name, value = parse_set(text)
        except UserError as exc:
            errors.append(exc.message)
            continue
        ids = titles.get(title) or ([title] if title in graph else [])
        if not ids:
            guess = difflib.get_close_matches(title, [t for t in titles if t], n=1)
            errors.append(f"--set {text!r}: no node is titled {title!r}" + (f"; did you mean {guess[0]!r}?" if guess else ""))
            continue
        if len(ids) > 1:
            errors.append(f"--set {text!r}: {len(ids)} nodes are titled {title!r} (ids {', '.join(ids)}); use a node id")
            continue
        node = graph[ids[0]]
        known = set(node["inputs"])
        if node["class_type"] in catalog:
            known |= {n for n, cat in catalog.input_order(node["class_type"]) if cat != "hidden"}
        if name not in known:
            guess = difflib.get_close_matches(name, sorted(known), n=1)
            errors.append(f"--set {text!r}: node {title!r} ({node['class_type']}) has no input {name!r}"
                          + (f"; did you mean {guess[0]!r}?" if guess else ""))
            continue
        node["inputs"][name] = value
        if local_files is not None and isinstance(value, str) and _is_file_input(catalog, node["class_type"], name):
            path = Path(value).expanduser()
            if path.is_file():  # else it names a file already in the server's input folder
                local_files[(ids[0], name)] = path
    if errors:
        raise UserError("\n".join(errors))
    return graph


def _is_file_input(catalog: Catalog, class_type: str, name: str) -> bool:
    return class_type in catalog and catalog.upload_kind(class_type, name) is not None


def upload_files(client: ComfyClient, graph: dict[str, Any], local_files: dict[tuple[str, str], Path]) -> set[str]:
    """Upload each local file a --set named and put its server name in the graph; returns the names."""
    stored = set()
    for (node_id, name), path in local_files.items():
        graph[node_id]["inputs"][name] = client.upload(path)
        stored.add(graph[node_id]["inputs"][name])
    return stored


def new_output_folder(stem: str, base: Path | None = None) -> Path:
    """A folder no earlier replay used: replay-<workflow>-<date>-<time>[-N]."""
    base = base or Path.cwd()
    name = f"replay-{stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    folder, n = base / name, 1
    while folder.exists():
        n += 1
        folder = base / f"{name}-{n}"
    return folder
