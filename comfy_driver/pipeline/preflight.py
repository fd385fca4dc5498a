"""Validating every prompt a run may submit against a server's node catalogue, before the first."""

from __future__ import annotations

from comfy_driver.comfy.catalog import Catalog
from comfy_driver.comfy.errors import format_node_errors
from comfy_driver.errors import UserError
from comfy_driver.pipeline.plan import Plan


def preflight(plan: Plan, catalog: Catalog, *, server: str = "") -> None:
    """Validate every prompt a run may submit as the server would (later steps with a placeholder for the
    clip each will take, fallbacks too), reporting every error of every scene at once."""
    steps = [step for scene in plan.scenes for step in scene.steps]
    inputs = catalog.input_files()
    problems: list[str] = []
    absent = {node["class_type"] for step in steps for node in step.first.graph.values()
              if node["class_type"] not in catalog}
    if absent:
        from comfy_driver.models.doctor import pack_of  # the shipped catalogues: read only to name a lacking pack
        missing: dict[str, set[str]] = {}
        for class_type in absent:
            missing.setdefault(pack_of(class_type), set()).add(class_type)
        packs = "; ".join(f"{pack} ({', '.join(sorted(classes))})" for pack, classes in sorted(missing.items()))
        raise UserError(f"{server or 'the server'} lacks the node types these workflows use: {packs}",
                        hint="install those custom node packs (ComfyUI-Manager, or git clone into custom_nodes/) "
                             "and restart ComfyUI; comfy-drive doctor --server URL lists what each backend needs")
    for step in steps:
        uploads = set(step.first.uploads)
        result = catalog.validate(step.first.graph, file_exists=lambda kind, name: name in uploads or name in inputs,
                                  stricter=True)
        if not result.ok or result.node_errors:
            error = result.error or {}
            head = f"{step.spec.where}: {step.name} (workflow {step.first.template.name!r}) would be rejected" + \
                (f" by {server}" if server else "")
            lines = format_node_errors(result.node_errors, step.first.graph)
            if not lines:
                lines = [f"{error.get('message', '')} {error.get('details', '')}".strip()]
            problems.append("\n".join([head + ":", *("  " + line for line in lines)]))
    if problems:
        raise UserError("\n".join(problems), hint=_preflight_hint(problems))


def _preflight_hint(problems: list[str]) -> str | None:
    text = "\n".join(problems)
    if "Value not in list" in text and (".safetensors" in text or ".ckpt" in text):
        return "a model file is missing on the server: run comfy-drive fetch there, or fix the name in models.lock"
    if "does not exist" in text or "not found. The custom node" in text:
        return "install the missing custom node pack on the server"
    return None
