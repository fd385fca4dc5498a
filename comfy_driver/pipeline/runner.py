"""Running a series: preflight, queue-ahead submission on every server, downloads, episodes, report.

Each server gets a worker that keeps `depth` prompts on it (one running, the next already queued), so
the GPU never waits for the driver's round trip. Workers take scenes from one shared list, so several
servers stay busy together. A scene whose files are already on disk with an unchanged graph hash is
not rendered again.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from comfy_driver.comfy.catalog import Catalog
from comfy_driver.comfy.client import ComfyClient, file_sha256
from comfy_driver.comfy.errors import ExecutionFailed, Interrupted, PromptLost, PromptRejected, format_node_errors
from comfy_driver.comfy.events import Event
from comfy_driver.comfy.follow import Follower, Watch
from comfy_driver.comfy.outputs import OutputFile, safe_component
from comfy_driver.comfy.stream import EventStream
from comfy_driver.config.series import LoadedSeries
from comfy_driver.errors import DriveError, RunError, UserError
from comfy_driver.media.ffmpeg import concat
from comfy_driver.pipeline.jobs import SceneJob
from comfy_driver.pipeline.progress import Progress
from comfy_driver.pipeline.report import EpisodeRecord, OutputRecord, RunReport, SceneRecord, now_iso

MANIFEST = "scene.json"


@dataclass
class RunOptions:
    depth: int = 2  # prompts kept on each server: the running one plus those queued behind it
    finishers: int = 4  # threads reading histories and downloading outputs, per server (0: inline)
    max_lost_resubmits: int = 3


def preflight(jobs: list[SceneJob], catalog: Catalog, *, server: str = "") -> None:
    """Validate every scene's graph as the server would, reporting every error of every scene at once."""
    inputs = catalog.input_files()
    problems: list[str] = []
    for job in jobs:
        uploads = set(job.uploads)
        result = catalog.validate(job.graph, file_exists=lambda kind, name: name in uploads or name in inputs)
        if not result.ok or result.node_errors:
            error = result.error or {}
            head = f"{job.spec.where}: scene {job.key} ({job.template.name}) would be rejected" + \
                (f" by {server}" if server else "")
            lines = format_node_errors(result.node_errors, job.graph)
            if not lines:
                lines = [f"{error.get('message', '')} {error.get('details', '')}".strip()]
            problems.append("\n".join([head + ":", *("  " + line for line in lines)]))
    if problems:
        raise UserError("\n".join(problems), hint=_preflight_hint(problems))


def _preflight_hint(problems: list[str]) -> str | None:
    text = "\n".join(problems)
    if "Value not in list" in text and (".safetensors" in text or ".ckpt" in text):
        return "a model file is missing on the server: run comfy-drive fetch there, or fix the name in models.lock"
    if "does not exist" in text:
        return "install the missing custom node pack on the server"
    return None


def scene_dir(root: Path, job: SceneJob) -> Path:
    return root / safe_component(job.spec.episode_id) / safe_component(job.spec.scene_id)


def finished_before(folder: Path, job: SceneJob) -> dict[str, Any] | None:
    """The manifest of a scene already rendered with this very graph, if its files are intact."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if manifest.get("graph_hash") != job.graph_hash:
        return None
    for out in manifest.get("outputs", []):
        path = folder / out["file"]
        if not path.is_file() or path.stat().st_size != out["size"] or file_sha256(path) != out["sha256"]:
            return None
    return manifest


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


class Runner:
    def __init__(self, loaded: LoadedSeries, jobs: list[SceneJob], servers: list[str], *,
                 progress: Progress | None = None, options: RunOptions | None = None,
                 on_event: Callable[[str, Watch | None, Event], None] | None = None) -> None:
        if not servers:
            raise UserError(f"{loaded.path}: no server to run on",
                            hint="add server: http://host:8188 to the series, pass --server, or use --simulate")
        self.loaded = loaded
        self.jobs = jobs
        self.servers = servers
        self.options = options or RunOptions()
        self.progress = progress or Progress(len(jobs), enabled=False)
        self.on_event = on_event
        self.root = loaded.output_dir / loaded.slug
        self.client_id = uuid.uuid4().hex
        self.records = {j.key: SceneRecord(key=j.key, episode=j.spec.episode_id, scene=j.spec.scene_id,
                                           backend=j.template.name, prompt=j.spec.prompt, seed=j.spec.seed,
                                           graph_hash=j.graph_hash) for j in jobs}
        self.index = {j.key: i + 1 for i, j in enumerate(jobs)}
        self._todo: list[tuple[SceneJob, int]] = []  # (job, attempt)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.errors: list[BaseException] = []

    # ---------------------------------------------------------------------------------------------
    def run(self) -> RunReport:
        report = RunReport(series=self.loaded.series.title, started=now_iso(), servers=[
            ComfyClient(s).address.display for s in self.servers], scenes=list(self.records.values()))
        self.root.mkdir(parents=True, exist_ok=True)
        for job in self.jobs:
            folder = scene_dir(self.root, job)
            manifest = finished_before(folder, job)
            if manifest is not None:
                self._mark_skipped(job, folder, manifest)
            else:
                self._todo.append((job, 1))
        clients = [ComfyClient(s) for s in self.servers]
        if self._todo:
            for client in clients:
                client.system_stats()
                preflight([job for job, _ in self._todo], client.catalog(), server=client.address.display)
            threads = [threading.Thread(target=self._worker, args=(c,), name=f"server-{i}", daemon=True)
                       for i, c in enumerate(clients)]
            for t in threads:
                t.start()
            try:
                for t in threads:
                    while t.is_alive():
                        t.join(0.2)
            except KeyboardInterrupt:
                self._stop.set()
                raise
        report.episodes = self._episodes()
        report.finished = now_iso()
        report.write(self.root)
        for c in clients:
            c.close()
        if self.errors and not any(r.status == "done" for r in self.records.values()):
            err = self.errors[0]
            if isinstance(err, DriveError):
                raise err
        return report

    def _mark_skipped(self, job: SceneJob, folder: Path, manifest: dict[str, Any]) -> None:
        rec = self.records[job.key]
        rec.status = "skipped"
        rec.prompt_id = manifest.get("prompt_id")
        rec.server = manifest.get("server")
        rec.outputs = [OutputRecord(path=(folder / o["file"]).relative_to(self.root).as_posix(), sha256=o["sha256"],
                                    size=o["size"], node_id=o.get("node_id", "")) for o in manifest["outputs"]]
        rec.clip = (folder / manifest["clip"]).relative_to(self.root).as_posix() if manifest.get("clip") else None
        self.progress.scene_done(None)
        self.progress.message(f"scene {self.index[job.key]}/{len(self.jobs)} {job.key}: already done, kept")

    # --------------------------------------------------------------------------------------------- worker
    def _worker(self, client: ComfyClient) -> None:
        """Keep `depth` prompts on this server; hand each ended one to a finishing thread.

        This thread only submits and follows events, so the next prompt is queued while the last
        one's history is read and its outputs downloaded.
        """
        finishing: set[Future[None]] = set()
        try:
            with EventStream(client.address, self.client_id) as stream, \
                    ThreadPoolExecutor(max(1, self.options.finishers), thread_name_prefix="finish") as pool:
                follower = Follower(client, stream)
                inflight: dict[str, tuple[SceneJob, int]] = {}
                while True:
                    self._refill(client, follower, inflight)
                    for future in [f for f in finishing if f.done()]:
                        finishing.discard(future)
                        future.result()  # a finisher's DriveError stops this server's work
                    if not inflight:
                        if not finishing:
                            return
                        wait(finishing, timeout=0.5, return_when=FIRST_COMPLETED)
                        continue
                    watch = follower.next_finished(on_event=self._event, timeout=0.5 if finishing else None)
                    if watch is None:
                        continue
                    job, attempt = inflight.pop(watch.prompt_id)
                    follower.forget(watch.prompt_id)
                    if not self.options.finishers:  # the naive way: finish this one, then queue the next
                        self._finish(client, follower, job, attempt, watch)
                        continue
                    self._refill(client, follower, inflight)  # queue the next before finishing this one
                    finishing.add(pool.submit(self._finish, client, follower, job, attempt, watch))
        except DriveError as exc:
            self.errors.append(exc)
            self.progress.message(f"{client.address.display}: {exc}")
            self._stop.set()

    def _take(self) -> tuple[SceneJob, int] | None:
        with self._lock:
            if self._stop.is_set() or not self._todo:
                return None
            return self._todo.pop(0)

    def _refill(self, client: ComfyClient, follower: Follower, inflight: dict[str, tuple[SceneJob, int]]) -> None:
        while len(inflight) < self.options.depth:
            taken = self._take()
            if taken is None:
                return
            job, attempt = taken
            rec = self.records[job.key]
            for name, path in job.uploads.items():
                stored = client.upload(path)
                if stored != name:
                    raise RunError(f"{client.address.display} stored {path.name} as {stored!r}, expected {name!r}")
            prompt_id = job.prompt_id(attempt)
            try:
                client.queue_prompt(job.graph, client_id=self.client_id, prompt_id=prompt_id, workflow=job.workflow,
                                    where=f"{job.spec.where}: scene {job.key}: ")
            except PromptRejected as exc:
                rec.status, rec.error, rec.error_kind = "failed", str(exc), "validation"
                self.progress.message(str(exc))
                self.progress.scene_done(None)
                continue
            rec.server, rec.prompt_id, rec.queued_at = client.address.display, prompt_id, time.time()
            follower.watch(prompt_id, job.graph, job.key)
            inflight[prompt_id] = (job, attempt)

    def _event(self, watch: Watch | None, event: Event) -> None:
        if self.on_event is not None:
            self.on_event(self.client_id, watch, event)
        if watch is None or watch.ended:
            return
        self.progress.update(self.index.get(watch.label, 0), watch.label, watch.node_title, watch.step,
                             watch.started_at)

    def _finish(self, client: ComfyClient, follower: Follower, job: SceneJob, attempt: int, watch: Watch) -> None:
        """On a finishing thread: the prompt's outcome, its downloads, its record."""
        follower.resolve(watch)
        rec = self.records[job.key]
        rec.started_at = watch.started_at or rec.queued_at
        rec.finished_at = time.time()
        if not watch.done or (isinstance(watch.error, PromptLost) and attempt <= self.options.max_lost_resubmits):
            reason = watch.error or "the server ended it without a history entry"
            self.progress.message(f"scene {job.key}: {reason}; submitting it again")
            with self._lock:
                self._todo.insert(0, (job, attempt + 1))
            return
        if watch.error is not None:
            rec.status, rec.error = "failed", str(watch.error)
            rec.error_kind = ("oom" if isinstance(watch.error, ExecutionFailed) and watch.error.is_oom else
                              "execution" if isinstance(watch.error, ExecutionFailed) else
                              "interrupted" if isinstance(watch.error, Interrupted) else "lost")
            self.progress.message(f"scene {self.index[job.key]}/{len(self.jobs)} {job.key} failed: {watch.error}")
            self.progress.scene_done(None)
            return
        result = watch.result
        assert result is not None
        if result.started_ms and result.finished_ms:
            rec.server_ms = result.finished_ms - result.started_ms
        rec.cached_nodes = result.cached_nodes
        try:
            self._download(client, job, rec, result.files)
        except DriveError as exc:
            rec.status, rec.error, rec.error_kind = "failed", str(exc), "download"
            self.progress.message(f"scene {job.key}: {exc}")
            self.progress.scene_done(None)
            return
        rec.status = "done"
        self.progress.scene_done(rec.finished_at - rec.started_at if rec.started_at else None)
        self.progress.message(f"scene {self.index[job.key]}/{len(self.jobs)} {job.key} done"
                              + (f": {rec.clip}" if rec.clip else ""))

    def _download(self, client: ComfyClient, job: SceneJob, rec: SceneRecord, files: list[OutputFile]) -> None:
        folder = scene_dir(self.root, job)
        folder.mkdir(parents=True, exist_ok=True)
        clip = pick_clip(files, job.template.clip_node)
        outputs = []
        for f in files:
            name = f"clip{Path(f.filename).suffix.lower()}" if f is clip else None
            got = client.download(f, folder, name=name or safe_component(Path(f.filename).name))
            outputs.append({"file": got.path.relative_to(folder).as_posix(), "sha256": got.sha256,
                            "size": got.size, "node_id": f.node_id})
            if f is clip:
                rec.clip = got.path.relative_to(self.root).as_posix()
        rec.outputs = [OutputRecord(path=(folder / o["file"]).relative_to(self.root).as_posix(), sha256=o["sha256"],
                                    size=o["size"], node_id=o["node_id"]) for o in outputs]
        _write_json(folder / MANIFEST, {"graph_hash": job.graph_hash, "prompt_id": rec.prompt_id,
                                        "server": rec.server, "outputs": outputs,
                                        "clip": Path(rec.clip).name if rec.clip else None})

    # --------------------------------------------------------------------------------------------- episodes
    def _episodes(self) -> list[EpisodeRecord]:
        episodes: dict[str, list[SceneJob]] = {}
        for job in self.jobs:
            episodes.setdefault(job.spec.episode_id, []).append(job)
        out = []
        for ep_id, jobs in episodes.items():
            recs = [self.records[j.key] for j in jobs]
            title = jobs[0].spec.episode_title
            keys = [r.key for r in recs]
            if any(r.status not in ("done", "skipped") or not r.clip for r in recs):
                status = "failed" if all(r.status == "failed" for r in recs) else "incomplete"
                out.append(EpisodeRecord(id=ep_id, title=title, status=status, scenes=keys))
                continue
            target = self.root / safe_component(ep_id) / f"{safe_component(ep_id)}.mp4"
            clips = [self.root / r.clip for r in recs if r.clip]
            concat(clips, target)
            out.append(EpisodeRecord(id=ep_id, title=title, status="done",
                                     path=target.relative_to(self.root).as_posix(), sha256=file_sha256(target),
                                     scenes=keys))
            self.progress.message(f"episode {ep_id}: {target}")
        return out


def pick_clip(files: list[OutputFile], clip_node: str | None) -> OutputFile | None:
    """The scene's clip: the template's clip node's video, else the first video; None for stills only."""
    videos = [f for f in files if f.is_video]
    own = [f for f in videos if f.node_id == clip_node]
    return (own or videos or [None])[0]

