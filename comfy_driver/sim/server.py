"""The simulated ComfyUI server: ComfyUI's routes and websocket protocol on aiohttp.

Message order and shapes follow the recorded traces: `status` on queueing and on start, then
`execution_start`, `execution_cached`, per node `progress_state` + `executing` (+ `progress` per sampler
step, `executed` for output nodes), `execution_success`, the history entry stored, `status`, and
`executing` with node null. Execution events go only to the socket of the prompt's client_id.
Validation is the shared catalogue code. Faults can be injected for tests (see `Faults`).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

from comfy_driver.comfy.catalog import Catalog
from comfy_driver.comfy.versions import RECORDED, ServerVersions
from comfy_driver.sim import render
from comfy_driver.sim.jobs import Jobs, is_canonical_uuid
from comfy_driver.errors import DriveError
from comfy_driver.media.ffmpeg import probe
from comfy_driver.models.folders import offered_models
from comfy_driver.sim.executor import (SAMPLERS, VISUAL, Counters, NodeFailure, Timing, Value, evaluate, execution_order,
                                       model_files, number, signatures, split_prefix)

MAX_UPLOAD = 100 * 1024 * 1024
# Sent to every socket even for a prompt posted without client_id (whose other messages go nowhere).
BROADCAST_WITHOUT_CLIENT = ("progress_state", "execution_interrupted")
OOM_MESSAGE = ("CUDA out of memory. Tried to allocate 2.50 GiB. GPU 0 has a total capacity of 15.69 GiB "
               "of which 1.12 GiB is free.")


@dataclass
class Faults:
    """Failures to inject. Counters decrement as faults fire; None means 'every time'."""

    drop_ws_after: int | None = None  # close a client's socket after it was sent this many messages
    drop_ws_times: int | None = 1
    error_at: dict[str, str] = field(default_factory=dict)  # class_type -> "oom" | "error"
    error_times: int | None = None
    crash_at: str | None = None  # class_type: the server crashes when such a node starts
    crash_down_for: float = 1.0
    crash_times: int | None = 1
    slow_view: float = 0.0  # seconds before each /view answer
    fail_view: int = 0  # this many /view requests answer 500


@dataclass
class _Task:
    number: float
    prompt_id: str
    prompt: dict[str, Any]
    extra_data: dict[str, Any]
    outputs: list[str]

    def as_list(self) -> list[Any]:
        return [self.number, self.prompt_id, self.prompt, self.extra_data, self.outputs]


class _Interrupted(Exception):
    pass


class SimServer:
    """A ComfyUI look-alike. `start()` runs it on a background thread; `serve()` in the foreground."""

    def __init__(self, root: Path, catalog: Catalog, *, timing: Timing | None = None,
                 faults: Faults | None = None, host: str = "127.0.0.1", port: int = 0,
                 auth: str | None = None, vram_gb: float = 16.0) -> None:
        self.root = Path(root)
        self.vram = int(vram_gb * (1 << 30))  # the simulated GPU's memory, as system_stats reports it
        # The release played is its catalogue's (the bundled catalogues carry theirs; default 0.3.64).
        if catalog.version is None:
            catalog = Catalog(catalog.nodes, version=RECORDED[0])
        self.versions = ServerVersions.of(str(catalog.version))
        for sub in ("input", "output", "temp"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self.base_catalog = catalog
        self.timing = timing or Timing()
        self.faults = faults or Faults()
        self.host, self.port = host, port
        self.auth = auth  # an Authorization value every request must carry, as behind a reverse proxy
        self.uploads = 0  # files actually received by /upload/image
        self.submissions: list[str] = []  # prompt ids in POST order (tests count duplicates with it)
        self.submission_log: list[dict[str, Any]] = []  # {prompt_id, graph: hash, t}: survives crashes
        self.finished_log: list[dict[str, Any]] = []  # {prompt_id, graph, status, t}
        self.executions: list[str] = []  # prompt ids whose run started
        self.idle_gaps: list[float] = []
        self._reset_state()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._worker: asyncio.Task[None] | None = None
        self._catalog_cache: Catalog | None = None

    def _reset_state(self) -> None:
        self.pending: list[_Task] = []
        self.running: _Task | None = None
        self.history: dict[str, dict[str, Any]] = {}
        self.sockets: dict[str, web.WebSocketResponse] = {}
        self.socket_flags: dict[str, dict[str, Any]] = {}  # what each client negotiated
        self.sent: dict[str, int] = {}
        self.number = 0
        self.cache: dict[str, tuple[tuple[Value, ...], dict[str, Any] | None]] = {}
        self.loaded_models: set[str] = set()
        self.interrupt_flag = False
        self.counters = Counters()
        self.last_end: float | None = None
        self._wake: asyncio.Event | None = None

    # --------------------------------------------------------------------------------------------- life
    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> str:
        """Run on a background thread; returns the URL once it accepts connections."""
        ready = threading.Event()
        errors: list[BaseException] = []

        def main() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._up())
            except BaseException as exc:  # noqa: BLE001 - reported to the starting thread
                errors.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._down_all())
            loop.close()

        self._thread = threading.Thread(target=main, name="comfy-sim", daemon=True)
        self._thread.start()
        ready.wait(30)
        if errors:
            raise errors[0]
        return self.url

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)

    def serve(self) -> None:
        """Run in the foreground until interrupted (comfy-drive sim)."""
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            await self._up()
            try:
                await asyncio.Event().wait()
            finally:
                await self._down_all()

        asyncio.run(main())

    def crash(self, down_for: float) -> None:
        """From any thread: lose queue, history and caches, close the port for `down_for` seconds."""
        assert self._loop is not None
        asyncio.run_coroutine_threadsafe(self._crash(down_for), self._loop)

    async def _up(self) -> None:
        self._wake = asyncio.Event()
        app = self._make_app()
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        if self.port == 0:
            server = site._server  # noqa: SLF001 - the only way to read an ephemeral port
            self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._worker = asyncio.get_running_loop().create_task(self._work())

    async def _down_all(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
        for ws in list(self.sockets.values()):
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _crash(self, down_for: float) -> None:
        await self._down_all()
        self._reset_state()
        await asyncio.sleep(down_for)
        await self._up()

    # --------------------------------------------------------------------------------------------- app
    def _make_app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_UPLOAD, middlewares=[self._check_auth])
        routes = [
            web.get("/ws", self.ws_handler),
            web.post("/prompt", self.post_prompt), web.get("/prompt", self.get_prompt),
            web.get("/queue", self.get_queue), web.post("/queue", self.post_queue),
            web.get("/history", self.get_history), web.get("/history/{prompt_id}", self.get_history_one),
            web.post("/history", self.post_history), web.post("/interrupt", self.post_interrupt),
            web.post("/free", self.post_free), web.post("/upload/image", self.upload_image),
            web.get("/view", self.view), web.get("/object_info", self.get_object_info),
            web.get("/object_info/{node_class}", self.get_object_info_one),
            web.get("/system_stats", self.system_stats), web.get("/features", self.features),
            web.get("/models", self.get_models), web.get("/models/{folder}", self.get_models_folder),
            web.get("/embeddings", self.empty_list), web.get("/extensions", self.empty_list),
        ]
        app.add_routes(routes)
        app.add_routes([web.route(r.method, "/api" + r.path, r.handler) for r in routes])  # type: ignore[attr-defined]
        if self.versions.has("jobs_api"):
            app.add_routes(Jobs(self).routes())
        # Simulator-only routes (no ComfyUI has them): what it saw, and faults to inject from outside.
        app.add_routes([web.get("/sim/stats", self.sim_stats), web.post("/sim/faults", self.sim_faults),
                        web.post("/sim/crash", self.sim_crash)])
        return app

    async def sim_stats(self, request: web.Request) -> web.Response:
        return web.json_response({"submissions": self.submission_log, "finished": self.finished_log,
                                  "idle_gaps": self.idle_gaps})

    async def sim_faults(self, request: web.Request) -> web.Response:
        self.faults = Faults(**(await request.json()))
        return web.json_response({"ok": True})

    async def sim_crash(self, request: web.Request) -> web.Response:
        down_for = float((await request.json()).get("down_for", 1.0))
        asyncio.get_running_loop().call_later(0.05, lambda: asyncio.ensure_future(self._crash(down_for)))
        return web.json_response({"ok": True})

    @web.middleware
    async def _check_auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if self.auth is not None and request.headers.get("Authorization") != self.auth:
            return web.Response(status=401, text="401: Unauthorized")
        return await handler(request)

    def catalog(self) -> Catalog:
        """The catalogue with upload combos listing what input/ holds now."""
        if self._catalog_cache is None:
            inputs = self.root / "input"
            files = [p.relative_to(inputs).as_posix() for p in inputs.rglob("*") if p.is_file()]
            self._catalog_cache = self.base_catalog.with_files(files)
        return self._catalog_cache

    # --------------------------------------------------------------------------------------------- ws
    async def ws_handler(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=None, autoping=True)
        await ws.prepare(request)
        sid = request.rel_url.query.get("clientId") or uuid.uuid4().hex
        old = self.sockets.get(sid)
        self.sockets[sid] = ws
        self.socket_flags.pop(sid, None)
        self.sent[sid] = 0
        if old is not None and not old.closed:
            await old.close()
        await self._send("status", {"status": self._exec_info(), "sid": sid}, sid)
        running = self.running
        if running is not None and running.extra_data.get("client_id") == sid and self._current_node:
            await self._send("executing", {"node": self._current_node, "display_node": self._current_node,
                                           "prompt_id": running.prompt_id}, sid)
        first = True
        try:
            async for msg in ws:
                if msg.type == WSMsgType.ERROR:
                    break
                if msg.type == WSMsgType.TEXT and first:  # only the first text message may negotiate
                    first = False
                    try:
                        data = json.loads(msg.data)
                    except ValueError:
                        continue
                    if isinstance(data, dict) and data.get("type") == "feature_flags":
                        self.socket_flags[sid] = dict(data.get("data") or {})
                        await self._send("feature_flags", self.feature_flags(), sid)
        finally:
            if self.sockets.get(sid) is ws:
                del self.sockets[sid]
        return ws

    _current_node: str | None = None

    def _exec_info(self) -> dict[str, Any]:
        return {"exec_info": {"queue_remaining": len(self.pending) + (1 if self.running else 0)}}

    async def _send(self, kind: str, data: dict[str, Any], sid: str | None) -> None:
        """To one client (sid) or, with sid None, to everyone."""
        text = json.dumps({"type": kind, "data": data})
        targets = [sid] if sid is not None else list(self.sockets)
        for target in targets:
            ws = self.sockets.get(target) if target else None
            if ws is None or ws.closed:
                continue
            try:
                await ws.send_str(text)
            except (ConnectionError, RuntimeError):
                continue
            self.sent[target] = self.sent.get(target, 0) + 1
            f = self.faults
            if f.drop_ws_after is not None and self.sent[target] >= f.drop_ws_after and f.drop_ws_times != 0:
                if f.drop_ws_times is not None:
                    f.drop_ws_times -= 1
                self.sent[target] = 0
                await ws.close()

    async def _send_bytes(self, frame: bytes, sid: str | None) -> None:
        ws = self.sockets.get(sid) if sid else None
        if ws is not None and not ws.closed:
            try:
                await ws.send_bytes(frame)
            except (ConnectionError, RuntimeError):
                pass

    async def _status(self) -> None:
        await self._send("status", {"status": self._exec_info()}, None)

    # --------------------------------------------------------------------------------------------- http
    async def post_prompt(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            return web.Response(status=500, text="500 Internal Server Error\n\nServer got itself in trouble")
        if not isinstance(body, dict) or "prompt" not in body:
            return web.json_response({"error": {"type": "no_prompt", "message": "No prompt provided",
                                                "details": "No prompt provided", "extra_info": {}},
                                      "node_errors": {}}, status=400)
        prompt = body["prompt"]
        if not isinstance(prompt, dict):  # the server iterates it as a dict and fails
            return web.Response(status=500, text="500 Internal Server Error\n\nServer got itself in trouble")
        number: float = float(body["number"]) if "number" in body else self.number
        if "number" not in body:
            self.number += 1
        if body.get("front"):
            number = -number
        chosen = body.get("prompt_id")
        if chosen is not None and self.versions.has("uuid_prompt_ids") and not is_canonical_uuid(chosen):
            return web.json_response({"error": {
                "type": "invalid_prompt_id", "message": "prompt_id must be a valid UUID",
                "details": "prompt_id must be a UUID string in canonical lowercase hyphenated form; omit it to "
                           "let the server generate one", "extra_info": {}}, "node_errors": {}}, status=400)
        prompt_id = str(chosen or uuid.uuid4())
        result = self.catalog().validate(prompt, partial_targets=body.get("partial_execution_targets"),
                                         file_exists=self._input_exists)
        if not result.ok:
            return web.json_response(result.response(), status=400)
        extra = dict(body.get("extra_data") or {})
        if "client_id" in body:
            extra["client_id"] = body["client_id"]
        if self.versions.has("jobs_api"):
            extra["create_time"] = _ms()
        self.submissions.append(prompt_id)
        self.submission_log.append({"prompt_id": prompt_id, "graph": _graph_key(prompt), "t": time.time()})
        self.pending.append(_Task(number, prompt_id, prompt, extra, result.good_outputs))
        self.pending.sort(key=lambda t: t.number)
        await self._status()
        assert self._wake is not None
        self._wake.set()
        return web.json_response({"prompt_id": prompt_id, "number": number, "node_errors": result.node_errors})

    def _input_exists(self, kind: str, name: str) -> bool:
        inputs = (self.root / "input").resolve()
        path = (inputs / name).resolve()
        return path.is_relative_to(inputs) and path.is_file()

    async def get_prompt(self, request: web.Request) -> web.Response:
        return web.json_response(self._exec_info())

    async def get_queue(self, request: web.Request) -> web.Response:
        return web.json_response({"queue_running": [self.running.as_list()] if self.running else [],
                                  "queue_pending": [t.as_list() for t in self.pending]})

    async def post_queue(self, request: web.Request) -> web.Response:
        body = await request.json()
        if body.get("clear"):
            self.pending.clear()
        for pid in body.get("delete", []):
            self.pending = [t for t in self.pending if t.prompt_id != pid]
        await self._status()
        return web.Response(status=200)

    async def get_history(self, request: web.Request) -> web.Response:
        items = list(self.history.items())
        max_items = request.rel_url.query.get("max_items")
        if max_items:
            items = items[-int(max_items):]
        return web.json_response(dict(items))

    async def get_history_one(self, request: web.Request) -> web.Response:
        pid = request.match_info["prompt_id"]
        return web.json_response({pid: self.history[pid]} if pid in self.history else {})

    async def post_history(self, request: web.Request) -> web.Response:
        body = await request.json()
        if body.get("clear"):
            self.history.clear()
        for pid in body.get("delete", []):
            self.history.pop(pid, None)
        return web.Response(status=200)

    async def post_interrupt(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            body = {}
        target = (body or {}).get("prompt_id")
        if self.running is not None and (target is None or target == self.running.prompt_id):
            self.interrupt_flag = True
        return web.Response(status=200)

    async def post_free(self, request: web.Request) -> web.Response:
        body = await request.json()
        if body.get("unload_models"):
            self.loaded_models.clear()
        if body.get("free_memory"):
            self.cache.clear()
        return web.Response(status=200)

    async def upload_image(self, request: web.Request) -> web.Response:
        post = await request.post()
        image = post.get("image")
        if not isinstance(image, web.FileField) or not image.filename:
            return web.Response(status=400)
        kind = str(post.get("type") or "input")
        if kind not in ("input", "temp", "output"):
            kind = "input"
        base = (self.root / kind).resolve()
        subfolder = str(post.get("subfolder", ""))
        folder = (base / os.path.normpath(subfolder)) if subfolder else base
        filename = image.filename
        path = (folder / filename).resolve()
        if not path.is_relative_to(base) or path == base:
            return web.Response(status=400)
        folder.mkdir(parents=True, exist_ok=True)
        data = image.file.read()
        overwrite = str(post.get("overwrite", "")) in ("true", "1")
        duplicate = False
        if not overwrite:
            stem, suffix = os.path.splitext(filename)
            i = 1
            while path.exists():
                if hashlib.sha256(path.read_bytes()).digest() == hashlib.sha256(data).digest():
                    duplicate = True
                    break
                filename = f"{stem} ({i}){suffix}"
                path = folder / filename
                i += 1
        self.uploads += 1
        if not duplicate:
            path.write_bytes(data)
            self._catalog_cache = None
        return web.json_response({"name": filename, "subfolder": subfolder, "type": kind})

    async def view(self, request: web.Request) -> web.StreamResponse:
        q = request.rel_url.query
        if self.faults.slow_view:
            await asyncio.sleep(self.faults.slow_view)
        if self.faults.fail_view > 0:
            self.faults.fail_view -= 1
            return web.Response(status=500)
        filename = q.get("filename", "")
        if not filename or filename.startswith("/") or ".." in filename:
            return web.Response(status=400)
        kind = q.get("type", "output")
        if kind not in ("input", "output", "temp"):
            return web.Response(status=400)
        base = os.path.abspath(self.root / kind)
        folder = base
        if "subfolder" in q:
            folder = os.path.join(base, q["subfolder"])
            if os.path.commonpath((os.path.abspath(folder), base)) != base:
                return web.Response(status=403)
        path = os.path.join(folder, os.path.basename(filename))
        if not os.path.isfile(path):
            return web.Response(status=404)
        return web.FileResponse(path, headers={"Content-Disposition": f'filename="{os.path.basename(path)}"'})

    async def get_object_info(self, request: web.Request) -> web.Response:
        return web.json_response(self.catalog().nodes)

    async def get_object_info_one(self, request: web.Request) -> web.Response:
        name = request.match_info["node_class"]
        nodes = self.catalog().nodes
        return web.json_response({name: nodes[name]} if name in nodes else {})

    async def system_stats(self, request: web.Request) -> web.Response:
        return web.json_response({
            "system": {"os": "posix", "ram_total": 25 << 30, "ram_free": 20 << 30,
                       "comfyui_version": str(self.versions.comfyui),
                       "required_frontend_version": str(self.versions.frontend),
                       "python_version": "simulated", "pytorch_version": "simulated", "embedded_python": False,
                       "argv": ["comfy-drive", "sim"]},
            "devices": [{"name": "simulated GPU", "type": "cuda", "index": 0, "vram_total": self.vram,
                         "vram_free": self.vram - (1 << 30), "torch_vram_total": self.vram,
                         "torch_vram_free": self.vram - (1 << 30)}]})

    def feature_flags(self) -> dict[str, Any]:
        flags: dict[str, Any] = {"supports_preview_metadata": True, "max_upload_size": MAX_UPLOAD}
        if self.versions.has("rich_feature_flags"):
            flags.update(supports_model_type_tags=True, extension={"manager": {"supports_v4": True}},
                         node_replacements=True, assets=False)
        return flags

    async def features(self, request: web.Request) -> web.Response:
        return web.json_response(self.feature_flags())

    async def get_models(self, request: web.Request) -> web.Response:
        return web.json_response(sorted(offered_models(self.base_catalog.nodes)))

    async def get_models_folder(self, request: web.Request) -> web.Response:
        return web.json_response(sorted(offered_models(self.base_catalog.nodes).get(request.match_info["folder"], [])))

    async def empty_list(self, request: web.Request) -> web.Response:
        return web.json_response([])

    # --------------------------------------------------------------------------------------------- worker
    async def _work(self) -> None:
        assert self._wake is not None
        while True:
            if not self.pending:
                self._wake.clear()
                await self._wake.wait()
                continue
            task = self.pending.pop(0)
            self.running = task
            if self.last_end is not None:
                self.idle_gaps.append(time.perf_counter() - self.last_end)
            await self._status()
            try:
                await self._execute(task)
            finally:
                self.running = None
                self._current_node = None
                self.last_end = time.perf_counter()

    async def _execute(self, task: _Task) -> None:
        pid, prompt, sid = task.prompt_id, task.prompt, task.extra_data.get("client_id")
        self.executions.append(pid)
        self.interrupt_flag = False
        messages: list[list[Any]] = []

        async def emit(kind: str, data: dict[str, Any], *, keep: bool = False) -> None:
            if keep:
                messages.append([kind, data])
            if sid is not None:
                await self._send(kind, data, sid)
            elif kind in BROADCAST_WITHOUT_CLIENT:
                await self._send(kind, data, None)

        await emit("execution_start", {"prompt_id": pid, "timestamp": _ms()}, keep=True)
        catalog = self.catalog()
        sigs = signatures(prompt)
        order = execution_order(prompt, task.outputs, catalog)
        cached = [n for n in order if sigs[n] in self.cache]
        await emit("execution_cached", {"nodes": cached, "prompt_id": pid, "timestamp": _ms()}, keep=True)
        values: dict[str, tuple[Value, ...]] = {}
        outputs: dict[str, Any] = {}
        states: dict[str, dict[str, Any]] = {}
        new_cache: dict[str, tuple[tuple[Value, ...], dict[str, Any] | None]] = {}
        models: set[str] = set()

        async def state(node: str, value: float, maximum: float, st: str) -> None:
            states[node] = {"value": value, "max": maximum, "state": st, "node_id": node, "prompt_id": pid,
                            "display_node_id": node, "parent_node_id": None, "real_node_id": node}
            await emit("progress_state", {"prompt_id": pid, "nodes": dict(states)})

        executed: list[str] = []
        current = ""
        try:
            for node_id in order:
                node = prompt[node_id]
                models.update(model_files(node.get("inputs", {})))
                if node_id in cached:
                    vals, ui = self.cache[sigs[node_id]]
                    values[node_id] = vals
                    new_cache[sigs[node_id]] = (vals, ui)
                    if ui is not None:
                        outputs[node_id] = ui
                        await emit("executed", {"node": node_id, "display_node": node_id, "output": ui,
                                                "prompt_id": pid})
                        await state(node_id, 1.0, 1.0, "finished")
                    continue
                current = node_id
                self._current_node = node_id
                await state(node_id, 0.0, 1.0, "running")
                await emit("executing", {"node": node_id, "display_node": node_id, "prompt_id": pid})
                if self.interrupt_flag:
                    raise _Interrupted
                vals, ui = await self._run_node(task, node_id, values, emit, state)
                values[node_id] = vals
                new_cache[sigs[node_id]] = (vals, ui)
                if ui is not None:
                    outputs[node_id] = ui
                    await emit("executed", {"node": node_id, "display_node": node_id, "output": ui,
                                            "prompt_id": pid})
                executed.append(node_id)
                await state(node_id, 1.0, 1.0, "finished")
        except _Interrupted:
            data = {"prompt_id": pid, "node_id": current, "node_type": prompt[current]["class_type"],
                    "executed": executed, "timestamp": _ms()}
            await emit("execution_interrupted", data, keep=True)
            await self._finish(task, outputs, messages, "error", completed=False)
            return
        except NodeFailure as exc:
            node = prompt[current]
            data = {"prompt_id": pid, "node_id": current, "node_type": node["class_type"], "executed": executed,
                    "exception_message": exc.message, "exception_type": exc.exception_type,
                    "traceback": ["  File \"execution.py\", line 1, in execute\n"],
                    "current_inputs": {}, "current_outputs": {}, "timestamp": _ms()}
            await emit("execution_error", data, keep=True)
            await self._finish(task, outputs, messages, "error", completed=False)
            return
        self.cache = new_cache
        self.loaded_models = models
        await emit("execution_success", {"prompt_id": pid, "timestamp": _ms()}, keep=True)
        if self.timing.history_delay:
            await asyncio.sleep(self.timing.history_delay)
        if self.timing.queue_gap:  # widens the window a reader of /history, then /queue, misses it in
            self.running = None
            await asyncio.sleep(self.timing.queue_gap)
        await self._finish(task, outputs, messages, "success", completed=True)

    async def _finish(self, task: _Task, outputs: dict[str, Any], messages: list[list[Any]], status: str,
                      *, completed: bool) -> None:
        self.finished_log.append({"prompt_id": task.prompt_id, "graph": _graph_key(task.prompt), "status": status,
                                  "t": time.time()})
        self.history[task.prompt_id] = {
            "prompt": task.as_list(), "outputs": outputs,
            "status": {"status_str": status, "completed": completed, "messages": messages},
            "meta": {n: {"node_id": n, "display_node": n, "parent_node": None, "real_node_id": n} for n in outputs}}
        self.running = None
        await self._status()
        if task.extra_data.get("client_id") is not None:  # a prompt without one gets no finishing message
            await self._send("executing", {"node": None, "prompt_id": task.prompt_id}, task.extra_data["client_id"])

    async def _run_node(self, task: _Task, node_id: str, values: dict[str, tuple[Value, ...]], emit: Any,
                        state: Any) -> tuple[tuple[Value, ...], dict[str, Any] | None]:
        node = task.prompt[node_id]
        class_type = node["class_type"]
        inputs = node.get("inputs", {})
        f = self.faults
        if f.crash_at == class_type and f.crash_times != 0:
            if f.crash_times is not None:
                f.crash_times -= 1
            asyncio.get_running_loop().create_task(self._crash(f.crash_down_for))
            await asyncio.sleep(3600)  # cancelled by the crash
        if class_type in f.error_at and f.error_times != 0:
            if f.error_times is not None:
                f.error_times -= 1
            if f.error_at[class_type] == "oom":
                raise NodeFailure("torch.OutOfMemoryError", OOM_MESSAGE)
            raise NodeFailure("RuntimeError", f"simulated failure in {class_type}")
        t = self.timing
        seconds = t.per_class.get(class_type, t.node)
        fresh = [m for m in model_files(inputs) if m not in self.loaded_models]
        seconds += t.model_load * len(fresh)
        if seconds:
            await asyncio.sleep(seconds)
        if class_type in SAMPLERS:
            steps = int(inputs.get("steps", 1)) if isinstance(inputs.get("steps"), (int, float)) else 1
            start = int(inputs.get("start_at_step", 0) or 0) if class_type == "KSamplerAdvanced" else 0
            end = min(int(inputs.get("end_at_step", steps) or steps), steps) if class_type == "KSamplerAdvanced" \
                else steps
            total = max(1, end - start)
            for k in range(1, total + 1):
                if self.interrupt_flag:
                    raise _Interrupted
                if t.step:
                    await asyncio.sleep(t.step)
                await state(node_id, float(k), float(total), "running")
                # A latent preview per step: after `progress` in the legacy format (type 1), before it
                # as type 4 with its JSON header to a client that negotiated preview metadata.
                sid = task.extra_data.get("client_id")
                rich = bool(self.socket_flags.get(sid or "", {}).get("supports_preview_metadata"))
                if rich:
                    await self._send_bytes(render.preview_frame(task.prompt_id, node_id, with_metadata=True), sid)
                await emit("progress", {"value": k, "max": total, "prompt_id": task.prompt_id, "node": node_id})
                if not rich:
                    await self._send_bytes(render.preview_frame(task.prompt_id, node_id, with_metadata=False), sid)
        resolved: dict[str, Any] = {}
        for name, value in inputs.items():
            if isinstance(value, list) and len(value) == 2 and str(value[0]) in values:
                outs = values[str(value[0])]
                resolved[name] = outs[value[1]] if value[1] < len(outs) else None
            else:
                resolved[name] = value
        media = None
        upload = next((n for n, _ in self.catalog().input_order(class_type)
                       if self.catalog().upload_kind(class_type, n) and isinstance(inputs.get(n), str)), None)
        if upload is not None:
            media = await asyncio.get_running_loop().run_in_executor(None, self._media, inputs[upload])
        vals = evaluate(class_type, resolved, self.catalog(), media)
        ui = None
        if self.catalog().is_output_node(class_type):
            ui = await asyncio.get_running_loop().run_in_executor(
                None, self._write_outputs, task, class_type, resolved)
        return vals, ui

    def _media(self, name: str) -> Value | None:
        """What an input file holds: an image's size, a video's frames, size and fps."""
        from PIL import Image, UnidentifiedImageError

        path = self.root / "input" / name
        try:
            with Image.open(path) as img:
                return Value("IMAGE", frames=1, width=img.size[0], height=img.size[1])
        except (UnidentifiedImageError, OSError):
            pass
        try:
            info = probe(path)
        except DriveError:
            return None
        return Value("VIDEO", frames=info.frames, width=info.width, height=info.height, fps=info.fps,
                     caption=str(info.metadata.get("comment", "")))  # a clip this simulator made: its scene

    def _write_outputs(self, task: _Task, class_type: str, inputs: dict[str, Any]) -> dict[str, Any] | None:
        """Real files for an output node; returns its ui output as ComfyUI reports it."""
        source = next((v for v in inputs.values() if isinstance(v, Value) and v.type in VISUAL), None) or Value("IMAGE")
        prefix = str(inputs.get("filename_prefix", "ComfyUI"))
        sub, stem = split_prefix(prefix)
        kind = "temp" if class_type.startswith("Preview") else "output"
        folder = self.root / kind / sub
        folder.mkdir(parents=True, exist_ok=True)
        extra = task.extra_data.get("extra_pnginfo") or {}
        meta = {"prompt": task.prompt, **extra}
        caption, w, h = source.caption, source.width, source.height
        fps = float(number(inputs.get("fps", inputs.get("frame_rate"))) or source.fps or 8)
        if class_type in ("SaveImage", "PreviewImage"):
            images = []
            for i in range(source.frames):
                name = self.counters.next_name(folder, stem, ".png")
                render.write_png(folder / name, w, h, caption, index=i, count=source.frames, text=meta)
                images.append({"filename": name, "subfolder": sub, "type": kind})
            return {"images": images}
        if class_type == "SaveVideo":
            name = self.counters.next_name(folder, stem, ".mp4")
            render.write_mp4(folder / name, source.frames, w, h, fps, caption, metadata=meta)
            return {"images": [{"filename": name, "subfolder": sub, "type": kind}], "animated": [True]}
        if class_type == "SaveAnimatedWEBP":
            name = self.counters.next_name(folder, stem, ".webp")
            render.write_webp(folder / name, source.frames, w, h, fps, caption, text=meta)
            return {"images": [{"filename": name, "subfolder": sub, "type": kind}], "animated": [True]}
        if class_type == "VHS_VideoCombine":
            if not inputs.get("save_output", True):
                kind, folder = "temp", self.root / "temp" / sub
                folder.mkdir(parents=True, exist_ok=True)
            name = self.counters.next_name(folder, stem, ".mp4", trailing_underscore=False)
            render.write_mp4(folder / name, source.frames, w, h, fps, caption,
                             metadata={"comment": {"prompt": task.prompt, **extra}})
            png = name[:-4] + ".png"
            render.write_png(folder / png, w, h, caption, text=meta)
            return {"gifs": [{"filename": name, "subfolder": sub, "type": kind, "format": "video/h264-mp4",
                              "frame_rate": fps, "workflow": png, "fullpath": str(folder / name)}]}
        return {}


def _ms() -> int:
    return int(time.time() * 1000)


def _graph_key(prompt: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(prompt, sort_keys=True).encode()).hexdigest()[:16]
