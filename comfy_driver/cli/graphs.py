"""Saved workflows: `convert` (GUI <-> API, as the server's frontend) and `replay` (one workflow, headless)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click

from comfy_driver.cli.base import _client, _simulated, connection_options, handle_errors, main, simulate_option
from comfy_driver.errors import UserError


def _convert_catalog(server: str | None, object_info: Path | None, frontend: str | None) -> tuple[Any, Any]:
    """(node catalogue, frontend version) for `convert`: a server's, or an object_info file's.

    Conversion is only as right as its catalogue: every widget value lands by the node definitions
    of the server that will run the graph, so there is no built-in default.
    """
    from comfy_driver.comfy.catalog import Catalog

    if object_info is not None:
        try:
            return Catalog.from_file(object_info), frontend
        except ValueError as exc:
            raise UserError(f"{object_info}: not an object_info JSON file ({exc})") from None
    if server:
        client = _client(server)
        if frontend is None:  # the GUI that server ships is the one to reproduce
            required = client.versions().frontend
            frontend = str(required) if required else None
        return client.catalog(), frontend
    raise UserError("convert needs the node catalogue of the server the graph is for",
                    hint="pass --server URL, or --object-info FILE (a saved GET /object_info of that server)")


@main.command()
@click.argument("workflow", type=click.Path(path_type=Path))
@click.option("--server", default=None, help="Use this ComfyUI server's node catalogue and its GUI's rules.")
@click.option("--object-info", type=click.Path(exists=True, path_type=Path), default=None,
              help="Use a saved object_info.json as the node catalogue.")
@click.option("--frontend", "frontend", default=None, metavar="VERSION",
              help="Convert as this ComfyUI frontend does (default: the server's; with --object-info, the newest).")
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None, help="Write here (default: stdout).")
@click.option("--to", "target", type=click.Choice(["api", "ui"]), default="api", show_default=True,
              help="api: GUI workflow -> API graph (as the frontend does); ui: API graph -> GUI workflow.")
@handle_errors
def convert(workflow: Path, server: str | None, object_info: Path | None, frontend: str | None,
            output: Path | None, target: str) -> None:
    """Convert a GUI-saved workflow to the API format (or an API graph to a GUI workflow)."""
    from comfy_driver.workflow.convert import ui_to_api
    from comfy_driver.workflow.files import detect_format, load_json
    from comfy_driver.workflow.frontend import parse_version
    from comfy_driver.workflow.layout import api_to_ui

    if frontend is not None:
        parse_version(frontend)  # a bad --frontend is named before anything is fetched
    data = load_json(workflow)
    kind = detect_format(data)
    if kind == "unknown":
        raise UserError(f"{workflow}: not a ComfyUI workflow (neither the API format nor a GUI-saved workflow)")
    catalog, frontend = _convert_catalog(server, object_info, frontend)
    notes: list[str] = []
    if target == "api":
        result = data if kind == "api" else ui_to_api(data, catalog, frontend_version=frontend, notes=notes)
        for note in notes:
            click.echo(f"note: {note}", err=True)
    else:
        result = data if kind == "ui" else api_to_ui(data, catalog)
    text = json.dumps(result, indent=2, ensure_ascii=False) + "\n"
    if output is None:
        click.echo(text, nl=False)
    else:
        from comfy_driver.confined import os_failure

        try:  # the path you name, as you name it (it may be /dev/stdout)
            output.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise os_failure(exc, output) from None
        click.echo(f"wrote {output} ({len(result) if target == 'api' else len(result['nodes'])} nodes)", err=True)


@main.command()
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--set", "sets", multiple=True, help="'Node Title.input=value' (repeatable); values are read as JSON.")
@click.option("--server", default=None, help="ComfyUI URL, or v2+URL for a Comfy API v2 endpoint (key in COMFY_API_KEY).")
@simulate_option
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None,
              help="Folder for the outputs (default: a new replay-<file name>-<date>-<time> folder per replay).")
@connection_options
@handle_errors
def replay(file: Path, sets: tuple[str, ...], server: str | None, simulate: str | None, output: Path | None,
           settings: Any) -> None:
    """Run a saved workflow headlessly: a GUI or API JSON, or a PNG / WebP / MP4 made by ComfyUI.

    A --set value that names a local file (on LoadImage, LoadVideo, VHS_LoadVideo ...) is uploaded;
    model names the server lists under another spelling (a Windows sub-folder) take the server's."""
    from comfy_driver.api import Client
    from comfy_driver.pipeline.outlock import check_folder
    from comfy_driver.pipeline.progress import Progress
    from comfy_driver.pipeline.replay import new_output_folder, parse_set

    if not simulate and not server:
        raise UserError("replay needs --server URL (or --simulate)")
    changes = dict((f"{title}.{name}", value) for title, name, value in map(parse_set, sets))
    progress = Progress(1, enabled=True)
    dest = check_folder(output or new_output_folder(file.stem))
    if server and not simulate and server.strip().lower().startswith("v2+"):
        _replay_v2(file, changes, server, dest, settings, progress)
        return
    with _simulated(simulate) as sim_url, Client(sim_url or server or "", settings=settings) as client:
        _follow_and_download(client.submit(file, sets=changes), progress, dest)


def _replay_v2(file: Path, changes: dict[str, Any], server: str, dest: Path, settings: Any, progress: Any) -> None:
    """replay through a Comfy API v2 target (--server v2+URL): the same events, outputs and files."""
    from comfy_driver.api_v2 import V2Target

    with V2Target(server, settings=settings) as target:
        if target.catalog() is None:
            click.echo(target.catalog_source, err=True)
        _follow_and_download(target.submit(file, sets=changes), progress, dest)


def _follow_and_download(job: Any, progress: Any, dest: Path) -> None:
    """Show a replayed job's progress, then download its outputs into dest and list them."""
    from comfy_driver.comfy.job import NodeStarted, Started, StepProgress
    from comfy_driver.pipeline.outlock import claim_output

    started, node, step = None, "", None
    for event in job.events():
        if isinstance(event, Started):
            started = time.time()
        elif isinstance(event, NodeStarted):
            node, step = event.name, None
        elif isinstance(event, StepProgress):
            step = (event.value, event.max)
        progress.update(1, "replay", node, step, started)
    with claim_output(dest):
        files = job.download(dest)
    for got in files:
        click.echo(f"{got.path}  {got.size} bytes  sha256 {got.sha256[:16]}")


