"""Running a series: resume, queue-ahead submission on every server, downloads, episodes, report.

Each server gets a worker thread that keeps `depth` prompts on it (one running, the next already
queued), so the GPU never waits for the driver's round trip; ended prompts are read and downloaded
on finishing threads. Workers take scenes from one shared list, so several servers stay busy
together. Every transition is written to the state store, so a run stopped at any point (Ctrl-C,
SIGKILL, a dead server) is resumed by running it again: finished scenes are kept, prompts still on
a server are re-attached, lost ones are submitted again.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from comfy_driver.comfy.address import ServerAddress
from comfy_driver.comfy.client import ComfyClient, file_sha256
from comfy_driver.comfy.errors import (ExecutionFailed, Interrupted, PromptLost, PromptRejected,
                                       ServerUnreachable)
from comfy_driver.comfy.events import Event
from comfy_driver.comfy.follow import Follower, Watch
from comfy_driver.comfy.outputs import OutputFile, safe_component
from comfy_driver.comfy.settings import Settings
from comfy_driver.comfy.stream import EventStream
from comfy_driver.confined import HALTING
from comfy_driver.config.series import LoadedSeries
from comfy_driver.errors import DriveError, RunError, UserError
from comfy_driver.pipeline.episodes import stitch_episodes
from comfy_driver.pipeline.jobs import SceneJob
from comfy_driver.pipeline.preflight import every_prompt, preflight
from comfy_driver.pipeline.progress import Progress
from comfy_driver.units import fmt_seconds
from comfy_driver.pipeline.report import OutputRecord, RunReport, SceneRecord, now_iso
from comfy_driver.pipeline.state import DONE, FAILED, SUBMITTED, StateStore

@dataclass
class RunOptions:
    depth: int = 2  # prompts kept on each server: the running one plus those queued behind it
    finishers: int = 4  # threads reading histories and downloading outputs, per server (0: inline)
    max_lost_resubmits: int = 3  # a prompt lost to a server restart is submitted again this often
    server_timeout: float = 600.0  # seconds a server may be unreachable before the run stops, resumable
    download_retries: int = 4
    force: set[str] = field(default_factory=set)  # scene keys (or "all") rendered again even if done
    episodes: bool = True  # join each episode's clips (a comparison renders scenes only)
    settings: Settings = field(default_factory=Settings)  # timeouts, retries, keepalive, TLS of every server


class StopRun(RunError):
    """The run stopped before the end (a signal, a server gone); everything is resumable."""


def scene_dir(root: Path, job: SceneJob) -> Path:
    """A scene's folder; each prompt of a chained scene writes into a subfolder of its own."""
    folder = root / safe_component(job.spec.episode_id) / safe_component(job.spec.scene_id)
    return folder / job.key.rsplit(":", 1)[1] if job.stages > 1 else folder


def pick_clip(files: list[OutputFile], clip_node: str | None) -> OutputFile | None:
    """The scene's clip: the template's clip node's video, else the first video; None for stills only."""
    videos = [f for f in files if f.is_video]
    own = [f for f in videos if f.node_id == clip_node]
    return next(iter(own or videos), None)


def _error_kind(error: BaseException) -> str:
    if isinstance(error, ExecutionFailed):
        return "oom" if error.is_oom else "execution"
    if isinstance(error, Interrupted):
        return "interrupted"
    if isinstance(error, PromptRejected):
        return "validation"
    return "lost" if isinstance(error, PromptLost) else "server"


@dataclass
class _Task:
    job: SceneJob
    attempt: int
    prompt_id: str | None = None  # set when re-attaching to a prompt a previous run submitted
    server: str | None = None
    made: dict[str, object] | None = None  # that prompt's outputs, if a previous run saw it succeed


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
        self.displays = {ServerAddress.parse(s).display for s in servers}
        self.index = {j.spec.key: i + 1 for i, j in enumerate(jobs)}
        self.current: dict[str, SceneJob] = {j.spec.key: j for j in jobs}  # the job each scene is rendered with
        self.skipped: set[str] = set()
        self._todo: list[_Task] = []
        self._lock = threading.Lock()
        self.stop = threading.Event()  # first Ctrl-C / SIGTERM: queue nothing more, finish what runs
        self.interrupt = threading.Event()  # second: interrupt what runs too
        self.errors: list[DriveError] = []
        self.download_failed: dict[str, str] = {}
        self.state: StateStore | None = None

    # --------------------------------------------------------------------------------------------- run
    def run(self) -> RunReport:
        self.root.mkdir(parents=True, exist_ok=True)
        self.state = state = StateStore(self.root / "state.db")
        report = RunReport(series=self.loaded.series.title, started=now_iso(), servers=sorted(self.displays), scenes=[])
        try:
            for job in self.jobs:
                self._classify(job)
            clients = [ComfyClient(s, settings=self.options.settings) for s in self.servers]
            if self._todo:
                prompts = every_prompt([t.job for t in self._todo])
                for client in clients:
                    client.system_stats()
                    preflight(prompts, client.catalog(), server=client.address.display)
                self._work(clients)
            halted = [e for e in self.errors if isinstance(e, HALTING)]
            if halted:  # nothing can be written: episodes and report neither; what is finished stays
                raise halted[0]
            if self.options.episodes:
                report.episodes = stitch_episodes(self.root, self.jobs, state, self.progress)
            report.scenes = [self._record(job) for job in self.jobs]
            report.finished = now_iso()
            report.write(self.root)
            for c in clients:
                c.close()
        finally:
            state.close()
        if self.stop.is_set():
            raise StopRun("the run was stopped; finished scenes are kept",
                          hint="run the same command again to resume")
        gone = [e for e in self.errors if isinstance(e, StopRun)]
        if gone:
            raise gone[0]
        return report

    def _classify(self, job: SceneJob) -> None:
        """Done before (files intact), to re-attach (still on a server), or to do.

        A chained scene (windows, stages) resumes at its first prompt not done.
        """
        state = self.state
        assert state is not None
        scene = job.spec.key
        forced = "all" in self.options.force or scene in self.options.force
        if job.stages > 1:
            st = state.ensure(scene, job.spec.episode_id, job.spec.scene_id, job.backend, job.scene_hash)
            if forced:
                state.reset(scene, "--force")
            elif st.status == DONE and self._intact(scene_dir(self.root, job).parent, st.outputs):
                self._kept(scene)
                return
        while True:
            st = state.ensure(job.key, job.spec.episode_id, job.spec.scene_id, job.template.name, job.graph_hash)
            if forced:
                state.reset(job.key, "--force")
                st = state.ensure(job.key, job.spec.episode_id, job.spec.scene_id, job.template.name, job.graph_hash)
            if st.status == DONE and self._intact(scene_dir(self.root, job), st.outputs):
                if job.next is None:
                    self._kept(scene)
                    return
                assert st.clip is not None
                job = job.next(scene_dir(self.root, job) / st.clip)
                continue
            if st.status == DONE:
                state.reset(job.key, "a finished output file is missing or changed on disk")
            if st.status == SUBMITTED and st.prompt_id:
                self._todo.append(_Task(job, st.attempts, st.prompt_id, st.server, st.server_outputs))
            else:
                self._todo.append(_Task(job, st.attempts + 1))
            return

    def _kept(self, scene: str) -> None:
        self.skipped.add(scene)
        self.progress.scene_done(None)
        self.progress.message(f"scene {self.index[scene]}/{len(self.jobs)} {scene}: already done, kept")

    def _intact(self, folder: Path, outputs: list[dict[str, object]]) -> bool:
        for out in outputs:
            path = folder / str(out["file"])
            if not path.is_file() or path.stat().st_size != out["size"] or file_sha256(path) != out["sha256"]:
                return False
        return bool(outputs)

    def _work(self, clients: list[ComfyClient]) -> None:
        threads = [threading.Thread(target=self._worker, args=(c,), name=f"server-{i}", daemon=True)
                   for i, c in enumerate(clients)]
        for t in threads:
            t.start()
        for t in threads:
            while t.is_alive():
                t.join(0.2)

    def _mine(self, task: _Task, server: str) -> bool:
        """A new prompt goes anywhere; a re-attachment to the server it is on (or anywhere, if that
        server is not in this run)."""
        return task.prompt_id is None or task.server == server or task.server not in self.displays

    def _take(self, server: str) -> _Task | None:
        """The next task for this server, in queue order."""
        with self._lock:
            if self.stop.is_set():
                return None
            for i, task in enumerate(self._todo):
                if self._mine(task, server):
                    return self._todo.pop(i)
            return None

    def _requeue(self, task: _Task) -> None:
        with self._lock:
            self._todo.insert(0, task)

    def _queue_new(self, job: SceneJob, after_attempt: int = 0) -> None:
        """Queue a prompt made during the run (a scene's next step, a fallback) as its next attempt."""
        assert self.state is not None
        spec = job.spec
        if job.stages > 1 and job.stage == 0:
            self.state.ensure(spec.key, spec.episode_id, spec.scene_id, job.backend, job.scene_hash)
        st = self.state.ensure(job.key, spec.episode_id, spec.scene_id, job.template.name, job.graph_hash)
        self._requeue(_Task(job, max(st.attempts, after_attempt) + 1))

    # --------------------------------------------------------------------------------------------- worker
    def _worker(self, client: ComfyClient) -> None:
        """Keep `depth` prompts on this server; hand each ended one to a finishing thread."""
        finishing: set[Future[None]] = set()
        server = client.address.display
        try:
            with EventStream(client.address, self.client_id, settings=client.settings) as stream, \
                    ThreadPoolExecutor(max(1, self.options.finishers), thread_name_prefix="finish") as pool:
                follower = Follower(client, stream)
                inflight: dict[str, _Task] = {}
                stopped = interrupted = False
                while True:
                    try:
                        if self.stop.is_set() and not stopped:
                            stopped = True
                            self._unqueue(client, follower, inflight)
                        if self.interrupt.is_set() and not interrupted:
                            interrupted = True
                            for pid in list(inflight):
                                client.interrupt(pid)
                        self._refill(client, follower, inflight)
                        for future in [f for f in finishing if f.done()]:
                            finishing.discard(future)
                            future.result()
                        if not inflight:
                            if not finishing and not self._has_work(server):
                                return
                            wait(finishing, timeout=0.2, return_when=FIRST_COMPLETED)
                            continue
                        watch = follower.next_finished(on_event=self._event, timeout=0.5)
                        if watch is None:
                            if not stream.connected.is_set():
                                self._wait_for(client, inflight)
                            continue
                        task = inflight.pop(watch.prompt_id)
                        follower.forget(watch.prompt_id)
                        if not self.options.finishers:  # the naive way: finish this one, then queue the next
                            self._finish(client, follower, task, watch)
                            continue
                        self._refill(client, follower, inflight)  # queue the next before finishing this one
                        finishing.add(pool.submit(self._finish, client, follower, task, watch))
                    except ServerUnreachable:
                        self._wait_for(client, inflight)
                        follower.recover()
        except DriveError as exc:
            self.errors.append(exc)
            if not isinstance(exc, HALTING):  # those end the run with their own message
                self.progress.message(f"{server}: {exc}")
            if not isinstance(exc, StopRun):
                self.stop.set()

    def _has_work(self, server: str) -> bool:
        with self._lock:
            return not self.stop.is_set() and any(self._mine(t, server) for t in self._todo)

    def _wait_for(self, client: ComfyClient, inflight: dict[str, _Task]) -> None:
        """The server stopped answering: wait for it, visibly, up to server_timeout."""
        since = time.monotonic()
        shown = 0.0
        while True:
            try:
                client.system_stats()
                if time.monotonic() - since > 1:
                    self.progress.message(f"{client.address.display} is back after {fmt_seconds(time.monotonic() - since)}")
                return
            except ServerUnreachable:
                down = time.monotonic() - since
                if down > self.options.server_timeout:
                    raise StopRun(f"{client.address.display} has not answered for {fmt_seconds(down)}; the run "
                                  f"stopped with {len(inflight)} scene(s) still submitted there; finished scenes "
                                  "are kept", hint="start the server (or pass another --server) and run the same "
                                  "command again to resume") from None
                if down - shown >= 5 or shown == 0:
                    shown = down or 0.001
                    self.progress.message(f"waiting for {client.address.display} (unreachable for {fmt_seconds(down)};"
                                          f" giving up after {fmt_seconds(self.options.server_timeout)})")
                if self.stop.wait(0.5):
                    raise StopRun("stopped while waiting for the server") from None

    def _unqueue(self, client: ComfyClient, follower: Follower, inflight: dict[str, _Task]) -> None:
        """A clean stop: take this run's prompts that have not started off the server's queue."""
        assert self.state is not None
        _, pending = client.queued_ids()
        ours = [pid for pid in inflight if pid in pending]
        if ours:
            client.delete_queued(ours)
        for pid in ours:
            task = inflight.pop(pid)
            follower.forget(pid)
            self.state.unsubmitted(task.job.key, "the run was stopped before this scene started")

    def _refill(self, client: ComfyClient, follower: Follower, inflight: dict[str, _Task]) -> None:
        assert self.state is not None
        while len(inflight) < self.options.depth:
            task = self._take(client.address.display)
            if task is None:
                return
            job = task.job
            if task.prompt_id is not None:  # a prompt a previous run left on this server
                watch = follower.watch(task.prompt_id, job.graph, job.key)
                watch.output_nodes = job.output_nodes
                if task.made is not None:  # it had succeeded: only its downloads are left
                    watch.succeeded_before, watch.executed = True, dict(task.made)
                inflight[task.prompt_id] = task
                follower.recover(task.prompt_id)
                self.progress.message(f"scene {self.index[job.spec.key]}/{len(self.jobs)} {job.key}: re-attached to "
                                      f"{task.prompt_id}")
                continue
            try:
                for name, path in job.uploads.items():
                    assert path is not None, "a placeholder clip is never submitted"
                    stored = client.upload(path)
                    if stored != name:
                        raise RunError(f"{client.address.display} stored {path.name} as {stored!r}, expected {name!r}")
                prompt_id = job.prompt_id(task.attempt)
                self.state.submitted(job.key, prompt_id, client.address.display, task.attempt, job.template.name)
                client.queue_prompt(job.graph, client_id=self.client_id, prompt_id=prompt_id, workflow=job.workflow,
                                    where=f"{job.spec.where}: scene {job.key}: ")
            except PromptRejected as exc:
                self._failed(task, exc)
                continue
            except ServerUnreachable:
                self._requeue(task)
                raise
            task.prompt_id = prompt_id
            follower.watch(prompt_id, job.graph, job.key).output_nodes = job.output_nodes
            inflight[prompt_id] = task

    def _event(self, watch: Watch | None, event: Event) -> None:
        if self.on_event is not None:
            self.on_event(self.client_id, watch, event)
        if watch is None or watch.ended:
            return
        self.progress.update(self.index.get(watch.label.split(":")[0], 0), watch.label, watch.node_title, watch.step,
                             watch.started_at)

    # --------------------------------------------------------------------------------------------- finishing
    def _finish(self, client: ComfyClient, follower: Follower, task: _Task, watch: Watch) -> None:
        """On a finishing thread: the prompt's outcome, its downloads, its state."""
        assert self.state is not None
        job = task.job
        try:
            follower.resolve(watch)
        except ServerUnreachable:
            self._requeue(task)  # still submitted: re-attached once the server answers again
            return
        if not watch.done:
            self._requeue(task)
            return
        error = watch.error
        if isinstance(error, PromptLost) and task.attempt <= self.options.max_lost_resubmits:
            self.progress.message(f"scene {job.key}: {error}; submitting it again")
            self.state.event(job.key, "lost", str(error))
            self._requeue(_Task(job, task.attempt + 1))
            return
        if isinstance(error, Interrupted) and self.stop.is_set():
            self.state.unsubmitted(job.key, "interrupted by the user")
            return
        if error is not None:
            self._failed(task, error, started_at=watch.started_at)
            return
        result = watch.result
        assert result is not None
        self.state.ended(job.key, result.outputs, watch.started_at)
        try:
            outputs, clip = self._download(client, job, result.files)
        except DriveError as exc:  # the outputs are still on the server: the next run downloads them
            if isinstance(exc, HALTING):  # nothing more can be written: stop queueing, keep what is done
                self.errors.append(exc)
                self.stop.set()
            self.download_failed[job.key] = str(exc)
            self.state.event(job.key, "download failed", str(exc))
            self.progress.message(f"scene {job.key}: {exc} (the next run downloads it again, without rendering)")
            self.progress.scene_done(None)
            return
        finished = time.time()
        started = watch.started_at or finished
        server_ms = result.finished_ms - result.started_ms if result.started_ms and result.finished_ms else None
        self.state.done(job.key, started_at=started, finished_at=finished, server_ms=server_ms,
                        cached_nodes=result.cached_nodes, clip=clip, outputs=outputs)
        where = f"scene {self.index[job.spec.key]}/{len(self.jobs)} {job.key}"
        if job.next is not None:
            if clip is None:
                self.state.failed(job.spec.key, f"{job.key} made no video for the next step", "execution")
                self.progress.message(f"{where}: made no video for the next step")
                return
            following = job.next(scene_dir(self.root, job) / clip)
            self.progress.message(f"{where} done; next: {following.stage_label}")
            self._queue_new(following)
            return
        if job.stages > 1:  # the last prompt of a chained scene: its clip is the scene's
            sub = scene_dir(self.root, job).name
            self.state.done(job.spec.key, started_at=started, finished_at=finished, server_ms=server_ms,
                            cached_nodes=result.cached_nodes, clip=f"{sub}/{clip}" if clip else None,
                            outputs=[{**o, "file": f"{sub}/{o['file']}"} for o in outputs])
        self.progress.scene_done(finished - started)
        if clip:
            clip = (scene_dir(self.root, job) / clip).relative_to(self.root).as_posix()
        self.progress.message(f"{where} done" + (f": {clip}" if clip else ""))

    def _failed(self, task: _Task, error: DriveError, *, started_at: float | None = None) -> None:
        """Record a failure. After an out-of-memory the series' on_oom (another backend, smaller
        settings) gets one try; other errors are not retried blindly."""
        assert self.state is not None
        job, kind = task.job, _error_kind(error)
        self.state.failed(job.key, str(error), kind, started_at=started_at)
        if job.key != job.spec.key:
            self.state.failed(job.spec.key, f"{job.key}: {error}", kind, started_at=started_at)
        replacement = job.on_oom if kind in job.fallback_on else None
        if replacement is not None:
            what = f"{kind} on {job.backend}: trying {replacement.backend}"
            self.state.event(job.spec.key, "fallback", what)
            self.progress.message(f"scene {job.spec.key}: {what}")
            with self._lock:
                self.current[job.spec.key] = replacement
            self._queue_new(replacement, task.attempt)
            return
        self.progress.message(f"scene {self.index[job.spec.key]}/{len(self.jobs)} {job.key} failed: {error}")
        self.progress.scene_done(None)

    def _download(self, client: ComfyClient, job: SceneJob,
                  files: list[OutputFile]) -> tuple[list[dict[str, object]], str | None]:
        folder = scene_dir(self.root, job)
        clip = pick_clip(files, job.template.clip_node)
        outputs: list[dict[str, object]] = []
        clip_name = None
        for f in files:
            name = f"clip{Path(f.filename).suffix.lower()}" if f is clip else safe_component(Path(f.filename).name)
            for attempt in range(self.options.download_retries):
                try:
                    got = client.download(f, folder, name=name, within=self.root)
                    break
                except (RunError, ServerUnreachable) as exc:
                    if attempt + 1 == self.options.download_retries or isinstance(exc, HALTING):
                        raise
                    time.sleep(0.2 * 2 ** attempt)
            outputs.append({"file": got.path.relative_to(folder).as_posix(), "sha256": got.sha256, "size": got.size,
                            "node_id": f.node_id})
            if f is clip:
                clip_name = got.path.name
        return outputs, clip_name

    # --------------------------------------------------------------------------------------------- report
    def _record(self, job: SceneJob) -> SceneRecord:
        assert self.state is not None
        key = job.spec.key
        st = self.state.scene(key)
        assert st is not None
        current = self.current[key]
        base = f"{job.spec.episode_id}/{job.spec.scene_id}"
        status: Literal["done", "skipped", "failed", "not run"] = "not run"
        if key in self.skipped:
            status = "skipped"
        elif st.status in (DONE, FAILED):
            status = "done" if st.status == DONE else "failed"
        error, error_kind = st.error, st.error_kind
        failed_downloads = [v for k, v in self.download_failed.items() if k.split(":")[0] == key]
        if failed_downloads:
            status, error, error_kind = "failed", failed_downloads[0], "download"
        return SceneRecord(
            key=key, episode=job.spec.episode_id, scene=job.spec.scene_id, backend=current.backend or current.template.name,
            prompt=job.spec.prompt, seed=job.spec.seed, graph_hash=st.graph_hash, status=status, server=st.server,
            prompt_id=st.prompt_id, queued_at=st.queued_at, started_at=st.started_at, finished_at=st.finished_at,
            server_ms=st.server_ms, cached_nodes=st.cached_nodes, attempts=st.attempts,
            outputs=[OutputRecord(path=f"{base}/{o['file']}", sha256=o["sha256"], size=o["size"],
                                  node_id=o["node_id"]) for o in st.outputs],
            clip=f"{base}/{st.clip}" if st.clip else None, error=error, error_kind=error_kind,
            history=[f"{kind}: {detail}" if detail else kind for _, kind, detail in self.state.events(key)],
            chosen=job.chosen or None)

