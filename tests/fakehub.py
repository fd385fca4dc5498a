"""A local stand-in for the Hugging Face Hub: the resolve endpoint with the real headers and errors.

Answers HEAD and GET /{repo}/resolve/{revision}/{path} with X-Repo-Commit, ETag / X-Linked-Etag
(sha256), X-Linked-Size and Range support (206), and the Hub's X-Error-Code for missing repos, files,
revisions and gated repos, so the real huggingface_hub runs against it unchanged.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from dataclasses import dataclass, field

from aiohttp import web


@dataclass
class HubFile:
    data: bytes
    served: bytes | None = None  # what GET sends instead (a corrupted mirror)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


@dataclass
class FakeHub:
    files: dict[tuple[str, str], HubFile] = field(default_factory=dict)
    commit: str = "0123456789abcdef0123456789abcdef01234567"
    gated: set[str] = field(default_factory=set)
    private: dict[str, str] = field(default_factory=dict)  # repo -> token that may read it
    chunk_delay: float = 0.0  # seconds between 64 KiB chunks (to kill a download midway)
    bytes_sent: int = 0
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)  # (method, path, Range)

    def add(self, repo: str, path: str, data: bytes) -> HubFile:
        self.files[(repo, path)] = HubFile(data)
        return self.files[(repo, path)]

    def start(self) -> str:
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()

        def main() -> None:
            asyncio.set_event_loop(self._loop)
            app = web.Application()
            app.router.add_route("*", "/{owner}/{name}/resolve/{revision}/{path:.*}", self._resolve)
            self._runner = web.AppRunner(app)
            self._loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            self._loop.run_until_complete(site.start())
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            ready.set()
            self._loop.run_forever()

        threading.Thread(target=main, daemon=True).start()
        ready.wait(10)
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)

    @staticmethod
    def _error(status: int, code: str) -> web.Response:
        return web.Response(status=status, headers={"X-Error-Code": code}, text=code)

    async def _resolve(self, request: web.Request) -> web.StreamResponse:
        repo = f"{request.match_info['owner']}/{request.match_info['name']}"
        path = request.match_info["path"]
        self.requests.append((request.method, request.path, request.headers.get("Range")))
        if not any(r == repo for r, _ in self.files):
            return self._error(404, "RepoNotFound")
        if repo in self.private and request.headers.get("Authorization") != f"Bearer {self.private[repo]}":
            return self._error(401, "RepoNotFound")
        if repo in self.gated:
            return self._error(403, "GatedRepo")
        if request.match_info["revision"] not in ("main", self.commit):
            return self._error(404, "RevisionNotFound")
        item = self.files.get((repo, path))
        if item is None:
            return self._error(404, "EntryNotFound")
        body = item.served if item.served is not None else item.data
        headers = {"X-Repo-Commit": self.commit, "ETag": f'"{item.sha256}"', "X-Linked-Etag": f'"{item.sha256}"',
                   "X-Linked-Size": str(len(item.data)), "Accept-Ranges": "bytes"}
        start = 0
        rng = request.headers.get("Range")
        if rng and rng.startswith("bytes=") and request.method == "GET":
            start = int(rng[6:].split("-")[0])
        if request.method == "HEAD":
            headers["Content-Length"] = str(len(body))
            return web.Response(status=200, headers=headers)
        status = 206 if start else 200
        if start:
            headers["Content-Range"] = f"bytes {start}-{len(body) - 1}/{len(body)}"
        headers["Content-Length"] = str(len(body) - start)
        response = web.StreamResponse(status=status, headers=headers)
        await response.prepare(request)
        for i in range(start, len(body), 1 << 16):
            chunk = body[i:i + (1 << 16)]
            await response.write(chunk)
            self.bytes_sent += len(chunk)
            if self.chunk_delay:
                await asyncio.sleep(self.chunk_delay)
        await response.write_eof()
        return response
