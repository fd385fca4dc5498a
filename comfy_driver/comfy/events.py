"""Typed websocket events of a ComfyUI server, text and binary, parsed at the edge with pydantic."""

from __future__ import annotations

import re
import struct
from typing import Any, Literal, Union, cast

from pydantic import BaseModel, ConfigDict, Field

from comfy_driver import jsontext


class _Event(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True, defer_build=True)

    @property
    def prompt_id(self) -> str | None:  # overridden by events that carry one
        return None


class _PromptEvent(_Event):
    prompt_id_: str | None = Field(default=None, alias="prompt_id")

    @property
    def prompt_id(self) -> str | None:
        return self.prompt_id_


class Status(_Event):
    type: Literal["status"] = "status"
    queue_remaining: int | None = None
    sid: str | None = None


class ExecutionStart(_PromptEvent):
    type: Literal["execution_start"] = "execution_start"
    timestamp: int | None = None


class ExecutionCached(_PromptEvent):
    type: Literal["execution_cached"] = "execution_cached"
    nodes: list[str] = []
    timestamp: int | None = None


class Executing(_PromptEvent):
    """`node` None means the prompt is finished and its history entry is stored."""

    type: Literal["executing"] = "executing"
    node: str | None = None
    display_node: str | None = None


class Progress(_PromptEvent):
    type: Literal["progress"] = "progress"
    value: int | float = 0
    max: int | float = 0
    node: str | None = None


class ProgressState(_PromptEvent):
    type: Literal["progress_state"] = "progress_state"
    nodes: dict[str, dict[str, Any]] = {}


class Executed(_PromptEvent):
    type: Literal["executed"] = "executed"
    node: str
    display_node: str | None = None
    output: dict[str, Any] | None = None


class ExecutionSuccess(_PromptEvent):
    type: Literal["execution_success"] = "execution_success"
    timestamp: int | None = None


class ExecutionError(_PromptEvent):
    type: Literal["execution_error"] = "execution_error"
    node_id: str | None = None
    node_type: str | None = None
    exception_message: str = ""
    exception_type: str = ""
    executed: list[str] = []
    timestamp: int | None = None


class ExecutionInterrupted(_PromptEvent):
    type: Literal["execution_interrupted"] = "execution_interrupted"
    node_id: str | None = None
    node_type: str | None = None
    executed: list[str] = []
    timestamp: int | None = None


class FeatureFlags(_Event):
    """The server's answer to the client's feature negotiation: what it supports."""

    type: Literal["feature_flags"] = "feature_flags"
    flags: dict[str, Any] = {}


class Unknown(_Event):
    """A message type this driver does not know (custom node packs send their own)."""

    type: str
    data: Any = None


class PreviewImage(_Event):
    """Binary type 1 (JPEG/PNG preview) or 4 (preview with JSON metadata)."""

    type: Literal["preview"] = "preview"
    image_format: str
    image: bytes
    metadata: dict[str, Any] = {}

    @property
    def prompt_id(self) -> str | None:
        value = self.metadata.get("prompt_id")
        return str(value) if value is not None else None


class BinaryText(_Event):
    """Binary type 3: a node's text, prefixed by its node id."""

    type: Literal["text"] = "text"
    node_id: str
    text: str


class Disconnected(_Event):
    """Synthetic: the websocket dropped (and is being reconnected)."""

    type: Literal["disconnected"] = "disconnected"
    reason: str = ""


class Reconnected(_Event):
    """Synthetic: the websocket is back; events sent in between are lost and must be recovered."""

    type: Literal["reconnected"] = "reconnected"


Event = Union[Status, ExecutionStart, ExecutionCached, Executing, Progress, ProgressState, Executed,
              ExecutionSuccess, ExecutionError, ExecutionInterrupted, PreviewImage, BinaryText, FeatureFlags,
              Unknown, Disconnected, Reconnected]

_TEXT_TYPES: dict[str, type[_Event]] = {cls.model_fields["type"].default: cls for cls in (
    ExecutionStart, ExecutionCached, Executing, Progress, ProgressState, Executed, ExecutionSuccess,
    ExecutionError, ExecutionInterrupted)}

_IMAGE_FORMATS = {1: "jpeg", 2: "png"}


_KIND = re.compile(rb'\{\s*"type"\s*:\s*"([a-z_]+)"')


def text_kind(raw: str | bytes) -> str | None:
    """The type of a text frame, read from its first bytes without parsing it (servers write "type"
    first); None when it does not start so (then only parsing it tells)."""
    found = _KIND.match(raw[:64].encode() if isinstance(raw, str) else raw[:64])
    return found.group(1).decode() if found else None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def parse_text(raw: str | bytes) -> Event:
    """One text frame `{"type", "data"}` -> a typed event (Unknown for anything unrecognised)."""
    try:
        msg = jsontext.loads(raw, finite=False)
    except ValueError:  # (not JSON, or not text: a server's bug is an unknown message, not a dead reader)
        return Unknown(type="invalid", data=None)
    kind = msg.get("type") if isinstance(msg, dict) else None
    data = msg.get("data") if isinstance(msg, dict) else None
    if not isinstance(kind, str):
        return Unknown(type="invalid", data=msg)
    if kind == "status":
        status = _dict(_dict(data).get("status"))
        exec_info = _dict(status.get("exec_info"))
        queue_remaining = exec_info.get("queue_remaining")
        sid = _dict(data).get("sid")
        return Status(queue_remaining=queue_remaining if isinstance(queue_remaining, int) else None,
                      sid=sid if isinstance(sid, str) else None)
    if kind == "feature_flags" and isinstance(data, dict):
        return FeatureFlags(flags=data)
    cls = _TEXT_TYPES.get(kind)
    if cls is None or not isinstance(data, dict):
        return Unknown(type=kind, data=data)
    if cls is ProgressState:  # the largest and most frequent message; its node map is passed on as is
        return ProgressState.model_construct(prompt_id_=data.get("prompt_id"), nodes=data.get("nodes") or {})
    try:
        return cast(Event, cls.model_validate(data))
    except ValueError:
        return Unknown(type=kind, data=data)


def parse_binary(raw: bytes) -> Event:
    """A binary frame: 4-byte big-endian event type, then its payload."""
    if len(raw) < 4:
        return Unknown(type="binary", data=raw)
    (kind,) = struct.unpack(">I", raw[:4])
    body = raw[4:]
    if kind == 1 and len(body) >= 4:
        (fmt,) = struct.unpack(">I", body[:4])
        return PreviewImage(image_format=_IMAGE_FORMATS.get(fmt, str(fmt)), image=body[4:])
    if kind == 3 and len(body) >= 4:
        (n,) = struct.unpack(">I", body[:4])
        return BinaryText(node_id=body[4:4 + n].decode("utf-8", "replace"),
                          text=body[4 + n:].decode("utf-8", "replace"))
    if kind == 4 and len(body) >= 4:
        (n,) = struct.unpack(">I", body[:4])
        try:
            meta = jsontext.loads(body[4:4 + n], finite=False)
        except ValueError:
            meta = {}
        meta = _dict(meta)
        image_type = str(meta.get("image_type", "")).split("/")[-1] or "unknown"
        return PreviewImage(image_format=image_type, image=body[4 + n:], metadata=meta)
    return Unknown(type=f"binary:{kind}", data=body)
