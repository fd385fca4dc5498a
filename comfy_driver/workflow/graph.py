"""The GUI workflow's graph as the converter walks it: links, graph levels, nodes at execution paths.

Both saved formats are read: the classic one (`"version": 0.4`, links as arrays) and version 1 (links
as objects, the last node id under `state`). Subgraph definitions are separate graph levels whose
nodes run under the id of the instance that holds them ("outer:inner").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

MODE_NEVER = 2
MODE_BYPASS = 4
SUBGRAPH_INPUT_ID = -10
SUBGRAPH_OUTPUT_ID = -20


@dataclass
class Link:
    id: int
    origin_id: int
    origin_slot: int
    target_id: int
    target_slot: int
    type: Any


@dataclass
class Graph:
    """One graph level: the root workflow or a subgraph definition."""

    nodes: dict[int, dict[str, Any]]
    links: dict[int, Link]
    subgraph: dict[str, Any] | None = None  # the definition, for subgraph levels


@dataclass
class Node:
    """A node placed at an execution path (a DTO, in the frontend's words)."""

    exec_id: str
    data: dict[str, Any]
    graph: Graph
    path: tuple[int, ...]  # subgraph instance ids from the root to the containing instance
    container: Node | None  # the subgraph instance node holding this one
    widget_values: dict[str, Any] = field(default_factory=dict)

    @property
    def type(self) -> str:
        return str(self.data.get("type", ""))

    @property
    def mode(self) -> int:
        return int(self.data.get("mode") or 0)

    inputs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def outputs(self) -> list[dict[str, Any]]:
        return self.data.get("outputs") or []


def parse_links(raw: Any) -> dict[int, Link]:
    links: dict[int, Link] = {}
    for item in raw or []:
        if isinstance(item, dict):
            link = Link(int(item["id"]), int(item["origin_id"]), int(item["origin_slot"]), int(item["target_id"]),
                        int(item["target_slot"]), item.get("type"))
        elif isinstance(item, list) and len(item) >= 5:
            link = Link(int(item[0]), int(item[1]), int(item[2]), int(item[3]), int(item[4]),
                        item[5] if len(item) > 5 else None)
        else:
            continue
        links[link.id] = link
    return links


def parse_graph(data: Mapping[str, Any], subgraph: dict[str, Any] | None = None) -> Graph:
    nodes = {int(n["id"]): n for n in data.get("nodes") or [] if "id" in n}
    return Graph(nodes, parse_links(data.get("links")), subgraph)


def valid_connection(a: Any, b: Any) -> bool:
    """LiteGraph.isValidConnection: '*'/'' match anything; comma lists match on any member."""
    if a in ("", "*", None, 0):
        a = 0
    if b in ("", "*", None, 0):
        b = 0
    if not a or not b or a == b:
        return True
    sa, sb = str(a).lower(), str(b).lower()
    if "," not in sa and "," not in sb:
        return sa == sb
    return any(valid_connection(x, y) for x in sa.split(",") for y in sb.split(","))


def subgraph_definitions(workflow: Mapping[str, Any]) -> list[dict[str, Any]]:
    return list((workflow.get("definitions") or {}).get("subgraphs") or [])


def dedupe_subgraph_ids(workflow: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The subgraph definitions with node ids renumbered as the frontend does on load (since 1.40).

    Ids in use start as the root graph's node ids; the definitions are walked in file order, each
    one's nodes in array order, and a node whose id is already in use gets the next free id above the
    graph's last node id (which advances as ids are given out). The definition's links follow.
    """
    definitions = subgraph_definitions(workflow)
    used = {int(n["id"]) for n in workflow.get("nodes") or [] if "id" in n}
    last = workflow.get("last_node_id")
    if last is None:
        last = (workflow.get("state") or {}).get("lastNodeId")
    last = int(last or 0)
    out = []
    for definition in definitions:
        remap: dict[int, int] = {}
        for node in definition.get("nodes") or []:
            if "id" not in node:
                continue
            node_id = int(node["id"])
            if node_id in used:
                last += 1
                while last in used:
                    last += 1
                remap[node_id] = last
                node_id = last
            used.add(node_id)
        out.append(_renumbered(definition, remap) if remap else definition)
    return out


def _renumbered(definition: dict[str, Any], remap: dict[int, int]) -> dict[str, Any]:
    """A copy of a definition with node ids remapped (only the renumbered nodes and links are new)."""
    def node_id(value: Any) -> Any:
        return remap.get(int(value), value)

    nodes = [{**node, "id": remap[int(node["id"])]} if "id" in node and int(node["id"]) in remap else node
             for node in definition.get("nodes") or []]
    links: list[Any] = []
    for link in definition.get("links") or []:
        if isinstance(link, dict):
            link = {**link, "origin_id": node_id(link["origin_id"]), "target_id": node_id(link["target_id"])}
        elif isinstance(link, list) and len(link) >= 5:
            link = [link[0], node_id(link[1]), link[2], node_id(link[3]), *link[4:]]
        links.append(link)
    return {**definition, "nodes": nodes, "links": links}
