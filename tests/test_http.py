"""The client's HTTP transport over real sockets: connections reused, replaced when the server closed
them, answers cut short, multipart bodies, and proxies from the environment."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from comfy_driver.comfy.client import ComfyClient
from comfy_driver.comfy.errors import ServerUnreachable
from comfy_driver.comfy.outputs import OutputFile
from comfy_driver.comfy.settings import Settings
from comfy_driver.errors import RunError

STATS = {"system": {"os": "posix"}, "devices": []}


class _Recorder(BaseHTTPRequestHandler):
    """Answers /system_stats, /view and uploads; records each request line, connection and body."""

    protocol_version = "HTTP/1.1"
    seen: list[tuple[str, int, bytes, str | None]] = []  # request line, client port, body, Proxy-Authorization
    close_after = False  # answer with Connection: close
    silent_close = False  # close the connection after answering, without saying so
    cut_short = False  # promise more bytes than sent
    busy = 0  # answer this many requests 503 first

    def _answer(self, body: bytes, *, length: int | None = None) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        if self.close_after:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
        if self.close_after or self.silent_close or self.cut_short:
            self.close_connection = True

    def do_GET(self) -> None:  # noqa: N802
        self.seen.append((self.requestline, self.client_address[1], b"", self.headers.get("Proxy-Authorization")))
        if type(self).busy:
            type(self).busy -= 1
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif "/view" in self.path:
            self._answer(b"x" * 1000, length=5000 if self.cut_short else None)
        else:
            self._answer(json.dumps(STATS).encode())

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.seen.append((self.requestline, self.client_address[1], body, None))
        self._answer(json.dumps({"name": "up.png", "subfolder": "", "type": "input"}).encode())

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[tuple[str, type[_Recorder]]]:
    handler = type("Handler", (_Recorder,), {"seen": []})
    srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}", handler
    srv.shutdown()
    srv.server_close()


def test_one_connection_serves_request_after_request(server: tuple[str, type[_Recorder]]) -> None:
    url, handler = server
    client = ComfyClient(url)
    for _ in range(5):
        assert client.system_stats() == STATS
    assert len({conn for _, conn, _, _ in handler.seen}) == 1
    client.close()


@pytest.mark.parametrize("how", ["close_after", "silent_close"])
def test_a_connection_the_server_closed_is_replaced_not_written_to(server: tuple[str, type[_Recorder]],
                                                                    how: str) -> None:
    url, handler = server
    setattr(handler, how, True)
    client = ComfyClient(url, settings=Settings(retries=1))  # no retry may hide a broken reuse
    for _ in range(3):
        assert client.system_stats() == STATS
        time.sleep(0.05)  # the server's close arrives
    assert len({conn for _, conn, _, _ in handler.seen}) == 3
    client.close()


def test_an_answer_cut_short_is_a_failed_download(server: tuple[str, type[_Recorder]], tmp_path: Path) -> None:
    url, handler = server
    handler.cut_short = True
    client = ComfyClient(url)
    with pytest.raises(RunError, match="failed|cut short"):
        client.download(OutputFile(node_id="1", key="images", filename="a.png"), tmp_path)
    assert not list(tmp_path.iterdir())  # nothing half-written stays
    handler.cut_short = False
    assert client.download(OutputFile(node_id="1", key="images", filename="a.png"), tmp_path).size == 1000


def test_an_upload_is_one_multipart_body(server: tuple[str, type[_Recorder]], tmp_path: Path) -> None:
    url, handler = server
    image = tmp_path / "in.png"
    image.write_bytes(b"\x89PNG-bytes")
    ComfyClient(url)._request("POST", "/upload/image", files={"image": ("in.png", image.open("rb"))},
                              form={"subfolder": "comfy_drive", "type": "input"})
    body = handler.seen[-1][2]
    assert b'name="subfolder"\r\n\r\ncomfy_drive\r\n' in body and b'name="type"\r\n\r\ninput\r\n' in body
    assert b'name="image"; filename="in.png"\r\nContent-Type: application/octet-stream\r\n\r\n\x89PNG-bytes\r\n' \
        in body


def test_the_environment_proxy_is_used_unless_no_proxy_exempts_the_server(
        server: tuple[str, type[_Recorder]], monkeypatch: Any) -> None:
    proxy_url, proxy = server  # it answers whatever it is asked, as a proxy would after forwarding
    for name in ("no_proxy", "NO_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("http_proxy", proxy_url.replace("http://", "http://me:secret@"))
    assert ComfyClient("http://gpu-box.invalid:8188").system_stats() == STATS
    assert proxy.seen[-1][0] == "GET http://gpu-box.invalid:8188/system_stats HTTP/1.1"
    assert proxy.seen[-1][3] == "Basic bWU6c2VjcmV0"  # me:secret, for the proxy only
    monkeypatch.setenv("no_proxy", "gpu-box.invalid")
    with pytest.raises(ServerUnreachable):
        ComfyClient("http://gpu-box.invalid:8188", settings=Settings(retries=1)).system_stats()
    assert len(proxy.seen) == 1


def test_a_busy_server_is_asked_again_with_backoff_as_often_as_settings_say(
        server: tuple[str, type[_Recorder]]) -> None:
    url, handler = server
    handler.busy = 2
    started = time.monotonic()
    assert ComfyClient(url, settings=Settings(retries=3)).system_stats() == STATS
    assert len(handler.seen) == 3 and time.monotonic() - started >= 0.2 + 0.4
    handler.busy = 1
    with pytest.raises(ServerUnreachable, match="503"):
        ComfyClient(url, settings=Settings(retries=1)).system_stats()
    assert len(handler.seen) == 4
