"""The node catalogues comfy-drive ships, with model choices taken from models.lock.

They let dry runs and the simulator validate graphs, model file names included, without a server:
one per ComfyUI release the simulator can play (`SIM_RELEASES`), trimmed to the nodes of the shipped
workflows (scripts/make_catalog.py).
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from comfy_driver.comfy.catalog import Catalog
from comfy_driver.comfy.versions import Version
from comfy_driver.errors import UserError
from comfy_driver.models.folders import fill_model_inputs
from comfy_driver.models.lock import ModelsLock
from comfy_driver.paths import DATA

# Release -> its bundled catalogue file. The first is the default of the simulator and dry runs.
SIM_RELEASES: dict[str, str] = {"0.3.64": "catalog.json", "0.33.0": "catalog-0.33.0.json"}
DEFAULT_RELEASE = "0.3.64"


@lru_cache(maxsize=4)
def _bundled(release: str) -> dict:
    name = SIM_RELEASES[release]
    return json.loads((DATA / name).read_text(encoding="utf-8"))


def bundled_node(class_type: str) -> dict[str, Any] | None:
    """A node class as the first shipped catalogue that has it defines it (read, not copied: not to be
    changed), or None."""
    return next((found for release in SIM_RELEASES if (found := _bundled(release).get(class_type))), None)


def sim_release(text: str) -> str:
    """The bundled release a --comfyui value names ('0.33', 'v0.33.0' -> '0.33.0')."""
    wanted = Version.parse(text)
    for release in SIM_RELEASES:
        got = Version.parse(release)
        if wanted is not None and got is not None and (wanted == got or (
                wanted[:2] == got[:2] and text.count(".") == 1)):
            return release
    raise UserError(f"--comfyui {text}: the simulator plays ComfyUI {' and '.join(SIM_RELEASES)}",
                    hint=f"use one of: {', '.join(SIM_RELEASES)}")


def merge_object_info(base: dict, *packs: dict) -> dict:
    """One object_info from a release's own and the node packs' recordings (for scripts/make_*.py).

    Custom-node classes come from the last recording that has them (the packs at the commits
    models.lock pins, recorded on a newer server); a class the base lacks is added from the first
    recording that has it, so a node only newer ComfyUI releases have keeps its real definition.
    """
    merged = dict(base)
    for info in packs:
        for name, node in info.items():
            if str(node.get("python_module", "")).startswith("custom_nodes.") or name not in merged:
                merged[name] = node
    return merged


def bundled_catalog(lock: ModelsLock | None = None, release: str = DEFAULT_RELEASE) -> Catalog:
    files = lock.by_folder() if lock is not None else {}
    return Catalog(fill_model_inputs(_bundled(release), files), version=Version.parse(release))
