"""The simulated ComfyUI server: ComfyUI's routes and websocket protocol on aiohttp.

Message order and shapes follow the recorded traces: `status` on queueing and on start, then
`execution_start`, `execution_cached`, per node `progress_state` + `executing` (+ `progress` per sampler
step, `executed` for output nodes), `execution_success`, the history entry stored, `status`, and
`executing` with node null. Execution events go only to the socket of the prompt's client_id.
Validation is the shared catalogue code. Faults can be injected for tests (see `Faults`). Running the
queued prompts is `execution.Execution`, which this class mixes in.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

from comfy_driver.comfy.catalog import Catalog
from comfy_driver.comfy.versions import RECORDED, ServerVersions
from comfy_driver.models.folders import offered_models
from comfy_driver.sim.execution import Execution, Faults, _graph_key, _ms, _Task
from comfy_driver.sim.executor import Counters, Timing, Value
from comfy_driver.sim.files import small_file
from comfy_driver.sim.jobs import Jobs, is_canonical_uuid

MAX_UPLOAD = 100 * 1024 * 1024


class SimServer(Execution):
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
        self.model_loads = 0  # model files loaded because the previous prompt had not loaded them (survives crashes)
        self._reset_state()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._worker: asyncio.Task[None] | None = None
        self._catalog_cache: Catalog | None = None
        self.upload_inputs: dict[str, tuple[str, ...]] = {}  # node class -> its file inputs (`_upload_inputs`)

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
        middlewares = [self._check_auth] if self.auth is not None else []  # none: one call less per request
        app = web.Application(client_max_size=MAX_UPLOAD, middlewares=middlewares)
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
                                  "idle_gaps": self.idle_gaps,
                                  "model_loads": self.model_loads})

    async def sim_faults(self, request: web.Request) -> web.Response:
        self.faults = Faults(**(await request.json()))
        return web.json_response({"ok": True})

    async def sim_crash(self, request: web.Request) -> web.Response:
        down_for = float((await request.json()).get("down_for", 1.0))
        asyncio.get_running_loop().call_later(0.05, lambda: asyncio.ensure_future(self._crash(down_for)))
        return web.json_response({"ok": True})

    @web.middleware
    async def _check_auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.headers.get("Authorization") != self.auth:  # (installed only when auth is set)
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
        graph = _graph_key(prompt)
        self.submission_log.append({"prompt_id": prompt_id, "graph": graph, "t": time.time()})
        self.pending.append(_Task(number, prompt_id, prompt, extra, result.good_outputs, graph))
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
        headers = {"Content-Disposition": f'filename="{os.path.basename(path)}"'}
        return await small_file(request, path, headers) or web.FileResponse(path, headers=headers)

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
