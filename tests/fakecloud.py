"""A small Comfy Cloud double (aiohttp) for what comfy-api-proxy does not do: a Bearer key required,
429 + Retry-After, 402, outputs served by a redirect to a signed URL on another origin, job expiry."""

from __future__ import annotations

import asyncio
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

KEY = "sk-test-cloud-key"


@dataclass
class FakeCloud:
    data: bytes = b""  # the bytes of every job's one output
    output_name: str = "clip.mp4"  # the name the API reports for it
    busy: int = 0  # POST /jobs answers 429 (queue_full, Retry-After) this many times first
    retry_after: str = "1"
    credits: int = 100  # jobs left; 0 answers 402 insufficient_credits
    expire: bool = False  # jobs go from running to expired (outputs never reported)
    next_id: str | None = None  # the id of the next job (default: a fresh uuid)
    slow: bool = False  # signed downloads trickle (10 kB every 50 ms), so a test can kill a driver mid-way
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    seen: list[tuple[str, str, str | None, str | None]] = field(default_factory=list)  # (site, path, auth, range)
    url: str = ""
    storage: str = ""

    def start(self) -> str:
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()

        def main() -> None:
            asyncio.set_event_loop(self._loop)
            self._runners = []
            ports = []
            for app in (self._cloud_app(), self._storage_app()):
                runner = web.AppRunner(app)
                self._loop.run_until_complete(runner.setup())
                site = web.TCPSite(runner, "127.0.0.1", 0)
                self._loop.run_until_complete(site.start())
                self._runners.append(runner)
                ports.append(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]
            self.url, self.storage = (f"http://127.0.0.1:{p}" for p in ports)
            ready.set()
            self._loop.run_forever()

        threading.Thread(target=main, daemon=True).start()
        ready.wait(10)
        return self.url

    def stop(self) -> None:
        for runner in self._runners:
            asyncio.run_coroutine_threadsafe(runner.cleanup(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)

    # ------------------------------------------------------------------------------------ the API
    def _cloud_app(self) -> web.Application:
        app = web.Application(middlewares=[self._auth])
        app.add_routes([web.post("/api/v2/jobs", self._submit), web.get("/api/v2/jobs", self._list),
                        web.get("/api/v2/jobs/{id}", self._job),
                        web.get("/api/v2/assets/{id}/content", self._content)])
        return app

    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        auth = request.headers.get("Authorization")
        self.seen.append(("cloud", request.path, auth, request.headers.get("Range")))
        if auth != f"Bearer {KEY}":
            return _error(401, "unauthorized", "a valid API key is required")
        response: web.StreamResponse = await handler(request)
        return response

    async def _submit(self, request: web.Request) -> web.Response:
        if self.busy:
            self.busy -= 1
            return _error(429, "queue_full", "the queue is full", headers={"Retry-After": self.retry_after})
        if self.credits <= 0:
            return _error(402, "insufficient_credits", "no credits left on this account")
        self.credits -= 1
        job_id, self.next_id = self.next_id or str(uuid.uuid4()), None
        body = await request.json()
        self.jobs[job_id] = {"id": job_id, "status": "queued", "outputs": [], "polls": 0,
                             "metadata": body.get("metadata"), "key": request.headers.get("Idempotency-Key")}
        return web.json_response(self._view(job_id), status=201)

    async def _list(self, request: web.Request) -> web.Response:
        return web.json_response({"jobs": [self._view(i) for i in reversed(list(self.jobs))]})

    async def _job(self, request: web.Request) -> web.Response:
        job = self.jobs.get(request.match_info["id"])
        if job is None:
            return _error(404, "not_found", "no such job")
        job["polls"] += 1
        if job["status"] == "queued":
            job["status"] = "running"
        elif job["status"] == "running":
            job["status"] = "expired" if self.expire else "succeeded"
            if not self.expire:
                asset = f"out-{job['id']}"
                job["outputs"] = [{"node_id": "9", "name": self.output_name, "type": "image", "content_type": "video/mp4",
                                   "size_bytes": 0, "id": asset, "hash": None,
                                   "url": f"{self.url}/api/v2/assets/{asset}/content"}]
        return web.json_response(self._view(job["id"]))

    def _view(self, job_id: str) -> dict[str, Any]:
        job = self.jobs[job_id]
        return {"id": job_id, "status": job["status"], "outputs": job["outputs"], "metadata": job["metadata"],
                "urls": {"self": f"{self.url}/api/v2/jobs/{job_id}", "events": f"{self.url}/api/v2/jobs/{job_id}/events"}}

    async def _content(self, request: web.Request) -> web.Response:
        raise web.HTTPFound(f"{self.storage}/signed/{request.match_info['id']}?sig=abc123")

    # ------------------------------------------------------------------------------ signed storage
    def _storage_app(self) -> web.Application:
        app = web.Application()
        app.add_routes([web.get("/signed/{id}", self._signed)])
        return app

    async def _signed(self, request: web.Request) -> web.StreamResponse:
        self.seen.append(("storage", request.path, request.headers.get("Authorization"), request.headers.get("Range")))
        if request.query.get("sig") != "abc123":
            return web.Response(status=403)
        start = int(request.headers["Range"].removeprefix("bytes=").split("-")[0]) if "Range" in request.headers else 0
        total = len(self.data)
        headers = {"Content-Type": "video/mp4", "Content-Length": str(total - start)}
        if start:
            headers["Content-Range"] = f"bytes {start}-{total - 1}/{total}"
        if not self.slow:
            return web.Response(status=206 if start else 200, body=self.data[start:], headers=headers)
        response = web.StreamResponse(status=206 if start else 200, headers=headers)
        await response.prepare(request)
        for at in range(start, total, 10_000):
            await response.write(self.data[at:at + 10_000])
            await asyncio.sleep(0.05)
        await response.write_eof()
        return response


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message, "details": {}}}, status=status,
                             headers=headers)
