"""Models and node packs: `fetch`, `lock`, `setup`, `doctor`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from comfy_driver.cli.base import LOCK_HELP, _client, _lock_path, connection_options, handle_errors, main
from comfy_driver.errors import RunError, UserError


@main.command()
@click.option("--backend", "backends", multiple=True, help="Only the models these backends use (repeatable).")
@click.option("--models-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="A ComfyUI models folder (holding checkpoints/, loras/, ...).")
@click.option("--comfyui", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="A ComfyUI folder (its models/ and extra_model_paths.yaml are used).")
@click.option("--extra-model-paths", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="ComfyUI's extra_model_paths.yaml: files found there are not downloaded again.")
@click.option("--lock", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help=LOCK_HELP)
@click.option("--dry-run", is_flag=True, help="List what would be downloaded, and the total size.")
@click.option("--jobs", default=3, show_default=True, type=click.IntRange(1, 16), help="Files downloaded at once.")
@click.option("--pin", "pin_unpinned", is_flag=True,
              help="Also download entries with no sha256 yet, pinning what the Hub serves now (see `lock pin`).")
@handle_errors
def fetch(backends: tuple[str, ...], models_dir: Path | None, comfyui: Path | None, extra_model_paths: Path | None,
          lock: Path | None, dry_run: bool, jobs: int, pin_unpinned: bool) -> None:
    """Download the pinned model files of models.lock into a ComfyUI models tree, verified."""
    from comfy_driver.models.fetch import download_size, human, plan
    from comfy_driver.models.fetch import fetch as run_fetch
    from comfy_driver.models.lock import read_lock
    from comfy_driver.models.tree import ModelsTree

    lockfile = read_lock(_lock_path(lock))
    entries = lockfile.lock.for_backends(list(backends))
    tree = None
    if models_dir or comfyui or not dry_run:
        tree = ModelsTree.locate(models_dir, comfyui, extra_model_paths)
    if dry_run:
        items = plan(lockfile, entries, tree, None)
        for item in items:
            size = human(item.entry.size) if item.entry.size is not None else "size read at download"
            if item.entry.sha256 is None:
                size += "; not pinned: `lock pin` first, or --pin"
            click.echo(f"{item.status:<8} {item.entry.folder}/{item.entry.name}  ({size})  <- "
                       f"{item.entry.repo}/{item.entry.path}")
        missing = sum(i.status == "missing" for i in items)
        click.echo(f"{missing} of {len(items)} file(s) to download: {download_size(items)}")
        return
    assert tree is not None
    report = run_fetch(lockfile, entries, tree, jobs=jobs, allow_unpinned=pin_unpinned)
    for name in report.pinned:
        click.echo(f"pinned {name} in {lockfile.path}", err=True)
    for item in report.items:
        line = f"{item.status:<10} {item.entry.folder}/{item.entry.name}"
        if item.present is not None and item.present != item.target:
            line += f"  (found at {item.present})"
        click.echo(line + (f"\n  {item.message}" if item.message else ""))
    click.echo(f"downloaded {human(report.bytes_downloaded)}")
    refused = [i for i in report.items if i.status == "refused"]
    if refused:
        sys.exit(2)
    if report.failed:
        sys.exit(1)


@main.group()
def lock() -> None:
    """Add or update entries of models.lock."""


@lock.command("add")
@click.argument("ref")
@click.option("--folder", default=None, help="ComfyUI models folder (guessed from the repo path when it names one).")
@click.option("--name", default=None, help="File name in the folder (default: the repo file's name).")
@click.option("--backend", "backends", multiple=True, help="Backend(s) that use it.")
@click.option("--allow-pickle", is_flag=True, help="Accept a pickle-based file (.ckpt/.pt/.pth/.bin) you trust.")
@click.option("--lock", "lock_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help=LOCK_HELP)
@handle_errors
def lock_add(ref: str, folder: str | None, name: str | None, backends: tuple[str, ...], allow_pickle: bool,
             lock_file: Path | None) -> None:
    """Add a Hub file (URL or OWNER/REPO/PATH), pinned to its revision, size and sha256."""
    from comfy_driver.models.add import add_to_lock, parse_ref

    entry, what = add_to_lock(_lock_path(lock_file), parse_ref(ref), folder=folder, name=name,
                              backends=list(backends), allow_pickle=allow_pickle)
    click.echo(f"{what}: {entry.folder}/{entry.name} @ {entry.revision} ({entry.size} bytes, sha256 {entry.sha256})")


@lock.command("pin")
@click.option("--backend", "backends", multiple=True, help="Only the entries these backends use (repeatable).")
@click.option("--lock", "lock_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help=LOCK_HELP)
@handle_errors
def lock_pin(backends: tuple[str, ...], lock_file: Path | None) -> None:
    """Read revision, size and sha256 of entries not pinned yet from the Hub, show them, write them."""
    from comfy_driver.models.fetch import plan
    from comfy_driver.models.fetch import pin as pin_entries
    from comfy_driver.models.lock import read_lock

    lockfile = read_lock(_lock_path(lock_file))
    items = plan(lockfile, lockfile.lock.for_backends(list(backends)), None, None)
    pinned = set(pin_entries(lockfile, items))
    for item in items:
        e = item.entry
        mark = "pinned" if e.name in pinned else "already"
        click.echo(f"{mark:<8} {e.folder}/{e.name}  revision {e.revision}  size {e.size}  sha256 {e.sha256}")
    click.echo(f"{len(pinned)} entr{'y' if len(pinned) == 1 else 'ies'} pinned in {lockfile.path}")


@lock.command("from-workflow")
@click.argument("workflow", type=click.Path(path_type=Path))
@click.option("--backend", "backends", multiple=True, help="Backend(s) that use these models.")
@click.option("--server", default=None, help="Match the names to what this ComfyUI server lists.")
@click.option("--lock", "lock_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help=LOCK_HELP)
@handle_errors
def lock_from_workflow(workflow: Path, backends: tuple[str, ...], server: str | None, lock_file: Path | None) -> None:
    """The model files a GUI-saved workflow loads, and their folders: those with a download link
    (properties.models) are added to models.lock; the others, read from the loader widgets, are listed
    with what models.lock and the server have."""
    from comfy_driver.models.add import add_to_lock, parse_ref, workflow_models
    from comfy_driver.models.in_workflow import loader_models
    from comfy_driver.models.lock import read_lock
    from comfy_driver.workflow.files import detect_format, load_json

    data = load_json(workflow)
    if detect_format(data) != "ui":
        raise UserError(f"{workflow}: not a GUI-saved workflow (only those name their loaders' files)")
    linked = workflow_models(data)
    client = _client(server) if server else None
    listed: dict[str, list[str]] | None = None
    if client is not None:
        listed = {}
        for folder in {m.folder for m in loader_models(data) if m.folder}:
            listed[folder] = _server_models(client, folder)
    found = [m for m in loader_models(data, listed) if m.name not in {str(x["name"]) for x in linked}]
    if not linked and not found:
        raise UserError(f"{workflow}: no model files found (no node lists properties.models, and no loader "
                        "widget names a model file)")
    lock_path = _lock_path(lock_file)
    for model in linked:
        entry, what = add_to_lock(lock_path, parse_ref(model["url"]), folder=model.get("directory"),
                                  name=model["name"], backends=list(backends))
        click.echo(f"{what}: {entry.folder}/{entry.name} @ {entry.revision}")
    known = {(e.folder, e.name) for e in read_lock(lock_path).lock.models}
    for m in found:
        where = f"  ({m.who}" + (f", saved as {m.saved!r})" if m.saved != m.name else ")")
        if m.folder is None:
            click.echo(f"downloaded by its node pack on first use: {m.name}{where}")
            continue
        there = "" if listed is None else (" [on the server]" if m.name in listed.get(m.folder, []) else
                                           " [NOT on the server]")
        if (m.folder, m.name) in known:
            click.echo(f"in models.lock: {m.folder}/{m.name}{there}{where}")
        else:
            click.echo(f"not in models.lock: {m.folder}/{m.name}{there}{where}\n"
                       f"  add it with: comfy-drive lock add <hub repo>/<path in repo> --folder {m.folder} "
                       f"--name {m.name}")


def _server_models(client: Any, folder: str) -> list[str]:
    """What a server lists in one models folder; nothing for a folder it does not have."""
    from comfy_driver.comfy.errors import ServerProtocolError

    try:
        return [str(n) for n in client.models(folder)]
    except ServerProtocolError:
        return []


@main.command()
@click.option("--comfyui", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="The ComfyUI folder (holding main.py, custom_nodes/, models/).")
@click.option("--backend", "backends", multiple=True, required=True,
              help="Backend to set up, with its stages: wan22_animate+upscale (repeatable).")
@click.option("--python", "python", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="ComfyUI's Python (default: venv/, .venv/ or the portable build's, found in the folder).")
@click.option("--server", default=None, help="Check this running ComfyUI instead of a short start of the folder.")
@click.option("--dry-run", is_flag=True, help="List every action, do nothing.")
@click.option("--pin", "pin_unpinned", is_flag=True, help="Also fetch model files with no sha256 yet (see `lock pin`).")
@click.option("--start-timeout", default=600.0, show_default=True, type=click.FloatRange(1, 7200),
              help="Seconds to wait for the short start of ComfyUI that checks its nodes.")
@click.option("--lock", "lock_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help=LOCK_HELP)
@handle_errors
def setup(comfyui: Path, backends: tuple[str, ...], python: Path | None, server: str | None, dry_run: bool,
          pin_unpinned: bool, start_timeout: float, lock_file: Path | None) -> None:
    """Install what backends need into a ComfyUI folder: node packs at pinned commits, their
    requirements, the model files (verified); then check that ComfyUI lists the nodes. Idempotent."""
    from comfy_driver.config.backends import load_backends
    from comfy_driver.models.fetch import fetch as run_fetch
    from comfy_driver.models.fetch import download_size, plan
    from comfy_driver.models.lock import read_lock
    from comfy_driver.models.packs import packs_for, workflow_classes
    from comfy_driver.models.setup import execute, make_plan
    from comfy_driver.models.tree import ModelsTree
    from comfy_driver.paths import BACKENDS, WORKFLOWS

    known = load_backends(BACKENDS)
    names: list[str] = []
    workflows: list[str] = []
    for text in backends:
        base, stages = known.parse(text)
        chain = known.chain(base)
        names += chain + stages
        workflows += [w for b in chain for w in known.backend(b).workflows()] + \
            [known.stages[st].workflow for st in stages]
    lockfile = read_lock(_lock_path(lock_file))
    packs = packs_for(lockfile.lock.packs, workflow_classes(WORKFLOWS, workflows))
    entries = lockfile.lock.for_backends(list(dict.fromkeys(n for n in names
                                                            if any(n in m.backends for m in lockfile.lock.models))))
    tree = ModelsTree.locate(None, comfyui, None)
    items = plan(lockfile, entries, tree, None)
    missing = [i for i in items if i.status == "missing"]
    describe = (f"fetch {len(missing)} of {len(entries)} model files ({download_size(items)}) into {tree.root}"
                if missing else f"{len(entries)} model files present in {tree.root} (verified by fetch)")

    def fetch_models() -> None:
        report = run_fetch(lockfile, entries, tree, allow_unpinned=pin_unpinned)
        if report.failed:
            raise RunError("model files not fetched: " + "; ".join(
                f"{i.entry.folder}/{i.entry.name} ({i.message or i.status})" for i in report.failed))

    def list_nodes(url: str) -> set[str]:
        return set(_client(url).object_info(refresh=True))

    versions = {b: str(known.backend(b).needs.comfyui) for b in names
                if b in known.backends and known.backend(b).needs.comfyui}
    setup_plan = make_plan(comfyui, packs, entries, python=python, server=server, fetch_models=fetch_models,
                           describe_models=describe, models_missing=bool(missing), list_nodes=list_nodes,
                           start_timeout=start_timeout, versions=versions)
    if dry_run:
        for action in setup_plan.actions:
            click.echo(f"{action.kind:<12} {action.text}" + ("" if action.run else "  (nothing to do)"))
        return
    changed = execute(setup_plan, click.echo)
    click.echo(f"setup done: {changed} change(s); {', '.join(backends)} ready on {comfyui}")


@main.command()
@click.option("--server", "servers", multiple=True,
              help="Also check what this ComfyUI server has, or a Comfy API v2 target: v2+URL (repeat: each in turn).")
@click.option("--series", "series_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Check every target of this series (its server or servers).")
@click.option("--models-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="A ComfyUI models folder to check for the model files (holding checkpoints/, loras/, ...).")
@click.option("--comfyui", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="A ComfyUI folder to check (its models/ and extra_model_paths.yaml).")
@click.option("--lock", "lock_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help=LOCK_HELP)
@connection_options
@handle_errors
def doctor(servers: tuple[str, ...], series_file: Path | None, models_dir: Path | None, comfyui: Path | None,
           lock_file: Path | None, settings: Any) -> None:
    """Which backends can run: model files here and on each target, node packs, each workflow against the target's validation, and the fix."""
    from comfy_driver.comfy.target import parse_target
    from comfy_driver.config.backends import load_backends
    from comfy_driver.models.doctor import diagnose
    from comfy_driver.models.lock import read_lock
    from comfy_driver.models.tree import ModelsTree
    from comfy_driver.paths import BACKENDS

    targets = [parse_target(s, where="--server") for s in servers]
    if series_file is not None:
        from comfy_driver.config.series import load_series

        targets += load_series(series_file).series.targets
    tree = ModelsTree.locate(models_dir, comfyui, None) if (models_dir or comfyui) else None
    lock = read_lock(_lock_path(lock_file)).lock  # read once, for every target
    config = load_backends(BACKENDS)
    failed = False
    for i, target in enumerate(targets or [None]):
        if target is not None and len(targets) > 1:
            click.echo(("\n" if i else "") + f"== {target.display}")
        if target is not None and target.is_v2:
            failed = _doctor_v2(target, settings, lock, config) or failed
            continue
        client = _client(target.url, settings) if target else None
        failed = bool(diagnose(lock, tree, client, click.echo, config)) or failed
    if failed:
        sys.exit(1)


def _doctor_v2(server: Any, settings: Any, lock: Any, config: Any) -> bool:
    """doctor for a Comfy API v2 target: reachable with its key, node packs and workflows where a catalogue is."""
    from comfy_driver.api_v2 import V2Target
    from comfy_driver.models.doctor_v2 import diagnose_v2

    backends = sorted({b for m in lock.models for b in m.backends} | set(config.backends) | set(config.stages))
    with V2Target(server, settings=settings, busy_budget=5.0) as target:
        return bool(diagnose_v2(target, click.echo, config, backends))


