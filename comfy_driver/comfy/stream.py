"""The websocket of one client id: typed events in a queue, keepalive pings, reconnects.

A reader thread owns the socket. It pings whenever nothing arrived for `ping_interval` seconds, so a
reverse proxy never sees an idle connection and a 20-minute sampler step with no messages is fine; a
socket that answers nothing for `dead_after` seconds is treated as dropped. After a drop it reconnects
with the same clientId and backoff, and puts Disconnected / Reconnected markers in the queue so the
follower knows to recover what it missed from /history and /queue.

On every connect it first negotiates features as the GUI does (`supports_preview_metadata`): the
server answers with its flags (a FeatureFlags event) and sends previews as binary type 4, whose JSON
header names the prompt and node, so a preview is never taken for another prompt's.
"""

from __future__ import annotations

import json
import queue
import threading
import time

import websocket

from comfy_driver.comfy.address import CREDENTIALS_HINT, ServerAddress
from comfy_driver.comfy.errors import AccessRefused, ServerUnreachable
from comfy_driver.comfy.events import Disconnected, Event, Reconnected, parse_binary, parse_text, text_kind
from comfy_driver.comfy.frames import BINARY, CLOSE, TEXT, FrameReader
from comfy_driver.comfy.settings import Settings


CLIENT_FEATURES = {"supports_preview_metadata": True}
_NEGOTIATE = json.dumps({"type": "feature_flags", "data": CLIENT_FEATURES})


class EventStream:
    def __init__(self, address: ServerAddress, client_id: str, *, settings: Settings | None = None,
                 skip: frozenset[str] = frozenset()) -> None:
        """`skip`: text event types the reader drops unparsed (ones its consumer never looks at)."""
        settings = settings or Settings()
        self.skip = skip
        self.address = address
        self.client_id = client_id
        self.ping_interval = settings.keepalive
        self.dead_after = settings.dead_after
        self.connect_timeout = settings.connect_timeout
        self.sslopt = settings.websocket_sslopt()
        self.events: queue.SimpleQueue[Event] = queue.SimpleQueue()  # (in C: a put and a get cost a tenth)
        self.connected = threading.Event()
        self.reconnects = 0
        self._closed = threading.Event()
        self._ws: websocket.WebSocket | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> EventStream:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> None:
        """Connect now (raising ServerUnreachable if nobody answers) and start reading."""
        try:
            self._ws = self._connect()
        except websocket.WebSocketBadStatusException as exc:
            if exc.status_code in (401, 403):
                raise AccessRefused(f"{self.address.display} refused the websocket ({exc.status_code})",
                                    hint=CREDENTIALS_HINT) from None
            raise ServerUnreachable(f"{self.address.display} refused the websocket ({exc.status_code})",
                                    hint="is this a ComfyUI server (and the path of a reverse proxy right)?") from None
        except (OSError, websocket.WebSocketException) as exc:
            raise ServerUnreachable(f"cannot open the websocket of {self.address.display}: {exc}",
                                    hint="is ComfyUI running and is the URL right?") from None
        self.connected.set()
        self._thread = threading.Thread(target=self._run, name="comfy-ws", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._closed.set()
        ws = self._ws
        if ws is not None:
            try:
                ws.abort()
                ws.close(timeout=0.2)
            except Exception:  # noqa: BLE001 - closing a dead socket may fail in many ways
                pass
        if self._thread is not None:
            self._thread.join(timeout=2)

    def get(self, timeout: float | None) -> Event | None:
        try:
            return self.events.get(timeout=timeout)
        except queue.Empty:
            return None

    # ---------------------------------------------------------------------------------------------
    def _connect(self) -> websocket.WebSocket:
        headers = [f"{k}: {v}" for k, v in self.address.headers.items()]
        ws = websocket.create_connection(f"{self.address.ws}?clientId={self.client_id}", header=headers,
                                         timeout=self.connect_timeout, enable_multithread=True,
                                         skip_utf8_validation=True, sslopt=self.sslopt)
        ws.settimeout(self.ping_interval)
        ws.send(_NEGOTIATE)  # must be the first text message the server receives on this socket
        return ws

    def _run(self) -> None:
        while not self._closed.is_set():
            try:
                self._read()
            except Exception as exc:  # noqa: BLE001 - whatever ended the reading (a dropped connection, a
                # server breaking the protocol) is a disconnect: the follower recovers from the server's history
                if self._closed.is_set():
                    return
                self.connected.clear()
                self.events.put(Disconnected(reason=f"{type(exc).__name__}: {exc}"))
                if not self._reconnect():
                    return
                self.reconnects += 1
                self.connected.set()
                self.events.put(Reconnected())

    def _read(self) -> None:
        ws = self._ws
        if ws is None or ws.sock is None:
            raise ConnectionError("the websocket is closed")
        frames = FrameReader(ws.sock, ws)  # websocket-client connected and sends; frames are read here
        last_heard = time.monotonic()
        while not self._closed.is_set():
            try:
                opcode, data = frames.next()
            except TimeoutError:  # (a socket timeout: nothing arrived for ping_interval)
                if time.monotonic() - last_heard > self.dead_after:
                    raise ConnectionError(f"no answer for {self.dead_after:.0f} s") from None
                ws.ping()
                continue
            last_heard = time.monotonic()
            if opcode == TEXT:
                if not self.skip or text_kind(data) not in self.skip:
                    self.events.put(parse_text(data))
            elif opcode == BINARY:
                self.events.put(parse_binary(data))
            elif opcode == CLOSE:
                raise ConnectionError("the server closed the websocket")

    def _reconnect(self) -> bool:
        delay = 0.05
        while not self._closed.wait(delay):
            try:
                self._ws = self._connect()
                return True
            except (OSError, websocket.WebSocketException):
                delay = min(delay * 2, 5.0)
        return False
