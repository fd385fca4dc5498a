"""From resolved scenes to jobs: the rendered API graph, its input files and its hash.

Uploaded inputs get content-addressed server names, known before any upload, so a scene's graph
(and its hash, the identity used to resume) is fixed offline by its prompt, settings, workflow and
the bytes of its input files.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from comfy_driver.comfy.catalog import Catalog
from comfy_driver.comfy.client import file_sha256, upload_name
from comfy_driver.comfy.outputs import safe_component
from comfy_driver.config.backends import Backends, load_backends
from comfy_driver.config.source import load_yaml, validate
from comfy_driver.config.series import LoadedSeries, SceneSpec
from comfy_driver.errors import UserError
from comfy_driver.models.catalog import bundled_catalog
from comfy_driver.models.lock import load_lock
from comfy_driver.paths import BACKENDS, WORKFLOWS, models_lock
from comfy_driver.models.needs import ServerFacts
from comfy_driver.pipeline.choose import AUTO, check_backend, choose
from comfy_driver.workflow.layout import with_values
from comfy_driver.workflow.template import FILE_TYPES, Param, ParamFile, Template, load_template

_NAMESPACE = uuid.UUID("6c1f0c1e-3a5e-4d59-9b43-9a3c2f6d1e20")
SCENE_FIELDS = ("prompt", "negative_prompt", "seed", "width", "height", "frames", "fps", "reference_image",
                "driving_video")


@dataclass
class SceneJob:
    spec: SceneSpec
    template: Template
    graph: dict[str, Any]
    uploads: dict[str, Path | None]  # server name -> local file (None: a clip not made yet, only validated)
    graph_hash: str
    workflow: dict[str, Any] | None = None  # the GUI workflow with this scene's values, to embed in outputs
    output_nodes: frozenset[str] = frozenset()  # the nodes that write files
    on_oom: SceneJob | None = None  # what to render instead after a failure of a fallback_on kind
    fallback_on: tuple[str, ...] = ()
    stage: int = 0  # which prompt of the scene this is (windows and stages follow the first)
    stages: int = 1
    stage_label: str = ""
    scene_hash: str = ""  # the scene as a whole: its steps and their settings
    backend: str = ""
    next: Callable[[Path | None], SceneJob] | None = None  # the next prompt, from this one's clip
    skipped: tuple[str, ...] = ()  # what of the scene this backend does not use (parameters, inputs)
    chosen: str = ""  # backend auto: what it chose and why

    @property
    def key(self) -> str:
        """The state key of this prompt: the scene's, or the scene's plus the step for chained ones."""
        if self.stages == 1:
            return self.spec.key
        return f"{self.spec.key}:{self.stage}-{safe_component(self.stage_label).replace(' ', '-')}"

    def prompt_id(self, attempt: int = 1) -> str:
        """Deterministic per scene, graph and attempt: a lost reply can be looked up, not re-posted."""
        return str(uuid.uuid5(_NAMESPACE, f"{self.spec.series}/{self.key}/{self.graph_hash}/{attempt}"))


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
            guess = difflib.get_close_matches(owner, known, n=1)
            problems.append(f"parameter {name!r}: no backend or stage {owner!r}"
                            + (f"; did you mean {guess[0]!r}?" if guess else f" (known: {', '.join(known)})"))
            continue
        stage_takers = [s.stage for i, s in enumerate(steps) if s.stage and param in takes[i]]
        if not dot and stage_takers:
            problems.append(f"parameter {name!r} is for stage {stage_takers[0]!r}: write '{stage_takers[0]}.{name}'")
            continue
        candidates = owned if dot else backends.all_workflows()
        if any(param in templates.params(w) for w in candidates):
            in_pipeline = owner == base or owner in {s.stage for s in steps}
            why = f"{steps[0].workflow} does not take it" if in_pipeline else f"{owner} is not in this pipeline"
            skipped.append(f"{name} ({why})")
        elif dot:
            names = sorted({p for w in owned for p in templates.params(w)})
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
        carry = spec.params.get(f"{base}.continue_motion_frames", spec.params.get("continue_motion_frames", 5))
        if isinstance(carry, bool) or not isinstance(carry, int) or not 0 <= carry < window:
            raise UserError(f"{spec.where}: params.continue_motion_frames: {carry!r} must be a whole number from 0 "
                            f"to {window - 1} (the frames each window repeats from the one before)")
        steps = [Step(workflow, base, {"frames": window}, False)]
        done = window
        while done < spec.frames:
            length = min(window, spec.frames - done + carry)
            steps.append(Step(extend, f"{base} window {len(steps) + 1}",
                              {"frames": length, "video_frame_offset": done - carry}, True))
            done += length - carry
    for stage in stages:
        steps.append(Step(backends.stages[stage].workflow, stage, {}, True, stage))
    return steps


def build_job(spec: SceneSpec, templates: TemplateCache, backend: str, backends: Backends) -> SceneJob:
    """The first prompt of a scene; each job knows how to build the next from its clip."""
    steps = plan_steps(spec, backends, backend)
    for step in steps:  # every problem of every step now, before anything runs
        templates.get(step.workflow)
    params, skipped = scope_params(spec, steps, backends.parse(backend)[0], backends, templates)
    steps = [replace(step, params=p) for step, p in zip(steps, params)]
    scene_hash = graph_hash({"steps": [[s.workflow, s.values] for s in steps]}, backend)
    job = _step_job(spec, templates, steps, 0, None, backend, scene_hash)
    job.skipped = tuple(skipped)
    return job


def _step_job(spec: SceneSpec, templates: TemplateCache, steps: list[Step], index: int, clip: Path | None,
              backend: str, scene_hash: str) -> SceneJob:
    step = steps[index]
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
    graph = template.render(values, where=f"{spec.where}: ")
    workflow = with_values(template.workflow, graph, templates.catalog) if template.workflow else None
    outputs = frozenset(n for n, node in graph.items() if templates.catalog.is_output_node(node["class_type"]))
    following = None
    if index + 1 < len(steps):
        def following(made: Path | None) -> SceneJob:
            return _step_job(spec, templates, steps, index + 1, made, backend, scene_hash)
    return SceneJob(spec, template, graph, uploads, graph_hash(graph, f"{backend}#{index}"), workflow, outputs,
                    stage=index, stages=len(steps), stage_label=step.label, scene_hash=scene_hash, backend=backend,
                    next=following)


def build_jobs(loaded: LoadedSeries, backend: str | None = None, catalog: Catalog | None = None,
               servers: list[ServerFacts] | None = None) -> list[SceneJob]:
    """Every scene's first job; all problems of all scenes are reported together.

    `servers`: what the run's servers offer, for `backend: auto` (see pipeline/choose.py).
    """
    series_dir = loaded.path.parent / loaded.series.workflows if loaded.series.workflows else None
    lock = load_lock(models_lock())
    templates = TemplateCache(catalog or bundled_catalog(lock), series_dir)
    target = "the server" if catalog is not None else "the bundled catalogue (no --server given)"
    backends = load_backends(BACKENDS).merged(loaded.series.backends)
    jobs: list[SceneJob] = []
    errors: list[str] = []
    on_oom = loaded.series.on_oom

    def instead(spec: SceneSpec, base: str, stages: list[str], tried: tuple[str, ...]) -> SceneJob:
        """The job of a fallback backend, itself with its own fallback (a chain, never a loop)."""
        if spec.driving_video is not None and not backends.backend(base).takes_driving_video:
            spec = replace(spec, driving_video=None)  # the fallback animates the reference alone
        job = build_job(spec, templates, "+".join([base, *stages]), backends)
        following = backends.backend(base).fallback
        if following and following not in tried:
            job.on_oom = instead(spec, following, stages, (*tried, base))
            job.fallback_on = tuple(backends.fallback_on)
        return job

    for spec in loaded.scenes:
        try:
            chosen = backend or spec.backend
            base, stages = backends.parse(chosen)
            why = ""
            if base == AUTO:
                choice = choose(spec, backends, servers or [], lock, templates.params, stages)
                base, why = choice.backend, choice.why
                chosen = "+".join([base, *stages])
            else:
                check_backend(base, backends, templates.catalog.version, target)
            dropped: tuple[str, ...] = ()
            if (backend or why) and spec.driving_video is not None and base in backends.backends \
                    and not backends.backend(base).takes_driving_video:  # the series was written for another
                spec, dropped = replace(spec, driving_video=None), (f"driving_video ({base} takes none)",)
            job = build_job(spec, templates, chosen, backends)
            job.skipped = dropped + job.skipped
            job.chosen = why
            if on_oom is not None:
                smaller = replace(spec, width=on_oom.width or spec.width, height=on_oom.height or spec.height,
                                  frames=on_oom.frames or spec.frames, params={**spec.params, **on_oom.params},
                                  where=f"{spec.where} (on_oom)")
                job.on_oom = instead(smaller, on_oom.backend or base, stages, (base,) if on_oom.backend else ())
                job.fallback_on = ("oom",)
            elif backends.backend(base).fallback:
                job.on_oom = instead(spec, backends.backend(base).fallback or base, stages, (base,))
                job.fallback_on = tuple(backends.fallback_on)
            jobs.append(job)
        except UserError as exc:
            errors.append(str(exc))
    if errors:
        raise UserError("\n".join(errors))
    return jobs
