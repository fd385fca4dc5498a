"""`comfy-drive doctor --server v2+URL`: whether a Comfy API v2 target can render the backends.

v2 itself lists no nodes or models, so the node packs and workflows are checked against the
catalogue `V2Target` finds (the native ComfyUI behind a self-hosted proxy, or Comfy Cloud's
/api/object_info); without one the report says what it could not check.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Protocol

from comfy_driver.comfy.catalog import Catalog
from comfy_driver.comfy.target import Target
from comfy_driver.comfy.v2 import V2Client
from comfy_driver.config.backends import Backends
from comfy_driver.errors import DriveError
from comfy_driver.models.catalog import bundled_catalog
from comfy_driver.models.doctor import _report_workflow, pack_of
from comfy_driver.paths import WORKFLOWS
from comfy_driver.workflow.files import workflow_class_types
from comfy_driver.workflow.server_check import WorkflowCheck, check_workflow


class V2Endpoint(Protocol):
    """What the doctor needs of a v2 target (`comfy_driver.api_v2.V2Target` is one; the front door sits
    above this room, so it is described here rather than imported)."""

    target: Target
    client: V2Client

    def catalog(self) -> Catalog | None: ...

    @property
    def catalog_source(self) -> str: ...


def diagnose_v2(target: V2Endpoint, echo: Callable[[str], None], config: Backends, backends: list[str]) -> int:
    """Print a report on one v2 target; return the number of problems found."""
    echo(f"target: {target.target.display} (Comfy API v2), key from {target.target.key_source}")
    try:
        target.client.http.json("GET", "/jobs", params={"limit": 1})
    except DriveError as exc:
        echo(f"  cannot use it: {exc.message}" + (f"\n  fix: {exc.hint}" if exc.hint else ""))
        return 1
    echo("  reachable; the key (if any) is accepted")
    catalog = target.catalog()
    echo(f"  node catalogue: {target.catalog_source}")
    if catalog is None:
        echo("  node packs and workflows not checked here: the endpoint checks each graph when it is submitted")
        return 0
    problems = 0
    checks: dict[str, WorkflowCheck] = {}
    for backend in backends:
        echo(f"{backend}:")
        workflow = WORKFLOWS / f"{backend}.json"
        missing: dict[str, list[str]] = {}
        if workflow.is_file():
            for class_type in sorted(workflow_class_types(json.loads(workflow.read_text(encoding="utf-8")))):
                if class_type not in catalog:
                    missing.setdefault(pack_of(class_type), []).append(class_type)
        for pack, classes in missing.items():
            echo(f"  node pack missing on the target: {pack} ({', '.join(classes)})")
            problems += len(classes)
        if missing and target.target.native:
            echo(f"  fix: on the ComfyUI behind the proxy ({target.target.native}), install the packs (ComfyUI-Manager "
                 "or git clone into custom_nodes/) or update it for ComfyUI's own nodes, then restart it")
        elif missing:
            echo("  fix: a serverless deployment is built from your ComfyUI: install the packs there and deploy "
                 "again; Comfy Cloud has a fixed set of packs (use another target for this backend)")
        if missing:
            continue
        for name in config.owner_workflows(backend) or ([backend] if workflow.is_file() else []):
            if name not in checks:
                checks[name] = check_workflow(name, WORKFLOWS, catalog, bundled_catalog())
            problems += _report_workflow(checks[name], set(), backend, echo)
    echo("target ready for every backend" if not problems else f"{problems} problem(s) found")
    return problems
