"""The report's records of a scene and an episode, read from the plan, the state and this run."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from comfy_driver.pipeline.control import SceneRun
from comfy_driver.pipeline.episodes import Stitched
from comfy_driver.pipeline.plan import EpisodePlan, Plan, SceneKey
from comfy_driver.pipeline.messages import LaneBase
from comfy_driver.pipeline.report import (EpisodeRecord, OutputRecord, RunReport, SceneRecord, StepRecord, TargetRecord,
                                          now_iso)
from comfy_driver.pipeline.state import DONE, StateStore


def run_report(plan: Plan, state: StateStore, runs: dict[SceneKey, SceneRun], lanes: list[LaneBase],
               stitched: dict[str, Stitched], *, started: str, stopped: str | None) -> RunReport:
    """The report of a run: its targets, every scene and every episode."""
    histories = state.histories()
    return RunReport(series=plan.series, started=started, finished=now_iso(), servers=[lane.name for lane in lanes],
                     targets=target_records(state, lanes, runs.values()),
                     scenes=[scene_record(plan, state, run, histories) for run in runs.values()],
                     episodes=[episode_record(plan, state, e, runs, stitched.get(e.id)) for e in plan.episodes],
                     stopped=stopped)


def scene_record(plan: Plan, state: StateStore, run: SceneRun,
                 histories: dict[tuple[str, str], list[tuple[float, str, str | None]]]) -> SceneRecord:
    """A scene as a whole: the route that made (or was making) its clip, its first step's start, its last
    step's end, every attempt of every step, and its history (from `histories`: StateStore.histories)."""
    scene = run.plan
    route = scene.routes[run.route]
    states = [state.step(s.key) for s in route.steps]
    first, last = states[0], states[-1]
    status: Literal["done", "skipped", "failed", "stopped", "not run"] = "not run"
    if run.status in ("done", "skipped", "failed"):
        status = run.status  # type: ignore[assignment]
    elif run.status == "stopped" or any(st is not None and st.status == DONE for st in states):
        status = "stopped"  # partly done: the next run goes on from its first step not done
    layout = plan.layout
    last_step = route.steps[-1]
    outputs = [OutputRecord(path=layout.relative(last_step.folder / o["file"]), sha256=o["sha256"], size=o["size"],
                            node_id=o["node_id"]) for o in (last.outputs if last and last.status == DONE else [])]
    clip = layout.relative(last_step.folder / last.clip) if last and last.status == DONE and last.clip else None
    ran = [st for st in states if st is not None]
    server_ms = [st.server_ms for st in ran if st.server_ms is not None]
    return SceneRecord(
        key=str(scene.key), episode=scene.key.episode, scene=scene.key.scene, backend=route.backend,
        prompt=route.steps[0].first.prompt_text or scene.spec.prompt, seed=scene.spec.seed, graph_hash=route.identity,
        status=status, server=last.server if last else None,
        prompt_id=next((st.prompt_id for st in reversed(ran) if st.prompt_id), None),
        queued_at=first.queued_at if first else None, started_at=first.started_at if first else None,
        finished_at=last.finished_at if last and last.status == DONE else None,
        server_ms=sum(server_ms) if server_ms else None, cached_nodes=last.cached_nodes if last else [],
        attempts=sum(st.attempts for st in ran), outputs=outputs, clip=clip, error=run.error,
        error_kind=run.error_kind,
        history=[f"{kind}: {detail}" if detail else kind
                 for _, kind, detail in histories.get((scene.key.episode, scene.key.scene), [])],
        steps=[StepRecord(label=step.label, status=st.status if st else "pending", server=st.server if st else None,
                          prompt_id=st.prompt_id if st else None,
                          attempts=st.attempts if st else 0, started_at=st.started_at if st else None,
                          finished_at=st.finished_at if st else None,
                          clip=layout.relative(step.folder / st.clip) if st and st.clip and st.status == DONE else None)
               for step, st in zip(route.steps, states)],
        notes=[n for n in (*scene.notes, route.note) if n])


def episode_record(plan: Plan, state: StateStore, episode: EpisodePlan, runs: dict[SceneKey, SceneRun],
                   stitched: Stitched | None) -> EpisodeRecord:
    keys = [str(k) for k in episode.scenes]
    statuses = [runs[k].status for k in episode.scenes]
    path, sha, _ = state.episode(episode.id)
    if all(s in ("done", "skipped") for s in statuses) and path and episode.file.is_file():
        return EpisodeRecord(id=episode.id, title=episode.title, status="done", path=path, sha256=sha, scenes=keys,
                             format=stitched.format if stitched else None,
                             converted=stitched.converted if stitched else [])
    if all(s in ("done", "skipped") for s in statuses):
        stills = [str(k) for k in episode.scenes if not _made_video(state, runs[k])]
        if stills and len(stills) == len(keys):  # nothing to join: the run made all it was asked
            return EpisodeRecord(id=episode.id, title=episode.title, status="no video", scenes=keys,
                                 note="its scenes make still images, not video: there is nothing to join")
        if stills:
            return EpisodeRecord(id=episode.id, title=episode.title, status="incomplete", scenes=keys,
                                 note=f"{', '.join(stills)} made still images, not video: an episode joins a video "
                                      "clip of each of its scenes")
    status: Literal["failed", "incomplete"] = "failed" if all(s == "failed" for s in statuses) else "incomplete"
    return EpisodeRecord(id=episode.id, title=episode.title, status=status, scenes=keys)


def _made_video(state: StateStore, run: SceneRun) -> bool:
    """Whether the route that finished a scene ended with a video clip (not only still images)."""
    last = state.step(run.plan.routes[run.route].steps[-1].key)
    return last is not None and bool(last.clip)


def target_records(state: StateStore, lanes: list[LaneBase], runs: Iterable[SceneRun]) -> list[TargetRecord]:
    """Per target of this run: the finished steps and scenes of the plan it rendered, and their seconds."""
    records = {lane.name: TargetRecord(name=lane.name, api=lane.target.api, status="gone" if lane.gone else
                                       f"refused: {lane.refusing.message.removeprefix(lane.name + ': ')}" if lane.refusing else "open")
               for lane in lanes}
    for run in runs:
        route = run.plan.routes[run.route]
        for step in route.steps:
            st = state.step(step.key)
            record = records.get(st.server or "") if st is not None and st.status == DONE else None
            if st is None or record is None:
                continue
            record.prompts += 1
            record.seconds += (st.server_ms or 0) / 1000
            if step.last:
                record.scenes += 1
    return list(records.values())
