"""The comfy-drive command line: parse arguments, call the library, print, map errors to exit codes.

Exit status: 0 success, 1 the run failed (a scene, the server), 2 bad input (file, argument, URL),
130 interrupted. Errors print one clear message and no traceback unless --debug.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import shutil
import signal
import sys
import tempfile
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import click

from comfy_driver import __version__
from comfy_driver.comfy.errors import AccessRefused, OutOfMemory
from comfy_driver.errors import DriveError, RunError, UserError

F = TypeVar("F", bound=Callable[..., Any])


def _fail(message: str, code: int) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


class UserInterrupt(DriveError):
    """The user stopped the run (Ctrl-C / SIGTERM)."""


def exit_status(exc: DriveError) -> int:
    """The one place errors become exit statuses: 2 bad input, 130 stopped by the user, 1 the rest."""
    if isinstance(exc, UserInterrupt):
        return 130
    return 2 if isinstance(exc, UserError) else 1


# What the command line adds to a library hint: the command that helps (the library names none).
_COMMAND_HINTS: list[tuple[type[DriveError], str]] = [
    (AccessRefused, "comfy-drive login URL --header 'Authorization: Bearer …' stores them (mode 600)"),
    (OutOfMemory, "comfy-drive free --server URL unloads the server's models"),
]


def render_error(exc: DriveError) -> str:
    text = str(exc)
    for cls, command in _COMMAND_HINTS:
        if isinstance(exc, cls):
            text += f"\n  {command}"
    return text


def handle_errors(fn: F) -> F:
    """Turn every error into one message and an exit status; tracebacks only with --debug."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        debug = click.get_current_context().find_root().params.get("debug", False)
        try:
            return fn(*args, **kwargs)
        except DriveError as exc:
            if debug:
                traceback.print_exc()
            _fail(render_error(exc), exit_status(exc))
        except KeyboardInterrupt:
            _fail("interrupted; rerun the same command to resume", 130)
        except Exception as exc:  # noqa: BLE001 - the last line of defence: no traceback for users
            if debug:
                traceback.print_exc()
            _fail(f"internal error: {type(exc).__name__}: {exc} (rerun with --debug for details)", 1)
    return wrapper  # type: ignore[return-value]


class FiniteRange(click.FloatRange):
    """A float option within bounds; nan and infinity are refused (they pass every comparison)."""

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@click.version_option(__version__, prog_name="comfy-drive")
def main(debug: bool) -> None:
    """Drive a ComfyUI server as a production line for short AI videos."""


@contextlib.contextmanager
def _simulated(wanted: bool) -> Iterator[str | None]:
    """A simulated server for the length of a command (its URL), or None when not wanted."""
    if not wanted:
        yield None
        return
    root = Path(tempfile.mkdtemp(prefix="comfy-drive-sim-"))
    server = _sim_server(root)
    try:
        yield server.start()
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


def _sim_server(root: Path, *, speed: str = "realistic", object_info: Path | None = None, host: str = "127.0.0.1",
                port: int = 0, time_scale: float = 0.2, comfyui: str | None = None, vram_gb: float = 16.0) -> Any:
    from comfy_driver.comfy.catalog import Catalog
    from comfy_driver.comfy.versions import Version
    from comfy_driver.models.catalog import DEFAULT_RELEASE, bundled_catalog, sim_release
    from comfy_driver.models.folders import fill_model_inputs, mark_model_inputs
    from comfy_driver.models.lock import load_lock
    from comfy_driver.paths import MODELS_LOCK
    from comfy_driver.sim.executor import Timing
    from comfy_driver.sim.server import SimServer

    lock = load_lock(MODELS_LOCK)
    release = sim_release(comfyui) if comfyui else DEFAULT_RELEASE
    if object_info is not None:
        info = json.loads(object_info.read_text(encoding="utf-8"))
        catalog = Catalog(fill_model_inputs(mark_model_inputs(info), lock.by_folder()), version=Version.parse(release))
    else:
        catalog = bundled_catalog(lock, release)
    timing = Timing.realistic(time_scale) if speed == "realistic" else Timing()
    return SimServer(root, catalog, timing=timing, host=host, port=port, vram_gb=vram_gb)


def _uses_auto(loaded: Any, backend: str | None) -> bool:
    """Whether any scene's backend is `auto` (chosen per server from what the server offers)."""
    from comfy_driver.pipeline.choose import AUTO

    names = [backend] if backend else [spec.backend for spec in loaded.scenes]
    return any(name.split("+")[0].strip() == AUTO for name in names)


def _server_facts(urls: list[str]) -> list[Any]:
    """What each server offers (GPU memory, version, nodes, model files), for backend auto."""
    from comfy_driver.pipeline.choose import ServerFacts

    facts = []
    for url in urls:
        client = _client(url)
        facts.append(ServerFacts.read(url, client.system_stats(), client.catalog()))
    return facts


@main.command()
@click.argument("series_file", type=click.Path(path_type=Path))
@click.option("--backend", help="Render every scene with this backend (workflow name; 'auto': the best the "
                                "server can run for each scene).")
@click.option("--server", "servers", multiple=True, help="ComfyUI URL (repeat for several GPU servers).")
@click.option("--simulate", is_flag=True, help="Run against a built-in simulated ComfyUI server.")
@click.option("--dry-run", is_flag=True, help="Render and validate every scene; submit nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the run report as JSON on stdout.")
@click.option("--depth", default=2, show_default=True, type=click.IntRange(1, 16),
              help="Prompts kept queued on each server (queue-ahead).")
@click.option("--force", "force", multiple=True, help="Render this scene (EPISODE/SCENE) again even if done; 'all'.")
@click.option("--server-timeout", default=600.0, show_default=True, type=FiniteRange(1, 86400),
              help="Seconds a server may be unreachable before the run stops (resumable).")
@handle_errors
def run(series_file: Path, backend: str | None, servers: tuple[str, ...], simulate: bool, dry_run: bool,
        as_json: bool, depth: int, force: tuple[str, ...], server_timeout: float) -> None:
    """Render every scene of SERIES_FILE, download the clips and join each episode.

    Rerunning it resumes: finished scenes are kept, prompts still on a server are re-attached.
    Ctrl-C (or SIGTERM) once: nothing more is queued, the running scene finishes; twice: it is
    interrupted too. Either way the next run picks up where this one stopped.
    """
    from comfy_driver.config.series import load_series
    from comfy_driver.models.catalog import bundled_catalog
    from comfy_driver.models.lock import load_lock
    from comfy_driver.paths import MODELS_LOCK
    from comfy_driver.pipeline.jobs import build_jobs
    from comfy_driver.pipeline.outlock import claim_output
    from comfy_driver.pipeline.progress import Progress
    from comfy_driver.pipeline.preflight import every_prompt, preflight
    from comfy_driver.pipeline.runner import Runner, RunOptions, StopRun

    loaded = load_series(series_file)
    urls = list(servers) or loaded.series.server_urls
    with contextlib.ExitStack() as stack:
        sim_url = stack.enter_context(_simulated(True)) if simulate else None
        targets = [sim_url] if sim_url else urls
        # GUI-saved templates are converted with the catalogue of the server that will run them.
        catalog = _client(urls[0]).catalog() if urls and not simulate and (servers or not dry_run) else None
        facts = _server_facts(targets) if _uses_auto(loaded, backend) else None
        jobs = build_jobs(loaded, backend, catalog, facts)
        known = {job.spec.key for job in jobs}
        unknown = [f for f in force if f != "all" and f not in known]
        if unknown:
            raise UserError(f"--force {unknown[0]}: no such scene", hint=f"scenes: {', '.join(sorted(known))}")
        if dry_run:
            preflight(every_prompt(jobs), catalog or bundled_catalog(load_lock(MODELS_LOCK)))
            for job in jobs:
                click.echo(f"{job.key:<20} {job.template.name:<12} {len(job.graph)} nodes  hash {job.graph_hash[:12]}"
                           f"  uploads {len(job.uploads)}")
                if job.chosen:
                    click.echo(f"{'':<20} {job.chosen}")
                if job.skipped:
                    click.echo(f"{'':<20} skipped (not for this backend): {', '.join(job.skipped)}")
            click.echo(f"{len(jobs)} scene(s) valid; nothing submitted (dry run)")
            return
        progress = Progress(len(jobs), enabled=True)
        with claim_output(loaded.output_dir / loaded.slug, series=loaded.series.title):
            runner = Runner(loaded, jobs, targets, progress=progress,
                            options=RunOptions(depth=depth, force=set(force), server_timeout=server_timeout))
            previous = _stop_on_signals(runner, progress)
            try:
                report = runner.run()
            except StopRun as exc:
                if runner.stop.is_set() and not runner.errors:
                    raise UserInterrupt(exc.message, hint=exc.hint) from None
                raise
            finally:
                for signum, handler in previous.items():
                    signal.signal(signum, handler)
    if as_json:
        click.echo(report.model_dump_json(indent=2))
    else:
        click.echo(report.summary())
        click.echo(f"report: {loaded.output_dir / loaded.slug / 'report.json'}")
    if report.failed:
        sys.exit(1)


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
            system = client.system_stats().get("system") or {}
            frontend = system.get("required_frontend_version") or None
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
    if target == "api":
        result = data if kind == "api" else ui_to_api(data, catalog, frontend_version=frontend)
    else:
        result = data if kind == "ui" else api_to_ui(data, catalog)
    text = json.dumps(result, indent=2, ensure_ascii=False) + "\n"
    if output is None:
        click.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")
        click.echo(f"wrote {output} ({len(result) if target == 'api' else len(result['nodes'])} nodes)", err=True)


@main.command()
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--set", "sets", multiple=True, help="'Node Title.input=value' (repeatable); values are read as JSON.")
@click.option("--server", default=None, help="ComfyUI URL.")
@click.option("--simulate", is_flag=True, help="Run against a built-in simulated ComfyUI server.")
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None,
              help="Folder for the outputs (default: replay-<file name>).")
@handle_errors
def replay(file: Path, sets: tuple[str, ...], server: str | None, simulate: bool, output: Path | None) -> None:
    """Run a saved workflow headlessly: a GUI or API JSON, or a PNG / WebP / MP4 made by ComfyUI."""
    from comfy_driver.pipeline.outlock import claim_output
    from comfy_driver.pipeline.progress import Progress
    from comfy_driver.pipeline.replay import apply_sets, load_replayable, replay as run_replay

    if not simulate and not server:
        raise UserError("replay needs --server URL (or --simulate)")
    with _simulated(simulate) as sim_url:
        client = _client(sim_url or server or "")
        catalog = client.catalog()
        item = load_replayable(file, catalog)
        item.graph = apply_sets(item.graph, list(sets), catalog)
        dest = output or Path(f"replay-{file.stem}")
        with claim_output(dest):
            files = run_replay(client, item, dest, catalog, progress=Progress(1, enabled=True))
    for got in files:
        click.echo(f"{got.path}  {got.size} bytes  sha256 {got.sha256[:16]}")


def _lock_path(lock: Path | None) -> Path:
    from comfy_driver.paths import MODELS_LOCK

    return lock or MODELS_LOCK


@main.command()
@click.option("--backend", "backends", multiple=True, help="Only the models these backends use (repeatable).")
@click.option("--models-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="A ComfyUI models folder (holding checkpoints/, loras/, ...).")
@click.option("--comfyui", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="A ComfyUI folder (its models/ and extra_model_paths.yaml are used).")
@click.option("--extra-model-paths", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="ComfyUI's extra_model_paths.yaml: files found there are not downloaded again.")
@click.option("--lock", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="The models.lock to use (default: the project's).")
@click.option("--dry-run", is_flag=True, help="List what would be downloaded, and the total size.")
@click.option("--jobs", default=3, show_default=True, type=click.IntRange(1, 16), help="Files downloaded at once.")
@click.option("--pin", "pin_unpinned", is_flag=True,
              help="Also download entries with no sha256 yet, pinning what the Hub serves now (see `lock pin`).")
@handle_errors
def fetch(backends: tuple[str, ...], models_dir: Path | None, comfyui: Path | None, extra_model_paths: Path | None,
          lock: Path | None, dry_run: bool, jobs: int, pin_unpinned: bool) -> None:
    """Download the pinned model files of models.lock into a ComfyUI models tree, verified."""
    from comfy_driver.models.fetch import fetch as run_fetch
    from comfy_driver.models.fetch import human, plan
    from comfy_driver.models.lock import read_lock
    from comfy_driver.models.tree import ModelsTree

    lockfile = read_lock(_lock_path(lock))
    entries = lockfile.lock.for_backends(list(backends))
    tree = None
    if models_dir or comfyui or not dry_run:
        tree = ModelsTree.locate(models_dir, comfyui, extra_model_paths)
    if dry_run:
        items = plan(lockfile, entries, tree, None)
        total, unknown = 0, 0
        for item in items:
            size = human(item.entry.size) if item.entry.size is not None else "size read at download"
            if item.entry.sha256 is None:
                size += "; not pinned: `lock pin` first, or --pin"
            click.echo(f"{item.status:<8} {item.entry.folder}/{item.entry.name}  ({size})  <- "
                       f"{item.entry.repo}/{item.entry.path}")
            if item.status == "missing":
                total += item.entry.size or 0
                unknown += item.entry.size is None
        missing = sum(i.status == "missing" for i in items)
        note = f" + {unknown} file(s) whose size the Hub gives at download" if unknown else ""
        click.echo(f"{missing} of {len(items)} file(s) to download: {human(total)}{note}")
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
@click.option("--lock", "lock_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None)
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
@click.option("--lock", "lock_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None)
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
@click.option("--lock", "lock_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None)
@handle_errors
def lock_from_workflow(workflow: Path, backends: tuple[str, ...], lock_file: Path | None) -> None:
    """Add the models a GUI-saved workflow names in its nodes' properties.models."""
    from comfy_driver.models.add import add_to_lock, parse_ref, workflow_models
    from comfy_driver.workflow.files import detect_format, load_json

    data = load_json(workflow)
    if detect_format(data) != "ui":
        raise UserError(f"{workflow}: not a GUI-saved workflow (only those list their models)")
    models = workflow_models(data)
    if not models:
        raise UserError(f"{workflow}: no node lists models (properties.models)")
    for model in models:
        entry, what = add_to_lock(_lock_path(lock_file), parse_ref(model["url"]), folder=model.get("directory"),
                                  name=model["name"], backends=list(backends))
        click.echo(f"{what}: {entry.folder}/{entry.name} @ {entry.revision}")


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
@click.option("--lock", "lock_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None)
@handle_errors
def setup(comfyui: Path, backends: tuple[str, ...], python: Path | None, server: str | None, dry_run: bool,
          pin_unpinned: bool, start_timeout: float, lock_file: Path | None) -> None:
    """Install what backends need into a ComfyUI folder: node packs at pinned commits, their
    requirements, the model files (verified); then check that ComfyUI lists the nodes. Idempotent."""
    from comfy_driver.config.backends import load_backends
    from comfy_driver.models.fetch import fetch as run_fetch
    from comfy_driver.models.fetch import human, plan
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
        chain = [base]
        while known.backend(chain[-1]).fallback and known.backend(chain[-1]).fallback not in chain:
            chain.append(str(known.backend(chain[-1]).fallback))
        names += chain + stages
        workflows += [w for b in chain for w in known.backend(b).workflows()] + \
            [known.stages[st].workflow for st in stages]
    lockfile = read_lock(_lock_path(lock_file))
    packs = packs_for(lockfile.lock.packs, workflow_classes(WORKFLOWS, workflows))
    entries = lockfile.lock.for_backends(list(dict.fromkeys(n for n in names
                                                            if any(n in m.backends for m in lockfile.lock.models))))
    tree = ModelsTree.locate(None, comfyui, None)
    missing = [i for i in plan(lockfile, entries, tree, None) if i.status == "missing"]
    size = human(sum(i.entry.size or 0 for i in missing))
    unknown = sum(i.entry.size is None for i in missing)
    size += f" + {unknown} of a size the Hub gives" if unknown else ""
    describe = (f"fetch {len(missing)} of {len(entries)} model files ({size}) into {tree.root}" if missing
                else f"{len(entries)} model files present in {tree.root} (verified by fetch)")

    def fetch_models() -> None:
        report = run_fetch(lockfile, entries, tree, allow_unpinned=pin_unpinned)
        if report.failed:
            raise RunError("model files not fetched: " + "; ".join(
                f"{i.entry.folder}/{i.entry.name} ({i.message or i.status})" for i in report.failed))

    def list_nodes(url: str) -> set[str]:
        return set(_client(url).object_info(refresh=True))

    setup_plan = make_plan(comfyui, packs, entries, python=python, server=server, fetch_models=fetch_models,
                           describe_models=describe, models_missing=bool(missing), list_nodes=list_nodes, start_timeout=start_timeout)
    if dry_run:
        for action in setup_plan.actions:
            click.echo(f"{action.kind:<12} {action.text}" + ("" if action.run else "  (nothing to do)"))
        return
    changed = execute(setup_plan, click.echo)
    click.echo(f"setup done: {changed} change(s); {', '.join(backends)} ready on {comfyui}")


@main.command()
@click.option("--server", default=None, help="Also check what this ComfyUI server has.")
@click.option("--models-dir", type=click.Path(file_okay=False, path_type=Path), default=None)
@click.option("--comfyui", type=click.Path(file_okay=False, path_type=Path), default=None)
@click.option("--lock", "lock_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None)
@handle_errors
def doctor(server: str | None, models_dir: Path | None, comfyui: Path | None, lock_file: Path | None) -> None:
    """Which backends can run: model files here and on the server, custom node packs, what to run to fix it."""
    from comfy_driver.models.doctor import diagnose
    from comfy_driver.models.lock import read_lock
    from comfy_driver.models.tree import ModelsTree

    tree = ModelsTree.locate(models_dir, comfyui, None) if (models_dir or comfyui) else None
    client = _client(server) if server else None
    problems = diagnose(read_lock(_lock_path(lock_file)).lock, tree, client, click.echo)
    if problems:
        sys.exit(1)


def _stop_on_signals(runner: Any, progress: Any) -> dict[int, Any]:
    """First Ctrl-C / SIGTERM: stop queueing, let the running scene finish; second: interrupt it."""
    def handler(signum: int, frame: Any) -> None:
        if not runner.stop.is_set():
            runner.stop.set()
            progress.message("stopping: nothing more is queued, the running scene finishes "
                             "(press Ctrl-C again to interrupt it)")
        else:
            runner.interrupt.set()
            progress.message("interrupting the running scene")

    previous = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        previous[signum] = signal.signal(signum, handler)
    return previous


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8188, show_default=True, type=int)
@click.option("--root", type=click.Path(path_type=Path), default=None,
              help="Folder for input/, output/ and temp/ (default: a temporary folder).")
@click.option("--speed", type=click.Choice(["realistic", "instant"]), default="realistic", show_default=True)
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
    """Run the simulated ComfyUI server in the foreground."""
    root = root or Path(tempfile.mkdtemp(prefix="comfy-drive-sim-"))
    server = _sim_server(root, speed=speed, object_info=object_info, host=host, port=port, time_scale=time_scale,
                         comfyui=comfyui, vram_gb=vram_gb)
    click.echo(f"simulated ComfyUI {server.versions.comfyui} on http://{host}:{port} (files in {root}); "
               "Ctrl-C stops it", err=True)
    try:
        server.serve()
    except OSError as exc:
        raise UserError(f"cannot listen on {host}:{port}: {exc.strerror}", hint="choose another --port") from None
    except KeyboardInterrupt:
        pass


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


def _client(server: str) -> Any:
    from comfy_driver.comfy.client import ComfyClient

    return ComfyClient(server)


@main.command()
@click.option("--server", required=True, help="ComfyUI URL.")
@click.option("--delete", "delete", multiple=True, help="Remove this pending prompt id.")
@click.option("--clear", is_flag=True, help="Remove every pending prompt.")
@handle_errors
def queue(server: str, delete: tuple[str, ...], clear: bool) -> None:
    """Show (or prune) a server's queue."""
    client = _client(server)
    if clear:
        client.clear_queue()
    if delete:
        client.delete_queued(list(delete))
    running, pending = client.queued_ids()
    click.echo(f"running: {', '.join(running) or '-'}")
    click.echo(f"pending: {len(pending)}" + "".join(f"\n  {p}" for p in pending))


@main.command()
@click.option("--server", required=True, help="ComfyUI URL.")
@click.option("--prompt-id", default=None, help="Only stop this prompt (never someone else's).")
@handle_errors
def interrupt(server: str, prompt_id: str | None) -> None:
    """Interrupt the running prompt."""
    _client(server).interrupt(prompt_id)
    click.echo("interrupt sent")


@main.command()
@click.option("--server", required=True, help="ComfyUI URL.")
@handle_errors
def free(server: str) -> None:
    """Ask the server to unload models and free memory."""
    _client(server).free()
    click.echo("models unloaded, memory freed")


@main.command()
@click.option("--server", required=True, help="ComfyUI URL.")
@click.option("--json", "as_json", is_flag=True, help="Print what was detected as JSON.")
@handle_errors
def stats(server: str, as_json: bool) -> None:
    """What the server is: ComfyUI and frontend versions, node catalogue, devices, version facts."""
    client = _client(server)
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


if __name__ == "__main__":
    main()
