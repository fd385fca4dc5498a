"""The run report: per scene prompt_id, timings, outputs with sha256; JSON and a human summary."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from comfy_driver import confined
from comfy_driver.units import fmt_seconds
from comfy_driver.publish.record import PublishRecord


class OutputRecord(BaseModel):
    path: str  # relative to the series folder
    sha256: str
    size: int
    node_id: str = ""


class StepRecord(BaseModel):
    label: str
    status: str
    server: str | None = None  # the target it was sent to
    prompt_id: str | None = None
    attempts: int = 0
    started_at: float | None = None
    finished_at: float | None = None
    clip: str | None = None


class TargetRecord(BaseModel):
    """What one target did: the steps and scenes it made, and their cost in its seconds."""

    name: str
    api: Literal["native", "v2"]
    status: str  # "open", or why it took no more work ("gone: ...", "refused: ...")
    prompts: int = 0  # steps it rendered
    scenes: int = 0  # scenes whose clip it made
    seconds: float = 0.0  # execution time of those steps (the server's clock; a v2 job's as the driver saw it)


class SceneRecord(BaseModel):
    key: str
    episode: str
    scene: str
    backend: str
    prompt: str | None
    seed: int
    graph_hash: str  # the identity of what made (or would make) the clip: every step's graph and inputs
    status: Literal["done", "skipped", "failed", "stopped", "not run"] = "not run"  # stopped: partly done
    server: str | None = None
    prompt_id: str | None = None
    queued_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    server_ms: int | None = None  # execution time as the server's own timestamps give it
    cached_nodes: list[str] = []
    attempts: int = 0
    outputs: list[OutputRecord] = []
    clip: str | None = None
    error: str | None = None
    error_kind: str | None = None  # validation | execution | oom | interrupted | lost | download | server
    history: list[str] = []  # every submission, loss, failure and fallback, in order
    steps: list[StepRecord] = []  # the prompts of the route that made (or is making) the clip
    notes: list[str] = []  # what was adapted (frames a fallback can take), said before submitting


class EpisodeRecord(BaseModel):
    """An episode: "done" (joined into `path`), "no video" (every scene finished, none made a video:
    stills are not joined), "incomplete" or "failed"; `note` says why when it is not done."""

    id: str
    title: str
    status: Literal["done", "no video", "incomplete", "failed"]
    note: str | None = None
    path: str | None = None
    sha256: str | None = None
    scenes: list[str]
    format: str | None = None  # the joined file's size and fps
    converted: list[str] = []  # scenes whose clip was scaled or resampled to that format
    published: PublishRecord | None = None  # YouTube (run --publish, publish)


class RunReport(BaseModel):
    series: str
    started: str
    finished: str | None = None
    servers: list[str]
    targets: list[TargetRecord] = []
    scenes: list[SceneRecord]
    episodes: list[EpisodeRecord] = []
    stopped: str | None = None  # why the run stopped before the end, if it did

    @property
    def failed(self) -> list[SceneRecord]:
        return [s for s in self.scenes if s.status == "failed"]

    @property
    def complete(self) -> bool:
        """Every scene is finished and every episode is joined, or has no video to join (still images)."""
        return all(s.status in ("done", "skipped") for s in self.scenes) and \
            all(e.status in ("done", "no video") for e in self.episodes)

    def write(self, folder: Path) -> Path:
        return confined.write_text(folder, "report.json", self.model_dump_json(indent=2) + "\n")

    def summary(self) -> str:
        done = sum(s.status == "done" for s in self.scenes)
        skipped = sum(s.status == "skipped" for s in self.scenes)
        left = len(self.scenes) - done - skipped - len(self.failed)
        lines = [f"{self.series}: {done} scene(s) rendered, {skipped} already done, {len(self.failed)} failed"
                 + (f", {left} not finished" if left else "")]
        for s in self.scenes:
            took = ""
            if s.started_at and s.finished_at:
                took = f" in {fmt_seconds(s.finished_at - s.started_at)}"
            line = f"  {s.key:<20} {s.status:<8}{took}"
            if s.clip:
                line += f"  {s.clip}"
            if s.error:
                line += f"\n      {s.error.splitlines()[0]}"
            lines.append(line)
        if len(self.targets) > 1:
            for target in self.targets:
                lines.append(f"  target {target.name}: {target.scenes} scene(s), {target.prompts} prompt(s), "
                             f"{fmt_seconds(target.seconds)} rendering" + ("" if target.status == "open"
                                                                          else f" ({target.status})"))
        for e in self.episodes:
            lines.append(f"  episode {e.id}: {e.status}" + (f"  {e.path}" if e.path else "")
                         + (f"  (converted to {e.format}: {', '.join(e.converted)})" if e.converted else "")
                         + (f" ({e.note})" if e.note else ""))
            if e.published is not None:
                lines.append(f"      YouTube: {e.published.line()}")
        return "\n".join(lines)


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")

