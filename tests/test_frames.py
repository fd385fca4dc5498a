"""Websocket frames read off a real socket: sizes, fragments, control frames, masks, timeouts, errors."""

from __future__ import annotations

import os
import socket
import struct
import threading
from collections.abc import Iterator

import pytest

from comfy_driver.comfy.frames import BINARY, CLOSE, PING, PONG, TEXT, FrameReader, ProtocolError


def frame(opcode: int, payload: bytes, *, fin: bool = True, mask: bytes | None = None, rsv: int = 0) -> bytes:
    head = bytes([(0x80 if fin else 0) | rsv | opcode])
    size = len(payload)
    flag = 0x80 if mask else 0
    if size < 126:
        head += bytes([flag | size])
    elif size < 1 << 16:
        head += bytes([flag | 126]) + struct.pack(">H", size)
    else:
        head += bytes([flag | 127]) + struct.pack(">Q", size)
    if mask:
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        head += mask
    return head + payload


class Sender:
    def __init__(self) -> None:
        self.pongs: list[bytes] = []
        self.closes = 0

    def pong(self, payload: bytes) -> None:
        self.pongs.append(payload)

    def send_close(self) -> None:
        self.closes += 1


def send(sock: socket.socket, data: bytes) -> None:
    """Send from another thread (a socket pair holds little: the reader must read while it is sent)."""
    threading.Thread(target=sock.sendall, args=(data,), daemon=True).start()


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    server, client = socket.socketpair()
    client.settimeout(2)
    yield server, client
    server.close()
    client.close()


def test_every_size_and_both_kinds_in_one_read(pair: tuple[socket.socket, socket.socket]) -> None:
    server, client = pair
    payloads = [(TEXT, b'{"type": "status"}'), (BINARY, os.urandom(125)), (BINARY, os.urandom(126)),
                (TEXT, b"x" * 65535), (BINARY, os.urandom(65536)), (BINARY, os.urandom(300_000)), (TEXT, b"")]
    send(server, b"".join(frame(op, data) for op, data in payloads))
    reader = FrameReader(client, Sender())
    assert [reader.next() for _ in payloads] == payloads


def test_frames_split_anywhere_are_joined(pair: tuple[socket.socket, socket.socket]) -> None:
    server, client = pair
    data = frame(TEXT, b"a" * 200) + frame(BINARY, b"b" * 70_000) + frame(TEXT, b"c")
    reader = FrameReader(client, Sender())
    got = []
    cuts = list(range(0, 300, 7)) + list(range(300, len(data), 4093))  # every cut of a header, a long payload
    for n, (start, end) in enumerate(zip(cuts, cuts[1:] + [len(data)])):
        server.sendall(data[start:end])
        if n % 3 == 0:
            client.settimeout(0.001)
            try:
                got.append(reader.next())
            except TimeoutError:  # not all there yet: what was read is kept for the next call
                pass
    client.settimeout(2)
    while len(got) < 3:
        got.append(reader.next())
    assert got == [(TEXT, b"a" * 200), (BINARY, b"b" * 70_000), (TEXT, b"c")]


def test_fragments_control_frames_between_them_and_masks(pair: tuple[socket.socket, socket.socket]) -> None:
    server, client = pair
    sender = Sender()
    server.sendall(frame(TEXT, b'{"ty', fin=False) + frame(PING, b"are you there") + frame(0, b'pe": ', fin=False)
                   + frame(0, b'"x"}', mask=b"\x01\x02\x03\x04") + frame(PONG, b"") + frame(CLOSE, b"\x03\xe8"))
    reader = FrameReader(client, sender)
    assert reader.next() == (PING, b"are you there")
    assert sender.pongs == [b"are you there"]
    assert reader.next() == (TEXT, b'{"type": "x"}')
    assert reader.next() == (PONG, b"")
    assert reader.next() == (CLOSE, b"\x03\xe8") and sender.closes == 1


@pytest.mark.parametrize("data", [
    frame(TEXT, b"x", rsv=0x40),  # compressed (never negotiated)
    frame(0x3, b"x"),  # a reserved opcode
    frame(PING, b"x" * 126),  # a control frame too long
    frame(PING, b"x", fin=False),  # a fragmented control frame
    frame(0, b"x"),  # a continuation of nothing
    frame(TEXT, b"x", fin=False) + frame(BINARY, b"y"),  # a new message inside a fragmented one
])
def test_a_broken_protocol_drops_the_connection(pair: tuple[socket.socket, socket.socket], data: bytes) -> None:
    server, client = pair
    send(server, data)
    with pytest.raises(ProtocolError):
        FrameReader(client, Sender()).next()


def test_a_closed_connection_is_a_connection_error(pair: tuple[socket.socket, socket.socket]) -> None:
    server, client = pair
    server.sendall(frame(TEXT, b"whole") + frame(TEXT, b"cut off")[:5])
    server.close()
    reader = FrameReader(client, Sender())
    assert reader.next() == (TEXT, b"whole")
    with pytest.raises(ConnectionError, match="closed the connection"):
        reader.next()


@pytest.mark.parametrize("size", [2**64 - 1, 2**63 - 1, 1 << 40])
def test_a_huge_declared_length_drops_the_connection(pair: tuple[socket.socket, socket.socket], size: int) -> None:
    server, client = pair
    send(server, bytes([0x82, 127]) + struct.pack(">Q", size) + b"x")
    with pytest.raises(ProtocolError):  # not OverflowError / MemoryError, which would end the reader thread
        FrameReader(client, Sender()).next()


@pytest.mark.parametrize("raw", [b"not json", b"\xff\xfe", b"[1, 2]", b'{"type": 5}', b'{"type": "status", "data": [1]}',
                                 b'{"type": "status", "data": {"status": {"exec_info": {"queue_remaining": "x"}}}}',
                                 b'{"type": "executing", "data": "x"}', b'{"type": "progress", "data": {"value": "a"}}'])
def test_any_text_a_server_sends_is_an_event(raw: bytes) -> None:
    """A server's malformed message is an unknown (or emptier) event; parsing never raises, so the
    reader thread never dies of it."""
    from comfy_driver.comfy.events import Event, parse_binary, parse_text

    assert isinstance(parse_text(raw), Event.__args__)  # type: ignore[attr-defined]
    assert isinstance(parse_binary(struct.pack(">II", 4, len(raw)) + raw + b"img"), Event.__args__)  # type: ignore[attr-defined]
