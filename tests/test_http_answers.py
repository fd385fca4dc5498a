"""Answers as servers write them, read by the transport: header blocks, bodies, keep-alive or close."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from comfy_driver.comfy.settings import Settings
from comfy_driver.comfy.transport import Transport, TransportError


class Scripted:
    """A server that answers each request on a connection with the next of its raw answers."""

    def __init__(self, answers: list[bytes]) -> None:
        self.answers = list(answers)
        self.connections = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while self.answers:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            with conn:
                data = b""
                while self.answers:
                    while b"\r\n\r\n" not in data:
                        chunk = conn.recv(65536)
                        if not chunk:
                            break
                        data += chunk
                    if b"\r\n\r\n" not in data:
                        break
                    data = data.split(b"\r\n\r\n", 1)[1]
                    answer = self.answers.pop(0)
                    conn.sendall(answer)
                    if b"Connection: close" in answer or b"HTTP/1.0" in answer.split(b"\r\n")[0] \
                            and b"Keep-Alive" not in answer:
                        break

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def scripted() -> Iterator[type[Scripted]]:
    made: list[Scripted] = []

    def make(answers: list[bytes]) -> Scripted:
        server = Scripted(answers)
        made.append(server)
        return server

    yield make  # type: ignore[misc]
    for server in made:
        server.close()


def get(transport: Transport, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    reply = transport.request(method, "/x", timeout=5)
    return reply.status_code, dict(reply.headers.items()), reply.content


def test_length_chunked_continue_and_folded_headers_on_one_connection(scripted) -> None:
    server = scripted([
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Twice: first\r\nx-twice: second\r\n\r\nhello",
        b"HTTP/1.1 100 Continue\r\nX-Skipped: yes\r\n\r\nHTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n"
        b"X-Folded: one\r\n  two\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n",  # HEAD: no body whatever the length says
    ])
    transport = Transport(server.url, Settings())
    reply = transport.request("GET", "/x", timeout=5)
    assert (reply.status_code, reply.content) == (200, b"hello")
    assert reply.headers.get("x-twice") == "first" and reply.headers.get_all("X-Twice") == ["first", "second"]
    status, headers, body = get(transport)
    assert (status, body, headers.get("X-Folded")) == (201, b"abcde", "one\r\n  two") and "X-Skipped" not in headers
    assert get(transport)[::2] == (204, b"")
    assert get(transport, "HEAD")[::2] == (200, b"")
    assert server.connections == 1  # every answer kept the connection
    transport.close()


def test_an_answer_that_ends_with_the_connection(scripted) -> None:
    server = scripted([
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.0 200 OK\r\n\r\nuntil the end",  # no length: the body is what comes before the close
        b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 3\r\n\r\none",
        b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 3\r\n\r\ntwo",
    ])
    transport = Transport(server.url, Settings())
    assert get(transport)[2] == b"ok"
    assert get(transport)[2] == b"until the end"
    assert get(transport)[2] == b"one"
    assert get(transport)[2] == b"two"
    assert server.connections == 3  # a new one after each close; HTTP/1.0 kept alive when it says so
    transport.close()


@pytest.mark.parametrize("answer", [
    b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(101)) + b"\r\n",
    b"HTTP/1.1 200 OK\r\nX-Long: " + b"v" * 70000 + b"\r\n\r\n",
    b"SPDY/3 200 OK\r\n\r\n",
    b"",
])
def test_a_broken_header_block_is_a_transport_error(scripted, answer: bytes) -> None:
    server = scripted([answer])
    with pytest.raises(TransportError):
        Transport(server.url, Settings()).request("GET", "/x", timeout=5)


@pytest.mark.parametrize("answer", [
    b"HTTP/1.1 200 OK\r\nX-A: v\r\n" + b" folded\r\n" * 101 + b"Content-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\n" + b"no colon here\r\n" * 101 + b"Content-Length: 0\r\n\r\n",
])
def test_a_header_block_of_more_than_100_lines_is_refused_whatever_the_lines(scripted, answer: bytes) -> None:
    """http.client's limit counts lines: folded lines and lines without a colon count too (a hostile server
    cannot hold the client with an endless header block)."""
    server = scripted([answer])
    with pytest.raises(TransportError):
        Transport(server.url, Settings()).request("GET", "/x", timeout=5)
