"""One server: `sim` (the simulated one), `login`, `queue`, `interrupt`, `free`, `stats`."""

from __future__ import annotations

import json
import shutil
import signal
import tempfile
from pathlib import Path
from typing import Any

import click

from comfy_driver.cli.base import (
    FiniteRange, _client, _raise_keyboard_interrupt, connection_options, handle_errors, main,
)
from comfy_driver.errors import UserError


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8188, show_default=True, type=int, help="Port to listen on.")
@click.option("--root", type=click.Path(path_type=Path), default=None,
              help="Folder for input/, output/ and temp/ (default: a temporary folder, removed at the end).")
@click.option("--speed", type=click.Choice(["realistic", "instant"]), default="realistic", show_default=True,
              help="realistic: nodes, sampler steps and model loads take time; instant: none.")
@click.option("--time-scale", default=1.0, show_default=True, type=FiniteRange(0.001, 100),
              help="Multiply the realistic durations (0.1: ten times faster).")
@click.option("--object-info", type=click.Path(exists=True, path_type=Path), default=None,
              help="Serve this node catalogue (an object_info.json) instead of the bundled one.")
@click.option("--comfyui", default=None, metavar="VERSION",
              help="The ComfyUI release to play: its catalogue, routes, messages and rules (0.3.64 or 0.33.0).")
@click.option("--vram-gb", default=16.0, show_default=True, type=FiniteRange(1, 1024),
              help="The simulated GPU's memory, as system_stats reports it (backend: auto reads it).")
@handle_errors
def sim(host: str, port: int, root: Path | None, speed: str, time_scale: float, object_info: Path | None,
        comfyui: str | None, vram_gb: float) -> None:
    """Run the simulated ComfyUI server in the foreground (Ctrl-C stops it)."""
    import threading

    from comfy_driver.api import simulator

    folder = root or Path(tempfile.mkdtemp(prefix="comfy-drive-sim-"))
    try:
        server = simulator(folder, speed=speed, object_info=object_info, host=host, port=port,
                           time_scale=time_scale, comfyui=comfyui, vram_gb=vram_gb)
        try:
            url = server.start()
        except OSError as exc:
            raise UserError(f"cannot listen on {host}:{port}: {exc.strerror or exc}",
                            hint="choose another --port") from None
        click.echo(f"simulated ComfyUI {server.versions.comfyui} on {url} (files in {folder}); Ctrl-C stops it",
                   err=True)
        signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)  # SIGTERM cleans up as Ctrl-C does
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass
        finally:
            server.stop()
    finally:
        if root is None:
            shutil.rmtree(folder, ignore_errors=True)


@main.command()
@click.argument("url")
@click.option("--header", "headers", multiple=True, required=True, help="'Name: value', e.g. 'Authorization: Bearer …'.")
@handle_errors
def login(url: str, headers: tuple[str, ...]) -> None:
    """Store headers (tokens) to send to the server at URL, in a file only you can read."""
    from comfy_driver.comfy.address import save_headers

    parsed = {}
    for h in headers:
        name, sep, value = h.partition(":")
        if not sep or not name.strip():
            raise UserError(f"--header {name.strip() or h!r}: write it as 'Name: value'")
        parsed[name.strip()] = value.strip()
    path = save_headers(url, parsed)
    click.echo(f"saved {len(parsed)} header(s) for {url.split('@')[-1]} in {path} (mode 600)")


@main.command()
@click.option("--server", required=True, help="ComfyUI URL.")
@click.option("--delete", "delete", multiple=True, help="Remove this pending prompt id.")
@click.option("--clear", is_flag=True, help="Remove every pending prompt.")
@connection_options
@handle_errors
def queue(server: str, delete: tuple[str, ...], clear: bool, settings: Any) -> None:
    """Show (or prune) a server's queue."""
    client = _client(server, settings)
    if delete:
        running, pending = client.queued_ids()
        for prompt_id in delete:
            if prompt_id not in pending:  # the server would ignore it without a word
                where = "is running (interrupt --prompt-id stops it)" if prompt_id in running else "is not queued"
                raise UserError(f"prompt {prompt_id} {where} on {client.address.display}; nothing was deleted")
        client.delete_queued(list(delete))
    if clear:
        client.clear_queue()
    running, pending = client.queued_ids()
    click.echo(f"running: {', '.join(running) or '-'}")
    click.echo(f"pending: {len(pending)}" + "".join(f"\n  {p}" for p in pending))


@main.command()
@click.option("--server", required=True, help="ComfyUI URL.")
@click.option("--prompt-id", default=None, help="Only stop this prompt (never someone else's).")
@connection_options
@handle_errors
def interrupt(server: str, prompt_id: str | None, settings: Any) -> None:
    """Interrupt the running prompt; with --prompt-id, cancel that one (pending or running)."""
    client = _client(server, settings)
    if prompt_id is None:
        client.interrupt()
        click.echo("interrupt sent")
        return
    if client.cancel(prompt_id):
        click.echo(f"cancelled {prompt_id}")
    else:
        click.echo(f"{prompt_id} is neither queued nor running (nothing cancelled)")


@main.command()
@click.option("--server", required=True, help="ComfyUI URL.")
@connection_options
@handle_errors
def free(server: str, settings: Any) -> None:
    """Ask the server to unload models and free memory."""
    _client(server, settings).free()
    click.echo("models unloaded, memory freed")


@main.command()
@click.option("--server", required=True, help="ComfyUI URL.")
@click.option("--json", "as_json", is_flag=True, help="Print what was detected as JSON.")
@connection_options
@handle_errors
def stats(server: str, as_json: bool, settings: Any) -> None:
    """What the server is: ComfyUI and frontend versions, node catalogue, devices, version facts."""
    client = _client(server, settings)
    data = client.system_stats()
    versions = client.versions()
    catalog = client.catalog()
    system = data["system"]
    if as_json:
        click.echo(json.dumps({
            "comfyui": versions.comfyui_text or None, "frontend": str(versions.frontend) if versions.frontend else None,
            "frontend_reported": versions.frontend_reported, "supported": versions.support_note() is None,
            "note": versions.support_note(), "node_classes": len(catalog.nodes), "sources": catalog.packs(),
            "facts": [f.name for f in versions.facts], "devices": data.get("devices", [])}, indent=2))
        return
    click.echo(versions.describe())
    note = versions.support_note()
    click.echo(f"  {note}" if note else "  supported release")
    click.echo(f"Python {str(system.get('python_version', '?')).split()[0]}, PyTorch {system.get('pytorch_version', '?')}")
    packs = catalog.packs()
    listed = ", ".join(f"{name} {n}" for name, n in sorted(packs.items(), key=lambda kv: (-kv[1], kv[0])))
    click.echo(f"node catalogue: {len(catalog.nodes)} classes ({listed})")
    for dev in data.get("devices", []):
        click.echo(f"  {dev.get('name')}: {int(dev.get('vram_free', 0)) >> 20} MiB free of "
                   f"{int(dev.get('vram_total', 0)) >> 20} MiB")
    facts = versions.facts
    click.echo("behaviour of this release:" if facts else "behaviour of this release: as 0.3.60-0.3.64")
    for fact in facts:
        click.echo(f"  {fact.name} (since {fact.since}): {fact.what}")


# ------------------------------------------------------------------------------------------ compare, try
