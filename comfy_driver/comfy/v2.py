"""The Comfy API v2 transport: `V2Client.submit` -> `V2Job`, the same shape as the native `Job`.

Decisions:
- A thin client over the API's routes with requests (already a dependency), not comfy-sdk: the SDK
  adds httpx and its own retry loop, treats an "expired" job as lost, and cannot write into a
  confined output folder; what comfy-drive needs of v2 is ~10 routes.
- Submission is safe to repeat after a crash: the caller gets the Idempotency-Key (`on_key`) before
  the request goes out, and the key travels as the job's `metadata` label too. A driver killed
  mid-submit calls `find(key)`: the job it may have created is found and followed; a key is never
  sent twice (the API refuses reuse), so when nothing is found a new key submits again.
- `GET /jobs/{id}` is the authority; the SSE stream only makes progress live (its order varies:
  `output` may come after the terminal `status`), so outputs are always taken from the job.
- "expired" is not "failed": comfy-api-proxy reports a prompt that finished between its /history
  and /queue reads as expired. The job is asked again, then the native /history of a self-hosted
  target (`Target.native`) is read, before an expired job is given up (`JobExpired`).
- Outputs download with Range resume into a partial file inside the output folder (never outside
  it, whatever name the endpoint reports); a signed download URL on another origin gets no key.
"""

from __future__ import annotations

import copy
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from comfy_driver.comfy.client import ComfyClient, Downloaded
from comfy_driver.comfy.catalog import Catalog
from comfy_driver.comfy.errors import (PromptLost, ServerUnreachable, describe_node, execution_error,
                                       format_node_errors)
from comfy_driver.comfy.job import Cancelled, Finished, JobEvent, NodeStarted, Started, StepProgress
from comfy_driver.comfy.outputs import OutputFile, collect_outputs
from comfy_driver.comfy.settings import Settings
from comfy_driver.comfy.target import Target, parse_target
from comfy_driver.comfy.v2assets import asset_ref, put_asset
from comfy_driver.comfy.v2download import fetch_resumable
from comfy_driver.comfy.v2http import V2Error, V2Http, WorkflowRefused
from comfy_driver.errors import DriveError, JobTimeout

LABEL = "comfy-drive:"  # the metadata label that carries a job's idempotency key
TERMINAL = ("succeeded", "failed", "canceled", "expired")


class JobExpired(PromptLost):
    """The endpoint no longer knows the job, and no outputs of it were found anywhere."""


@dataclass(frozen=True)
class V2Output:
    """One output file: from the job (`url`), or from a self-hosted target's native history (`native`)."""

    node_id: str
    name: str
    content_type: str
    url: str = ""
    native: OutputFile | None = None


@dataclass(frozen=True)
class V2Result:
    job_id: str
    outputs: tuple[V2Output, ...]


def new_key() -> str:
    return uuid.uuid4().hex


class V2Client:
    """One Comfy API v2 target (`v2+https://...`, or a `Target`)."""

    def __init__(self, target: str | Target, *, settings: Settings | None = None, busy_budget: float = 60.0,
                 poll: float = 0.25, poll_max: float = 3.0, expired_grace: float = 5.0) -> None:
        self.target = parse_target(target)
        if not self.target.is_v2:
            raise V2Error(f"{self.target.display} is a native ComfyUI server, not an API v2 target")
        self.http = V2Http(self.target, settings=settings, busy_budget=busy_budget)
        self.poll, self.poll_max, self.expired_grace = poll, poll_max, expired_grace
        self._labels = True

    def check(self) -> None:
        """The endpoint answers, and accepts the key (a listing of one job): raises the clear error if not."""
        self.http.json("GET", "/jobs", params={"limit": 1})

    def catalog(self) -> tuple[Catalog | None, str]:
        """The node catalogue to validate against, and where it came from (or why there is none).

        v2 has no node catalogue of its own: the native ComfyUI behind a self-hosted proxy (`native`)
        gives one, Comfy Cloud serves `/api/object_info` with the same key; otherwise validation is
        skipped and the endpoint checks each graph when it is submitted (422 `invalid_workflow`).
        """
        if self.target.native:
            native = ComfyClient(self.target.native, settings=self.http.settings)
            try:
                return native.catalog(), f"the node catalogue of {self.target.native}"
            except DriveError as exc:
                return None, f"validation skipped: {self.target.native} did not give its node catalogue ({exc.message})"
            finally:
                native.close()
        response = self.http.send("GET", self.target.url.rstrip("/") + "/api/object_info")
        with response:
            if response.status_code == 200:
                try:
                    info = response.json()
                except ValueError:
                    info = None
                if isinstance(info, dict) and info:
                    return Catalog(info), f"{self.target.display}/api/object_info"
        return None, (f"validation skipped: {self.target.display} serves no node catalogue (name the ComfyUI "
                      "behind a self-hosted proxy with native: URL)")

    def upload(self, path: Path, *, name: str | None = None) -> dict[str, Any]:
        """`path` as an asset (reused by its hash when the endpoint holds the bytes already)."""
        return put_asset(self.http, path, name=name)[0]

    def submit(self, graph: Mapping[str, Any], *, files: Mapping[tuple[str, str], Path] | None = None,
               key: str | None = None, on_key: Callable[[str], None] | None = None) -> V2Job:
        """Queue an API graph; `files` maps (node id, input name) to a local file sent as an asset.

        `on_key(key)` is called before the request is sent, so the key can be recorded first;
        after a crash, `find(key)` finds the job. A given `key` must be a fresh one.
        """
        sent: dict[str, Any] = copy.deepcopy(dict(graph))
        for (node, name), path in (files or {}).items():
            sent[node]["inputs"][name] = asset_ref(self.upload(path))
        key = key or new_key()
        if on_key is not None:
            on_key(key)
        body: dict[str, Any] = {"workflow": sent}
        if self._labels:
            body["metadata"] = LABEL + key
        try:
            job = self.http.json("POST", "/jobs", json=body, headers={"Idempotency-Key": key})
        except WorkflowRefused as exc:
            if not exc.code.startswith("metadata") or not self._labels:
                raise _naming_nodes(exc, sent) from None
            self._labels = False  # an endpoint without job labels: submit without (no re-attach by key)
            return self.submit(sent, on_key=on_key)
        except (ServerUnreachable, V2Error) as exc:
            if isinstance(exc, V2Error) and exc.code not in ("idempotency_key_reuse", "upstream_unreachable", ""):
                raise
            found = self.find(key)  # the request may have created the job before the answer was lost
            if found is None:
                raise
            return found
        return V2Job(self, job, sent)

    def find(self, key: str) -> V2Job | None:
        """The job submitted under `key`, if the endpoint has one (a killed driver re-attaches here)."""
        listing = self.http.json("GET", "/jobs", params={"limit": 100})
        for job in listing.get("jobs", []) if isinstance(listing, dict) else []:
            meta = job.get("metadata")
            values = meta.values() if isinstance(meta, dict) else [meta]
            if LABEL + key in values:
                return V2Job(self, job, None)
        return None

    def job(self, job_id: str) -> V2Job:
        """Follow a job known by id."""
        return V2Job(self, self.http.json("GET", f"/jobs/{job_id}"), None)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> V2Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Sse(threading.Thread):
    """Reads a job's event stream into a queue of (event, data) until closed; drops out quietly."""

    def __init__(self, http: V2Http, url: str) -> None:
        super().__init__(daemon=True)
        self.http, self.url = http, url
        self.events: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._response: requests.Response | None = None
        self._closed = False

    def run(self) -> None:
        import json

        try:
            response = self.http.send("GET", self.url, stream=True, headers={"Accept": "text/event-stream"},
                                      timeout=(self.http.settings.connect_timeout, 60.0))
            self._response = response
            if response.status_code != 200 or self._closed:
                return
            kind, data = "message", list[str]()
            for line in response.iter_lines(decode_unicode=True):
                if line is None or line.startswith(":"):
                    continue
                if line == "":
                    if data:
                        try:
                            self.events.put((kind, json.loads("\n".join(data))))
                        except ValueError:
                            pass
                    kind, data = "message", []
                elif line.startswith("event:"):
                    kind = line[6:].strip()
                elif line.startswith("data:"):
                    data.append(line[5:].lstrip())
        except (requests.RequestException, DriveError, AttributeError, ValueError):
            pass  # the stream is an enhancement; polling carries on
        finally:
            self.events.put(("closed", None))

    def close(self) -> None:
        self._closed = True
        if self._response is not None:
            self._response.close()


class V2Job:
    """One job on a v2 target; read `events()` or wait with `result()`, then `download(folder)`."""

    def __init__(self, client: V2Client, job: dict[str, Any], graph: dict[str, Any] | None) -> None:
        self.client = client
        self.id = self.prompt_id = str(job["id"])
        self.graph = graph
        self.job = job
        self._cancelled = False
        self._error: DriveError | None = None
        self._result: V2Result | None = None
        self._stream: _Sse | None = None
        self.statuses: list[str] = [self.status]

    @property
    def status(self) -> str:
        return str(self.job.get("status", ""))

    @property
    def done(self) -> bool:
        return self._result is not None or self._error is not None

    @property
    def error(self) -> DriveError | None:
        return self._error

    def refresh(self) -> dict[str, Any]:
        """Ask the endpoint for the job (the authority on its state); every status seen is kept in order."""
        self.job = self.client.http.json("GET", f"/jobs/{self.id}")
        if not self.statuses or self.statuses[-1] != self.status:
            self.statuses.append(self.status)
        return self.job

    def events(self, timeout: float | None = None) -> Iterator[JobEvent]:
        """Live events (from the SSE stream) ending with `Finished`; the job's own state decides the end."""
        deadline = None if timeout is None else time.monotonic() + timeout
        events_url = (self.job.get("urls") or {}).get("events") or f"/jobs/{self.id}/events"
        if not self.done and self._stream is None:
            self._stream = _Sse(self.client.http, events_url)
            self._stream.start()
        started, node, pause = False, None, self.client.poll
        next_poll = time.monotonic()
        try:
            while not self.done:
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    raise JobTimeout(f"job {self.id} did not finish within {timeout:g} s; it is still on "
                                     f"{self.client.target.display} (cancel() takes it off)")
                if now >= next_poll:
                    self._settle(self.refresh())
                    pause = min(pause * 1.5, self.client.poll_max)
                    next_poll = time.monotonic() + pause
                    if self.status == "running" and not started:
                        started = True
                        yield Started(self.id)
                    continue
                wait = next_poll - now if deadline is None else min(next_poll, deadline) - now
                kind, data = self._next(max(wait, 0.0))
                if kind == "status" and isinstance(data, dict):
                    if data.get("status") == "running" and not started:
                        started = True
                        yield Started(self.id)
                    if data.get("status") in TERMINAL:
                        next_poll = time.monotonic()  # ask the job itself now
                elif kind == "progress" and isinstance(data, dict):
                    current = data.get("current_node")
                    if current and current != node:
                        node = str(current)
                        yield NodeStarted(self.id, node, describe_node(self.graph, node))
                    if data.get("steps"):  # a sampler's steps
                        yield StepProgress(self.id, node or "", float(data.get("step") or 0), float(data["steps"]))
                    elif data.get("nodes_total"):  # no step counter: nodes done of the graph's
                        yield StepProgress(self.id, "", float(data.get("nodes_done") or 0), float(data["nodes_total"]))
        finally:
            if self._stream is not None and self.done:
                self._stream.close()
        yield Finished(self.id, self._error)

    def _next(self, wait: float) -> tuple[str, Any]:
        if self._stream is None:
            time.sleep(wait)
            return "", None
        try:
            kind, data = self._stream.events.get(timeout=wait)
        except queue.Empty:
            return "", None
        if kind == "closed":
            self._stream = None  # polling alone from now on
        return kind, data

    def _settle(self, job: dict[str, Any]) -> None:
        status = job.get("status")
        if status == "succeeded":
            self._result = V2Result(self.id, tuple(_outputs(job)))
        elif status == "failed":
            error = job.get("error") or {}
            self._error = execution_error({"node_id": error.get("node_id") or "", "node_type": error.get("class_type")
                                           or "", "exception_type": error.get("code") or "",
                                           "exception_message": error.get("message") or ""}, self.graph)
        elif status == "canceled":
            self._error = Cancelled(self.id)
        elif status == "expired":
            self._expired()

    def _expired(self) -> None:
        # Asked again even after a cancel: on ComfyUI without per-job cancel the job ran on, and a
        # cancelled queued prompt leaves no trace (expired for good), so a cancel waits less.
        grace = min(self.client.expired_grace, 1.0) if self._cancelled else self.client.expired_grace
        give_up = time.monotonic() + grace
        while time.monotonic() < give_up:  # a prompt that finished between the proxy's two reads: ask again
            time.sleep(self.client.poll)
            if self.refresh().get("status") != "expired":
                return self._settle(self.job)
        native = self.client.target.native
        if native:
            comfy = ComfyClient(native, settings=self.client.http.settings)
            try:
                entry = comfy.history(self.id).get(self.id)
            finally:
                comfy.close()
            if entry and (entry.get("status") or {}).get("status_str", "success") == "success":
                files = collect_outputs(entry.get("outputs") or {})
                self._result = V2Result(self.id, tuple(V2Output("", f.filename, "", native=f) for f in files))
                return
        if self._cancelled:
            self._error = Cancelled(self.id)
            return
        self._error = JobExpired(f"job {self.id} expired on {self.client.target.display} and no outputs of it "
                                 "were found", hint="render the scene again")

    def result(self, timeout: float | None = None) -> V2Result:
        for _ in self.events(timeout):
            pass
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result

    def download(self, folder: Path | str, *, timeout: float | None = None) -> list[Downloaded]:
        """Wait for the end and download every output into `folder` (never outside it; resumable)."""
        folder = Path(folder)
        got = []
        for output in self.result(timeout).outputs:
            if output.native is not None:
                comfy = ComfyClient(self.client.target.native or "", settings=self.client.http.settings)
                try:
                    got.append(comfy.download(output.native, folder))
                finally:
                    comfy.close()
            else:
                got.append(fetch_resumable(self.client.http, output.url, folder, output.name))
        return got

    def cancel(self) -> None:
        """Take the job off the queue or stop it. The proxy cannot on a ComfyUI without per-job cancel
        (0.3.64: it answers 200 and the job runs on), so where the ComfyUI behind it is named
        (`native`), the job is cancelled there as well: its id is the prompt id there."""
        if self.done:
            return
        self._cancelled = True
        self.job = self.client.http.json("POST", f"/jobs/{self.id}/cancel")
        if self.client.target.native:
            comfy = ComfyClient(self.client.target.native, settings=self.client.http.settings)
            try:
                comfy.cancel(self.id)  # never another prompt; a no-op where the proxy's cancel took
            finally:
                comfy.close()

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()

    def __enter__(self) -> V2Job:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _naming_nodes(refused: WorkflowRefused, graph: dict[str, Any]) -> WorkflowRefused:
    """The refusal with a line per node error the endpoint passed on (comfy-api-proxy sends ComfyUI's
    `node_errors` in the details), each naming node, title, type and input as a native rejection does."""
    errors = refused.details.get("node_errors") if isinstance(refused.details, dict) else None
    if not errors or not isinstance(errors, dict):
        return refused
    lines = [refused.message] + ["  " + line for line in format_node_errors(errors, graph)]
    return WorkflowRefused("\n".join(lines), code=refused.code, status=refused.status, details=refused.details,
                           hint=refused.hint)


def _outputs(job: dict[str, Any]) -> list[V2Output]:
    return [V2Output(str(o.get("node_id") or ""), str(o.get("name") or o.get("id")), str(o.get("content_type") or ""),
                     url=str(o.get("url") or f"/assets/{o['id']}/content"))
            for o in job.get("outputs") or [] if isinstance(o, dict) and (o.get("url") or o.get("id"))]
