"""One scene's steps and how each is rendered into an API graph.

A scene takes one or more prompts: its backend's workflow (the variant its inputs call for), more
windows when it is longer than one, then the stages named after '+'. Uploaded inputs get
content-addressed server names, known before any upload, so a step's graph is fixed offline by the
scene's values, the workflow and the bytes of its input files; a step that takes the previous
step's clip is rendered with a placeholder name until that clip exists.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from comfy_driver.comfy.catalog import Catalog
from comfy_driver.comfy.client import file_sha256, upload_name
from comfy_driver.config.backends import Backends
from comfy_driver.config.series import SceneSpec
from comfy_driver.errors import UserError
from comfy_driver.paths import WORKFLOWS
from comfy_driver.workflow.layout import with_values
from comfy_driver.workflow.template import FILE_TYPES, Param, ParamFile, Template, load_template
from comfy_driver.yamltext import load_yaml, validate

SCENE_FIELDS = ("prompt", "negative_prompt", "seed", "width", "height", "frames", "fps", "reference_image",
                "driving_video")


def graph_hash(graph: dict[str, Any], backend: str) -> str:
    text = json.dumps({"backend": backend, "graph": graph}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


class TemplateCache:
    """Templates by name, each loaded once; the series' own workflows folder is searched first.

    GUI-saved templates are converted with `catalog`: the server's, or the one comfy-drive ships.
    """

    def __init__(self, catalog: Catalog, series_dir: Path | None = None) -> None:
        self.catalog = catalog
        self.dirs = [d for d in (series_dir, WORKFLOWS) if d is not None]
        self._loaded: dict[str, Template] = {}
        self._exists: dict[str, bool] = {}

    def has(self, name: str) -> bool:
        """Whether a workflow of this name exists (the series' own folder, then the shipped one; looked
        up once per name, not once per scene)."""
        if name not in self._exists:
            self._exists[name] = name.endswith(".json") or any((d / f"{name}.json").is_file() for d in self.dirs)
        return self._exists[name]

    def params(self, name: str) -> dict[str, Param]:
        """A workflow's declared parameters, also where this catalogue cannot convert its graph (a
        backend for a newer ComfyUI, or a pack this server lacks): naming parameters needs no graph."""
        try:
            return self.get(name).params
        except UserError:
            for d in self.dirs:
                path = d / f"{name}.params.yaml"
                if path.is_file():
                    return validate(ParamFile, load_yaml(path, what="parameter file")).params
            return {}

    def get(self, name: str) -> Template:
        if name not in self._loaded:
            for d in self.dirs:
                if (d / f"{name}.json").is_file() or name.endswith(".json"):
                    self._loaded[name] = load_template(name, d, self.catalog)
                    break
            else:  # raises the 'known workflows' error
                self._loaded[name] = load_template(name, self.dirs[-1], self.catalog)
        return self._loaded[name]


PLACEHOLDER_CLIP = "comfy_drive/" + "0" * 20 + ".mp4"  # stands for a clip not made yet, when validating


@dataclass(frozen=True)
class Step:
    """One prompt of a scene: a workflow, its extra values, and whether it takes the previous clip."""

    workflow: str
    label: str
    values: dict[str, Any]
    takes_clip: bool
    stage: str | None = None  # the stage name, for 'stage.param' values
    params: dict[str, Any] = field(default_factory=dict)  # the scene's parameters this step takes


def scene_values(spec: SceneSpec, template: Template, *, strict: bool,
                 params: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The template parameter values of a scene, and the problems found (all of them).

    Strict (a backend's own workflow): a scene field the workflow cannot use is an error. A stage
    takes only the scene fields it declares. `params` are the scene's parameters for this step
    (see `scope_params`).
    """
    values: dict[str, Any] = {}
    problems: list[str] = []
    for name in SCENE_FIELDS:
        value = getattr(spec, name)
        if value is None:
            continue
        if name not in template.params:
            if not strict or name in template.spec.ignores:
                continue
            if name in ("reference_image", "driving_video"):
                problems.append(f"workflow {template.name!r} takes no {name.replace('_', ' ')}; "
                                "remove it from the scene or choose a backend that uses one")
            elif name in spec.explicit:
                problems.append(f"workflow {template.name!r} has no {name!r} parameter")
            continue
        values[name] = value
    values.update(params)
    return values, problems


def scope_params(spec: SceneSpec, steps: list[Step], base: str, backends: Backends,
                 templates: TemplateCache) -> tuple[list[dict[str, Any]], list[str]]:
    """Each step's share of the scene's parameters, and those no step of this pipeline takes.

    'name' and 'BACKEND.name' go to the backend's steps that take the name, 'STAGE.name' to that
    stage. A name for a backend or stage outside this pipeline, or one only another variant of the
    backend takes, is skipped (and listed); a name no workflow in backends.yaml takes stays for the
    first step, whose template reports it as unknown with a did-you-mean.
    """
    per_step: list[dict[str, Any]] = [{} for _ in steps]
    skipped: list[str] = []
    problems: list[str] = []
    takes = {i: set(templates.get(s.workflow).params) for i, s in enumerate(steps)}
    for name, value in spec.params.items():
        owner, dot, param = name.partition(".")
        if not dot:
            owner, param = base, name
        targets = [i for i, s in enumerate(steps) if (s.stage or base) == owner and param in takes[i]]
        if targets:
            for i in targets:
                per_step[i][param] = value
            continue
        owned = backends.owner_workflows(owner)
        if owned is None and owner == base:
            owned = [steps[0].workflow]
        if owned is None:
            known = sorted({*backends.backends, *backends.stages})
            import difflib  # a suggestion for a bad name: the error path only
            guess = difflib.get_close_matches(owner, known, n=1)
            problems.append(f"parameter {name!r}: no backend or stage {owner!r}"
                            + (f"; did you mean {guess[0]!r}?" if guess else f" (known: {', '.join(known)})"))
            continue
        candidates = owned if dot else backends.all_workflows()
        if any(param in templates.params(w) for w in candidates):
            in_pipeline = owner == base or owner in {s.stage for s in steps}
            why = f"{steps[0].workflow} does not take it" if in_pipeline else f"{owner} is not in this pipeline"
            stage_takers = [s.stage for i, s in enumerate(steps) if s.stage and param in takes[i]]
            if not dot and stage_takers:  # a plain name is the backend's; say how to reach the stage
                why += f"; '{stage_takers[0]}.{name}' sets the stage's"
            skipped.append(f"{name} ({why})")
        elif dot:
            names = sorted({p for w in owned for p in templates.params(w)})
            import difflib  # a suggestion for a bad name: the error path only
            guess = difflib.get_close_matches(param, names, n=1)
            problems.append(f"unknown parameter {name!r} for {owner!r}"
                            + (f"; did you mean '{owner}.{guess[0]}'?" if guess else f" (it takes: {', '.join(names)})"))
        else:
            per_step[0][param] = value  # the template names it as unknown, with a did-you-mean
    if problems:
        raise UserError("\n".join(f"{spec.where}: {p}" for p in problems))
    return per_step, skipped


def plan_steps(spec: SceneSpec, backends: Backends, backend: str) -> list[Step]:
    """The prompts a scene takes: its backend's workflow (the variant its inputs call for), more
    windows when it is longer than one, then the stages named after '+'."""
    base, stages = backends.parse(backend)
    spec_backend = backends.backend(base)
    problems = []
    if spec.driving_video is not None and base in backends.backends and not spec_backend.takes_driving_video:
        problems.append(f"backend {base!r} cannot follow a driving video; backends that can: "
                        f"{', '.join(backends.takers_of_driving_video()) or 'none'}")
    if problems:
        raise UserError("\n".join(f"{spec.where}: {p}" for p in problems))
    workflow, extend = spec_backend.workflow, spec_backend.extend
    if spec.driving_video is None and spec_backend.without_driving_video:
        workflow = spec_backend.without_driving_video
        extend = spec_backend.extend_without_driving_video or extend
    if spec.reference_image is not None and spec_backend.with_reference_image:
        workflow = spec_backend.with_reference_image
    steps = [Step(workflow, base, {}, False)]
    window = spec_backend.window_frames
    if extend and window and spec.frames and spec.frames > window:
        carry = spec_backend.carry_frames
        if carry is None:
            carry = spec.params.get(f"{base}.continue_motion_frames", spec.params.get("continue_motion_frames", 5))
            if isinstance(carry, bool) or not isinstance(carry, int) or not 0 <= carry < window:
                raise UserError(f"{spec.where}: params.continue_motion_frames: {carry!r} must be a whole number "
                                f"from 0 to {window - 1} (the frames each window repeats from the one before)")
            step = spec_backend.frame_step
            if step and (carry - 1) % step:
                raise UserError(f"{spec.where}: params.continue_motion_frames: {carry} would cut a window short: "
                                f"{base} makes {step}·k+1 frames, so carry one of "
                                f"{', '.join(str(n) for n in range(1, window, step)[:4])}")
        steps = [Step(workflow, base, {"frames": window}, False)]
        done = window
        while done < spec.frames:
            length = min(window, spec.frames - done + carry)
            # The offset is the frames made so far, as the previous window's video_frame_offset output
            # would say: the node steps back over the carried frames itself (reads from done - carry).
            steps.append(Step(extend, f"{base} window {len(steps) + 1}",
                              {"frames": length, "video_frame_offset": done}, True))
            done += length - carry
    for stage in stages:
        steps.append(Step(backends.stages[stage].workflow, stage, {}, True, stage))
    return steps


def param_where(spec: SceneSpec, name: str) -> str:
    """The file:line that set a parameter of a step (under any of its scoped names), else the scene's."""
    keys = [f"params.{name}", *(k for k in spec.wheres if k.startswith("params.") and k.endswith(f".{name}"))]
    return next((spec.wheres[k] for k in keys if k in spec.wheres), spec.where)


@dataclass
class Rendered:
    """A step's API graph for one input clip (or the placeholder), with what it uploads and makes."""

    template: Template
    graph: dict[str, Any]
    uploads: dict[str, Path | None]  # server name -> local file (None: the placeholder of a clip not made yet)
    workflow: dict[str, Any] | None  # the GUI workflow with this step's values, embedded in its outputs
    output_nodes: frozenset[str]  # the nodes that write files
    graph_hash: str

    @property
    def prompt_text(self) -> str | None:
        """The positive prompt as the server gets it (for dry runs and reports)."""
        for node_id, input_name in self.template.targets.get("prompt", []):
            value = self.graph[node_id]["inputs"].get(input_name)
            if isinstance(value, str):
                return value
        return None


def render_step(spec: SceneSpec, templates: TemplateCache, step: Step, clip: Path | None) -> Rendered:
    """A step's graph; every problem of the scene's values is reported at once, naming the workflow."""
    template = templates.get(step.workflow)
    values, problems = scene_values(spec, template, strict=step.stage is None, params=step.params)
    values.update(step.values)
    uploads: dict[str, Path | None] = {}
    if step.takes_clip:
        if clip is None:
            uploads[PLACEHOLDER_CLIP] = None
            values["clip"] = PLACEHOLDER_CLIP
        else:
            values["clip"] = str(clip)
    for name, param in template.params.items():
        if param.type in FILE_TYPES and name in values and values[name] != PLACEHOLDER_CLIP:
            path = Path(values[name])
            server_name = upload_name(path, file_sha256(path))
            uploads[server_name] = path
            values[name] = server_name
    if problems:
        raise UserError("\n".join(f"{spec.where}: {p}" for p in problems))
    graph = template.render(values, where=f"{spec.where}: ", where_of=lambda name: f"{param_where(spec, name)}: ")
    workflow = with_values(template.workflow, graph, templates.catalog) if template.workflow else None
    outputs = frozenset(n for n, node in graph.items() if templates.catalog.is_output_node(node["class_type"]))
    return Rendered(template, graph, uploads, workflow, outputs, graph_hash(graph, step.workflow))
