"""What a backend needs from a server, and whether a server has it.

A backend's needs are read from three places, each fact written once: its workflows' node classes
(and the packs models.lock says provide them), models.lock's `backends:` (its model files), and its
`needs:` in backends.yaml (GPU memory, oldest ComfyUI release). A server's side comes from
system_stats (VRAM, version) and object_info (nodes, and the model files its loaders list), read
once per server as `ServerFacts`. `doctor` and `backend: auto` (pipeline/choose.py) both ask these.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from comfy_driver.comfy.address import redact
from comfy_driver.comfy.catalog import Catalog
from comfy_driver.comfy.client import ComfyClient
from comfy_driver.comfy.settings import Settings
from comfy_driver.comfy.versions import Version
from comfy_driver.config.backends import Backends
from comfy_driver.models.folders import mark_model_inputs, offered_models
from comfy_driver.models.lock import ModelsLock
from comfy_driver.models.packs import pack_providing, workflow_classes
from comfy_driver.paths import WORKFLOWS

GIB = 1 << 30


@dataclass(frozen=True)
class ServerFacts:
    """What one server offers, as far as backends care."""

    url: str
    vram_gb: float | None  # the largest GPU's memory; None when the server reports no GPU
    comfyui: Version | None
    nodes: frozenset[str]
    models: dict[str, frozenset[str]] = field(default_factory=dict)  # folder -> files its loaders list

    @classmethod
    def read(cls, url: str, system_stats: dict, catalog: Catalog) -> ServerFacts:
        devices = [d for d in system_stats.get("devices") or [] if str(d.get("type", "")).lower() != "cpu"]
        vram = max((int(d.get("vram_total") or 0) for d in devices), default=0)
        listed = offered_models(mark_model_inputs(catalog.nodes))
        return cls(url=redact(url), vram_gb=round(vram / GIB, 1) if vram else None, comfyui=catalog.version,
                   nodes=frozenset(catalog.nodes), models={k: frozenset(v) for k, v in listed.items()})

    def describe(self) -> str:
        gpu = f"{self.vram_gb:g} GB GPU" if self.vram_gb else "no GPU reported"
        return f"{self.url} (ComfyUI {self.comfyui or '?'}, {gpu})"


@dataclass(frozen=True)
class Needs:
    """Everything one backend needs, gathered from its three sources."""

    backend: str
    nodes: frozenset[str]
    models: tuple[tuple[str, str], ...]  # (folder, file)
    vram_gb: float | None
    comfyui: Version | None


def needs_of(name: str, backends: Backends, lock: ModelsLock, stages: Iterable[str] = ()) -> Needs:
    backend = backends.backend(name)
    workflows = backend.workflows() + [backends.stages[s].workflow for s in stages]
    users = {name, *stages}
    models = tuple((m.folder, m.name) for m in lock.models if users & set(m.backends))
    return Needs(name, frozenset(workflow_classes(WORKFLOWS, workflows)), models, backend.needs.vram_gb,
                 Version.parse(backend.needs.comfyui) if backend.needs.comfyui else None)


def platform_unmet(needs: Needs, server: ServerFacts) -> list[str]:
    """What only backends.yaml's `needs:` say: a release too old, a GPU too small."""
    reasons: list[str] = []
    if needs.comfyui and server.comfyui and server.comfyui < needs.comfyui:
        reasons.append(f"needs ComfyUI {needs.comfyui} or newer (the server runs {server.comfyui}): update ComfyUI")
    if needs.vram_gb and server.vram_gb is not None and server.vram_gb < needs.vram_gb:
        reasons.append(f"needs {needs.vram_gb:g} GB of VRAM (the server's GPU has {server.vram_gb:g} GB)")
    return reasons


def unmet(needs: Needs, server: ServerFacts, lock: ModelsLock) -> list[str]:
    """Why this server cannot run the backend (empty: it can). The version comes first: an old
    release also lacks the nodes, and updating ComfyUI is the one fix."""
    reasons = platform_unmet(needs, server)
    if needs.comfyui and server.comfyui and server.comfyui < needs.comfyui:
        return reasons
    missing: dict[str, list[str]] = {}
    for class_type in sorted(needs.nodes - server.nodes):
        pack = pack_providing(lock.packs, class_type)
        missing.setdefault(pack.name if pack else "ComfyUI itself (update ComfyUI)", []).append(class_type)
    for pack_name, classes in missing.items():
        reasons.append(f"node pack {pack_name} missing ({', '.join(classes)})")
    absent = [f"{folder}/{name}" for folder, name in needs.models
              if folder in server.models and name not in server.models[folder]]
    if absent:
        reasons.append(f"model files missing: {', '.join(absent)} (comfy-drive fetch --backend {needs.backend})")
    return reasons


def read_servers(urls: Iterable[str], settings: Settings | None = None) -> list[ServerFacts]:
    """What each server offers (GPU memory, version, nodes, model files)."""
    facts = []
    for url in urls:
        client = ComfyClient(url, settings=settings)
        try:
            facts.append(ServerFacts.read(url, client.system_stats(), client.catalog()))
        finally:
            client.close()
    return facts
