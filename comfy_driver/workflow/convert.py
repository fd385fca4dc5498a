"""GUI-saved workflows (UI format) to the API format, as the ComfyUI frontend's graphToPrompt does.

The rules, from how the frontend builds its prompt (what differs by frontend version is in
`frontend.py`, the widget layout in `widgets.py`):
- every node of the graph, subgraph instances flattened into their inner nodes with ids
  "outer:inner" (nested too), becomes one API node, except virtual nodes (notes, reroutes,
  primitives, Set/Get helpers, subgraph instances themselves) and muted (mode 2) or bypassed (mode 4)
  nodes;
- its saved widget values are assigned to the widgets the current node definition makes, by
  position; values the GUI stores but never sends (the seed's control_after_generate mode, upload
  buttons) are skipped, widgets the definition gained keep their defaults;
- each input with a link is resolved to the real node producing it: through reroutes, Set/Get
  pairs, bypassed nodes (to their first input of a matching type), into and out of subgraphs; a
  link that resolves to nothing keeps the widget value, a PrimitiveNode's value is pushed into its
  targets' widgets (snapped to their step and range);
- finally inputs that point at nodes which did not make it into the prompt are dropped.
A node type the catalogue lacks is an error naming every such type (and the pack its node
properties name), unless `missing="frontend"` asks for the frontend's own placeholder output.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from comfy_driver.comfy.catalog import Catalog
from comfy_driver.errors import UserError
from comfy_driver.workflow.drift import drift_notes
from comfy_driver.workflow.frontend import Frontend, Version, for_catalog, frontend
from comfy_driver.workflow.graph import (MODE_BYPASS, MODE_NEVER, SUBGRAPH_INPUT_ID, SUBGRAPH_OUTPUT_ID, Graph,
                                         Link, Node, dedupe_subgraph_ids, parse_graph, subgraph_definitions,
                                         valid_connection)
from comfy_driver.workflow.migrate import bypass_proxied_primitives
from comfy_driver.workflow.widgets import WidgetDef, named_values, placeholder_inputs, widget_defs

# Node types that exist only in the frontend (their JS registers them as virtual).
VIRTUAL_TYPES = {"Note", "MarkdownNote", "PrimitiveNode", "Reroute", "SetNode", "GetNode"}


class ConversionError(UserError):
    """The workflow cannot be turned into an API graph (unknown node types, broken links)."""


class _Converter:
    def __init__(self, workflow: Mapping[str, Any], catalog: Catalog, missing: str, fe: Frontend) -> None:
        self.catalog = catalog
        self.missing = missing
        self.fe = fe
        definitions = dedupe_subgraph_ids(workflow) if fe.has("subgraph_id_dedup") else subgraph_definitions(workflow)
        self.definitions = {sg["id"]: sg for sg in definitions}
        if fe.has("proxy_widget_migration"):
            instances = [*(workflow.get("nodes") or []), *(n for sg in definitions for n in sg.get("nodes") or [])]
            self.definitions = bypass_proxied_primitives(instances, self.definitions, catalog, fe)
        self.subgraph_graphs: dict[str, Graph] = {}
        self.root = parse_graph(workflow)
        self.nodes: dict[str, Node] = {}

    # --------------------------------------------------------------------------------------- nodes
    def sub_graph(self, sg_id: str) -> Graph:
        if sg_id not in self.subgraph_graphs:
            self.subgraph_graphs[sg_id] = parse_graph(self.definitions[sg_id], self.definitions[sg_id])
        return self.subgraph_graphs[sg_id]

    def flatten(self, graph: Graph, path: tuple[int, ...], container: Node | None) -> None:
        for node_id, data in graph.nodes.items():
            exec_id = ":".join(str(p) for p in (*path, node_id))
            node = Node(exec_id, data, graph, path, container, inputs=data.get("inputs") or [])
            self.nodes[exec_id] = node
            if node.type in self.definitions:
                node.inputs = self.instance_inputs(node)
                self.flatten(self.sub_graph(node.type), (*path, node_id), node)

    def is_subgraph(self, node: Node) -> bool:
        return node.type in self.definitions

    def is_virtual(self, node: Node) -> bool:
        return node.type in VIRTUAL_TYPES or self.is_subgraph(node)

    @staticmethod
    def runs(node: Node) -> bool:
        """Neither the node nor the root-level subgraph instance holding it is muted or bypassed.

        The frontend skips muted and bypassed nodes of the root graph, subgraph instances with all
        they hold; inside, it collects every nested instance's nodes and skips only those muted or
        bypassed themselves.
        """
        top = node
        while top.container is not None:
            top = top.container
        return node.mode not in (MODE_NEVER, MODE_BYPASS) and top.mode not in (MODE_NEVER, MODE_BYPASS)

    def node_at(self, graph: Graph, path: tuple[int, ...], node_id: int) -> Node | None:
        return self.nodes.get(":".join(str(p) for p in (*path, node_id)))

    # --------------------------------------------------------------------------------------- widgets
    def widget_def(self, node: Node, name: str) -> WidgetDef | None:
        """The definition of a node's widget by name (nested widgets of dynamic combos included)."""
        pending = list(widget_defs(self.catalog, node.type, self.fe))
        while pending:
            widget = pending.pop(0)
            if widget.name == name:
                return widget
            for nested in (widget.choices or {}).values():
                pending += nested
        return None

    # --------------------------------------------------------------------------------------- links
    def resolve_input(self, node: Node, slot: int, visited: set[str], type_: Any = None) -> tuple[str, Any] | None:
        """('link', [exec_id, slot]) or ('value', v) for an input, or None when nothing is connected."""
        key = f"{node.exec_id}[I]{slot}"
        if key in visited:
            raise ConversionError(f"circular link at node {node.exec_id} input {slot}")
        visited.add(key)
        if slot >= len(node.inputs):
            return None
        entry = node.inputs[slot]
        link_id = entry.get("link")
        if link_id is None:
            return None
        link = node.graph.links.get(int(link_id))
        if link is None:
            return None
        if node.container is not None and link.origin_id == SUBGRAPH_INPUT_ID:
            outer = node.container
            if link.origin_slot >= len(outer.inputs):
                return None
            outer_input = outer.inputs[link.origin_slot]
            if outer_input.get("link") is None:
                widget = (outer_input.get("widget") or {}).get("name")
                if widget is None or widget not in outer.widget_values:
                    return None
                return ("value", outer.widget_values[widget])
            return self.resolve_input(outer, link.origin_slot, visited)
        origin = self.node_at(node.graph, node.path, link.origin_id)
        if origin is None:
            return None
        return self.resolve_output(origin, link.origin_slot, type_ if type_ is not None else entry.get("type"),
                                   visited)

    def resolve_output(self, node: Node, slot: int, type_: Any, visited: set[str]) -> tuple[str, Any] | None:
        key = f"{node.exec_id}[O]{slot}"
        if key in visited:
            raise ConversionError(f"circular link at node {node.exec_id} output {slot}")
        visited.add(key)
        if node.mode == MODE_BYPASS:
            index = self.bypass_slot(node, slot, type_)
            return None if index == -1 else self.resolve_input(node, index, visited)
        if self.is_subgraph(node):
            return self.resolve_subgraph_output(node, slot, type_, visited)
        if node.type in VIRTUAL_TYPES:
            if slot < len(node.inputs):
                return self.resolve_input(node, slot, visited, type_)
            if node.type == "GetNode":
                setter = self.find_setter(node)
                if setter is not None and setter.inputs and setter.inputs[0].get("link") is not None:
                    link = node.graph.links.get(int(setter.inputs[0]["link"]))
                    if link is not None:
                        origin = self.node_at(node.graph, node.path, link.origin_id)
                        if origin is not None:
                            return self.resolve_output(origin, link.origin_slot, type_, visited)
            return None
        return ("link", [node.exec_id, slot])

    def bypass_slot(self, node: Node, slot: int, type_: Any) -> int:
        inputs = node.inputs
        if type_ in ("*", ""):
            return slot if len(inputs) > slot else 0
        out_type = node.outputs[slot].get("type") if slot < len(node.outputs) else None
        if slot < len(inputs):
            opposite = inputs[slot].get("type")
            if valid_connection(opposite, out_type) and valid_connection(opposite, type_):
                return slot
        for i, entry in enumerate(inputs):
            if entry.get("type") == type_:
                return i
        for i, entry in enumerate(inputs):
            if valid_connection(entry.get("type"), out_type) and valid_connection(entry.get("type"), type_):
                return i
        return -1

    def resolve_subgraph_output(self, node: Node, slot: int, type_: Any, visited: set[str]) -> tuple[str, Any] | None:
        inner = self.sub_graph(node.type)
        outputs = self.definitions[node.type].get("outputs") or []
        listed = (outputs[slot].get("linkIds") or []) if slot < len(outputs) else []
        # An output fed twice (a stale link left in the file) takes the link its definition lists first.
        candidates = [inner.links[i] for i in listed if i in inner.links] + list(inner.links.values())
        for link in candidates:
            if link.target_id == SUBGRAPH_OUTPUT_ID and link.target_slot == slot:
                origin = self.node_at(inner, (*node.path, int(node.data["id"])), link.origin_id)
                if origin is None:
                    return None
                return self.resolve_output(origin, link.origin_slot, type_, visited)
        return None

    def find_setter(self, getter: Node) -> Node | None:
        name = (getter.data.get("widgets_values") or [None])[0]
        for data in getter.graph.nodes.values():
            if data.get("type") == "SetNode" and (data.get("widgets_values") or [None])[0] == name:
                return self.node_at(getter.graph, getter.path, int(data["id"]))
        return None

    # --------------------------------------------------------------------------------------- primitives
    def apply_primitives(self) -> None:
        """PrimitiveNode.applyToGraph: its value goes into the widget of every node it feeds."""
        for node in list(self.nodes.values()):
            if node.type != "PrimitiveNode":
                continue
            values = node.data.get("widgets_values") or []
            if not values:
                continue
            for output in node.outputs:
                for link_id in output.get("links") or []:
                    link = node.graph.links.get(int(link_id))
                    if link is None:
                        continue
                    target = self.node_at(node.graph, node.path, link.target_id)
                    widget = _target_widget(target, link)
                    if target is not None and widget in target.widget_values:
                        target.widget_values[widget] = self.snap(target, widget, values[0])

    def snap(self, node: Node, name: str, value: Any) -> Any:
        """A number set through a widget lands on its step grid and inside its range, as in the GUI."""
        if node.type not in self.catalog or isinstance(value, bool) or not isinstance(value, (int, float)):
            return value
        widget = self.widget_def(node, name)
        if widget is None:
            return value
        input_type, options = widget.type, widget.options
        if input_type == "INT":
            step = options.get("step") or 1
            if step != 1:
                shift = (options.get("min") or 0) % step
                value = round((value - shift) / step) * step + shift
            value = int(round(value))
        elif input_type == "FLOAT" and options.get("round"):
            value = round(value / options["round"]) * options["round"]
        if options.get("max") is not None and value > options["max"]:
            value = options["max"]
        if options.get("min") is not None and value < options["min"]:
            value = options["min"]
        return value

    # --------------------------------------------------------------------------------------- output
    def check_types(self) -> None:
        missing: dict[str, str] = {}
        for node in self.nodes.values():
            if self.is_virtual(node) or node.type in self.catalog:
                continue
            props = node.data.get("properties") or {}
            pack = props.get("cnr_id") or props.get("aux_id") or ""
            missing.setdefault(node.type, "" if pack in ("", "comfy-core") else str(pack))
        if missing:
            listed = ", ".join(f"{t} (from {p})" if p else t for t, p in sorted(missing.items()))
            raise ConversionError(f"the workflow uses node types the server does not have: {listed}",
                                  hint="install the custom node packs named, or update ComfyUI")

    def convert(self) -> dict[str, Any]:
        self.flatten(self.root, (), None)
        if self.missing == "error":
            self.check_types()
        for node in self.nodes.values():
            if node.type in self.catalog:
                node.widget_values = named_values(self.catalog, node.type, self.fe, node.data.get("widgets_values"))
        for node in reversed(self.nodes.values()):  # nested instances before the ones holding them
            if self.is_subgraph(node):
                node.widget_values = self.subgraph_widgets(node)
        self.apply_primitives()
        output: dict[str, Any] = {}
        for node in self.nodes.values():
            if self.is_virtual(node) or not self.runs(node):
                continue
            known = node.type in self.catalog
            inputs: dict[str, Any] = {}
            if known:
                for name, value in node.widget_values.items():
                    inputs[name] = {"__value__": value} if isinstance(value, list) else value
            else:
                inputs.update(placeholder_inputs(node.data.get("widgets_values"), self.fe))
            for slot, entry in enumerate(node.inputs):
                resolved = self.resolve_input(node, slot, set())
                if resolved is None:
                    continue
                kind, value = resolved
                if kind == "value":
                    inputs[entry["name"]] = {"__value__": value} if isinstance(value, list) else value
                else:
                    inputs[entry["name"]] = value
            api: dict[str, Any] = {"inputs": inputs}
            title = node.data.get("title")
            if known:
                api["class_type"] = node.type
                if title is None:
                    title = self.fe.title(node.type, self.catalog.nodes[node.type].get("display_name"))
            api["_meta"] = {"title": title} if title is not None else {}
            output[node.exec_id] = api
        for api in output.values():
            inputs = api["inputs"]
            for name in [n for n, v in inputs.items() if isinstance(v, list) and len(v) == 2 and v[0] not in output]:
                del inputs[name]
        return output

    def instance_inputs(self, node: Node) -> list[dict[str, Any]]:
        """A subgraph instance's inputs: one per input of its definition, in the definition's order.

        Saved instances may list only their connected inputs (the classic format does); the
        frontend rebuilds the list from the definition and matches saved ones by name. An input
        that feeds a widget inside gets a widget of the same name on the instance.
        """
        saved = {entry.get("name"): entry for entry in node.data.get("inputs") or []}
        inner = self.sub_graph(node.type)
        inputs = []
        for slot, spec in enumerate(self.definitions[node.type].get("inputs") or []):
            entry = dict(saved.get(spec["name"]) or {"name": spec["name"], "type": spec.get("type"), "link": None})
            if "widget" not in entry:
                for link in inner.links.values():
                    if link.origin_id == SUBGRAPH_INPUT_ID and link.origin_slot == slot:
                        target = inner.nodes.get(link.target_id) or {}
                        target_inputs = target.get("inputs") or []
                        if link.target_slot < len(target_inputs) and target_inputs[link.target_slot].get("widget"):
                            entry["widget"] = {"name": spec["name"]}
                        break
            inputs.append(entry)
        return inputs

    def subgraph_widgets(self, node: Node) -> dict[str, Any]:
        """A subgraph instance's own widget values, by the name of the input they stand for.

        A widget the instance saved no value for shows the value of the inner widget its input
        feeds first.
        """
        raw = node.data.get("widgets_values") or []
        names = [(slot, (entry.get("widget") or {}).get("name")) for slot, entry in enumerate(node.inputs)]
        names = [(slot, name) for slot, name in names if name]
        values: dict[Any, Any] = {}
        for index, (slot, name) in enumerate(names):
            if index < len(raw):
                values[name] = raw[index]
                continue
            inner = self.inner_widget(node, slot)
            if inner is not None:
                values[name] = inner
        return values

    def inner_widget(self, node: Node, slot: int) -> Any:
        graph = self.sub_graph(node.type)
        for link in sorted(graph.links.values(), key=lambda link: link.id):
            if link.origin_id != SUBGRAPH_INPUT_ID or link.origin_slot != slot:
                continue
            target = self.node_at(graph, (*node.path, int(node.data["id"])), link.target_id)
            widget = _target_widget(target, link)
            if target is not None and widget in target.widget_values:
                return target.widget_values[widget]
        return None


def _target_widget(target: Node | None, link: Link) -> str | None:
    """The widget a link feeds: the target's input holding the link (a subgraph instance's inputs
    are rebuilt in its definition's order, so the saved slot number may point elsewhere)."""
    if target is None:
        return None
    entry = next((e for e in target.inputs if e.get("link") == link.id), None)
    if entry is None and link.target_slot < len(target.inputs):
        entry = target.inputs[link.target_slot]
    return ((entry or {}).get("widget") or {}).get("name")


def ui_to_api(workflow: Mapping[str, Any], catalog: Catalog, *, missing: Literal["error", "frontend"] = "error",
              frontend_version: str | Version | None = None, notes: list[str] | None = None) -> dict[str, Any]:
    """Convert a UI-format workflow (classic 0.4 or version 1) to the API format.

    `frontend_version` is the GUI to reproduce (the server's required frontend version); without
    it, the frontend the catalogue's ComfyUI release requires, or the newest checked one. A list
    passed as `notes` receives one line per node whose saved inputs do not fit the server's
    definition (what the GUI would silently fill, drop or shift).
    """
    fe = for_catalog(catalog) if frontend_version is None else frontend(frontend_version)
    graph = _Converter(workflow, catalog, missing, fe).convert()
    if notes is not None:
        notes += drift_notes(workflow, catalog, fe)
    return graph
