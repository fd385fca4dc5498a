"""Reading workflow files and telling their format apart."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from comfy_driver.errors import UserError


def detect_format(data: Any) -> str:
    """'api' (node id -> {class_type, inputs}), 'ui' (the GUI's saved format) or 'unknown'."""
    if isinstance(data, dict):
        if isinstance(data.get("nodes"), list) and "links" in data:
            return "ui"
        if data and all(isinstance(v, dict) and "class_type" in v for v in data.values()):
            return "api"
    return "unknown"


def load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: no such workflow file") from None
    except ValueError as exc:
        raise UserError(f"{path}: not valid JSON ({exc})") from None


def load_api_graph(path: Path) -> dict[str, Any]:
    """An API-format graph from a file; any other format is a clear error."""
    data = load_json(path)
    kind = detect_format(data)
    if kind == "api":
        return data
    if kind == "ui":
        raise UserError(f"{path}: this is a GUI-saved (UI format) workflow; templates take the API format",
                        hint='in ComfyUI use "Export (API)" to save the workflow in API format')
    raise UserError(f"{path}: not a ComfyUI workflow (neither API nor UI format)")


def workflow_class_types(data: Any) -> set[str]:
    kind = detect_format(data)
    if kind == "api":
        return {v["class_type"] for v in data.values()}
    if kind == "ui":
        return {n.get("type") for n in data["nodes"] if n.get("type")}
    return set()
