"""Load-time migration of promoted PrimitiveNode widgets (frontend 1.49), applied to subgraph definitions.

A subgraph instance saved by an older GUI lists the inner widgets it shows in
`properties.proxyWidgets`. When one of them is a legacy PrimitiveNode's value, the 1.49 GUI replaces
the primitive by a new subgraph input when it opens the workflow: it checks that every node the
primitive feeds has an input of the primitive's type at the saved slot number, disconnects what is
at that slot, and connects the new input there instead. The slot number is read against the node's
inputs as they are at that moment: for a node without dynamic inputs, the full list the GUI builds
(sockets, then one input per widget), for one with dynamic inputs, the list as saved. So a stale slot
number can reconnect another input than the one the primitive fed; the GUI's graph shows it, and so
does the conversion. The new input's value is that of the first widget it feeds.
"""

from __future__ import annotations

import json
from typing import Any

from comfy_driver.comfy.catalog import Catalog
from comfy_driver.workflow.frontend import Frontend
from comfy_driver.workflow.graph import SUBGRAPH_INPUT_ID
from comfy_driver.workflow.widgets import DYNAMIC_COMBO, fresh, widget_defs

GROWING = (DYNAMIC_COMBO, "COMFY_AUTOGROW_V3")


def _slots_now(node: dict[str, Any], catalog: Catalog, fe: Frontend) -> list[tuple[str, Any]]:
    """(name, type) of a node's inputs as the GUI holds them while it migrates."""
    class_type = str(node.get("type"))
    saved = [(str(e.get("name")), e.get("type")) for e in node.get("inputs") or []]
    if class_type not in catalog:
        return saved
    specs = catalog.nodes[class_type].get("input", {})
    if any(isinstance(spec, list) and spec and spec[0] in GROWING
           for category in ("required", "optional") for spec in (specs.get(category) or {}).values()):
        return saved
    widgets = fresh(widget_defs(catalog, class_type, fe))
    names = {w.name for w, _ in widgets}
    slots = []
    for name, category in catalog.input_order(class_type):
        if category != "hidden" and name not in names:
            slots.append((name, catalog.input_info(class_type, name)[0]))
    slots += [(w.name, "COMBO" if isinstance(w.type, list) else w.type) for w, _ in widgets
              if w.sent or w.type is not None]
    return slots


def _link_fields(link: Any) -> tuple[int, int, int, int, int]:
    if isinstance(link, dict):
        return link["id"], link["origin_id"], link["origin_slot"], link["target_id"], link["target_slot"]
    return link[0], link[1], link[2], link[3], link[4]


def bypass_proxied_primitives(instances: list[dict[str, Any]], definitions: dict[str, dict[str, Any]],
                              catalog: Catalog, fe: Frontend) -> dict[str, dict[str, Any]]:
    """The definitions after the GUI's migration of the primitives the instances promote."""
    for instance in instances:
        proxied = (instance.get("properties") or {}).get("proxyWidgets")
        if isinstance(proxied, str):  # some releases stored it as JSON text
            try:
                proxied = json.loads(proxied)
            except ValueError:
                continue
        if instance.get("type") not in definitions or not isinstance(proxied, list):
            continue
        definition = definitions[instance["type"]]
        done: set[str] = set()
        for entry in proxied:
            if not isinstance(entry, list) or len(entry) < 2 or str(entry[0]) in done:
                continue
            done.add(str(entry[0]))
            migrated = _bypass(definition, str(entry[0]), str(entry[1]), catalog, fe)
            if migrated is not None:
                definition = definitions[instance["type"]] = migrated
    return definitions


def _bypass(definition: dict[str, Any], source_id: str, widget_name: str, catalog: Catalog,
            fe: Frontend) -> dict[str, Any] | None:
    nodes = {str(n.get("id")): n for n in definition.get("nodes") or []}
    primitive = nodes.get(source_id)
    if primitive is None or primitive.get("type") != "PrimitiveNode" or not primitive.get("outputs"):
        return None
    output = primitive["outputs"][0]
    links = {_link_fields(link)[0]: link for link in definition.get("links") or []}
    targets = [_link_fields(links[i])[3:] for i in output.get("links") or [] if i in links]
    out_type = str(output.get("type") or "*")
    reconnect: list[tuple[str, str]] = []
    for target_id, target_slot in targets:
        node = nodes.get(str(target_id))
        slots = _slots_now(node, catalog, fe) if node is not None else []
        if target_slot >= len(slots):
            return None
        slot_type = str(slots[target_slot][1] or "*")
        if slot_type != out_type and "*" not in (slot_type, out_type):
            return None  # the GUI rolls the migration back
        reconnect.append((str(target_id), slots[target_slot][0]))
    if not reconnect:
        return None
    title = primitive.get("title")
    base = title if title and title != "PrimitiveNode" else widget_name
    taken = {i.get("name") for i in definition.get("inputs") or []}
    name, n = base, 1
    while name in taken:
        name, n = f"{base}_{n}", n + 1
    slot = len(definition.get("inputs") or [])
    new_nodes = {key: {**node, "inputs": [dict(e) for e in node.get("inputs") or []]} for key, node in nodes.items()}
    new_links = list(definition.get("links") or [])
    next_id = max([_link_fields(link)[0] for link in new_links] + [0]) + 1
    link_ids = []
    for target_key, input_name in reconnect:
        node = new_nodes[target_key]
        entry = next((e for e in node["inputs"] if e.get("name") == input_name), None)
        if entry is None:
            entry = {"name": input_name, "type": out_type, "widget": {"name": input_name}, "link": None}
            node["inputs"].append(entry)
        if entry.get("link") is not None:  # what was connected there is disconnected
            new_links = [link for link in new_links if _link_fields(link)[0] != entry["link"]]
        entry["link"] = next_id
        new_links.append([next_id, SUBGRAPH_INPUT_ID, slot, int(target_key), node["inputs"].index(entry), out_type])
        link_ids.append(next_id)
        next_id += 1
    inputs = [*(definition.get("inputs") or []), {"name": name, "type": out_type, "linkIds": link_ids}]
    return {**definition, "nodes": list(new_nodes.values()), "links": new_links, "inputs": inputs}
