"""A native ComfyUI server's lane: its client, its websocket and the prompts on it, owned by one thread.

The lane's thread reads one queue that holds both the socket's events and the supervisor's
commands (submit, unqueue, interrupt, close), so it blocks in one place and never polls. It owns
the Follower and every Watch until a prompt ends; then it forgets the watch and hands it to the
supervisor in an `Ended` message. Everything the lane learns goes back as a message; it writes no
state itself. Its socket and HTTP pool are closed on every path out of the thread.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from comfy_driver.comfy.catalog import Catalog
from comfy_driver.comfy.client import ComfyClient
from comfy_driver.comfy.errors import PromptRejected, ServerUnreachable
from comfy_driver.comfy.events import Disconnected, Event
from comfy_driver.comfy.follow import Follower, Watch
from comfy_driver.comfy.settings import Settings
from comfy_driver.comfy.stream import EventStream
from comfy_driver.comfy.target import Target
from comfy_driver.errors import DriveError, RunError
from comfy_driver.pipeline.finish import Outcome, finish
from comfy_driver.pipeline.messages import (Attempt, Closing, Crashed, Ended, LaneBase, LaneGone, Rejected, Requeue,
                                            Seen, Submitted, Unqueued)


# ------------------------------------------------------------------------------------------------- commands
@dataclass
class _Submit:
    attempt: Attempt


@dataclass
class _Follow:
    attempt: Attempt  # still queued or running after all: follow it again


class _Unqueue:
    pass


class _Interrupt:
    pass


class _Close:
    pass


class Lane(LaneBase):
    def __init__(self, target: Target, client_id: str, post: Callable[[object], None], *, capacity: int,
                 server_timeout: float, move_after: float, settings: Settings,
                 on_event: Callable[[str, Watch | None, Event], None] | None = None) -> None:
        super().__init__(target, capacity, post, server_timeout=server_timeout, move_after=move_after)
        self.client = ComfyClient(target.url, settings=settings)
        self.name = self.client.address.display
        self.on_event = on_event  # called on this lane's thread, which owns the watch it is given
        # Without a listener, the queue and node-state summaries are read by nobody: dropped unparsed.
        self.stream = EventStream(self.client.address, client_id, settings=settings,
                                  skip=frozenset() if on_event else frozenset({"status", "progress_state"}))
        self.follower = Follower(self.client, self.stream)
        self._inbox: queue.SimpleQueue[Any] = self.stream.events  # the socket's events and our commands: one wait
        self._attempts: dict[str, Attempt] = {}
        self._shown: dict[str, tuple[str, tuple[float, float] | None, float | None]] = {}  # last Seen, per prompt
        self._unshown: dict[str, tuple[Attempt, tuple[str, tuple[float, float] | None, float | None]]] = {}
        self._current: str = f"following prompts on {self.name}"
        self._thread = threading.Thread(target=self._run, name=f"lane {self.name}", daemon=True)

    # --------------------------------------------------------------------------------------------- supervisor side
    def check(self, known: Catalog | None = None) -> Catalog:
        self.client.versions()  # it answers, as ComfyUI; kept by the client for the catalogue's rules
        return known or self.client.catalog()

    def start(self) -> None:
        self._thread.start()

    def submit(self, attempt: Attempt) -> None:
        self._inbox.put(_Submit(attempt))

    def follow(self, attempt: Attempt) -> None:
        self._inbox.put(_Follow(attempt))

    def unqueue(self) -> None:
        self._inbox.put(_Unqueue())

    def interrupt(self) -> None:
        self._inbox.put(_Interrupt())

    def finish(self, attempt: Attempt, handle: Any, retries: int, root: Path) -> Outcome:
        return finish(self.client, self.follower, attempt, handle, retries, root)

    def close(self) -> None:
        self._closing.set()
        self._inbox.put(_Close())
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self.stream.close()  # never started, or stuck in a request: closing its sockets ends it
        self.client.close()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    # --------------------------------------------------------------------------------------------- lane thread
    def _run(self) -> None:
        try:
            self._open()
            while True:
                try:
                    item = self._inbox.get(timeout=self.follower.poll_after if self.follower.pending else None)
                except queue.Empty:
                    item = None
                if isinstance(item, _Close):
                    return
                try:
                    self._handle(item)
                except ServerUnreachable:
                    self._wait_for_server()
                    self.follower.recover()
                    self._handle(None)
        except Closing:
            pass
        except DriveError as exc:
            self.post(LaneGone(self, exc))
        except Exception as exc:  # noqa: BLE001 - any surprise stops the run cleanly, named
            self.post(Crashed(self._current, exc, self))
        finally:
            self.stream.close()
            self.client.close()

    def _open(self) -> None:
        while True:
            try:
                self.stream.open()
                return
            except ServerUnreachable:
                self._wait_for_server()

    def _handle(self, item: object) -> None:
        if isinstance(item, _Submit):
            self._submit(item.attempt)
        elif isinstance(item, _Follow):
            self._watch(item.attempt)
            self.follower.recover(item.attempt.prompt_id)
        elif isinstance(item, _Unqueue):
            self._unqueue()
        elif isinstance(item, _Interrupt):
            for prompt_id in list(self._attempts):
                self.client.interrupt(prompt_id)
        else:  # a websocket event, or None: a quiet spell
            event = cast("Event | None", item)
            following = self._attempts.get(event.prompt_id or "") if event is not None else None
            self._current = f"{following.step.name}: following it on {self.name}" if following else \
                f"following prompts on {self.name}"
            watch, ended = self.follower.feed(event)
            if event is not None:
                if self.on_event is not None:
                    self.on_event(self.stream.client_id, watch, event)
                attempt = self._attempts.get(watch.prompt_id) if watch is not None else None
                if attempt is not None and watch is not None:  # only what progress shows, when it changes
                    shown = (watch.node_title, watch.step, watch.started_at)
                    if self._shown.get(watch.prompt_id) != shown:
                        self._shown[watch.prompt_id] = shown
                        self._unshown[watch.prompt_id] = (attempt, shown)
            for w in ended:
                self.follower.forget(w.prompt_id)
                self._shown.pop(w.prompt_id, None)
                self._unshown.pop(w.prompt_id, None)
                self.post(Ended(self, self._attempts.pop(w.prompt_id), w))
            if self._unshown and self._inbox.empty():  # of a burst of events, the state after the last
                for attempt, shown in self._unshown.values():
                    self.post(Seen(self, attempt, *shown))
                self._unshown.clear()
            if isinstance(item, Disconnected) and self._attempts:
                self._wait_for_server()  # gone for good (a timeout) or back: then recover what was missed
                self.follower.recover()
                self._handle(None)

    def _watch(self, attempt: Attempt) -> Watch:
        watch = self.follower.watch(attempt.prompt_id, attempt.rendered.graph, attempt.step.name)
        watch.output_nodes = attempt.rendered.output_nodes
        if attempt.made is not None:  # it had succeeded: only its downloads are left
            watch.succeeded_before, watch.executed = True, dict(attempt.made)
        self._attempts[attempt.prompt_id] = attempt
        return watch

    def _submit(self, attempt: Attempt) -> None:
        self._current = f"{attempt.step.name}: queueing it on {self.name}"
        found = "attached" if attempt.attached else self._found(attempt)
        if found in ("attached", "found"):
            self._watch(attempt)
            self.post(Submitted(self, attempt, found=not attempt.attached))
            self.follower.recover(attempt.prompt_id)
            self._handle(None)
            return
        if found == "renumbered":  # past a failed earlier one: its new id is recorded before it is sent
            self.post(Requeue(self, attempt))
            return
        try:
            for name, path in attempt.rendered.uploads.items():
                if path is None:
                    raise ValueError(f"{attempt.step.name}: the placeholder clip reached a submission")
                stored = self.client.upload(path)
                if stored != name:
                    raise RunError(f"{self.name} stored {path.name} as {stored!r}, expected {name!r}")
            self.client.queue_prompt(attempt.rendered.graph, client_id=self.stream.client_id,
                                     prompt_id=attempt.prompt_id, workflow=attempt.rendered.workflow,
                                     where=f"{attempt.step.spec.where}: {attempt.step.name}: ")
        except PromptRejected as exc:
            self.post(Rejected(self, attempt, exc))
            return
        except ServerUnreachable:
            self.post(Requeue(self, attempt))
            raise
        self._watch(attempt)  # (nothing to tell: the supervisor recorded it as submitted before handing it over)

    def _found(self, attempt: Attempt) -> str:
        """State rebuilt: is one of this step's deterministic prompt ids still queued, running or in the
        history? The latest one that did not fail is followed ("found"); after a failed one, the attempt
        becomes the next ("renumbered"); else "none"."""
        if not attempt.candidates:
            return "none"
        running, pending = self.client.queued_ids()
        for number, prompt_id in reversed(attempt.candidates):
            entry = None if prompt_id in running or prompt_id in pending else \
                self.client.history(prompt_id).get(prompt_id)
            if prompt_id in running or prompt_id in pending or entry is not None:
                failed = entry is not None and (entry.get("status") or {}).get("status_str") == "error"
                if failed:
                    attempt.renumber(number + 1)
                    return "renumbered"
                attempt.number, attempt.prompt_id = number, prompt_id
                return "found"
        return "none"

    def _unqueue(self) -> None:
        """Take this run's prompts that have not started off the server's queue."""
        _, pending = self.client.queued_ids()
        ours = [pid for pid in self._attempts if pid in pending]
        if ours:
            self.client.delete_queued(ours)
            running, pending = self.client.queued_ids()
            ours = [pid for pid in ours if pid not in running and pid not in pending]  # one may have started
        removed = []
        for pid in ours:
            self.follower.forget(pid)
            self._shown.pop(pid, None)
            self._unshown.pop(pid, None)
            removed.append(self._attempts.pop(pid))
        self.post(Unqueued(self, removed))

    def _wait_for_server(self) -> None:
        self._wait_until_back(self.client.system_stats, f"{len(self._attempts)} prompt(s)")
