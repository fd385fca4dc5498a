"""A job: one prompt on one server, from its submission to its outputs on disk.

Decisions:
- The websocket is opened before the prompt is posted, inside `Job.submit`, so no event of a fast
  prompt can be missed and nothing waits for a history poll: callers cannot get the order wrong.
- One websocket (one client id) per job. The server sends a prompt's events only to the client id
  that queued it, so a job hears exactly its own events and needs no dispatcher thread; the cost is
  one connection per job. A whole series (many prompts, queue-ahead, several servers) is the run's
  business (`run_series`), not this class's.
- A job is driven by whoever reads it: `events()` and `result()` process the socket's events on the
  caller's thread, so a job has one owner and no lock.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from comfy_driver.comfy.client import ComfyClient, Downloaded
from comfy_driver.comfy.errors import Interrupted, PromptLost, describe_node
from comfy_driver.comfy.events import (Event, ExecutionCached, ExecutionStart, Executed, Executing, PreviewImage,
                                        Progress)
from comfy_driver.comfy.follow import Follower, PromptResult, Watch
from comfy_driver.comfy.outputs import OutputFile, collect_outputs
from comfy_driver.comfy.stream import EventStream
from comfy_driver.errors import DriveError, JobTimeout, RunError


# ------------------------------------------------------------------------------------------------ events
@dataclass(frozen=True)
class JobEvent:
    """Something that happened to a job; `prompt_id` says which."""

    prompt_id: str


@dataclass(frozen=True)
class Started(JobEvent):
    """The server began executing the prompt."""


@dataclass(frozen=True)
class Cached(JobEvent):
    """Nodes whose outputs the server reused from an earlier prompt (they will not run)."""

    nodes: tuple[str, ...]


@dataclass(frozen=True)
class NodeStarted(JobEvent):
    """A node began to run; `name` is how messages name it (id, title, class)."""

    node: str
    name: str


@dataclass(frozen=True)
class StepProgress(JobEvent):
    """A running node's progress: `value` of `max` steps (a sampler's steps, frames of an upscale)."""

    node: str
    value: float
    max: float

    @property
    def fraction(self) -> float:
        return self.value / self.max if self.max else 0.0


@dataclass(frozen=True)
class Preview(JobEvent):
    """A preview image a node sent while running (JPEG or PNG bytes)."""

    image_format: str
    image: bytes = field(repr=False)


@dataclass(frozen=True)
class NodeOutput(JobEvent):
    """An output node finished and named its files (they exist on the server from now on)."""

    node: str
    files: tuple[OutputFile, ...]


@dataclass(frozen=True)
class Finished(JobEvent):
    """The job is over: `error` is None when it succeeded."""

    error: DriveError | None


class Cancelled(Interrupted):
    """The job was cancelled by its owner (taken off the queue, or interrupted while it ran)."""

    def __init__(self, prompt_id: str) -> None:
        self.data: dict[str, Any] = {}
        RunError.__init__(self, f"prompt {prompt_id} was cancelled")


# ------------------------------------------------------------------------------------------------ the job
class Job:
    """One submitted prompt. Create it with `Job.submit`; read `events()` or wait with `result()`."""

    def __init__(self, client: ComfyClient, stream: EventStream, prompt_id: str, graph: dict[str, Any]) -> None:
        self.client = client
        self.prompt_id = prompt_id
        self.graph = graph
        self._stream = stream
        self._follower = Follower(client, stream)
        self._watch: Watch = self._follower.watch(prompt_id, graph)
        self._cancelled = False

    @classmethod
    def submit(cls, client: ComfyClient, graph: dict[str, Any], *, workflow: dict[str, Any] | None = None,
               front: bool = False) -> Job:
        """Open a websocket, then post the prompt (`workflow`, the GUI graph, is embedded in its outputs)."""
        client_id = uuid.uuid4().hex
        stream = EventStream(client.address, client_id, settings=client.settings)
        stream.open()
        try:
            submitted = client.queue_prompt(graph, client_id=client_id, prompt_id=str(uuid.uuid4()),
                                            workflow=workflow, front=front)
        except BaseException:
            stream.close()
            raise
        return cls(client, stream, submitted.prompt_id, graph)

    # --------------------------------------------------------------------------------------------
    @property
    def done(self) -> bool:
        return self._watch.done

    def events(self, timeout: float | None = None) -> Iterator[JobEvent]:
        """The job's events as they come, ending with `Finished`; `JobTimeout` after `timeout` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        watch = self._watch
        while not watch.done:
            if watch.ended:
                self._follower.resolve(watch)  # its history entry: outputs or error (or still running)
                continue
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise JobTimeout(f"prompt {self.prompt_id} did not finish within {timeout:g} s; it is still "
                                 "on the server (cancel() takes it off)")
            wait = self._follower.poll_wait() if left is None else min(left, self._follower.poll_wait())
            concerned, event = self._follower.next_event(wait)
            if event is not None:
                mine = concerned is watch or (isinstance(event, PreviewImage) and watch.started_at is not None)
                translated = job_event(watch, event) if mine else None
                if translated is not None:
                    yield translated
        self._stream.close()
        yield Finished(self.prompt_id, self.error)

    @property
    def error(self) -> DriveError | None:
        """Why the job failed (None while it runs or when it succeeded)."""
        error = self._watch.error
        if self._cancelled and isinstance(error, (PromptLost, Interrupted)):
            return Cancelled(self.prompt_id)
        return error

    def result(self, timeout: float | None = None) -> PromptResult:
        """Wait for the end; the outputs, or the job's error raised (JobTimeout after `timeout` seconds)."""
        for _ in self.events(timeout):
            pass
        if self.error is not None:
            raise self.error
        assert self._watch.result is not None
        return self._watch.result

    def download(self, folder: Path | str, *, timeout: float | None = None) -> list[Downloaded]:
        """Wait for the end and download every output file into `folder` (never outside it)."""
        files = self.result(timeout).files
        return [self.client.download(f, Path(folder)) for f in files]

    def cancel(self) -> None:
        """Take the prompt off the queue, or interrupt it if it runs (only this prompt, never another)."""
        if self._watch.done:
            return
        self._cancelled = True
        self.client.cancel(self.prompt_id)  # through /api/jobs where the server has it
        self._follower.recover(self.prompt_id)

    def close(self) -> None:
        """Stop listening (the prompt itself stays on the server)."""
        self._stream.close()

    def __enter__(self) -> Job:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()



def job_event(watch: Watch, event: Event) -> JobEvent | None:
    """The public event of a websocket event concerning `watch`'s prompt (None for bookkeeping ones)."""
    pid = watch.prompt_id
    if isinstance(event, ExecutionStart):
        return Started(pid)
    if isinstance(event, ExecutionCached):
        return Cached(pid, tuple(event.nodes))
    if isinstance(event, Executing) and event.node is not None:
        return NodeStarted(pid, event.node, describe_node(watch.graph, event.node))
    if isinstance(event, Progress):
        return StepProgress(pid, event.node or watch.node or "", event.value, event.max)
    if isinstance(event, PreviewImage):
        return Preview(pid, event.image_format, event.image)
    if isinstance(event, Executed):
        return NodeOutput(pid, event.node, tuple(collect_outputs({event.node: event.output or {}})))
    return None
