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
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import click

from comfy_driver import __version__
from comfy_driver.cli_publish import auth, open_for_run, publish, publish_report
from comfy_driver.comfy.errors import AccessRefused, OutOfMemory
from comfy_driver.errors import DriveError, RunError, UserError

F = TypeVar("F", bound=Callable[..., Any])


def _fail(message: str, code: int) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def exit_status(exc: DriveError) -> int:
    """The one place errors become exit statuses: 2 bad input, 130 stopped by the user, 1 the rest."""
    from comfy_driver.pipeline.control import RunStopped

    if isinstance(exc, RunStopped):
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


SIMULATE_HELP = ("Run against a built-in simulated ComfyUI server: 'realistic' timing (the default) "
                 "or 'instant'.")


def simulate_option(fn: F) -> F:
    """`--simulate [realistic|instant]`: the bare flag means realistic timing."""
    return click.option("--simulate", type=click.Choice(["realistic", "instant"]), is_flag=False,
                        flag_value="realistic", default=None, help=SIMULATE_HELP)(fn)


def connection_options(fn: F) -> F:
    """Timeouts, retries, keepalive and TLS of every server a command talks to, as one `settings`."""
    @functools.wraps(fn)
    def wrapper(*args: Any, timeout: float, connect_timeout: float, retries: int, keepalive: float,
                ca_bundle: Path | None, insecure: bool, **kwargs: Any) -> Any:
        from comfy_driver.comfy.settings import Settings

        if insecure and ca_bundle:
            raise click.UsageError("--insecure and --ca-bundle contradict each other: choose one")
        if insecure:  # said once here, instead of a warning from urllib3 on every request
            import warnings

            from urllib3.exceptions import InsecureRequestWarning

            warnings.filterwarnings("ignore", category=InsecureRequestWarning)
            click.echo("warning: --insecure: the server's TLS certificate is not checked", err=True)
        verify: bool | str = str(ca_bundle) if ca_bundle else not insecure
        settings = Settings(timeout=timeout, connect_timeout=connect_timeout, retries=retries,
                            keepalive=keepalive, dead_after=max(90.0, 4 * keepalive), verify=verify)
        return fn(*args, settings=settings, **kwargs)

    options = [
        click.option("--timeout", default=60.0, show_default=True, type=click.FloatRange(min=0.1),
                     help="Seconds an HTTP answer of the server may take."),
        click.option("--connect-timeout", default=5.0, show_default=True, type=click.FloatRange(min=0.1),
                     help="Seconds to open a connection to the server."),
        click.option("--retries", default=4, show_default=True, type=click.IntRange(1, 100),
                     help="Tries of a request that can be repeated safely, after a refused connection or a 502-504."),
        click.option("--keepalive", default=20.0, show_default=True, type=click.FloatRange(min=0.1),
                     help="Seconds between pings of a quiet websocket (proxies drop idle ones)."),
        click.option("--ca-bundle", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
                     help="Trust the certificates in this PEM file (a self-signed server, a company CA); "
                          "REQUESTS_CA_BUNDLE is honoured too."),
        click.option("--insecure", is_flag=True, help="Do not check the server's TLS certificate."),
    ]
    for option in reversed(options):
        wrapper = option(wrapper)
    return wrapper  # type: ignore[return-value]


@contextlib.contextmanager
def _simulated(speed: str | None) -> Iterator[str | None]:
    """A simulated server for the length of a command (its URL), or None when not wanted."""
    if speed is None:
        yield None
        return
    from comfy_driver.api import simulated_server

    with simulated_server(speed=speed) as url:
        yield url


@main.command()
@click.argument("series_file", type=click.Path(path_type=Path))
@click.option("--backend", help="Render every scene with this backend (workflow name; 'auto': the best the "
                                "server can run for each scene).")
@click.option("--server", "servers", multiple=True, help="ComfyUI URL (repeat for several GPU servers).")
@simulate_option
@click.option("--dry-run", is_flag=True, help="Render and validate every scene; submit nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the run report as JSON on stdout.")
@click.option("--depth", default=2, show_default=True, type=click.IntRange(1, 16),
              help="Prompts kept queued on each server (queue-ahead).")
@click.option("--force", "force", multiple=True, help="Render this scene (EPISODE/SCENE) again even if done; 'all'.")
@click.option("--server-timeout", default=600.0, show_default=True, type=FiniteRange(1, 86400),
              help="Seconds a server may be unreachable before the run stops (resumable).")
@click.option("--publish", "publish_", is_flag=True, help="Upload each finished episode to YouTube (publish section).")
@click.option("--republish", is_flag=True, help="With --publish: upload again an episode re-rendered since its upload.")
@click.option("--youtube-endpoint", default=None, help="With --publish: send YouTube API calls to this address "
                                                       "instead of Google's (a local test server).")
@connection_options
@handle_errors
def run(series_file: Path, backend: str | None, servers: tuple[str, ...], simulate: str | None, dry_run: bool,
        as_json: bool, depth: int, force: tuple[str, ...], server_timeout: float, publish_: bool, republish: bool,
        youtube_endpoint: str | None, settings: Any) -> None:
    """Render every scene of SERIES_FILE, download the clips and join each episode.

    Rerunning it resumes: finished scenes are kept, prompts still on a server are re-attached.
    Ctrl-C (or SIGTERM) once: nothing more is queued, the running scene finishes; twice: it is
    interrupted too. Either way the next run picks up where this one stopped.
    """
    from comfy_driver.api import run_series
    from comfy_driver.config.series import load_series
    from comfy_driver.pipeline.progress import Progress
    from comfy_driver.pipeline.control import RunControl, RunOptions, RunStopped

    loaded = load_series(series_file)
    publisher = open_for_run(loaded, endpoint=youtube_endpoint, republish=republish, dry_run=dry_run) \
        if publish_ else None
    if dry_run:
        from comfy_driver.pipeline.choose import uses_auto

        auto_sim = simulate if not servers and uses_auto(loaded.scenes, backend) else None  # auto asks a server
        with _simulated(auto_sim) as sim_url:
            _dry_run(loaded, backend, [sim_url] if sim_url else list(servers), settings, as_json)
        return
    progress = Progress(len(loaded.scenes), enabled=True)
    control = RunControl()
    options = RunOptions(depth=depth, force=set(force), server_timeout=server_timeout, settings=settings)
    joined = None
    if publisher is not None:  # each episode is published once joined, while the next one renders
        from comfy_driver.cli_publish import _say
        from comfy_driver.pipeline.publishing import PublishAsJoined

        joined = options.after_episode = PublishAsJoined(loaded, loaded.output_dir / loaded.slug, publisher, _say)
    published = True
    stopped: RunStopped | None = None
    with contextlib.ExitStack() as closing, _simulated(simulate) as sim_url:
        if publisher is not None:
            closing.callback(publisher.close)
        previous = _stop_on_signals(control)
        try:
            report = run_series(loaded, servers=[sim_url] if sim_url else list(servers), backend=backend,
                                options=options, progress=progress, control=control)
        except RunStopped as exc:
            if exc.report is None:
                raise
            stopped, report = exc, exc.report
        finally:
            progress.end()
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        if publisher is not None:
            from comfy_driver.pipeline.outlock import claim_output

            with claim_output(loaded.output_dir / loaded.slug, series=loaded.series.title):
                published = publish_report(loaded, report, publisher, earlier=joined.records if joined else None)
    if as_json:
        click.echo(report.model_dump_json(indent=2))
    else:
        click.echo(report.summary())
        click.echo(f"report: {loaded.output_dir / loaded.slug / 'report.json'}")
    if stopped is not None:
        click.echo(f"stopped: {report.stopped}; run the same command again to resume", err=True)
        sys.exit(130)
    if not report.complete or not published:
        sys.exit(1)


def _dry_run(loaded: Any, backend: str | None, servers: list[str], settings: Any, as_json: bool) -> None:
    """Validate every prompt a run may submit (with the server's catalogue, or the one shipped) and show each
    scene's steps with their prompt text."""
    from comfy_driver.models.catalog import bundled_catalog
    from comfy_driver.models.lock import load_lock
    from comfy_driver.paths import models_lock
    from comfy_driver.models.needs import read_servers
    from comfy_driver.pipeline.choose import uses_auto
    from comfy_driver.pipeline.plan import build_plan
    from comfy_driver.pipeline.preflight import preflight

    # GUI-saved templates are converted with the catalogue of the server that will run them.
    catalog = _client(servers[0], settings).catalog() if servers else None
    facts = read_servers(servers, settings) if uses_auto(loaded.scenes, backend) else None
    plan = build_plan(loaded, backend, catalog, servers=facts)
    preflight(plan, catalog or bundled_catalog(load_lock(models_lock())))
    described = plan.to_json()
    if as_json:
        click.echo(json.dumps(described, indent=2))
        return
    for scene in described["scenes"]:
        for r, route in enumerate(scene["routes"]):
            head = f"{scene['key']}" + (f"  fallback {r}: {route['backend']}" if r else f"  {route['backend']}")
            click.echo(head + (f"  ({route['note']})" if route["note"] else ""))
            if not r:
                for note in scene["notes"]:
                    click.echo(f"  note: {note}")
            if route["skipped"]:
                click.echo(f"  skipped (not for this backend): {', '.join(route['skipped'])}")
            for i, step in enumerate(route["steps"]):
                click.echo(f"  {i + 1}. {step['label']:<24} {step['workflow']:<28} {step['nodes']} nodes  "
                           f"uploads {step['uploads']}  identity {step['identity'][:12]}")
                if step["prompt"]:
                    click.echo(f"     prompt: {step['prompt']}")
    click.echo(f"{len(described['scenes'])} scene(s) valid; nothing submitted (dry run)")


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


LOCK_HELP = "The models.lock to use (default: your own in the config folder, else the shipped one)."


def _lock_path(lock: Path | None) -> Path:
    from comfy_driver.paths import models_lock

    return lock or models_lock()


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
@click.option("--server", default=None, help="Also check what this ComfyUI server has (or a Comfy API v2 target: v2+URL).")
@click.option("--models-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="A ComfyUI models folder to check for the model files (holding checkpoints/, loras/, ...).")
@click.option("--comfyui", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="A ComfyUI folder to check (its models/ and extra_model_paths.yaml).")
@click.option("--lock", "lock_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help=LOCK_HELP)
@connection_options
@handle_errors
def doctor(server: str | None, models_dir: Path | None, comfyui: Path | None, lock_file: Path | None,
           settings: Any) -> None:
    """Which backends can run: model files here and on the server, node packs, each workflow against the server's validation, and the fix."""
    from comfy_driver.config.backends import load_backends
    from comfy_driver.models.doctor import diagnose
    from comfy_driver.models.lock import read_lock
    from comfy_driver.models.tree import ModelsTree
    from comfy_driver.paths import BACKENDS

    if server and server.strip().lower().startswith("v2+"):
        _doctor_v2(server, settings)
        return
    tree = ModelsTree.locate(models_dir, comfyui, None) if (models_dir or comfyui) else None
    client = _client(server, settings) if server else None
    problems = diagnose(read_lock(_lock_path(lock_file)).lock, tree, client, click.echo, load_backends(BACKENDS))
    if problems:
        sys.exit(1)


def _doctor_v2(server: str, settings: Any) -> None:
    """doctor for a Comfy API v2 target: reachable with its key, node packs and workflows where a catalogue is."""
    from comfy_driver.api_v2 import V2Target
    from comfy_driver.config.backends import load_backends
    from comfy_driver.models.doctor_v2 import diagnose_v2
    from comfy_driver.models.lock import read_lock
    from comfy_driver.paths import BACKENDS

    config = load_backends(BACKENDS)
    lock = read_lock(_lock_path(None)).lock
    backends = sorted({b for m in lock.models for b in m.backends} | set(config.backends) | set(config.stages))
    with V2Target(server, settings=settings, busy_budget=5.0) as target:
        if diagnose_v2(target, click.echo, config, backends):
            sys.exit(1)


def _stop_on_signals(control: Any) -> dict[int, Any]:
    """First Ctrl-C / SIGTERM: stop queueing, let the running scene finish; second: interrupt it."""
    def handler(signum: int, frame: Any) -> None:
        control.stop()

    previous: dict[int, Any] = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        previous[signum] = signal.signal(signum, handler)
    return previous


@main.command()
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path), default=Path("."))
@handle_errors
def example(folder: Path) -> None:
    """Write the bundled examples (series files and their images) into FOLDER/examples."""
    from comfy_driver.paths import EXAMPLES

    target = folder / "examples"
    if target.exists():
        raise UserError(f"{target} already exists", hint="choose another folder; nothing was overwritten")
    shutil.copytree(EXAMPLES, target)
    click.echo(f"wrote {target}; render it on the simulator with:")
    where = "" if folder == Path(".") else f"cd {folder} && "
    click.echo(f"  {where}comfy-drive run examples/series.yaml --simulate")


def _raise_keyboard_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


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


def _client(server: str, settings: Any = None) -> Any:
    from comfy_driver.comfy.client import ComfyClient

    return ComfyClient(server, settings=settings)


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
def _compare_and_write(loaded: Any, backends: list[str], servers: list[str], simulate: str | None, as_json: bool,
                       settings: Any, *, scenes: list[str] | None = None, from_report: bool = False,
                       folder: Path | None = None) -> None:
    """Render (or reuse) and write the comparison; print where it is. Exit 1 if a scene is missing."""
    from comfy_driver.pipeline.benchmark import write
    from comfy_driver.pipeline.compare import compare as run_compare
    from comfy_driver.models.needs import read_servers
    from comfy_driver.pipeline.choose import AUTO
    from comfy_driver.pipeline.compare import default_folder, plan
    from comfy_driver.pipeline.outlock import claim_output

    urls = servers or loaded.series.server_urls
    if not urls and not simulate and not from_report:
        raise UserError(f"{loaded.path}: no server to run on", hint="pass --server URL or --simulate")
    # GUI-saved templates are converted with the catalogue of the server that will run them.
    catalog = _client(urls[0], settings).catalog() if urls and not simulate and not from_report else None
    auto = any(b.split("+")[0].strip() == AUTO for b in backends)  # chosen per server: planned once one is up
    chosen = None if auto else plan(loaded, backends, scenes, catalog)
    folder = folder or default_folder(loaded)
    with claim_output(folder, series=loaded.series.title), _simulated(None if from_report else simulate) as sim_url:
        if chosen is None:
            chosen = plan(loaded, backends, scenes, catalog, read_servers([sim_url] if sim_url else urls, settings))
        comparison = run_compare(loaded, chosen, [sim_url] if sim_url else urls, progress=not as_json,
                                 from_report=from_report, folder=folder, settings=settings)
        paths = write(comparison, loaded.series.title)
    missing = [f"{r.backend}: {k} ({s.status})" for r in comparison.backends for k, s in r.scenes.items()
               if s.status != "done"]
    if as_json:
        click.echo(paths["json"].read_text(encoding="utf-8"), nl=False)
    else:
        click.echo(paths["markdown"].read_text(encoding="utf-8").split("\n## ")[0].rstrip())
        for key, video in comparison.videos.items():
            click.echo(f"side by side {key}: {video}")
        click.echo(f"tables: {paths['markdown']} and {paths['json'].name}\npage: {paths['page']}")
    if missing:
        click.echo(f"not rendered: {'; '.join(missing)}", err=True)
        sys.exit(1)


@main.command()
@click.argument("series_file", type=click.Path(path_type=Path))
@click.option("--backends", required=True, help="Backends to compare, comma-separated: A,B[,C].")
@click.option("--scenes", default=None, help="Only these scenes, comma-separated EPISODE/SCENE keys (default: all).")
@click.option("--from-report", is_flag=True, help="Render nothing: compare the renders already kept.")
@click.option("--server", "servers", multiple=True, help="ComfyUI URL (repeat for several GPU servers).")
@simulate_option
@click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for the renders and the comparison (default: <output>/<series>/compare).")
@click.option("--json", "as_json", is_flag=True, help="Print the benchmark as JSON on stdout.")
@connection_options
@handle_errors
def compare(series_file: Path, backends: str, scenes: str | None, from_report: bool, servers: tuple[str, ...],
            simulate: str | None, output: Path | None, as_json: bool, settings: Any) -> None:
    """Render scenes of SERIES_FILE with each backend and compare them: side-by-side MP4s, timing
    tables (Markdown, JSON) and an HTML page, in <output>/<series>/compare/. Renders already made are
    kept, so a rerun renders nothing new."""
    from comfy_driver.config.series import load_series

    names = [b.strip() for b in backends.split(",") if b.strip()]
    wanted = [k.strip() for k in scenes.split(",") if k.strip()] if scenes else None
    _compare_and_write(load_series(series_file), names, list(servers), simulate, as_json, settings, scenes=wanted,
                       from_report=from_report, folder=output)


def _param(text: str) -> tuple[str, Any]:
    import yaml

    name, eq, value = text.partition("=")
    if not eq or not name.strip():
        raise UserError(f"--param {text!r}: write it as NAME=VALUE (e.g. steps=4, svd.motion_bucket_id=90)")
    return name.strip(), yaml.safe_load(value)


@main.command("try")
@click.option("--prompt", required=True, help="What the scene shows.")
@click.option("--negative-prompt", default=None, help="What the scene must not show (default: the workflow's).")
@click.option("--image", type=click.Path(path_type=Path), default=None, help="Reference image (the character).")
@click.option("--driving-video", type=click.Path(path_type=Path), default=None, help="Video whose motion to follow.")
@click.option("--backend", "backends", multiple=True, help="A backend to render with (repeatable).")
@click.option("--vs", "versus", default=None, help="The backend to compare with (default: svd).")
@click.option("--width", type=int, default=None, help="Width in pixels (default: each backend's own).")
@click.option("--height", type=int, default=None, help="Height in pixels (default: each backend's own).")
@click.option("--frames", type=int, default=None, help="Length in frames (default: each backend's own).")
@click.option("--fps", type=FiniteRange(min=0.1, max=240), default=None,
              help="Frames per second of the clips (default: each backend's own).")
@click.option("--seed", type=int, default=None, help="Seed (default: fixed for the prompt, so a rerun matches).")
@click.option("--param", "params", multiple=True, help="Workflow parameter NAME=VALUE (repeatable).")
@click.option("--server", "servers", multiple=True, help="ComfyUI URL.")
@simulate_option
@click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path), default=Path("comfy-drive-try"),
              show_default=True, help="Folder for the renders and the comparison.")
@click.option("--json", "as_json", is_flag=True, help="Print the benchmark as JSON on stdout.")
@connection_options
@handle_errors
def try_(prompt: str, negative_prompt: str | None, image: Path | None, driving_video: Path | None,
         backends: tuple[str, ...], versus: str | None, width: int | None, height: int | None, frames: int | None,
         fps: float | None, seed: int | None, params: tuple[str, ...], servers: tuple[str, ...], simulate: str | None,
         output: Path, as_json: bool, settings: Any) -> None:
    """Quick test: one scene from the command line, rendered with each backend and compared side by side
    (default: wan22_animate vs svd). Writes everything into one folder and prints where."""
    from comfy_driver.config.series import load_series
    from comfy_driver.pipeline.compare import try_series

    names = list(backends) or ["wan22_animate"]
    names += [versus] if versus else ([] if len(names) > 1 else ["svd"])
    path = try_series(output, prompt=prompt, negative_prompt=negative_prompt, image=image, driving_video=driving_video,
                      width=width, height=height, frames=frames, fps=fps, seed=seed,
                      params=dict(_param(p) for p in params))
    try:
        loaded = load_series(path)
        _compare_and_write(loaded, names, list(servers), simulate, as_json, settings, folder=output)
    except UserError as exc:
        if image is None and "'reference_image' is required" in exc.message:
            raise UserError(f"{', '.join(names)}: a backend here animates a reference image, and none was given",
                            hint="pass --image FILE (the character), or compare backends that start from the "
                                 "prompt (e.g. --backend svd)") from None
        raise


main.add_command(auth)
main.add_command(publish)
for _command in (auth.commands["youtube"], publish):
    _command.callback = handle_errors(_command.callback)  # type: ignore[type-var]

if __name__ == "__main__":
    main()
