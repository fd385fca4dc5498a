"""API graphs to GUI workflows (classic 0.4 format) that open in ComfyUI with a readable layout.

Nodes are placed in columns by their distance from the graph's sources, links and widget values are
written the way the frontend saves them, so `ui_to_api` gives the same graph back.
"""

from __future__ import annotations

import copy
from typing import Any

from comfy_driver.comfy.catalog import Catalog
from comfy_driver.errors import UserError
from comfy_driver.workflow.frontend import frontend
from comfy_driver.workflow.widgets import assign, from_inputs, widget_defs

COLUMN_WIDTH = 400
NODE_WIDTH = 340
ROW_GAP = 40


def _is_link(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[1], int)


def api_to_ui(graph: dict[str, Any], catalog: Catalog) -> dict[str, Any]:
    """A classic-format GUI workflow for an API graph whose node ids are whole numbers."""
    fe = frontend()
    for node_id, node in graph.items():
        if not str(node_id).isdigit():
            raise UserError(f"node id {node_id!r}: a GUI workflow needs whole-number node ids")
        if node["class_type"] not in catalog:
            raise UserError(f"node {node_id}: {node['class_type']} is not in the node catalogue")
    depth: dict[str, int] = {}

    def depth_of(node_id: str, seen: tuple[str, ...] = ()) -> int:
        if node_id not in depth:
            sources = [str(v[0]) for v in graph[node_id]["inputs"].values() if _is_link(v) and str(v[0]) in graph
                       and str(v[0]) not in seen]
            depth[node_id] = 1 + max((depth_of(s, (*seen, node_id)) for s in sources), default=-1)
        return depth[node_id]

    for node_id in graph:
        depth_of(node_id)
    links: list[list[Any]] = []
    out_links: dict[tuple[str, int], list[int]] = {}
    in_link: dict[tuple[str, str], int] = {}
    for node_id in sorted(graph, key=int):
        for name, value in graph[node_id]["inputs"].items():
            if _is_link(value):
                source, slot = str(value[0]), value[1]
                link_id = len(links) + 1
                out_type = catalog.output_types(graph[source]["class_type"])[slot]
                links.append([link_id, int(source), slot, int(node_id), None, out_type])
                out_links.setdefault((source, slot), []).append(link_id)
                in_link[(node_id, name)] = link_id
    link_by_id = {link[0]: link for link in links}
    column_y: dict[int, float] = {}
    nodes = []
    for order, node_id in enumerate(sorted(graph, key=lambda n: (depth[n], int(n)))):
        node = graph[node_id]
        class_type = node["class_type"]
        info = catalog.nodes[class_type]
        inputs: list[dict[str, Any]] = []
        widgets = from_inputs(widget_defs(catalog, class_type, fe), node["inputs"], lambda v: not _is_link(v))
        widget_names = {w.name for w, _ in widgets}
        for name, category in catalog.input_order(class_type):
            if category == "hidden":
                continue
            input_type, _, _ = catalog.input_info(class_type, name)
            linked = in_link.get((node_id, name))
            if name in widget_names:
                if linked is None:
                    continue
                entry = {"name": name, "type": "COMBO" if isinstance(input_type, list) else input_type,
                         "widget": {"name": name}, "link": linked}
            else:
                entry = {"name": name, "type": input_type, "link": linked}
                if category == "optional":
                    entry["shape"] = 7
            if linked is not None:
                link_by_id[linked][4] = len(inputs)
            inputs.append(entry)
        outputs = [{"name": (info.get("output_name") or info["output"])[i], "type": out_type,
                    "links": out_links.get((node_id, i), []), "slot_index": i}
                   for i, out_type in enumerate(info.get("output", []))]
        values = [value for _, value in widgets]
        height = 46 + 22 * max(len(inputs), len(outputs)) + 24 * len(values)
        column = depth[node_id]
        y = column_y.get(column, 0.0)
        column_y[column] = y + height + ROW_GAP
        ui_node: dict[str, Any] = {
            "id": int(node_id), "type": class_type, "pos": [column * COLUMN_WIDTH, y], "size": [NODE_WIDTH, height],
            "flags": {}, "order": order, "mode": 0, "inputs": inputs, "outputs": outputs,
            "properties": {"Node name for S&R": class_type}, "widgets_values": values}
        title = (node.get("_meta") or {}).get("title")
        if title:
            ui_node["title"] = title
        nodes.append(ui_node)
    return {"last_node_id": max((int(n) for n in graph), default=0), "last_link_id": len(links), "nodes": nodes,
            "links": links, "groups": [], "config": {}, "extra": {}, "version": 0.4}


def with_values(workflow: dict[str, Any], graph: dict[str, Any], catalog: Catalog) -> dict[str, Any]:
    """A copy of a GUI workflow whose top-level widgets hold the values of a rendered graph.

    Embedded in the outputs, it opens in the GUI showing what this scene really ran with.
    """
    out = copy.deepcopy(workflow)
    fe = frontend()
    for node in out.get("nodes") or []:
        api = graph.get(str(node.get("id")))
        values = node.get("widgets_values")
        if api is None or not isinstance(values, list) or api.get("class_type") != node.get("type"):
            continue
        widgets = assign(widget_defs(catalog, node["type"], fe), values)
        for i, (widget, _) in enumerate(widgets):
            value = api["inputs"].get(widget.name)
            if widget.sent and i < len(values) and value is not None and not _is_link(value):
                values[i] = value
    return out
