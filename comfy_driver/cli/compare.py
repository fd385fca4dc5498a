"""Comparing backends: `compare` (a series) and `try` (one scene from the command line)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from comfy_driver.cli.base import (
    FiniteRange, _client, _simulated, connection_options, handle_errors, main, simulate_option,
)
from comfy_driver.errors import UserError


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

    from comfy_driver.api import target_catalog
    from comfy_driver.comfy.target import native_only, parse_target

    urls = native_only(list(servers)) if servers else loaded.series.server_urls
    if not urls and not simulate and not from_report:
        raise UserError(f"{loaded.path}: no server to run on", hint="pass --server URL or --simulate")
    # GUI-saved templates are converted with the catalogue of the server that will run them.
    catalog = target_catalog(parse_target(urls[0]), settings) if urls and not simulate and not from_report else None
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


