"""Following prompts to their end: exactly when each finished, and with which outputs.

Rules (PROTOCOL_FACTS): the server sends `execution_success`, then stores the history entry, then
sends `executing` with node null; so a prompt is finished at `executing: null` (or an error /
interrupt), and its outputs are read from /history, which lists cached output nodes too (a history
entry not there yet is polled for), unless the socket already told everything: execution_success and an
`executed` event from every output node. After a websocket drop, or a long silence, every unfinished
prompt is recovered from /history and /queue; one in neither is reported lost (server restarted).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from comfy_driver.comfy.client import ComfyClient
from comfy_driver.comfy.errors import Interrupted, PromptLost, ServerUnreachable, execution_error
from comfy_driver.comfy.events import (Event, ExecutionCached, ExecutionError, ExecutionInterrupted,
                                        ExecutionStart, ExecutionSuccess, Executed, Executing, Progress,
                                        Reconnected)
from comfy_driver.comfy.outputs import OutputFile, collect_outputs
from comfy_driver.comfy.stream import EventStream
from comfy_driver.errors import DriveError, JobTimeout

FIRST_LOOKUP = 1.0  # seconds a watched prompt may send nothing before it is looked up once


@dataclass
class PromptResult:
    prompt_id: str
    outputs: dict[str, Any]
    files: list[OutputFile]
    cached_nodes: list[str]
    started_ms: int | None  # server timestamps (execution_start / execution_success)
    finished_ms: int | None


@dataclass
class Watch:
    """The live state of one submitted prompt."""

    prompt_id: str
    graph: dict[str, Any]
    label: str = ""
    started_at: float | None = None
    started_ms: int | None = None
    finished_ms: int | None = None
    node: str | None = None
    step: tuple[float, float] | None = None
    cached: list[str] = field(default_factory=list)
    executed: dict[str, Any] = field(default_factory=dict)
    failure: dict[str, Any] | None = None
    failure_kind: str | None = None
    ended: bool = False  # the server says it is over; `resolve` reads the outcome
    succeeded_before: bool = False  # an earlier run saw it succeed (its outputs are in `executed`)
    output_nodes: frozenset[str] = frozenset()  # when all of these reported `executed`, every file exists
    done: bool = False  # the outcome (result or error) is known
    result: PromptResult | None = None
    error: DriveError | None = None
    last_event: float = field(default_factory=time.monotonic)
    heard: bool = False  # any event of it arrived (else it may have ended before the socket listened)

    @property
    def node_title(self) -> str:
        if self.node is None:
            return ""
        node = self.graph.get(self.node, {})
        return str((node.get("_meta") or {}).get("title") or node.get("class_type") or self.node)


class Follower:
    """Routes the websocket's events to the prompts it watches and tells when each has ended.

    Event handling runs on one thread; `resolve` (history and outcome) may run on others, so a
    caller can download one scene's outputs while events of the next keep flowing.
    """

    def __init__(self, client: ComfyClient, stream: EventStream) -> None:
        self.client = client
        self.stream = stream
        self.poll_after = client.settings.poll_after
        self.history_wait = client.settings.history_wait
        self.watches: dict[str, Watch] = {}
        self._finished: list[Watch] = []

    def watch(self, prompt_id: str, graph: dict[str, Any], label: str = "") -> Watch:
        w = self.watches[prompt_id] = Watch(prompt_id, graph, label)
        return w

    def forget(self, prompt_id: str) -> None:
        self.watches.pop(prompt_id, None)

    @property
    def pending(self) -> list[Watch]:
        return [w for w in self.watches.values() if not w.ended]

    def next_finished(self, *, timeout: float | None = None,
                      on_event: Callable[[Watch | None, Event], None] | None = None) -> Watch | None:
        """Process events until a watched prompt ends; return it (then `resolve` it for the outcome).

        Returns None when `timeout` passes first. Never raises for a prompt's failure: after
        `resolve` it is in `watch.error`, so the caller decides what to do per prompt.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self._finished:
                return self._finished.pop(0)
            if not self.pending:
                return None
            wait = self.poll_wait()
            if deadline is not None:
                wait = min(wait, deadline - time.monotonic())
                if wait <= 0:
                    return None
            watch, event = self.next_event(wait)
            if event is not None and on_event is not None:
                on_event(watch, event)

    def feed(self, event: Event | None) -> tuple[Watch | None, list[Watch]]:
        """For a caller that reads the stream itself: apply one event (None: a quiet spell, so ask the
        server about prompts silent for `poll_after`); return the event's watch and the prompts that ended."""
        watch = None
        if event is None:
            self._recover(quiet_only=True)
        else:
            watch = self._apply(event)
        ended, self._finished = self._finished, []
        return watch, ended

    def poll_wait(self) -> float:
        """Seconds until a watched prompt is due a lookup in /history: one quiet for `poll_after`, or
        one that has sent nothing at all for FIRST_LOOKUP (it may have ended before the socket
        listened: a caller who queued before opening the socket must not wait `poll_after` for it)."""
        now = time.monotonic()
        return max(0.0, min((self._due(w, now) for w in self.pending), default=self.poll_after))

    def _due(self, watch: Watch, now: float) -> float:
        quiet = self.poll_after if watch.heard else min(FIRST_LOOKUP, self.poll_after)
        return watch.last_event + quiet - now

    def next_event(self, timeout: float | None) -> tuple[Watch | None, Event | None]:
        """Process at most one event: (the watch it concerned, the event); (None, None) after `timeout`.

        A timeout looks up prompts that have been quiet for `poll_after` in /history and /queue.
        """
        event = self.stream.get(timeout=timeout)
        if event is None:
            self._recover(quiet_only=True)
            return None, None
        return self._apply(event), event

    def wait(self, prompt_id: str, *, timeout: float | None = None,
             on_event: Callable[[Watch | None, Event], None] | None = None) -> PromptResult:
        """Follow one prompt to its end; raise its error if it failed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            watch = self.watches[prompt_id]
            if watch.ended:
                self._finished = [w for w in self._finished if w is not watch]
                self.resolve(watch)
                if watch.error is not None:
                    raise watch.error
                assert watch.result is not None
                return watch.result
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise JobTimeout(f"prompt {prompt_id} did not finish in {timeout:g} s")
            self.next_finished(timeout=left, on_event=on_event)

    def resolve(self, watch: Watch) -> Watch:
        """Read an ended prompt's history entry: its outputs, or its error. Safe from any thread.

        The entry is polled for, since a server may store it a little after it says the prompt ended.
        """
        if watch.done:
            return watch
        deadline = time.monotonic() + self.history_wait
        delay = 0.005
        while True:
            entry = self.client.history(watch.prompt_id).get(watch.prompt_id)
            if entry is not None:
                self._finish_with(watch, entry)
                return watch
            if time.monotonic() > deadline:
                self._check_lost(watch)
                if not watch.done:  # still queued or running after all: keep following it
                    watch.ended = False
                return watch
            time.sleep(delay)
            delay = min(delay * 2, 0.5)

    # ---------------------------------------------------------------------------------------------
    def _apply(self, event: Event) -> Watch | None:
        if isinstance(event, Reconnected):
            self._recover(quiet_only=False)
            return None
        pid = event.prompt_id
        watch = self.watches.get(pid) if pid else None
        if watch is None or watch.ended:
            return watch
        watch.last_event, watch.heard = time.monotonic(), True
        if isinstance(event, ExecutionStart):
            watch.started_at = time.time()
            watch.started_ms = event.timestamp
        elif isinstance(event, ExecutionCached):
            watch.cached = list(event.nodes)
        elif isinstance(event, Executing):
            if event.node is None:
                watch.ended = True
                self._finished.append(watch)
                if self._heard_all(watch):
                    self._succeed_from_events(watch)
            else:
                watch.node, watch.step = event.node, None
        elif isinstance(event, Progress):
            watch.node, watch.step = event.node or watch.node, (event.value, event.max)
        elif isinstance(event, Executed):
            watch.executed[event.node] = event.output
        elif isinstance(event, ExecutionSuccess):
            watch.finished_ms = event.timestamp
        elif isinstance(event, ExecutionError):
            watch.failure, watch.failure_kind = event.model_dump(by_alias=True), "error"
        elif isinstance(event, ExecutionInterrupted):
            watch.failure, watch.failure_kind = event.model_dump(by_alias=True), "interrupted"
        return watch

    @staticmethod
    def _heard_all(watch: Watch) -> bool:
        """A success whose every output node reported its files on the socket (`executed`, sent after
        the files are written): its outcome is known without reading /history."""
        return (watch.finished_ms is not None and watch.failure is None and bool(watch.output_nodes)
                and watch.output_nodes <= watch.executed.keys())

    def _succeed_from_events(self, watch: Watch) -> None:
        outputs = {node: out for node, out in watch.executed.items() if out}
        self._done(watch, result=PromptResult(watch.prompt_id, outputs, collect_outputs(outputs), watch.cached,
                                              watch.started_ms, watch.finished_ms))

    def _done(self, watch: Watch, *, result: PromptResult | None = None, error: DriveError | None = None) -> None:
        watch.done, watch.result, watch.error = True, result, error
        if not watch.ended:
            watch.ended = True
            self._finished.append(watch)

    def _finish_with(self, watch: Watch, entry: dict[str, Any]) -> None:
        status = entry.get("status") or {}
        messages = status.get("messages") or []
        for kind, data in messages:
            if kind == "execution_start" and watch.started_ms is None:
                watch.started_ms = data.get("timestamp")
            elif kind == "execution_success" and watch.finished_ms is None:
                watch.finished_ms = data.get("timestamp")
            elif kind == "execution_cached" and not watch.cached:
                watch.cached = list(data.get("nodes") or [])
            elif kind in ("execution_error", "execution_interrupted") and watch.failure is None:
                watch.failure = data
                watch.failure_kind = "error" if kind == "execution_error" else "interrupted"
        if status.get("status_str") == "success" or (watch.failure is None and status.get("completed")):
            outputs = entry.get("outputs") or {}
            self._done(watch, result=PromptResult(watch.prompt_id, outputs, collect_outputs(outputs),
                                                  watch.cached, watch.started_ms, watch.finished_ms))
        elif watch.failure_kind == "interrupted":
            self._done(watch, error=Interrupted(watch.failure or {}, watch.graph))
        else:
            self._done(watch, error=execution_error(watch.failure or {"exception_message": "unknown error"},
                                                    watch.graph))

    def recover(self, prompt_id: str | None = None) -> None:
        """Ask the server now about one watched prompt (or all): ended, still queued, or lost."""
        self._recover(quiet_only=False, only=prompt_id)

    def _recover(self, *, quiet_only: bool, only: str | None = None) -> None:
        """Ask the server about prompts we may have missed events of."""
        now = time.monotonic()
        for watch in self.pending:
            if (quiet_only and self._due(watch, now) > 0) or (only and watch.prompt_id != only):
                continue
            try:
                entry = self.client.history(watch.prompt_id).get(watch.prompt_id)
            except ServerUnreachable:
                return  # the stream reconnects when the server is back; we recover then
            if entry is not None:
                self._finish_with(watch, entry)
            else:
                self._check_lost(watch)
            watch.last_event, watch.heard = now, True  # looked up: quiet from now on means poll_after

    def _check_lost(self, watch: Watch) -> None:
        running, pending = self.client.queued_ids()
        if watch.prompt_id in running or watch.prompt_id in pending:
            return
        entry = self.client.history(watch.prompt_id).get(watch.prompt_id)
        if entry is not None:
            self._finish_with(watch, entry)
            return
        all_written = bool(watch.output_nodes) and watch.output_nodes <= set(watch.executed)
        if (watch.finished_ms is not None or watch.succeeded_before or all_written) and watch.failure is None:
            # It succeeded (or wrote all its files), but the server lost its history (a restart): its
            # `executed` events name the files, which a restart does not delete.
            self._succeed_from_events(watch)
            return
        self._done(watch, error=PromptLost(
            f"{self.client.address.display} no longer knows prompt {watch.prompt_id} "
            "(the server restarted or its queue was cleared)"))
