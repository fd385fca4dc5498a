"""What a backend needs from a server, whether a server has it, and `backend: auto`.

A backend's needs are read from three places, each fact written once: its workflows' node classes
(and the packs models.lock says provide them), models.lock's `backends:` (its model files), and its
`needs:` in backends.yaml (GPU memory, oldest ComfyUI release). A server's side comes from
system_stats (VRAM, version), object_info (nodes, and the model files its loaders list) and is
gathered once per server as `ServerFacts`. `doctor`, the run's check of an explicit backend and
`auto` all ask `unmet()`.

`auto` goes down backends.yaml's `auto:` list, best first, and takes the first backend every server
of the run can run for the scene; a scene with a driving video takes the first that follows one,
and only when none can does it fall back to the best that animates without it (said so).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from comfy_driver.comfy.catalog import Catalog
from comfy_driver.comfy.versions import Version
from comfy_driver.config.backends import Backends
from comfy_driver.config.series import SceneSpec
from comfy_driver.errors import UserError
from comfy_driver.models.folders import mark_model_inputs, offered_models
from comfy_driver.models.lock import ModelsLock
from comfy_driver.models.packs import pack_providing, workflow_classes
from comfy_driver.paths import WORKFLOWS

AUTO = "auto"
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
        return cls(url=url, vram_gb=round(vram / GIB, 1) if vram else None, comfyui=catalog.version,
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


def unmet(needs: Needs, server: ServerFacts, lock: ModelsLock) -> list[str]:
    """Why this server cannot run the backend (empty: it can). The version comes first: an old
    release also lacks the nodes, and updating ComfyUI is the one fix."""
    reasons: list[str] = []
    if needs.comfyui and server.comfyui and server.comfyui < needs.comfyui:
        reasons.append(f"needs ComfyUI {needs.comfyui} or newer (the server runs {server.comfyui}): update ComfyUI")
        return reasons
    if needs.vram_gb and server.vram_gb is not None and server.vram_gb < needs.vram_gb:
        reasons.append(f"needs {needs.vram_gb:g} GB of VRAM (the server's GPU has {server.vram_gb:g} GB)")
    missing: dict[str, list[str]] = {}
    for class_type in sorted(needs.nodes - server.nodes):
        pack = pack_providing(lock.packs, class_type)
        missing.setdefault(pack.name if pack else "ComfyUI itself (update ComfyUI)", []).append(class_type)
    for pack, classes in missing.items():
        reasons.append(f"node pack {pack} missing ({', '.join(classes)})")
    absent = [f"{folder}/{name}" for folder, name in needs.models
              if folder in server.models and name not in server.models[folder]]
    if absent:
        reasons.append(f"model files missing: {', '.join(absent)} (comfy-drive fetch --backend {needs.backend})")
    return reasons


@dataclass(frozen=True)
class Choice:
    backend: str
    why: str  # one line for the dry run and the report


def _fits(scene: SceneSpec, name: str, backends: Backends, templates: object) -> str | None:
    """Why the scene's inputs rule the backend out (None: they do not)."""
    backend = backends.backend(name)
    workflow = backend.workflow
    if scene.driving_video is None and backend.without_driving_video:
        workflow = backend.without_driving_video
    if scene.reference_image is not None and backend.with_reference_image:
        workflow = backend.with_reference_image
    params = templates.get(workflow).params  # type: ignore[attr-defined]
    if scene.reference_image is None and "reference_image" in params and params["reference_image"].needed:
        return "needs a reference image"
    if scene.reference_image is not None and "reference_image" not in params:
        return "takes no reference image"
    return None


def choose(scene: SceneSpec, backends: Backends, servers: list[ServerFacts], lock: ModelsLock,
           templates: object, stages: list[str]) -> Choice:
    """The best backend of backends.yaml's `auto:` list every server can run for this scene."""
    if not backends.auto:
        raise UserError(f"{scene.where}: backend auto: backends.yaml has no auto: list to choose from")
    if not servers:
        raise UserError(f"{scene.where}: backend auto chooses for a server: pass --server URL or --simulate")
    unknown = [name for name in backends.auto if name not in backends.backends]
    if unknown:
        raise UserError(f"{scene.where}: backend auto: {', '.join(unknown)} in the auto: list is no declared backend")
    rejected: list[str] = []
    runnable: list[str] = []
    for name in backends.auto:
        needs = needs_of(name, backends, lock, stages)  # the server's side first: its workflows may not load
        problems = [f"{s.url}: {r}" if len(servers) > 1 else r for s in servers for r in unmet(needs, s, lock)]
        why = "; ".join(problems) or _fits(scene, name, backends, templates)
        if why is None:
            runnable.append(name)
        else:
            rejected.append(f"{name}: {why}")
    target = ", ".join(s.describe() for s in servers)
    if scene.driving_video is not None:
        followers = [n for n in runnable if backends.backend(n).takes_driving_video]
        if followers:
            return Choice(followers[0], _why(followers[0], target, rejected, "follows the driving video"))
        if runnable:
            return Choice(runnable[0], _why(runnable[0], target, rejected,
                                            "no backend this server can run follows a driving video: "
                                            "the driving video is not used"))
    elif runnable:
        return Choice(runnable[0], _why(runnable[0], target, rejected, ""))
    raise UserError(f"{scene.where}: backend auto: no backend of the auto: list can run this scene on {target}",
                    hint="; ".join(rejected))


def _why(name: str, target: str, rejected: list[str], note: str) -> str:
    passed = "; ".join(rejected)
    text = f"auto chose {name} for {target}" + (f" ({note})" if note else "")
    return text + (f"; passed over: {passed}" if passed else "")


def check_backend(name: str, backends: Backends, version: Version | None, target: str) -> None:
    """An explicitly chosen backend on a release too old for it: one clear message before anything
    else (the nodes it lacks come with the version, not with a pack to install)."""
    needed = backends.backend(name).needs.comfyui
    oldest = Version.parse(needed) if needed else None
    if oldest is not None and version is not None and version < oldest:
        raise UserError(f"backend {name} needs ComfyUI {oldest} or newer; {target} runs ComfyUI {version}",
                        hint="update ComfyUI there, or choose another backend (backend: auto picks one it can run)")
