"""What changed between the node definitions a workflow was saved with and the server's, in words.

The GUI maps saved widget values onto the current widgets by position and says nothing when a node
gained, lost or renamed an input. The conversion reproduces that faithfully; these notes tell the
person what it meant: inputs filled with defaults, values left over or landing in another widget
(seen through `widgets_values_named`, which frontend 1.49 saves), links into inputs that are gone.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from comfy_driver.comfy.catalog import Catalog
from comfy_driver.workflow.frontend import Frontend
from comfy_driver.workflow.graph import subgraph_definitions
from comfy_driver.workflow.widgets import assign, widget_defs


def _nodes(workflow: Mapping[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for node in workflow.get("nodes") or []:
        yield "", node
    for definition in subgraph_definitions(workflow):
        for node in definition.get("nodes") or []:
            yield f" in subgraph {definition.get('name') or definition.get('id')!r}", node


def _input_names(catalog: Catalog, class_type: str) -> set[str]:
    return {name for name, _ in catalog.input_order(class_type)}


def _known_input(name: str, names: set[str]) -> bool:
    """An input of the definition, a nested input of one of its dynamic inputs, or one more of a
    numbered series the node grows (image_3 beside image_1)."""
    if name in names or name.split(".", 1)[0] in names:
        return True
    stem = re.sub(r"\d+$", "", name)
    return stem != name and any(re.sub(r"\d+$", "", n) == stem for n in names)


def drift_notes(workflow: Mapping[str, Any], catalog: Catalog, fe: Frontend) -> list[str]:
    """One line per node whose saved inputs do not fit the server's definition of its type."""
    notes = []
    for where, node in _nodes(workflow):
        class_type = str(node.get("type"))
        if class_type not in catalog:
            continue
        title = f" {node['title']!r}" if node.get("title") else ""
        label = f"node {node.get('id')}{title} ({class_type}){where}"
        names = _input_names(catalog, class_type)
        for entry in node.get("inputs") or []:
            if entry.get("link") is not None and not _known_input(str(entry.get("name")), names):
                notes.append(f"{label}: input {entry.get('name')!r} is not an input of {class_type} on this "
                             "server (removed or renamed); check what its link feeds now")
        raw = node.get("widgets_values")
        if not isinstance(raw, list):
            continue
        widgets = assign(widget_defs(catalog, class_type, fe), raw)
        if len(raw) > len(widgets):
            notes.append(f"{label}: {len(raw) - len(widgets)} saved value(s) more than its widgets, ignored: "
                         f"{raw[len(widgets):]!r}")
        added = [w.name for w, _ in widgets[len(raw):] if w.sent and not w.display]
        if added:
            notes.append(f"{label}: no saved value for {', '.join(added)}; the default is used (inputs the "
                         "node gained since the workflow was saved)")
        saved_names = list((node.get("widgets_values_named") or {}).keys())
        for index, (widget, _) in enumerate(widgets[:min(len(raw), len(saved_names))]):
            if widget.sent and saved_names[index] != widget.name:
                notes.append(f"{label}: the value saved as {saved_names[index]!r} lands in {widget.name!r} "
                             "(its widgets changed; the GUI assigns saved values by position): re-save the "
                             "workflow from this server's GUI after checking the node")
                break
    return notes
