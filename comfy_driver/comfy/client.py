"""HTTP side of a ComfyUI server: submit, history, queue, uploads, downloads, control.

Requests go through one `Transport` (keep-alive connections, transport.py). Idempotent reads are retried
with backoff (tenacity);
POST /prompt is never retried blindly: the caller chooses the prompt_id, so after a lost reply it
looks in /queue and /history before posting again.
"""

from __future__ import annotations

import hashlib
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from comfy_driver import confined, jsontext
from comfy_driver.comfy.address import CREDENTIALS_HINT, ServerAddress
from comfy_driver.comfy.catalog import Catalog
from comfy_driver.comfy.errors import (AccessRefused, NotComfyUI, OutputsDropped, PromptRejected, ServerProtocolError,
                                      ServerUnreachable)
from comfy_driver.comfy.transport import Reply, TLSFailure, Transport, TransportError
from comfy_driver.comfy.outputs import OutputFile, safe_destination
from comfy_driver.comfy.settings import Settings
from comfy_driver.comfy.versions import ServerVersions
from comfy_driver.errors import RunError, UserError

UPLOAD_SUBFOLDER = "comfy_drive"
_CHUNK = 1 << 20
_FIRST_WAIT = 0.2  # seconds before the second try of an idempotent request


@dataclass(frozen=True)
class Downloaded:
    path: Path
    sha256: str
    size: int


@dataclass(frozen=True)
class Submitted:
    prompt_id: str
    number: float
    node_errors: dict[str, Any]


class _Transient(Exception):
    """A failure worth another try (connection refused, 5xx)."""


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


_ID_NAMESPACE = uuid.UUID("0b0e5a1c-6a4e-4e55-8b36-2f0c1d7e9a41")


def canonical_prompt_id(prompt_id: str) -> str:
    """The id as every server accepts it: a UUID in canonical lower-case hyphenated form.

    ComfyUI 0.33 refuses any other client-chosen id (400 invalid_prompt_id); 0.3.64 took any string.
    A UUID written otherwise (upper case, braces, no hyphens) is rewritten; any other text becomes the
    uuid5 of it, so the same name always gives the same id (re-attaching after a crash relies on that).
    """
    try:
        return str(uuid.UUID(prompt_id))
    except ValueError:
        return str(uuid.uuid5(_ID_NAMESPACE, prompt_id))


def upload_name(path: Path, digest: str, subfolder: str = UPLOAD_SUBFOLDER) -> str:
    """The content-addressed server name of an input file: identical bytes, identical name."""
    name = f"{digest[:20]}{path.suffix.lower()}"
    return f"{subfolder}/{name}" if subfolder else name


class ComfyClient:
    """One ComfyUI server over HTTP. Thread-safe for concurrent downloads."""

    def __init__(self, address: ServerAddress | str, *, settings: Settings | None = None) -> None:
        self.address = address if isinstance(address, ServerAddress) else ServerAddress.parse(address)
        self.settings = settings = settings or Settings()
        self.timeout = (settings.connect_timeout, settings.timeout)
        # The environment (proxies, the CA bundle variables) is read once here, not on every request.
        self.transport = Transport(self.address.http, settings)
        self.headers = {**self.address.headers, "User-Agent": "comfy-drive"}
        self._object_info: dict[str, Any] | None = None
        self._object_info_lock = threading.Lock()
        self._known_uploads: set[str] = set()
        self._versions: ServerVersions | None = None
        self._jobs_api: bool | None = None

    # ---------------------------------------------------------------------------------------------
    def _send(self, method: str, path: str, *, timeout: Any = None, stream: bool = False,
              headers: dict[str, str] | None = None, **body: Any) -> Reply:
        """One request; its answer read whole unless `stream` (then the caller reads or closes it)."""
        try:
            reply = self.transport.request(method, path, timeout=timeout or self.timeout,
                                           headers={**self.headers, **(headers or {})}, **body)
            if not stream:
                reply.content  # noqa: B018 - read now, so the connection is free for the next request
            return reply
        except TLSFailure as exc:
            raise ServerUnreachable(f"TLS failed talking to {self.address.display}: {exc}") from None
        except TransportError as exc:
            raise _Transient(f"{self.address.display} did not answer ({exc})") from exc

    def _checked(self, method: str, path: str, **kw: Any) -> Reply:
        response = self._send(method, path, **kw)
        if response.status_code in (502, 503, 504):
            raise _Transient(f"{self.address.display} answered {response.status_code}")
        return response

    def _request(self, method: str, path: str, *, retry_ok: bool = True, **kw: Any) -> Reply:
        try:
            if retry_ok:
                try:
                    response = self._checked(method, path, **kw)
                except _Transient:
                    if self.settings.retries == 1:
                        raise
                    time.sleep(_FIRST_WAIT)
                    response = self._retries()(self._checked, method, path, **kw)
            else:
                response = self._send(method, path, **kw)
        except _Transient as exc:
            raise ServerUnreachable(str(exc), hint="is ComfyUI running and is the URL right?") from None
        if response.status_code in (401, 403) and path != "/view":
            raise AccessRefused(f"{self.address.display} refused access ({response.status_code}) on {path}",
                                hint=CREDENTIALS_HINT)
        return response

    def _retries(self) -> Any:
        """The tries after a failed first one, waiting 0.2, 0.4, 0.8 ... (at most 3) s before each.
        Made (and tenacity loaded) only when a first try failed: most requests never need it."""
        from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

        return Retrying(stop=stop_after_attempt(self.settings.retries - 1),
                        wait=wait_exponential(multiplier=2 * _FIRST_WAIT, max=3),
                        retry=retry_if_exception_type(_Transient), reraise=True)

    def _not_comfyui(self, path: str, what: str) -> NotComfyUI:
        """The one message for an address where something answers, but not ComfyUI."""
        return NotComfyUI(f"{self.address.display}{path} {what}: this is not a ComfyUI server",
                          hint="check the URL (host, port and any path prefix of a reverse proxy)")

    def _checked_status(self, path: str, response: Reply) -> None:
        # Every route asked here is one each ComfyUI has: no such route means no ComfyUI.
        if response.status_code in (404, 405, 501):
            raise self._not_comfyui(path, f"answered {response.status_code}")
        if response.status_code != 200:
            raise ServerProtocolError(f"{self.address.display}{path} answered {response.status_code}")

    def _json(self, method: str, path: str, **kw: Any) -> Any:
        response = self._request(method, path, **kw)
        self._checked_status(path, response)
        try:
            return jsontext.loads(response.content, finite=False)
        except ValueError:
            raise self._not_comfyui(path, "did not answer JSON") from None

    def _control(self, path: str, body: dict[str, Any]) -> None:
        """POST a control request (queue, interrupt, free); an answer other than 200 is an error."""
        self._checked_status(path, self._request("POST", path, json_body=body))

    # --------------------------------------------------------------------------------------------- info
    def system_stats(self) -> dict[str, Any]:
        """GET /system_stats; also the check that the address is a ComfyUI server at all."""
        response = self._request("GET", "/system_stats")
        if response.status_code != 200:
            raise self._not_comfyui("/system_stats", f"answered {response.status_code}")
        try:
            stats = response.json()
        except ValueError:
            raise self._not_comfyui("/system_stats", "did not answer JSON") from None
        if not isinstance(stats, dict) or not isinstance(stats.get("system"), dict) or "devices" not in stats:
            raise self._not_comfyui("/system_stats", "answers, but not as ComfyUI does")
        return stats

    def versions(self) -> ServerVersions:
        """The server's ComfyUI and frontend versions (asked once per client)."""
        if self._versions is None:
            self._versions = ServerVersions.from_system_stats(self.system_stats())
        return self._versions

    def object_info(self, *, refresh: bool = False) -> dict[str, Any]:
        """GET /object_info, kept by this client (a server's nodes change only when it restarts)."""
        with self._object_info_lock:
            if self._object_info is None or refresh:
                info = self._json("GET", "/object_info", timeout=(self.timeout[0], max(self.timeout[1], 120)))
                if not isinstance(info, dict):
                    raise NotComfyUI(f"{self.address.display}/object_info is not a node catalogue")
                self._object_info = info
            return self._object_info

    def catalog(self, *, refresh: bool = False) -> Catalog:
        """The node catalogue, validating with the rules of this server's version."""
        return Catalog(self.object_info(refresh=refresh), version=self.versions().comfyui)

    def features(self) -> dict[str, Any]:
        return self._json("GET", "/features")

    def models(self, folder: str | None = None) -> list[str]:
        return self._json("GET", f"/models/{folder}" if folder else "/models")

    # --------------------------------------------------------------------------------------------- prompts
    def queue_prompt(self, graph: dict[str, Any], *, client_id: str, prompt_id: str | None = None,
                     workflow: dict[str, Any] | None = None, extra_data: dict[str, Any] | None = None,
                     front: bool = False, partial_targets: list[str] | None = None,
                     where: str = "") -> Submitted:
        """POST /prompt. `workflow` (the UI graph) is embedded as the GUI does, so outputs carry it.

        A client_id is required: the server sends a prompt posted without one no finishing message at
        all. A 200 reply that still lists node_errors means the server dropped the outputs those
        errors block and queued the rest; comfy-drive never wants part of a graph, so the prompt is
        cancelled and OutputsDropped raised.
        """
        if not client_id:
            raise ValueError("queue_prompt needs a client_id (without one the server never says a prompt ended)")
        extra = dict(extra_data or {})
        if workflow is not None:
            extra.setdefault("extra_pnginfo", {})["workflow"] = workflow
        body: dict[str, Any] = {"prompt": graph, "client_id": client_id, "extra_data": extra}
        if prompt_id:
            body["prompt_id"] = canonical_prompt_id(prompt_id)
        if front:
            body["front"] = True
        if partial_targets:
            body["partial_execution_targets"] = partial_targets
        response = self._request("POST", "/prompt", retry_ok=False, json_body=body)
        try:
            reply = jsontext.loads(response.content, finite=False)
        except ValueError:
            reply = None
        if response.status_code == 400 and isinstance(reply, dict) and "error" in reply:
            error = reply["error"] if isinstance(reply["error"], dict) else {"message": str(reply["error"])}
            raise PromptRejected(error, reply.get("node_errors") or {}, graph, where=where)
        if response.status_code != 200 or not isinstance(reply, dict) or "prompt_id" not in reply:
            raise ServerProtocolError(
                f"{self.address.display}/prompt answered {response.status_code} "
                f"{response.text[:200]!r}", hint="the server may be overloaded or not ComfyUI")
        submitted = Submitted(str(reply["prompt_id"]), reply.get("number", 0), reply.get("node_errors") or {})
        if submitted.node_errors:
            self.cancel(submitted.prompt_id)
            raise OutputsDropped(submitted.node_errors, graph, where=where)
        return submitted

    def history(self, prompt_id: str | None = None, *, max_items: int | None = None) -> dict[str, Any]:
        path = f"/history/{prompt_id}" if prompt_id else "/history"
        params = {"max_items": max_items} if max_items else None
        return self._json("GET", path, params=params)

    def queue(self) -> dict[str, list[Any]]:
        return self._json("GET", "/queue")

    def queued_ids(self) -> tuple[list[str], list[str]]:
        """(running, pending) prompt ids."""
        q = self.queue()
        return ([str(item[1]) for item in q.get("queue_running", [])],
                [str(item[1]) for item in q.get("queue_pending", [])])

    def delete_queued(self, prompt_ids: list[str]) -> None:
        self._control("/queue", {"delete": prompt_ids})

    def clear_queue(self) -> None:
        self._control("/queue", {"clear": True})

    def interrupt(self, prompt_id: str | None = None) -> None:
        """POST /interrupt; with a prompt_id only that prompt is stopped, never someone else's."""
        self._control("/interrupt", {"prompt_id": prompt_id} if prompt_id else {})

    def jobs_api(self) -> bool:
        """Whether the server has the /api/jobs routes (asked once: releases between the recorded
        ones may or may not)."""
        if self._jobs_api is None:
            response = self._request("GET", "/api/jobs", params={"limit": 1})
            self._jobs_api = response.status_code == 200
        return self._jobs_api

    def cancel(self, prompt_id: str) -> bool:
        """Cancel one prompt, pending or running, and never another: POST /api/jobs/{id}/cancel where
        the server has it, else delete it from the queue and interrupt it only if it is running.
        Returns whether the server says something was cancelled (the jobs route answers that)."""
        if self.jobs_api():
            reply = self._json("POST", f"/api/jobs/{prompt_id}/cancel")
            return bool(isinstance(reply, dict) and reply.get("cancelled"))
        running, pending = self.queued_ids()
        if prompt_id in pending:
            self.delete_queued([prompt_id])
        if prompt_id in running or prompt_id in pending:
            self.interrupt(prompt_id)  # it may have started between the two calls; never stops another
        return prompt_id in running or prompt_id in pending

    def free(self, *, unload_models: bool = True, free_memory: bool = True) -> None:
        self._control("/free", {"unload_models": unload_models, "free_memory": free_memory})

    # --------------------------------------------------------------------------------------------- files
    def upload(self, path: Path, *, subfolder: str = UPLOAD_SUBFOLDER, digest: str | None = None) -> str:
        """Upload an input file under a content-addressed name; returns the value LoadImage & co take.

        The name is derived from the file's sha256, so identical files share one name and a file the
        server already holds (checked with a one-byte ranged GET /view) is not sent again.
        """
        value = upload_name(path, digest or file_sha256(path), subfolder)
        name = value.rsplit("/", 1)[-1]
        if value in self._known_uploads or self._server_has_input(name, subfolder):
            self._known_uploads.add(value)
            return value
        with open(path, "rb") as fh:
            response = self._request("POST", "/upload/image", files={"image": (name, fh)},
                                     form={"subfolder": subfolder, "type": "input", "overwrite": "true"})
        if response.status_code == 413:
            raise UserError(f"{path}: too large for the server's upload limit",
                            hint="raise ComfyUI's --max-upload-size or use a smaller file")
        if response.status_code != 200:
            raise ServerProtocolError(f"uploading {path.name} failed: {response.status_code} {response.text[:200]!r}")
        reply = response.json()
        stored = f"{reply.get('subfolder')}/{reply['name']}" if reply.get("subfolder") else reply["name"]
        self._known_uploads.add(stored)
        return stored

    @property
    def uploaded(self) -> frozenset[str]:
        """The input-file names this client uploaded or found on the server."""
        return frozenset(self._known_uploads)

    def _server_has_input(self, name: str, subfolder: str) -> bool:
        response = self._request("GET", "/view", params={"filename": name, "subfolder": subfolder,
                                                         "type": "input"},
                                 headers={"Range": "bytes=0-0"}, stream=True)
        response.close()
        return response.status_code in (200, 206)

    def download(self, file: OutputFile, dest_dir: Path, *, name: str | None = None,
                 within: Path | None = None) -> Downloaded:
        """Stream one output from /view into dest_dir, hashing while writing.

        The server's names are sanitised into dest_dir, and the write never follows a link inside
        `within` (default: dest_dir), the folder it must stay in. The file appears under its final
        name only once complete (temp file + rename).
        """
        root = within or dest_dir
        target = safe_destination(dest_dir, "" if name else file.subfolder, name or file.filename)
        params = {"filename": file.filename, "subfolder": file.subfolder, "type": file.type}
        response = self._request("GET", "/view", params=params, stream=True)
        if response.status_code != 200:
            response.close()
            raise RunError(f"downloading {file.filename!r} from {self.address.display} failed "
                           f"({response.status_code})")
        digest = hashlib.sha256()
        size = 0
        try:
            with response, confined.writer(root, target.relative_to(root).as_posix()) as fh:
                for chunk in response.iter_content(_CHUNK):
                    fh.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
                expected = response.headers.get("Content-Length")
                if expected is not None and int(expected) != size:
                    raise RunError(f"download of {file.filename!r} was cut short ({size} of {expected} bytes)")
        except TransportError as exc:
            raise RunError(f"download of {file.filename!r} failed: {exc}") from None
        return Downloaded(target, digest.hexdigest(), size)

    def close(self) -> None:
        self.transport.close()
