"""Validating every prompt a run may submit against a server's node catalogue, before the first."""

from __future__ import annotations

from dataclasses import replace

from comfy_driver.comfy.catalog import Catalog
from comfy_driver.comfy.errors import format_node_errors
from comfy_driver.errors import UserError
from comfy_driver.models.doctor import pack_of
from comfy_driver.pipeline.jobs import SceneJob


def every_prompt(jobs: list[SceneJob]) -> list[SceneJob]:
    """Every prompt the scenes may submit: the later steps of chained scenes (with a placeholder for
    the clip each will take) and the fallbacks too."""
    out: list[SceneJob] = []
    for job in jobs:
        chain: SceneJob | None = job
        while chain is not None:
            out.append(chain)
            chain = chain.next(None) if chain.next is not None else None
        fallback = job.on_oom if job.stage == 0 else None
        while fallback is not None:
            out += every_prompt([replace(fallback, on_oom=None)])
            fallback = fallback.on_oom
    return out


def preflight(jobs: list[SceneJob], catalog: Catalog, *, server: str = "") -> None:
    """Validate every scene's graph as the server would, reporting every error of every scene at once."""
    inputs = catalog.input_files()
    problems: list[str] = []
    missing: dict[str, set[str]] = {}
    for job in jobs:
        for node in job.graph.values():
            if node["class_type"] not in catalog:
                missing.setdefault(pack_of(node["class_type"]), set()).add(node["class_type"])
    if missing:
        packs = "; ".join(f"{pack} ({', '.join(sorted(classes))})" for pack, classes in sorted(missing.items()))
        raise UserError(f"{server or 'the server'} lacks the node types these workflows use: {packs}",
                        hint="install those custom node packs (ComfyUI-Manager, or git clone into custom_nodes/) "
                             "and restart ComfyUI; comfy-drive doctor --server URL lists what each backend needs")
    for job in jobs:
        uploads = set(job.uploads)
        result = catalog.validate(job.graph, file_exists=lambda kind, name: name in uploads or name in inputs,
                                  stricter=True)
        if not result.ok or result.node_errors:
            error = result.error or {}
            head = f"{job.spec.where}: scene {job.key} ({job.template.name}) would be rejected" + \
                (f" by {server}" if server else "")
            lines = format_node_errors(result.node_errors, job.graph)
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
