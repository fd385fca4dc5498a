"""Finishing one ended prompt, as a task of the supervisor's pool: its outcome, then its files.

The outcome is read from the server's history; a success's files are downloaded into the step's
folder (the scene's clip as `clip.<ext>`, every other file under the server's own subfolder and
name, so two outputs named alike by different save nodes both stay), hashed while written, and a
manifest is written beside them last. The manifest lets a run whose state file was lost recognise
the step as finished from the disk alone.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from comfy_driver import confined
from comfy_driver.comfy.client import ComfyClient, Downloaded, file_sha256
from comfy_driver.comfy.errors import ServerUnreachable
from comfy_driver.comfy.follow import Follower, PromptResult, Watch
from comfy_driver.comfy.outputs import OutputFile
from comfy_driver.errors import DriveError, RunError
from comfy_driver.pipeline.messages import Attempt
from comfy_driver.pipeline.plan import PlannedStep
from comfy_driver.pipeline.state import DONE, StateStore, StepState

MANIFEST = ".step.json"


Fetch = Callable[[OutputFile, Path, "str | None"], Downloaded]  # (file, folder, name) -> the file in folder


@dataclass
class Outcome:
    attempt: Attempt
    started_at: float | None  # when it started running (the driver's clock), if seen
    running: bool = False  # still queued or running after all (or the server did not answer): follow it again
    error: DriveError | None = None  # the prompt's own failure
    result: PromptResult | None = None
    download_error: DriveError | None = None  # the outputs are still on the server: the next run fetches them
    outputs: list[dict[str, Any]] = field(default_factory=list)
    clip: str | None = None
    finished_at: float = 0.0


def pick_clip(files: list[OutputFile], clip_node: str | None) -> OutputFile | None:
    """The step's clip: the template's clip node's video, else the first video; None for stills only."""
    videos = [f for f in files if f.is_video]
    own = [f for f in videos if f.node_id == clip_node]
    return next(iter(own or videos), None)


def finish(client: ComfyClient, follower: Follower, attempt: Attempt, watch: Watch, retries: int,
           root: Path) -> Outcome:
    """Resolve an ended prompt and download what it made. Runs on a pool thread; owns `watch` now."""
    outcome = Outcome(attempt, watch.started_at)
    try:
        follower.resolve(watch)
    except ServerUnreachable:
        outcome.running = True
        return outcome
    outcome.started_at = watch.started_at
    if not watch.done:
        outcome.running = True
        return outcome
    if watch.error is not None:
        outcome.error = watch.error
        return outcome
    assert watch.result is not None
    outcome.result = watch.result
    try:
        outcome.outputs, outcome.clip = download(lambda f, folder, name: client.download(f, folder, name=name, within=root),
                                                 attempt, watch.result.files, retries=retries)
    except DriveError as exc:
        outcome.download_error = exc
    outcome.finished_at = time.time()
    return outcome


def download(fetch: Fetch, attempt: Attempt, files: list[OutputFile], *,
             retries: int) -> tuple[list[dict[str, Any]], str | None]:
    """Every file into the step's folder with `fetch` (which never follows a link out of the series
    folder), then the step's manifest."""
    folder = attempt.step.folder
    # A file the server lists twice for one node is one output (the state's key; a custom node may repeat one)
    files = list({(f.node_id, f.subfolder, f.filename): f for f in files}.values())
    clip = pick_clip(files, attempt.rendered.template.clip_node)
    outputs: list[dict[str, Any]] = []
    got_by_name: dict[tuple[str, str], tuple[Path, str, int]] = {}
    clip_name = None
    for f in files:
        name = f"clip{Path(f.filename).suffix.lower()}" if f is clip else None
        where = (f.subfolder, f.filename) if f is not clip else ("", "")
        if where not in got_by_name:  # two nodes naming one server file: one download
            got = _download_one(fetch, f, folder, name, retries)
            got_by_name[where] = (got.path, got.sha256, got.size)
        path, sha, size = got_by_name[where]
        outputs.append({"file": path.relative_to(folder).as_posix(), "sha256": sha, "size": size,
                        "node_id": f.node_id, "subfolder": f.subfolder, "filename": f.filename})
        if f is clip:
            clip_name = path.name
    write_manifest(folder, attempt.step.identity, clip_name, outputs)
    return outputs, clip_name


def _download_one(fetch: Fetch, f: OutputFile, folder: Path, name: str | None, retries: int) -> Downloaded:
    for attempt in range(retries):
        try:
            return fetch(f, folder, name)
        except (RunError, ServerUnreachable):
            if attempt + 1 == retries:
                raise
            time.sleep(0.2 * 2 ** attempt)
    raise AssertionError("unreachable")


def write_manifest(folder: Path, identity: str, clip: str | None, outputs: list[dict[str, Any]]) -> None:
    # Compact: with an indent, the json module writes in Python instead of C, for every step.
    confined.write_text(folder, MANIFEST, json.dumps({"identity": identity, "clip": clip, "outputs": outputs},
                                                     separators=(",", ":")))


def read_manifest(folder: Path, identity: str) -> tuple[str | None, list[dict[str, Any]]] | None:
    """A finished step's clip and outputs from its manifest, if it has this identity and every file is
    intact (size and sha256)."""
    try:
        data = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        if data.get("identity") != identity or not intact(folder, data["outputs"]):
            return None
        return data.get("clip"), list(data["outputs"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def intact(folder: Path, outputs: list[dict[str, Any]]) -> bool:
    for out in outputs:
        path = folder / str(out["file"])
        if not path.is_file() or path.stat().st_size != out["size"] or file_sha256(path) != out["sha256"]:
            return False
    return bool(outputs)


def recognise(state: StateStore, step: PlannedStep) -> StepState | None:
    """The step's state if it is finished with this identity and its files are intact (a step the
    state file does not know, but whose manifest on disk matches, is recorded as finished)."""
    st = state.ensure(step.key, step.label, step.identity)
    if st.status == DONE and intact(step.folder, st.outputs):
        return st
    found = read_manifest(step.folder, step.identity)
    if found is not None:
        clip, outputs = found
        state.done(step.key, started_at=st.started_at, finished_at=st.finished_at or time.time(),
                   server_ms=st.server_ms, cached_nodes=st.cached_nodes, clip=clip, outputs=outputs)
        state.event(step.key, "recognised", "its files on disk match its manifest")
        return state.step(step.key)
    if st.status == DONE:
        state.reset(step.key, "a finished output file is missing or changed on disk")
    return None
