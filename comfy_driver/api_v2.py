"""The front door to a Comfy API v2 target (Comfy Cloud, a serverless deployment, a self-hosted
ComfyUI behind comfy-api-proxy): `V2Target.submit` mirrors `Client.submit` and returns a `V2Job`.

Decisions:
- v2 has no node catalogue, so preflight takes one where it can (`V2Client.catalog`); with none,
  validation is skipped, `catalog_source` says so, and the endpoint checks the graph when it is submitted.
- A GUI-saved workflow is converted with that catalogue, or with the one comfy-drive ships when the
  target has none; a local file given with `sets` on a file input is sent as an asset.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from comfy_driver.api import Client, Source
from comfy_driver.comfy.catalog import Catalog
from comfy_driver.comfy.errors import PromptRejected
from comfy_driver.comfy.settings import Settings
from comfy_driver.comfy.target import Target, parse_target
from comfy_driver.comfy.v2 import V2Client, V2Job
from comfy_driver.pipeline.replay import apply_sets


class V2Target:
    """One API v2 target.

    >>> with V2Target("v2+https://cloud.comfy.org") as cloud:   # key from COMFY_API_KEY
    ...     files = cloud.submit("saved-from-the-gui.json", sets={"Sampler.seed": 7}).download("out")
    """

    def __init__(self, target: str | Target, *, settings: Settings | None = None, **client: Any) -> None:
        self.target = parse_target(target)
        self.settings = settings or Settings()
        self.client = V2Client(self.target, settings=self.settings, **client)
        self._catalog: tuple[Catalog | None, str] | None = None

    def catalog(self) -> Catalog | None:
        """The node catalogue preflight validates against (None: validation is skipped)."""
        return self._find_catalog()[0]

    @property
    def catalog_source(self) -> str:
        """Where the catalogue came from, or why there is none (for doctor and messages)."""
        return self._find_catalog()[1]

    def _find_catalog(self) -> tuple[Catalog | None, str]:
        if self._catalog is None:
            self._catalog = self.client.catalog()
        return self._catalog

    def submit(self, source: Source, *, sets: Mapping[str, Any] | None = None) -> V2Job:
        """Validate (when a catalogue is at hand) and submit; local files named by `sets` go as assets."""
        catalog = self.catalog()
        item = Client._load(source, catalog or _shipped_catalog())
        local: dict[tuple[str, str], Path] = {}
        graph = item.graph
        if sets:
            graph = apply_sets(graph, [f"{k}={json.dumps(v)}" for k, v in sets.items()], catalog or _shipped_catalog(),
                               local_files=local)
        if catalog is not None:
            sent = {str(graph[n]["inputs"][i]) for n, i in local}
            have = catalog.input_files()
            checked = catalog.validate(graph, stricter=True, file_exists=lambda kind, name: name in sent or name in have)
            if not checked.ok:
                raise PromptRejected(checked.error or {}, checked.node_errors, graph)
        return self.client.submit(graph, files=local)

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> V2Target:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _shipped_catalog() -> Catalog:
    from comfy_driver.models.catalog import bundled_catalog
    from comfy_driver.models.lock import load_lock
    from comfy_driver.paths import models_lock

    return bundled_catalog(load_lock(models_lock()))
