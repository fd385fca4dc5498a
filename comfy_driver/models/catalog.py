"""The node catalogue comfy-drive ships, with model choices taken from models.lock.

It lets dry runs and the simulator validate graphs, model file names included, without a server.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources

from comfy_driver.comfy.catalog import Catalog
from comfy_driver.models.folders import fill_model_inputs
from comfy_driver.models.lock import ModelsLock


@lru_cache(maxsize=1)
def _bundled() -> dict:
    return json.loads(resources.files("comfy_driver.data").joinpath("catalog.json").read_text(encoding="utf-8"))


def bundled_catalog(lock: ModelsLock | None = None) -> Catalog:
    files = lock.by_folder() if lock is not None else {}
    return Catalog(fill_model_inputs(_bundled(), files))
