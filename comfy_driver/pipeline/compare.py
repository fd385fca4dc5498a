"""Comparing backends on the same scenes: render each with every backend, then put them side by side.

Each backend's renders live in a run folder of their own (`compare/<backend>/`, with its state
store and report), so a rerun keeps every render already made and renders nothing new; only the
comparison (side-by-side videos, tables, page) is written again. While a backend renders, its
websocket messages give the time of each node and sampler step, and the server's /system_stats is
sampled for peak memory; these are kept in `compare/<backend>/timings.json` beside the run state.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from comfy_driver import confined
from comfy_driver.comfy.catalog import Catalog
from comfy_driver.comfy.outputs import safe_component
from comfy_driver.comfy.settings import Settings
from comfy_driver.config.series import LoadedSeries
from comfy_driver.errors import UserError
from comfy_driver.media.ffmpeg import probe
from comfy_driver.media.measure import measure
from comfy_driver.media.sidebyside import Column, side_by_side
from comfy_driver.models.needs import ServerFacts
from comfy_driver.pipeline.plan import Plan, build_plan
from comfy_driver.pipeline.progress import Progress
from comfy_driver.pipeline.report import RunReport
from comfy_driver.pipeline.state import DONE, StateStore
from comfy_driver.pipeline.control import RunOptions
from comfy_driver.pipeline.supervisor import Supervisor
from comfy_driver.pipeline.timings import Collector, ResourceSampler
from comfy_driver.units import fmt_seconds


@dataclass
class SceneResult:
    """One scene as one backend rendered it (all its prompts: windows, stages), with what it cost."""

    key: str
    status: str
    clip: Path | None = None
    rendered_by: str | None = None  # the backend that made the clip: a fallback's after an out-of-memory
    error: str | None = None
    prompts: int = 0
    queue_wait_s: float | None = None
    execution_s: float | None = None
    model_load_s: float | None = None
    s_per_step: float | None = None
    nodes: dict[str, float] = field(default_factory=dict)  # node title -> seconds, over the scene's prompts
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    frames: int | None = None
    duration_s: float | None = None
    render_s_per_output_s: float | None = None
    blur: float | None = None
    flicker: float | None = None
    frame_change: float | None = None


@dataclass
class BackendResult:
    backend: str
    folder: Path
    scenes: dict[str, SceneResult]
    peak_vram: int | None = None
    peak_ram: int | None = None
    rendered: int = 0  # scenes rendered by this invocation (0 on a rerun)
    seconds: float = 0.0  # wall time of this invocation's renders


@dataclass
class Comparison:
    folder: Path
    scenes: list[str]
    backends: list[BackendResult]
    videos: dict[str, Path] = field(default_factory=dict)  # scene key -> side-by-side MP4


def default_folder(loaded: LoadedSeries) -> Path:
    """Where a series' comparisons go: beside its run's output, never in it."""
    return loaded.output_dir / loaded.slug / "compare"


def choose_scenes(plan: Plan, wanted: list[str] | None) -> Plan:
    """The plan of the scenes asked for (all by default), rendered without joining episodes."""
    keys = [str(s.key) for s in plan.scenes]
    unknown = [k for k in wanted or [] if k not in keys]
    if unknown:
        raise UserError(f"--scenes {unknown[0]}: no such scene", hint=f"scenes: {', '.join(keys)}")
    return plan.only([s.key for s in plan.scenes if not wanted or str(s.key) in wanted])


def try_series(folder: Path, *, prompt: str, negative_prompt: str | None = None, image: Path | None = None,
               driving_video: Path | None = None, width: int | None = None, height: int | None = None,
               frames: int | None = None, fps: float | None = None, seed: int | None = None,
               params: dict[str, Any] | None = None) -> Path:
    """The one-scene series a quick test renders, written into `folder` (its output folder too)."""
    scene: dict[str, Any] = {"id": "scene", "prompt": prompt}
    for name, path in (("reference_image", image), ("driving_video", driving_video)):
        if path is not None:
            scene[name] = str(path.resolve())
    defaults = {k: v for k, v in {"negative_prompt": negative_prompt, "width": width, "height": height,
                                  "frames": frames, "fps": fps, "seed": seed}.items() if v is not None}
    series = {"title": "Quick test", "output": ".", "defaults": {**defaults, "params": params or {}},
              "episodes": [{"id": "try", "scenes": [scene]}]}
    return confined.write_text(folder, "series.yaml", "# written by comfy-drive try: the scene it renders with "
                               "each backend\n" + yaml.safe_dump(series, sort_keys=False, allow_unicode=True))


def plan(loaded: LoadedSeries, backends: list[str], scenes: list[str] | None = None,
         catalog: Catalog | None = None, servers: list[ServerFacts] | None = None) -> dict[str, Plan]:
    """Each backend's plan of the chosen scenes; every problem of every backend now, before any render.
    GUI-saved templates are converted with `catalog` (the server's), else the one comfy-drive ships;
    `servers` (what they offer) lets `auto` be one of the backends."""
    if len(set(backends)) != len(backends) or not backends:
        raise UserError("--backends: name each backend once", hint="e.g. --backends wan22_animate,svd")
    return {b: choose_scenes(build_plan(loaded, b, catalog, servers=servers), scenes) for b in backends}


def compare(loaded: LoadedSeries, chosen: dict[str, Plan], servers: list[str], *,
            from_report: bool = False, progress: bool = True, folder: Path | None = None,
            settings: Settings | None = None) -> Comparison:
    """Render the planned scenes with each backend (keeping earlier renders), measure, and compare.

    With `from_report`, nothing is rendered: the comparison is made from the renders already kept.
    """
    folder = folder or default_folder(loaded)
    # Each backend's renders in a run folder of its own (its state, so its renders are kept).
    chosen = {b: p.moved(folder / safe_component(b)) for b, p in chosen.items()}
    keys = [str(s.key) for s in next(iter(chosen.values())).scenes]
    say = Progress(0, enabled=progress)
    results = []
    started = time.monotonic()
    for n, (backend, rooted) in enumerate(chosen.items(), 1):
        run_dir = rooted.layout.root
        timings = _load_json(run_dir / "timings.json")
        if from_report:
            if not (run_dir / "state.db").is_file():
                raise UserError(f"no renders of backend {backend!r} in {run_dir}",
                                hint="run compare without --from-report to render them")
            results.append(_results(backend, rooted, timings))
            continue
        say.message(f"backend {n}/{len(chosen)} {backend}: {len(rooted.scenes)} scene(s)")
        collector = Collector()
        runner = Supervisor(rooted, servers, RunOptions(episodes=False, settings=settings or Settings()),
                            progress=Progress(len(rooted.scenes), enabled=progress), on_event=collector)
        t0 = time.monotonic()
        with ResourceSampler(servers, settings) as sampler:
            report = runner.run()
        rendered = sum(s.status == "done" for s in report.scenes)
        timings["prompts"] = {**timings.get("prompts", {}), **collector.results()}
        if rendered:
            timings["peak_vram"], timings["peak_ram"] = sampler.peak_vram, sampler.peak_ram
        _write_json(run_dir / "timings.json", timings)
        result = _results(backend, rooted, timings)
        result.rendered, result.seconds = rendered, time.monotonic() - t0
        results.append(result)
        left = len(chosen) - n
        pace = (time.monotonic() - started) / n
        say.message(f"backend {n}/{len(chosen)} {backend}: {rendered} scene(s) rendered, "
                    f"{len(rooted.scenes) - rendered} kept, in {fmt_seconds(result.seconds)}"
                    + (f"; ETA {fmt_seconds(pace * left)} for the other {left}" if left else ""))
    comparison = Comparison(folder, keys, results)
    for key in keys:
        columns = []
        for result in results:
            scene = result.scenes[key]
            if scene.clip is not None:
                detail = (f"{scene.execution_s:.1f} s  " if scene.execution_s is not None else "") + \
                    f"{scene.width}x{scene.height}  {scene.fps:g} fps"
                title = result.backend if scene.rendered_by in (None, result.backend) else \
                    f"{result.backend} -> {scene.rendered_by} (fallback)"
                columns.append(Column(scene.clip, title, detail))
        if columns:
            name = safe_component(key.replace("/", "-"))
            comparison.videos[key] = folder / "side-by-side" / f"{name}.mp4"
            side_by_side(columns, comparison.videos[key])
            say.message(f"side by side: {comparison.videos[key]}")
    return comparison


def _results(backend: str, plan: Plan, timings: dict[str, Any]) -> BackendResult:
    """A backend's scenes from its run folder: report, run state, measured timings, the clips."""
    run_dir = plan.layout.root
    report_path = plan.layout.report
    records = {s.key: s for s in RunReport.model_validate_json(report_path.read_text(encoding="utf-8")).scenes} \
        if report_path.is_file() else {}
    prompts = timings.get("prompts", {})
    out = BackendResult(backend, run_dir, {}, timings.get("peak_vram"), timings.get("peak_ram"))
    state = StateStore(plan.layout.state_db)
    try:
        for planned in plan.scenes:
            key = str(planned.key)
            record = records.get(key)
            done = [(route, state.step(route.steps[-1].key)) for route in planned.routes]
            made = next(((route, st) for route, st in done if st is not None and st.status == DONE and st.clip), None)
            if made is None:
                out.scenes[key] = SceneResult(key, record.status if record else "not run",
                                              error=record.error if record else None)
                continue
            route, last = made
            assert last is not None and last.clip is not None
            scene = SceneResult(key, "done", clip=route.steps[-1].folder / last.clip, rendered_by=route.backend)
            waits, runs, loads, steps = [], [], [], []
            for step in route.steps:
                st = state.step(step.key)
                if st is None or st.status != DONE or not st.prompt_id:
                    continue
                scene.prompts += 1
                if st.queued_at and st.started_at:
                    waits.append(max(0.0, st.started_at - st.queued_at))
                if st.server_ms is not None:
                    runs.append(st.server_ms / 1000)
                elif st.started_at and st.finished_at:
                    runs.append(st.finished_at - st.started_at)
                measured = prompts.get(st.prompt_id)
                if measured:
                    loads.append(measured["model_load_s"])
                    if measured["s_per_step"] is not None:
                        steps.append(measured["s_per_step"])
                    for title, seconds in measured["nodes"].items():
                        scene.nodes[title] = round(scene.nodes.get(title, 0.0) + seconds, 4)
            scene.queue_wait_s = sum(waits) if waits else None
            scene.execution_s = sum(runs) if runs else None
            scene.model_load_s = sum(loads) if loads else None
            scene.s_per_step = sorted(steps)[len(steps) // 2] if steps else None
            _describe(scene)
            out.scenes[key] = scene
    finally:
        state.close()
    return out


def _describe(scene: SceneResult) -> None:
    """The clip's size, fps, frames, duration and cheap objective measures."""
    assert scene.clip is not None
    info = probe(scene.clip)
    scene.width, scene.height, scene.fps, scene.frames = info.width, info.height, info.fps, info.frames
    scene.duration_s = info.duration
    if scene.execution_s is not None and info.duration > 0:
        scene.render_s_per_output_s = scene.execution_s / info.duration
    measures = measure(scene.clip)
    scene.blur, scene.flicker, scene.frame_change = measures.blur, measures.flicker, measures.frame_change


def _load_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _write_json(path: Path, data: dict[str, Any]) -> None:
    confined.write_text(path.parent, path.name, json.dumps(data, indent=2, sort_keys=True) + "\n")
