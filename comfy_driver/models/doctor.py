"""`comfy-drive doctor`: per backend, which model files and node packs are missing, whether each
workflow the backend may submit passes the server's validation, which nodes changed schema there,
and the fix."""

from __future__ import annotations

import json
from collections.abc import Callable

from comfy_driver.comfy.client import ComfyClient
from comfy_driver.config.backends import Backends
from comfy_driver.models.catalog import bundled_catalog, bundled_node
from comfy_driver.models.lock import ModelsLock
from comfy_driver.models.needs import ServerFacts, needs_of, platform_unmet
from comfy_driver.models.tree import ModelsTree
from comfy_driver.paths import WORKFLOWS
from comfy_driver.workflow.server_check import WorkflowCheck, check_workflow
from comfy_driver.workflow.files import workflow_class_types


def pack_of(class_type: str) -> str:
    """The custom node pack that provides a node class (from the catalogues comfy-drive ships: a node
    only a newer ComfyUI has is ComfyUI's own)."""
    node = bundled_node(class_type) or {}
    module = str(node.get("python_module") or "")
    if module.startswith("custom_nodes."):
        return module.split(".", 1)[1]
    return "ComfyUI itself (update ComfyUI)" if module else "an unknown pack"


def diagnose(lock: ModelsLock, tree: ModelsTree | None, client: ComfyClient | None,
             echo: Callable[[str], None], config: Backends | None = None) -> int:
    """Print a report; return the number of problems found."""
    problems = 0
    server_files: dict[str, set[str]] = {}
    catalog = client.catalog() if client is not None else None
    if client is not None:
        versions = client.versions()
        note = versions.support_note()
        echo(f"server: {versions.describe()}" + (f" ({note})" if note else ""))
    config = config or Backends()
    backends = sorted({b for m in lock.models for b in m.backends} | set(config.backends) | set(config.stages))
    checks: dict[str, WorkflowCheck] = {}
    unsuited: list[str] = []  # backends this server's release or GPU cannot run: not problems to fix here
    facts = ServerFacts.read(client.address.display, client.system_stats(), catalog) \
        if client is not None and catalog is not None else None
    for backend in backends:
        echo(f"{backend}:")
        if facts is not None and backend in config.backends:  # what backends.yaml's needs: say (auto reads them too)
            reasons = platform_unmet(needs_of(backend, config, lock), facts)
            for reason in reasons:
                echo(f"  not for this server: {reason}")
            if reasons:
                unsuited.append(backend)
                continue
        missing_here, missing_there = [], []
        for entry in lock.for_backends([backend]):
            here = ""
            if tree is not None:
                found = next((p for p in tree.candidates(entry) if p.is_file()), None)
                here = "present here" if found else "missing here"
                if not found:
                    missing_here.append(entry.name)
            there = ""
            if client is not None:
                if entry.folder not in server_files:
                    server_files[entry.folder] = set(client.models(entry.folder))
                there = "on the server" if entry.name in server_files[entry.folder] else "NOT on the server"
                if entry.name not in server_files[entry.folder]:
                    missing_there.append(entry.name)
            status = ", ".join(s for s in (here, there) if s) or "listed"
            echo(f"  model {entry.folder}/{entry.name}: {status}")
        workflow = WORKFLOWS / f"{backend}.json"
        missing_nodes: dict[str, list[str]] = {}
        if catalog is not None and workflow.is_file():
            for class_type in sorted(workflow_class_types(json.loads(workflow.read_text(encoding="utf-8")))):
                if class_type not in catalog:
                    missing_nodes.setdefault(pack_of(class_type), []).append(class_type)
        for pack, classes in missing_nodes.items():
            echo(f"  node pack missing on the server: {pack} ({', '.join(classes)})")
        if missing_here:
            echo(f"  fix: comfy-drive fetch --backend {backend} " +
                 (f"--models-dir {tree.root}" if tree else "--comfyui DIR"))
        if missing_there and client is not None:
            echo(f"  fix: on the server, run comfy-drive fetch --backend {backend} --comfyui <its ComfyUI folder>")
        if missing_nodes:
            echo(f"  fix: install {', '.join(missing_nodes)} on the server (ComfyUI-Manager or git clone into "
                 "custom_nodes/), then restart ComfyUI")
        problems += len(missing_here) + len(missing_there) + sum(len(v) for v in missing_nodes.values())
        if catalog is not None and not missing_nodes:
            workflows = config.owner_workflows(backend) or ([backend] if workflow.is_file() else [])
            for name in workflows:
                if name not in checks:
                    checks[name] = check_workflow(name, WORKFLOWS, catalog, bundled_catalog())
                problems += _report_workflow(checks[name], set(missing_there), backend, echo)
    if unsuited:
        echo(f"not for this server (backend: auto passes them over): {', '.join(unsuited)}")
    echo("all backends ready" if not problems else f"{problems} problem(s) found")
    return problems


def _report_workflow(check: WorkflowCheck, missing_models: set[str], backend: str,
                     echo: Callable[[str], None]) -> int:
    """Print one workflow's verdict on the server and its drifted nodes; return its problems.

    Errors about model files already reported missing above are not counted twice.
    """
    if check.failure is not None:
        echo(f"  workflow {check.name}: cannot be prepared for this server: {check.failure}")
        return 1
    errors = [e for e in check.errors if not any(f"'{m}'" in e for m in missing_models)]
    if check.ok:
        echo(f"  workflow {check.name}: passes this server's validation")
    elif not errors:
        echo(f"  workflow {check.name}: passes this server's validation once the model files above are there")
    else:
        echo(f"  workflow {check.name}: this server would refuse it:")
        for line in errors:
            echo(f"    {line}")
    for node in check.drift:
        echo(f"    {node.describe()}")
        echo(f"      fix: {node.fix()}")
    unexplained = [e for e in errors if not any(e.startswith(n.who) for n in check.drift)]
    if unexplained and not check.drift:
        echo(f"    fix: check the inputs named above in workflows/{check.name}.json (open it in this server's GUI), "
             f"then run comfy-drive doctor again; the backend is {backend}")
    return len(errors)
