"""How a server's node schemas differ from the ones a workflow was made against, and whether it matters.

The shipped workflows were saved against the catalogue comfy-drive ships (`baseline`). A server of
another release may have changed a node: an input gained (SaveVideo's `codec`), removed or renamed,
or retyped (SaveVideo's `format`, a combo that became a dynamic combo with nested inputs). Conversion
against the server's catalogue handles most of it (a new input gets the value the GUI would give it);
validation tells whether the result is accepted. `check_workflow` does both for one workflow.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from comfy_driver.comfy.catalog import Catalog
from comfy_driver.comfy.errors import describe_node, format_node_errors
from comfy_driver.errors import DriveError
from comfy_driver.workflow.template import FILE_TYPES, Param, load_template

SAMPLE_UPLOAD = {"image": "comfy_drive/" + "0" * 20 + ".png", "video": "comfy_drive/" + "0" * 20 + ".mp4"}


def _type_name(spec_type: Any) -> str:
    return "COMBO" if isinstance(spec_type, list) else str(spec_type)


def _schema(catalog: Catalog, class_type: str) -> dict[str, tuple[str, str]]:
    """Declared input -> (category, type name) of one node class."""
    out = {}
    for name, category in catalog.input_order(class_type):
        if category != "hidden":
            spec_type, _, _ = catalog.input_info(class_type, name)
            out[name] = (category, _type_name(spec_type))
    return out


@dataclass
class NodeDrift:
    node_id: str
    who: str  # 'node 29 "Save Video" (SaveVideo)'
    gained: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    retyped: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # the server's verdict on this node, if it fails

    def describe(self) -> str:
        parts = [f"gained {', '.join(self.gained)}" if self.gained else "",
                 f"lost {', '.join(self.lost)}" if self.lost else "",
                 ", ".join(self.retyped)]
        return f"{self.who}: schema changed on this server ({'; '.join(p for p in parts if p)})"

    def fix(self) -> str:
        if not self.errors:
            return "handled: converted against this server's catalogue as its GUI would (new inputs get their defaults)"
        if self.lost:
            return (f"the workflow sets {', '.join(self.lost)}, which this node no longer takes: open the workflow "
                    "in this server's GUI, check the node and save it")
        return "open the workflow in this server's GUI, set the inputs named above on this node and save it"


@dataclass
class WorkflowCheck:
    name: str
    errors: list[str]  # every validation error, one line each (node, input, message)
    drift: list[NodeDrift]
    failure: str | None = None  # the workflow could not even be converted or rendered

    @property
    def ok(self) -> bool:
        return self.failure is None and not self.errors


def sample_values(params: dict[str, Param]) -> dict[str, Any]:
    """A value for every parameter without a default: what a scene would give, for validating."""
    values: dict[str, Any] = {}
    for name, param in params.items():
        if param.default is not None:
            continue
        if param.type in FILE_TYPES:
            values[name] = SAMPLE_UPLOAD[param.type]
        elif param.type in ("int", "float"):
            values[name] = param.min if param.min is not None else 1
        elif param.type == "bool":
            values[name] = False
        else:
            values[name] = param.choices[0] if param.choices else "a test"
    return values


def check_workflow(name: str, workflows_dir: Path, server: Catalog, baseline: Catalog) -> WorkflowCheck:
    """Convert and render one workflow against the server's catalogue and validate it as preflight does."""
    try:
        template = load_template(name, workflows_dir, server)
        graph = template.render(sample_values(template.params))
    except DriveError as exc:
        return WorkflowCheck(name, [], [], failure=str(exc))
    result = server.validate(graph, file_exists=lambda kind, value: True, stricter=True)
    errors = format_node_errors(result.node_errors, graph) if result.node_errors else []
    if not result.ok and not errors and result.error:
        errors = [f"{result.error.get('message', '')} {result.error.get('details', '')}".strip()]
    drift = []
    for node_id, node in graph.items():
        class_type = node.get("class_type")
        if class_type not in server or class_type not in baseline:
            continue
        old, new = _schema(baseline, class_type), _schema(server, class_type)
        if old == new:
            continue
        who = describe_node(graph, node_id)
        entry = NodeDrift(node_id, who)
        entry.gained = [f"'{n}' ({new[n][0]})" for n in new if n not in old]
        entry.lost = [f"'{n}'" for n in old if n not in new and n in node.get("inputs", {})]
        entry.retyped = [f"'{n}' {' '.join(old[n])} -> {' '.join(new[n])}" for n in new if n in old and old[n] != new[n]]
        entry.errors = [line for line in errors if line.startswith(who)]
        if entry.gained or entry.lost or entry.retyped:
            drift.append(entry)
    return WorkflowCheck(name, errors, drift)
