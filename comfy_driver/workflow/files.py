"""Reading workflow files and telling their format apart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from comfy_driver import jsontext
from comfy_driver.comfy.catalog import Catalog
from comfy_driver.errors import BadInputFile, UserError


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
        return jsontext.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: no such workflow file") from None
    except OSError as exc:
        raise BadInputFile(f"{path}: cannot read workflow file ({exc.strerror or exc})") from None
    except ValueError as exc:
        raise BadInputFile(f"{path}: not valid JSON ({exc})") from None


def workflow_class_types(data: Any) -> set[str]:
    """The node types a workflow uses (inside subgraphs too; subgraph instances themselves excluded)."""
    kind = detect_format(data)
    if kind == "api":
        return {v["class_type"] for v in data.values()}
    if kind == "ui":
        subgraphs = (data.get("definitions") or {}).get("subgraphs") or []
        ids = {sg.get("id") for sg in subgraphs}
        nodes = list(data["nodes"]) + [n for sg in subgraphs for n in sg.get("nodes") or []]
        return {n["type"] for n in nodes if n.get("type") and n["type"] not in ids}
    return set()


def load_workflow(path: Path, catalog: Catalog) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(API graph, UI workflow or None) from a workflow file in either format."""
    data = load_json(path)
    kind = detect_format(data)
    if kind == "api":
        return data, None
    if kind == "ui":
        from comfy_driver.workflow.convert import ui_to_api  # the GUI's conversion: loaded for a GUI-saved file only
        try:
            return ui_to_api(data, catalog), data
        except UserError as exc:
            raise UserError(f"{path}: {exc.message}", hint=exc.hint) from None
    raise BadInputFile(f"{path}: not a ComfyUI workflow (neither the API format nor a GUI-saved workflow)",
                    hint="save it from ComfyUI with Workflow > Save, or Export (API)")
