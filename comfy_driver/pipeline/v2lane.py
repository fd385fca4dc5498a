"""An API v2 target's lane (Comfy Cloud, a serverless deployment, ComfyUI behind comfy-api-proxy).

Decisions:
- One thread per job the supervisor gives the lane (at most `max_jobs` at once): it submits (or
  finds) the job, follows it to its end, and hands it back as `Ended`; the lane writes no state.
- The idempotency key is the attempt's prompt id, recorded by the supervisor before the lane sends
  it. A key is sent at most once: an attempt that may have sent its key before (re-attached after a
  crash, or looked up after a lost state file) is first searched for on the endpoint (`find`), and
  when nothing is found it comes back renumbered (`Requeue`), so its new key is recorded first too.
- 402 (no credits) makes the target refuse work (`Refusing`): the supervisor gives the attempt to
  another target and sends none here again; other errors of a submission are the prompt's own.
- An unreachable endpoint is waited for by one thread at a time, visibly; after `move_after` the
  supervisor may have the lane give its work up (`abandon`), after `server_timeout` it gives up.
- Cancel (unqueue on a stop, interrupt) runs on a thread of its own, so the supervisor never waits
  on a request.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from comfy_driver.comfy.catalog import Catalog
from comfy_driver.comfy.client import ComfyClient, Downloaded
from comfy_driver.comfy.errors import PromptLost, ServerUnreachable
from comfy_driver.comfy.follow import PromptResult
from comfy_driver.comfy.job import NodeStarted, Started, StepProgress
from comfy_driver.comfy.outputs import OutputFile
from comfy_driver.comfy.settings import Settings
from comfy_driver.comfy.target import Target
from comfy_driver.comfy.v2 import V2Client, V2Job, V2Output
from comfy_driver.comfy.v2download import fetch_resumable
from comfy_driver.comfy.v2http import Busy, InsufficientCredits, V2Error, WorkflowRefused
from comfy_driver.errors import DriveError, JobTimeout
from comfy_driver.pipeline.finish import Outcome, download
from comfy_driver.pipeline.messages import (Attempt, Closing, Crashed, Ended, LaneBase, LaneGone, Refusing, Rejected,
                                            Requeue, Say, Seen, ServerGone, Submitted, Unqueued)

T = TypeVar("T")


_UNDONE = ("canceling", "canceled")  # a job an earlier run took back on its way out: rendered again


@dataclass(eq=False)
class Running:
    """A job this lane follows, with what the driver saw of it (v2 jobs carry no timestamps)."""

    job: V2Job
    started_at: float | None = None
    ended_at: float | None = None
    lost: PromptLost | None = None  # the endpoint no longer knows the job


class V2Lane(LaneBase):
    def __init__(self, target: Target, post: Callable[[object], None], *, capacity: int, server_timeout: float,
                 move_after: float, settings: Settings) -> None:
        super().__init__(target, capacity, post, server_timeout=server_timeout, move_after=move_after)
        self.client = V2Client(target, settings=settings)
        self._lock = threading.Lock()  # guards _jobs, _threads and _gave_up
        self._jobs: dict[Attempt, Running] = {}
        self._threads: list[threading.Thread] = []
        self._gave_up = False
        self._down = threading.Lock()  # held by the one thread waiting for an unreachable endpoint
        self._unqueued = threading.Event()  # the run stops: nothing more is submitted here

    # --------------------------------------------------------------------------------------------- supervisor side
    def check(self, known: Catalog | None = None) -> Catalog | None:
        self.client.check()
        if known is not None:
            return known
        catalog, source = self.client.catalog()
        if catalog is None:
            self.post(Say(source))
        return catalog

    def submit(self, attempt: Attempt) -> None:
        self._spawn(attempt, None)

    def follow(self, attempt: Attempt) -> None:
        with self._lock:
            running = self._jobs.get(attempt)
        self._spawn(attempt, running)

    def unqueue(self) -> None:
        """Cancel the jobs that have not started; they end as cancelled (the supervisor unrecords them)."""
        self._unqueued.set()  # a job thread still uploading or waiting for room submits nothing now
        with self._lock:
            waiting = [r.job for r in self._jobs.values() if r.started_at is None]
        self._in_background(lambda: self._cancel(waiting, only_queued=True))
        self.post(Unqueued(self, []))

    def interrupt(self) -> None:
        with self._lock:
            jobs = [r.job for r in self._jobs.values()]
        self._in_background(lambda: self._cancel(jobs, only_queued=False))

    def close(self) -> None:
        self._closing.set()
        with self._lock:
            threads = list(self._threads)
            for running in self._jobs.values():
                running.job.close()
        for thread in threads:
            thread.join(timeout=5)
        self.client.close()

    # --------------------------------------------------------------------------------------------- finishing
    def finish(self, attempt: Attempt, handle: Any, retries: int, root: Path) -> Outcome:
        running: Running = handle
        job = running.job
        outcome = Outcome(attempt, running.started_at)
        if running.lost is not None or job.error is not None:
            outcome.error = running.lost or job.error
            return outcome
        result = job.result(timeout=0)
        files: list[OutputFile] = []
        source: dict[int, V2Output] = {}
        for out in result.outputs:
            f = out.native or OutputFile(node_id=out.node_id, key="videos" if out.content_type.startswith("video/")
                                         else "images", filename=out.name, format=out.content_type or None)
            files.append(f)
            source[id(f)] = out

        def fetch(f: OutputFile, folder: Path, name: str | None) -> Downloaded:
            out = source[id(f)]
            if out.native is None:
                return fetch_resumable(self.client.http, out.url, folder, name or out.name, within=root)
            native = ComfyClient(self.target.native or "", settings=self.client.http.settings)
            try:
                return native.download(out.native, folder, name=name, within=root)
            finally:
                native.close()

        ended = running.ended_at or time.time()
        started = running.started_at or ended
        outcome.result = PromptResult(job.id, {"job": job.id, "outputs": [
            {"node_id": o.node_id, "name": o.name, "content_type": o.content_type} for o in result.outputs]},
            files, [], int(started * 1000), int(ended * 1000))
        try:
            outcome.outputs, outcome.clip = download(fetch, attempt, files, retries=retries)
        except DriveError as exc:
            outcome.download_error = exc
        outcome.finished_at = time.time()
        return outcome

    # --------------------------------------------------------------------------------------------- job threads
    def _spawn(self, attempt: Attempt, running: Running | None) -> None:
        thread = threading.Thread(target=self._work, args=(attempt, running), daemon=True,
                                  name=f"{self.name}: {attempt.step.name}")
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        thread.start()

    def _in_background(self, fn: Callable[[], None]) -> None:
        def guarded() -> None:
            try:
                fn()
            except (DriveError, Closing):
                pass  # a cancel that did not get through: the job ends as it would have

        threading.Thread(target=guarded, daemon=True, name=f"{self.name}: cancel").start()

    def _cancel(self, jobs: list[V2Job], *, only_queued: bool) -> None:
        for job in jobs:
            try:
                if only_queued and job.refresh().get("status") != "queued":
                    continue
                job.cancel()
            except DriveError:
                continue  # that one ends as it would have; the others are still cancelled

    def _work(self, attempt: Attempt, running: Running | None) -> None:
        try:
            if running is None:
                running = self._start(attempt)
                if running is None:
                    return
            self._follow(attempt, running)
            with self._lock:
                self._jobs.pop(attempt, None)
            self.post(Ended(self, attempt, running))
        except Closing:
            pass
        except ServerGone as exc:
            with self._lock:
                first, self._gave_up = not self._gave_up, True
            if first:
                self.post(LaneGone(self, exc))
        except Exception as exc:  # noqa: BLE001 - any surprise stops the run cleanly, named
            self.post(Crashed(f"{attempt.step.name}: on {self.name}", exc, self))

    def _start(self, attempt: Attempt) -> Running | None:
        """Find the job an earlier run may have made, else submit; None when the attempt went back."""
        if attempt.attached or attempt.candidates:
            job = self._earlier(attempt)
            if job is not None:
                self.post(Submitted(self, attempt, found=True, job=job.id))
                return self._track(attempt, job)
            if attempt.attached:  # its key may have reached the endpoint: it is never sent twice
                attempt.renumber(attempt.number + 1)
            if not attempt.candidates:  # renumbered: its new key is recorded before it is sent
                self.post(Requeue(self, attempt))
                return None
            attempt.candidates = []  # none was sent: the key recorded for this attempt goes now
        if self._unqueued.is_set():  # the run stopped before this one was sent
            self.post(Unqueued(self, [attempt]))
            return None
        try:
            job = self._retrying(lambda: self.client.submit(attempt.rendered.graph, files=self._files(attempt),
                                                            key=attempt.prompt_id))
        except InsufficientCredits as exc:
            self.post(Refusing(self, attempt, exc))
            return None
        except WorkflowRefused as exc:
            self.post(Rejected(self, attempt, exc))
            return None
        except V2Error as exc:
            if exc.code != "idempotency_key_reuse":  # the endpoint's answer to this prompt: its own failure
                self.post(Rejected(self, attempt, exc))
                return None
            attempt.renumber(attempt.number + 1)  # the key was used, and no job of it is listed
            self.post(Requeue(self, attempt))
            return None
        self.post(Submitted(self, attempt, job=job.id))
        running = self._track(attempt, job)
        if self._unqueued.is_set():  # the run stopped while it was being sent: take it back
            self._cancel([job], only_queued=True)
        return running

    def _earlier(self, attempt: Attempt) -> V2Job | None:
        """The job of a re-attached attempt; or, the state rebuilt, the latest job of its candidates that
        did not fail (after a failed one, the attempt is renumbered past it)."""
        if attempt.attached:
            job = self._retrying(lambda: self.client.find(attempt.prompt_id))
            return None if job is None or job.status in _UNDONE else job
        for number, key in reversed(attempt.candidates):
            job = self._retrying(lambda: self.client.find(key))
            if job is None:
                continue
            if job.status == "failed" or job.status in _UNDONE:
                attempt.renumber(number + 1)
                return None
            attempt.number, attempt.prompt_id = number, key
            return job
        return None

    def _files(self, attempt: Attempt) -> dict[tuple[str, str], Path]:
        """(node, input) -> the local file the graph names by its upload name: sent as assets."""
        uploads = attempt.rendered.uploads
        files: dict[tuple[str, str], Path] = {}
        for node_id, node in attempt.rendered.graph.items():
            for name, value in node.get("inputs", {}).items():
                if isinstance(value, str) and value in uploads:
                    path = uploads[value]
                    if path is None:
                        raise ValueError(f"{attempt.step.name}: the placeholder clip reached a submission")
                    files[(node_id, name)] = path
        return files

    def _track(self, attempt: Attempt, job: V2Job) -> Running:
        running = Running(job)
        with self._lock:
            self._jobs[attempt] = running
        return running

    def _follow(self, attempt: Attempt, running: Running) -> None:
        job, node, step, refused = running.job, "", None, 0
        while not job.done and running.lost is None:
            if self._closing.is_set() or self._gave_up:
                raise Closing
            try:
                for event in job.events(timeout=2.0):  # then a look at whether the run closes
                    if isinstance(event, Started):
                        running.started_at = running.started_at or time.time()
                    elif isinstance(event, NodeStarted):
                        node, step = event.name, None
                    elif isinstance(event, StepProgress) and event.node:  # a sampler's steps; a graph-level
                        step = (event.value, event.max)  # node count is not (the proxy counts started nodes only)
                    else:
                        continue
                    self.post(Seen(self, attempt, node, step, running.started_at))
            except JobTimeout:
                continue
            except ServerUnreachable:
                self._wait_for_target()
            except V2Error as exc:
                if exc.status == 404:
                    running.lost = PromptLost(f"job {job.id} is no longer known to {self.name}")
                    continue
                refused += 1  # busy, or an answer it should not give: asked again a few times, then the run's error
                if refused > 5:
                    raise
                self.post(Say(f"{self.name}: {exc.message}; asking again about job {job.id}"))
                if self._closing.wait(5.0):
                    raise Closing from None
        running.ended_at = time.time()
        running.started_at = running.started_at or running.ended_at

    def _retrying(self, call: Callable[[], T]) -> T:
        """`call`, again after the endpoint comes back or a full queue has room."""
        while True:
            if self._closing.is_set() or self._gave_up:
                raise Closing
            try:
                return call()
            except ServerUnreachable:
                self._wait_for_target()
            except Busy as exc:
                self.post(Say(f"{self.name} is busy ({exc.code or 'queue full'}); trying again"))
                if self._closing.wait(5.0):
                    raise Closing from None

    def _wait_for_target(self) -> None:
        """The endpoint stopped answering: one thread waits for it, the others queue behind and go on."""
        with self._down:
            if self._gave_up or self._closing.is_set():
                raise Closing
            with self._lock:
                holding = f"{len(self._jobs)} job(s)"
            self._wait_until_back(self.client.check, holding)
