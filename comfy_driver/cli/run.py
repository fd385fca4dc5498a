"""`run` (a series, its dry run) and `example`."""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import sys
from pathlib import Path
from typing import Any

import click

from comfy_driver.cli.base import (
    FiniteRange, _simulated, _stop_on_signals, connection_options, handle_errors, main, simulate_option,
)
from comfy_driver.cli.publish import open_for_run, publish_report
from comfy_driver.errors import UserError

@main.command()
@click.argument("series_file", type=click.Path(path_type=Path))
@click.option("--backend", help="Render every scene with this backend (workflow name; 'auto': the best the "
                                "server can run for each scene).")
@click.option("--server", "servers", multiple=True,
              help="ComfyUI URL, or v2+URL for a Comfy API v2 endpoint (repeat for several; mixed freely).")
@simulate_option
@click.option("--dry-run", is_flag=True, help="Render and validate every scene; submit nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the run report as JSON on stdout.")
@click.option("--depth", default=2, show_default=True, type=click.IntRange(1, 16),
              help="Prompts kept on each target without max_jobs (queue-ahead).")
@click.option("--force", "force", multiple=True, help="Render this scene (EPISODE/SCENE) again even if done; 'all'.")
@click.option("--server-timeout", default=600.0, show_default=True, type=FiniteRange(1, 86400),
              help="Seconds a server may be unreachable before the run stops (resumable).")
@click.option("--move-after", default=60.0, show_default=True, type=FiniteRange(1, 86400),
              help="With several targets: seconds one may be unreachable before its work moves to the others.")
@click.option("--publish", "publish_", is_flag=True, help="Upload each finished episode to YouTube (publish section).")
@click.option("--republish", is_flag=True, help="With --publish: upload again an episode re-rendered since its upload.")
@click.option("--youtube-endpoint", default=None, help="With --publish: send YouTube API calls to this address "
                                                       "instead of Google's (a local test server).")
@connection_options
@handle_errors
def run(series_file: Path, backend: str | None, servers: tuple[str, ...], simulate: str | None, dry_run: bool,
        as_json: bool, depth: int, force: tuple[str, ...], server_timeout: float, move_after: float, publish_: bool,
        republish: bool, youtube_endpoint: str | None, settings: Any) -> None:
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
    options = RunOptions(depth=depth, force=set(force), server_timeout=server_timeout, move_after=move_after,
                         settings=settings)
    joined = None
    if publisher is not None:  # each episode is published once joined, while the next one renders
        from comfy_driver.cli.publish import _say
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
    from comfy_driver.pipeline.preflight import preflight

    from comfy_driver.api import plan_series
    from comfy_driver.comfy.target import parse_target

    plan, catalog = plan_series(loaded, [parse_target(s, where="--server") for s in servers], backend, settings)
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


