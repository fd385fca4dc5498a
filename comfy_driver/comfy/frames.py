"""Reading websocket frames (RFC 6455) off a connected socket, in large reads.

websocket-client makes the connection (handshake, TLS, proxy, headers) and sends; reading is done
here because its reader costs several small socket reads and a dozen Python calls per frame, and a
ComfyUI server sends a dozen frames per prompt. This reader takes whatever the socket holds in one
read and cuts it into frames. It keeps websocket-client's rules: a ping is answered with a pong (and
returned, as a sign of life), a close is answered and returned, fragments are joined, and a frame
that breaks the protocol (reserved bits, unknown opcode, a long or fragmented control frame, a
continuation with nothing to continue) drops the connection. Text is not checked for UTF-8 here; the
JSON reader refuses what is not text.
"""

from __future__ import annotations

import contextlib
from typing import Protocol

TEXT, BINARY, CLOSE, PING, PONG = 0x1, 0x2, 0x8, 0x9, 0xA
_CONTINUATION = 0x0
_READ = 1 << 16  # bytes asked of the socket at a time (more when a frame needs more, up to _READ_MOST)
_READ_MOST = 1 << 22  # (recv allocates what it is asked for, whatever arrives)
MAX_FRAME = 1 << 28  # a frame announced larger drops the connection (ComfyUI's previews are a few MB)


class _Socket(Protocol):
    def recv(self, size: int, /) -> bytes: ...


class _Sender(Protocol):
    def pong(self, payload: bytes) -> None: ...

    def send_close(self) -> None: ...


class ProtocolError(ConnectionError):
    """The server broke the websocket protocol: the connection is dropped (and made again)."""


class FrameReader:
    """Frames of one connection. A socket timeout (TimeoutError) may interrupt `next` at any point and
    `next` be called again: what was read is kept."""

    def __init__(self, sock: _Socket, sender: _Sender) -> None:
        self._sock, self._sender = sock, sender
        self._buf = bytearray()
        self._pos = 0
        self._fragments: list[bytes] = []
        self._fragmented = 0  # the opcode of the message being joined from fragments

    def next(self) -> tuple[int, bytes]:
        """The next message (TEXT or BINARY, fragments joined) or control frame (CLOSE, PING, PONG)."""
        while True:
            head, payload = self._frame()
            fin, opcode = head & 0x80, head & 0x0F
            if head & 0x70:
                raise ProtocolError("the server set reserved bits of a websocket frame")
            if opcode >= CLOSE:
                if opcode not in (CLOSE, PING, PONG) or not fin or len(payload) > 125:
                    raise ProtocolError(f"the server sent a bad websocket control frame ({opcode:#x})")
                if opcode == PING:
                    self._sender.pong(payload)
                elif opcode == CLOSE:
                    with contextlib.suppress(Exception):  # the answer is a courtesy; the socket may be gone
                        self._sender.send_close()
                return opcode, payload
            if opcode == _CONTINUATION:
                if not self._fragmented:
                    raise ProtocolError("the server continued a websocket message it never started")
                self._fragments.append(payload)
                if fin:
                    opcode, self._fragmented = self._fragmented, 0
                    payload, self._fragments = b"".join(self._fragments), []
                    return opcode, payload
                continue
            if opcode not in (TEXT, BINARY) or self._fragmented:
                raise ProtocolError(f"the server sent an unexpected websocket frame ({opcode:#x})")
            if fin:
                return opcode, payload
            self._fragmented, self._fragments = opcode, [payload]

    def _frame(self) -> tuple[int, bytes]:
        """One frame's first byte and its (unmasked) payload, reading the socket only when needed."""
        buf = self._buf
        while True:
            pos = self._pos
            have = len(buf) - pos
            if have >= 2:
                second = buf[pos + 1]
                size = second & 0x7F
                start = pos + 2 + (2 if size == 126 else 8 if size == 127 else 0)
                masked = second & 0x80
                if masked:
                    start += 4
                if len(buf) >= start:
                    if size == 126:
                        size = int.from_bytes(buf[pos + 2:pos + 4], "big")
                    elif size == 127:
                        size = int.from_bytes(buf[pos + 2:pos + 10], "big")
                    if size > MAX_FRAME:
                        raise ProtocolError(f"the server announced a websocket frame of {size} bytes")
                    end = start + size
                    if len(buf) >= end:
                        head = buf[pos]
                        payload = bytes(buf[start:end])
                        if masked:  # (servers do not mask; one that does is still understood)
                            payload = _unmask(payload, bytes(buf[start - 4:start]))
                        self._pos = end
                        return head, payload
                    need = end - len(buf)
                else:
                    need = start - len(buf)
            else:
                need = 2 - have
            if pos:
                del buf[:pos]
                self._pos = 0
            chunk = self._sock.recv(min(max(_READ, need), _READ_MOST))
            if not chunk:
                raise ConnectionError("the server closed the connection")
            buf += chunk


def _unmask(payload: bytes, key: bytes) -> bytes:
    size = len(payload)
    mask = (key * (size // 4 + 1))[:size]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(mask, "big")).to_bytes(size, "big")
