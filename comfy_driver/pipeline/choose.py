"""`backend: auto`: the best backend each server of the run can run for a scene.

It goes down backends.yaml's `auto:` list, best first, and takes the first backend every server of
the run can run for the scene (models/needs.py says what each needs and whether a server has it); a
scene with a driving video takes the first that follows one, and only when none can does it fall
back to the best that animates without it (said so). An explicitly chosen backend on a release too
old for it gets one clear message.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from comfy_driver.comfy.versions import Version
from comfy_driver.config.backends import Backends
from comfy_driver.config.series import SceneSpec
from comfy_driver.errors import UserError
from comfy_driver.workflow.template import Param

if TYPE_CHECKING:  # models.needs (and the lock, the packs, the workflow reader) load when a scene is `auto`
    from comfy_driver.models.lock import ModelsLock
    from comfy_driver.models.needs import ServerFacts

AUTO = "auto"
ParamsOf = Callable[[str], Mapping[str, Param]]


@dataclass(frozen=True)
class Choice:
    backend: str
    why: str  # one line for the dry run and the report


def uses_auto(scenes: Iterable[SceneSpec], backend: str | None) -> bool:
    """Whether any scene's backend (or the run's --backend) is `auto`."""
    names = [backend] if backend else [spec.backend for spec in scenes]
    return any(name.split("+")[0].strip() == AUTO for name in names)


def _fits(scene: SceneSpec, name: str, backends: Backends, params_of: ParamsOf) -> str | None:
    """Why the scene's inputs rule the backend out (None: they do not)."""
    backend = backends.backend(name)
    workflow = backend.workflow
    if scene.driving_video is None and backend.without_driving_video:
        workflow = backend.without_driving_video
    if scene.reference_image is not None and backend.with_reference_image:
        workflow = backend.with_reference_image
    params = params_of(workflow)
    if scene.reference_image is None and "reference_image" in params and params["reference_image"].needed:
        return "needs a reference image"
    if scene.reference_image is not None and "reference_image" not in params:
        return "takes no reference image"
    return None


def choose(scene: SceneSpec, backends: Backends, servers: list[ServerFacts], lock: ModelsLock,
           params_of: ParamsOf, stages: list[str]) -> Choice:
    """The best backend of backends.yaml's `auto:` list every server can run for this scene.

    `params_of(workflow)`: the parameters a workflow declares (whether it takes a reference image).
    """
    from comfy_driver.models.needs import needs_of, unmet

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
        why = "; ".join(problems) or _fits(scene, name, backends, params_of)
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


def check_version(name: str, backends: Backends, version: Version | None, target: str) -> None:
    """An explicitly chosen backend on a release too old for it: one clear message before anything
    else (the nodes it lacks come with the version, not with a pack to install)."""
    needed = backends.backend(name).needs.comfyui
    oldest = Version.parse(needed) if needed else None
    if oldest is not None and version is not None and version < oldest:
        raise UserError(f"backend {name} needs ComfyUI {oldest} or newer; {target} runs ComfyUI {version}",
                        hint="update ComfyUI there, or choose another backend (backend: auto picks one it can run)")
