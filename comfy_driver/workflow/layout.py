"""API graphs to GUI workflows (the current GUI's saved form) that open in ComfyUI with a readable layout.

Nodes are placed in columns by their distance from the graph's sources, links and widget values are
written the way the frontend saves them, so `ui_to_api` gives the same graph back.
"""

from __future__ import annotations

import uuid
from typing import Any

from comfy_driver.comfy.catalog import Catalog
from comfy_driver.errors import UserError
from comfy_driver.workflow.frontend import for_catalog, frontend
from comfy_driver.workflow.widgets import assign, from_inputs, widget_defs

COLUMN_WIDTH = 400
NODE_WIDTH = 340
ROW_GAP = 40


def _is_link(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[1], int)


def api_to_ui(graph: dict[str, Any], catalog: Catalog, *, name: str = "") -> dict[str, Any]:
    """A GUI workflow for an API graph whose node ids are whole numbers, in the serialized form the
    newest checked frontend saves (`app.graph.serialize()`: classic 0.4 layout, an input entry for
    every widget, `widgets_values` by position and `widgets_values_named` beside them).

    `name` seeds the workflow's id, so that writing the same graph twice gives the same file.
    """
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
        for input_name, value in graph[node_id]["inputs"].items():
            if _is_link(value):
                source, slot = str(value[0]), value[1]
                link_id = len(links) + 1
                out_type = catalog.output_types(graph[source]["class_type"])[slot]
                links.append([link_id, int(source), slot, int(node_id), None, out_type])
                out_links.setdefault((source, slot), []).append(link_id)
                in_link[(node_id, input_name)] = link_id
    link_by_id = {link[0]: link for link in links}
    column_y: dict[int, float] = {}
    nodes = []
    for order, node_id in enumerate(sorted(graph, key=lambda n: (depth[n], int(n)))):
        node = graph[node_id]
        class_type = node["class_type"]
        info = catalog.nodes[class_type]
        widgets = from_inputs(widget_defs(catalog, class_type, fe), node["inputs"], lambda v: not _is_link(v))
        widget_names = {w.name for w, _ in widgets}
        inputs: list[dict[str, Any]] = []
        for input_name, category in catalog.input_order(class_type):  # sockets first, as the GUI lists them
            if category == "hidden" or input_name in widget_names:
                continue
            input_type, _, _ = catalog.input_info(class_type, input_name)
            inputs.append(_slot(input_name, input_type, category == "optional", in_link.get((node_id, input_name))))
        listed = {entry["name"] for entry in inputs} | widget_names
        for input_name in node["inputs"]:  # sockets the definition grows (autogrow, nested dynamic inputs)
            grown = in_link.get((node_id, input_name))
            if grown is not None and input_name not in listed:
                inputs.append(_slot(input_name, link_by_id[grown][5], True, grown))
        for widget, _ in widgets:  # then one entry per widget (controls aside), so links can reach them
            if widget.sent or widget.type is not None:
                input_type = "COMBO" if isinstance(widget.type, list) else widget.type
                entry = _slot(widget.name, input_type, widget.optional, in_link.get((node_id, widget.name)))
                entry["widget"] = {"name": widget.name}
                entry["link"] = entry.pop("link")
                if widget.name == "upload":
                    entry["localized_name"] = "choose file to upload"
                inputs.append(entry)
        for index, entry in enumerate(inputs):
            if entry["link"] is not None:
                link_by_id[entry["link"]][4] = index
        outputs = [{"localized_name": output_name, "name": output_name, "type": out_type,
                    "links": out_links.get((node_id, i)) or None}
                   for i, (output_name, out_type) in enumerate(zip(info.get("output_name") or info["output"],
                                                                   info.get("output", [])))]
        height = 46 + 22 * max(len(inputs) - len(widgets), len(outputs)) + 24 * len(widgets)
        column = depth[node_id]
        y = column_y.get(column, 0.0)
        column_y[column] = y + height + ROW_GAP
        ui_node: dict[str, Any] = {
            "id": int(node_id), "type": class_type, "pos": [column * COLUMN_WIDTH, y], "size": [NODE_WIDTH, height],
            "flags": {}, "order": order, "mode": 0, "inputs": inputs, "outputs": outputs}
        title = (node.get("_meta") or {}).get("title")
        if title:
            ui_node["title"] = title
        ui_node["properties"] = {"Node name for S&R": class_type}
        if any("formats" in w.options for w, _ in widgets):  # VideoHelperSuite saves its widgets by name
            ui_node["widgets_values"] = {w.name: value for w, value in widgets if w.sent} | {
                k: v for k, v in node["inputs"].items() if k not in widget_names and not _is_link(v)}
        elif widgets:
            ui_node["widgets_values"] = [value for _, value in widgets]
            ui_node["widgets_values_named"] = {w.name: value for w, value in widgets}
        nodes.append(ui_node)
    return {"id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"comfy-drive:{name}")), "revision": 0,
            "last_node_id": max((int(n) for n in graph), default=0), "last_link_id": len(links), "nodes": nodes,
            "links": links, "groups": [], "config": {}, "extra": {"frontendVersion": fe.label}, "version": 0.4}


def _slot(name: str, input_type: Any, optional: bool, link: int | None) -> dict[str, Any]:
    entry: dict[str, Any] = {"localized_name": name, "name": name}
    if optional:
        entry["shape"] = 7
    entry["type"] = input_type
    entry["link"] = link
    return entry


def with_values(workflow: dict[str, Any], graph: dict[str, Any], catalog: Catalog) -> dict[str, Any]:
    """A GUI workflow whose top-level widgets hold the values of a rendered graph.

    Embedded in the outputs, it opens in the GUI showing what this scene really ran with. It is made
    for sending: the nodes and the values it changes are its own, the rest (links, groups, positions)
    is shared with `workflow` rather than copied for every scene; neither is changed afterwards.
    """
    fe = for_catalog(catalog)
    nodes = []
    for node in workflow.get("nodes") or []:
        api = graph.get(str(node.get("id")))
        values = node.get("widgets_values")
        if api is None or not isinstance(values, list) or api.get("class_type") != node.get("type"):
            nodes.append(node)
            continue
        node = {**node, "widgets_values": list(values)}
        values = node["widgets_values"]
        if isinstance(node.get("widgets_values_named"), dict):
            node["widgets_values_named"] = dict(node["widgets_values_named"])
        widgets = assign(widget_defs(catalog, node["type"], fe), values)
        for i, (widget, _) in enumerate(widgets):
            value = api["inputs"].get(widget.name)
            if widget.sent and i < len(values) and value is not None and not _is_link(value):
                values[i] = value
                if isinstance(node.get("widgets_values_named"), dict):
                    node["widgets_values_named"][widget.name] = value
        nodes.append(node)
    return {**workflow, "nodes": nodes} if "nodes" in workflow else dict(workflow)
