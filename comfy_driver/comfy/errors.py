"""Exceptions for what a ComfyUI server can answer, each rendering to one clear message.

Their place in the exception tree is drawn in `comfy_driver.errors`.
"""

from __future__ import annotations

from typing import Any

from comfy_driver.errors import RunError, UserError

# Substrings by which an execution error is recognised as running out of memory (CUDA, ROCm, MPS,
# the CPU allocator, and ComfyUI's own wording).
OOM_MARKERS = (
    "out of memory",
    "outofmemoryerror",
    "can't allocate memory",
    "cuda error: out of memory",
    "hip out of memory",
    "mps backend out of memory",
    "allocation on device",
)


class ServerUnreachable(RunError):
    """No server answers at the URL (connection refused, DNS, timeout)."""


class NotComfyUI(UserError):
    """Something answers at the URL, but it is not a ComfyUI server."""


class AccessRefused(UserError):
    """The server (or a proxy in front of it) refused our credentials: 401 or 403."""


class ServerProtocolError(RunError):
    """The server answered in a way ComfyUI never does (garbage body, unexpected status)."""


def _title(graph: dict[str, Any] | None, node_id: str) -> str:
    node = (graph or {}).get(node_id) or {}
    return str((node.get("_meta") or {}).get("title") or "")


def describe_node(graph: dict[str, Any] | None, node_id: str, class_type: str = "") -> str:
    """'node 5 "Video Sampler" (KSampler)': how every message names a node."""
    class_type = class_type or str(((graph or {}).get(node_id) or {}).get("class_type", "?"))
    title = _title(graph, node_id)
    return f'node {node_id} "{title}" ({class_type})' if title else f"node {node_id} ({class_type})"


class PromptRejected(UserError):
    """POST /prompt answered 400: validation failed. Lists every node error the server gave."""

    def __init__(self, error: dict[str, Any], node_errors: dict[str, Any], graph: dict[str, Any] | None,
                 *, where: str = "") -> None:
        self.error = error
        self.node_errors = node_errors
        self.graph = graph
        lines = [f"{where}the server rejected the workflow: {error.get('message', 'invalid prompt')}"]
        if not node_errors and error.get("details"):
            lines[0] += f" ({error['details']})"
        for line in format_node_errors(node_errors, graph):
            lines.append("  " + line)
        hint = None
        if error.get("type") == "missing_node_type" or (
                error.get("type") == "invalid_prompt" and "does not exist" in str(error.get("message"))):
            hint = "install the custom node pack that provides this node on the server, or change the workflow"
        super().__init__("\n".join(lines), hint=hint)


class OutputsDropped(PromptRejected):
    """POST /prompt answered 200 but listed node_errors: the outputs they block were dropped (and the
    prompt was cancelled, since a graph that runs only in part is a failure)."""

    def __init__(self, node_errors: dict[str, Any], graph: dict[str, Any] | None, *, where: str = "") -> None:
        dropped = sorted({o for entry in node_errors.values() for o in entry.get("dependent_outputs", [])})
        names = ", ".join(describe_node(graph, o) for o in dropped) or "some outputs"
        super().__init__({"type": "outputs_dropped", "message": f"it dropped {names}, whose inputs failed "
                          "validation (the rest was queued, then cancelled)"}, node_errors, graph, where=where)


def format_node_errors(node_errors: dict[str, Any], graph: dict[str, Any] | None) -> list[str]:
    """One line per node error: node id, title, class_type, input and the server's text."""
    lines = []
    for node_id, entry in node_errors.items():
        who = describe_node(graph, node_id, entry.get("class_type", ""))
        for err in entry.get("errors", []):
            info = err.get("extra_info") or {}
            inp = info.get("input_name")
            text = err.get("message", "")
            if err.get("details"):
                text += f": {err['details']}"
            lines.append(f"{who}{f' input {inp!r}' if inp else ''}: {text}")
    return lines


class ExecutionFailed(RunError):
    """execution_error: a node raised while the prompt ran."""

    def __init__(self, data: dict[str, Any], graph: dict[str, Any] | None = None) -> None:
        self.data = data
        self.node_id = str(data.get("node_id", ""))
        self.node_type = str(data.get("node_type", ""))
        self.exception_type = str(data.get("exception_type", ""))
        self.exception_message = str(data.get("exception_message", "")).strip()
        self.is_oom = is_out_of_memory(self.exception_type, self.exception_message)
        who = describe_node(graph, self.node_id, self.node_type)
        kind = "ran out of memory" if self.is_oom else f"failed with {self.exception_type or 'an error'}"
        first = self.exception_message.splitlines()[0] if self.exception_message else ""
        hint = ("lower the resolution or frame count, use a lighter backend, or free the GPU's memory"
                if self.is_oom else None)
        super().__init__(f"{who} {kind}: {first}", hint=hint)


class OutOfMemory(ExecutionFailed):
    """The prompt failed because the GPU (or the host) ran out of memory."""


def execution_error(data: dict[str, Any], graph: dict[str, Any] | None = None) -> ExecutionFailed:
    """The error of a failed execution, as its most precise class (OutOfMemory or ExecutionFailed)."""
    failed = ExecutionFailed(data, graph)
    return OutOfMemory(data, graph) if failed.is_oom else failed


def is_out_of_memory(exception_type: str, message: str) -> bool:
    text = f"{exception_type} {message}".lower()
    return any(marker in text for marker in OOM_MARKERS)


class Interrupted(RunError):
    """execution_interrupted: someone (maybe us) interrupted the prompt."""

    def __init__(self, data: dict[str, Any], graph: dict[str, Any] | None = None) -> None:
        self.data = data
        who = describe_node(graph, str(data.get("node_id", "")), str(data.get("node_type", "")))
        super().__init__(f"the prompt was interrupted at {who}")


class PromptLost(RunError):
    """The server no longer knows a prompt it accepted (restarted, queue cleared by someone)."""
