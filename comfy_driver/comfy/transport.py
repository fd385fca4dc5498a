"""One server's HTTP/1.1 connections, kept alive and reused, on the standard library's http.client.

`ComfyClient` sends every request through a `Transport`. A loopback request through requests costs
about five times the CPU of the same request on http.client (preparing it, merging the session's
settings into it, hooks, adapters); for a run of many small prompts that was the client's largest
cost. What a ComfyUI client needs of requests is here, and nothing else:
- TLS with the trust `Settings` chose (a CA bundle, the environment's, certifi's as requests had, or
  none with `--insecure`);
- proxies from the environment (`http_proxy`, `https_proxy`, `no_proxy`), https tunnelled with CONNECT;
- query parameters, JSON and multipart bodies, streamed downloads;
- a few idle connections per server, each checked before reuse (one the server closed meanwhile is
  replaced, never written to); one whose answer was not read to its end is closed, not reused.
Redirects are not followed (ComfyUI sends none; a credential never follows one to another origin),
and cookies are not kept (ComfyUI sets none). An answer's header block is read without the email
parser http.client uses (`_Response`): that parser cost about as much as the rest of a request.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import select
import socket
import ssl
import threading
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator, Mapping
from typing import Any, BinaryIO

from comfy_driver.comfy.settings import Settings

Timeout = float | tuple[float, float]
_IDLE = 4  # idle connections kept per server: the lane's, the finishing pool's, a spare
_MAX_LINE = 65536  # the limits http.client sets on a header block
_MAX_HEADERS = 100


class TransportError(Exception):
    """No answer: the connection could not be made, broke, or timed out (worth another try)."""


class TLSFailure(TransportError):
    """The TLS handshake failed (an untrusted certificate, a wrong name): another try will not help."""


class Reply:
    """A server's answer: its status and headers at once, its body read on demand (all of it with
    `content`, in chunks with `iter_content`). The connection goes back to the transport once the
    body is read to its end; `close()` (or leaving a `with` block) before that discards it."""

    def __init__(self, transport: Transport, conn: http.client.HTTPConnection,
                 response: http.client.HTTPResponse) -> None:
        self._transport, self._conn, self._response = transport, conn, response
        self.status_code = response.status
        self.headers = response.headers
        self._content: bytes | None = None
        self._open = True

    @property
    def content(self) -> bytes:
        if self._content is None:
            try:
                self._content = self._response.read()
            except (OSError, http.client.HTTPException) as exc:
                self._release(reuse=False)
                raise TransportError(f"the answer broke off ({type(exc).__name__}: {exc})") from None
            self._release(reuse=True)
        return self._content

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.content)

    def iter_content(self, size: int) -> Iterator[bytes]:
        try:
            while chunk := self._response.read(size):
                yield chunk
        except (OSError, http.client.HTTPException) as exc:
            self._release(reuse=False)
            raise TransportError(f"the answer broke off ({type(exc).__name__}: {exc})") from None
        self._release(reuse=True)

    def close(self) -> None:
        self._release(reuse=self._response.isclosed())

    def _release(self, *, reuse: bool) -> None:
        if self._open:
            self._open = False
            self._transport._give(self._conn, reuse=reuse and not self._response.will_close)

    def __enter__(self) -> Reply:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Transport:
    """Connections to one origin (`scheme://host:port`), shared by the threads of one client."""

    def __init__(self, base: str, settings: Settings) -> None:
        parts = urllib.parse.urlsplit(base)
        self.scheme, self.host = parts.scheme, parts.hostname or ""
        self.port = parts.port or (443 if self.scheme == "https" else 80)
        self.prefix = parts.path.rstrip("/")
        self.settings = settings
        self._context = _tls_context(settings) if self.scheme == "https" else None
        self._proxy = _proxy_for(self.scheme, self.host)
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    def request(self, method: str, path: str, *, timeout: Timeout, params: Mapping[str, Any] | None = None,
                headers: Mapping[str, str] | None = None, body: bytes | None = None,
                json_body: Any = None, files: Mapping[str, tuple[str, BinaryIO]] | None = None,
                form: Mapping[str, str] | None = None) -> Reply:
        """Send one request and read the answer's status and headers (not yet its body)."""
        target = self.prefix + path + (f"?{urllib.parse.urlencode(params)}" if params else "")
        send_headers = dict(headers or {})
        if json_body is not None:
            body = json.dumps(json_body).encode("utf-8")
            send_headers["Content-Type"] = "application/json"
        elif files is not None:
            body, send_headers["Content-Type"] = _multipart(form or {}, files)
        if self._proxy is not None and self.scheme == "http":  # a plain proxy is asked for the whole URL
            target = f"http://{self.host}:{self.port}{target}"
            send_headers.update(self._proxy[1])
        connect, read = timeout if isinstance(timeout, tuple) else (timeout, timeout)
        conn = self._take(connect)
        with _failing(conn):
            conn.sock.settimeout(read)  # type: ignore[union-attr]
            conn.request(method, target, body=body, headers=send_headers)
            response = conn.getresponse()
        return Reply(self, conn, response)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    # ---------------------------------------------------------------------------------------------
    def _take(self, connect_timeout: float) -> http.client.HTTPConnection:
        while True:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            if conn is None:
                return self._connect(connect_timeout)
            if not _dropped(conn):
                return conn
            conn.close()

    def _give(self, conn: http.client.HTTPConnection, *, reuse: bool) -> None:
        if reuse and conn.sock is not None:
            with self._lock:
                if len(self._idle) < _IDLE:
                    self._idle.append(conn)
                    return
        conn.close()

    def _connect(self, timeout: float) -> http.client.HTTPConnection:
        host, port = (self._proxy[0][0], self._proxy[0][1]) if self._proxy else (self.host, self.port)
        conn: http.client.HTTPConnection
        if self._context is not None:
            conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=self._context)
            if self._proxy is not None:
                conn.set_tunnel(self.host, self.port, headers=self._proxy[1])
        else:
            conn = http.client.HTTPConnection(host, port, timeout=timeout)
        conn.response_class = _Response
        with _failing(conn):
            conn.connect()
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # type: ignore[union-attr]
        return conn


class _Response(http.client.HTTPResponse):
    """http.client's response, but its header block is read here, not by the email package.

    As http.client does: a 100 Continue is skipped, headers are Latin-1, a folded line continues the
    header before it, the first of repeated headers is the one that counts (and `headers` keeps them
    all), a line or a block too long is an error; then the body is chunked, of a length, or up to
    the close.
    """

    def begin(self) -> None:
        if self.headers is not None:
            return
        while True:
            version, status, reason = self._read_status()  # type: ignore[attr-defined]
            if status != http.client.CONTINUE:
                break
            _header_lines(self.fp)
        self.code = self.status = status
        self.reason = reason.strip()
        if version in ("HTTP/1.0", "HTTP/0.9"):
            self.version = 10
        elif version.startswith("HTTP/1."):
            self.version = 11
        else:
            raise http.client.UnknownProtocol(version)
        message = http.client.HTTPMessage()
        first: dict[str, str] = {}
        for name, value in _header_lines(self.fp):
            message.set_raw(name, value)
            first.setdefault(name.lower(), value)
        self.headers = self.msg = message
        self.chunked = first.get("transfer-encoding", "").lower() == "chunked"  # type: ignore[attr-defined]
        self.chunk_left = None  # type: ignore[attr-defined]
        connection = first.get("connection", "").lower()
        if self.version == 11:
            self.will_close = "close" in connection
        else:  # HTTP/1.0 keeps the connection only when it says so
            self.will_close = not (first.get("keep-alive") or "keep-alive" in connection
                                   or "keep-alive" in first.get("proxy-connection", "").lower())
        self.length = None
        length = first.get("content-length")
        if length and not self.chunked:  # type: ignore[attr-defined]
            with contextlib.suppress(ValueError):
                self.length = int(length) if int(length) >= 0 else None
        if status in (http.client.NO_CONTENT, http.client.NOT_MODIFIED) or 100 <= status < 200 \
                or self._method == "HEAD":  # type: ignore[attr-defined]
            self.length = 0
        if not self.will_close and not self.chunked and self.length is None:  # type: ignore[attr-defined]
            self.will_close = True  # the body ends when the connection does


def _header_lines(fp: Any) -> list[tuple[str, str]]:
    """A header block's (name, value) pairs, up to its empty line."""
    fields: list[tuple[str, str]] = []
    lines = 0
    while True:
        line = fp.readline(_MAX_LINE + 1)
        lines += 1  # every line counts, as http.client counts them (folded ones and ones without a colon)
        if len(line) > _MAX_LINE:
            raise http.client.LineTooLong("header line")
        if line in (b"\r\n", b"\n", b""):
            return fields
        text = line.decode("iso-8859-1").rstrip("\r\n")
        if text[:1] in (" ", "\t") and fields:  # a folded line continues the header before it (kept as is)
            fields[-1] = (fields[-1][0], f"{fields[-1][1]}\r\n{text}")
        else:
            name, colon, value = text.partition(":")
            if colon:
                fields.append((name.strip(), value.strip(" \t")))
        if lines > _MAX_HEADERS:
            raise http.client.HTTPException(f"got more than {_MAX_HEADERS} headers")


@contextlib.contextmanager
def _failing(conn: http.client.HTTPConnection) -> Iterator[None]:
    """A failure on `conn` closes it and becomes the transport's own error (a bad value: closed, re-raised)."""
    try:
        yield
    except ssl.SSLError as exc:
        conn.close()
        raise TLSFailure(str(exc)) from None
    except (OSError, http.client.HTTPException) as exc:
        conn.close()
        raise TransportError(f"{type(exc).__name__}: {exc}") from None
    except ValueError:
        conn.close()
        raise


def _dropped(conn: http.client.HTTPConnection) -> bool:
    """An idle connection with something to read has been closed by the server (or is out of step)."""
    sock = conn.sock
    if sock is None:
        return True
    try:
        return bool(select.select([sock], [], [], 0)[0])
    except (OSError, ValueError):
        return True


def _tls_context(settings: Settings) -> ssl.SSLContext:
    if not settings.verify:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    bundle = settings.ca_bundle
    if bundle is None:
        try:
            import certifi  # the bundle requests trusted, so a server trusted before stays trusted

            bundle = certifi.where()
        except ImportError:
            pass
    return ssl.create_default_context(cafile=bundle)


def _proxy_for(scheme: str, host: str) -> tuple[tuple[str, int], dict[str, str]] | None:
    """The environment's proxy for this origin ((host, port), headers for it), unless no_proxy exempts it."""
    url = urllib.request.getproxies().get(scheme)
    if not url or urllib.request.proxy_bypass(host):
        return None
    parts = urllib.parse.urlsplit(url if "://" in url else f"http://{url}")
    headers = {}
    if parts.username is not None:
        token = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
        headers["Proxy-Authorization"] = "Basic " + base64.b64encode(token.encode()).decode()
    return (parts.hostname or "", parts.port or 80), headers


def _multipart(form: Mapping[str, str], files: Mapping[str, tuple[str, BinaryIO]]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    chunks: list[bytes] = []
    for name, value in form.items():
        chunks.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    for name, (filename, fh) in files.items():
        quoted = filename.replace("\\", "\\\\").replace('"', '\\"')
        chunks.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{quoted}"\r\n'
                      f"Content-Type: application/octet-stream\r\n\r\n".encode())
        chunks.append(fh.read())
        chunks.append(b"\r\n")
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f"multipart/form-data; boundary={boundary}"
