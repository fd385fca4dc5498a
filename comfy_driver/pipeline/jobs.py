"""From resolved scenes to jobs: the rendered API graph, its input files and its hash.

Uploaded inputs get content-addressed server names, known before any upload, so a scene's graph
(and its hash, the identity used to resume) is fixed offline by its prompt, settings, workflow and
the bytes of its input files.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from comfy_driver.comfy.catalog import Catalog
from comfy_driver.comfy.client import file_sha256, upload_name
from comfy_driver.config.series import LoadedSeries, SceneSpec
from comfy_driver.errors import UserError
from comfy_driver.models.catalog import bundled_catalog
from comfy_driver.models.lock import load_lock
from comfy_driver.paths import MODELS_LOCK, WORKFLOWS
from comfy_driver.workflow.layout import with_values
from comfy_driver.workflow.template import FILE_TYPES, Template, load_template

_NAMESPACE = uuid.UUID("6c1f0c1e-3a5e-4d59-9b43-9a3c2f6d1e20")
SCENE_FIELDS = ("prompt", "negative_prompt", "seed", "width", "height", "frames", "fps", "reference_image",
                "driving_video")


@dataclass
class SceneJob:
    spec: SceneSpec
    template: Template
    graph: dict[str, Any]
    uploads: dict[str, Path]  # server name -> local file
    graph_hash: str
    workflow: dict[str, Any] | None = None  # the GUI workflow with this scene's values, to embed in outputs
    output_nodes: frozenset[str] = frozenset()  # the nodes that write files
    on_oom: SceneJob | None = None  # what to render instead after an out-of-memory (series on_oom:)

    @property
    def key(self) -> str:
        return self.spec.key

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

    def get(self, name: str) -> Template:
        if name not in self._loaded:
            for d in self.dirs:
                if (d / f"{name}.json").is_file() or name.endswith(".json"):
                    self._loaded[name] = load_template(name, d, self.catalog)
                    break
            else:  # raises the 'known workflows' error
                self._loaded[name] = load_template(name, self.dirs[-1], self.catalog)
        return self._loaded[name]


def scene_values(spec: SceneSpec, template: Template) -> tuple[dict[str, Any], list[str]]:
    """The template parameter values of a scene, and the problems found (all of them)."""
    values: dict[str, Any] = {}
    problems: list[str] = []
    for name in SCENE_FIELDS:
        value = getattr(spec, name)
        if value is None:
            continue
        if name not in template.params:
            if name in ("reference_image", "driving_video"):
                problems.append(f"workflow {template.name!r} takes no {name.replace('_', ' ')}; "
                                "remove it from the scene or choose a backend that uses one")
            elif name in spec.explicit:
                problems.append(f"workflow {template.name!r} has no {name!r} parameter")
            continue
        values[name] = value
    for name, value in spec.params.items():
        values[name] = value
    return values, problems


def build_job(spec: SceneSpec, templates: TemplateCache, backend: str | None = None) -> SceneJob:
    backend = backend or spec.backend
    template = templates.get(backend)
    values, problems = scene_values(spec, template)
    uploads: dict[str, Path] = {}
    for name, param in template.params.items():
        if param.type in FILE_TYPES and name in values:
            path = Path(values[name])
            server_name = upload_name(path, file_sha256(path))
            uploads[server_name] = path
            values[name] = server_name
    if problems:
        raise UserError("\n".join(f"{spec.where}: {p}" for p in problems))
    graph = template.render(values, where=f"{spec.where}: ")
    workflow = with_values(template.workflow, graph, templates.catalog) if template.workflow else None
    outputs = frozenset(n for n, node in graph.items() if templates.catalog.is_output_node(node["class_type"]))
    return SceneJob(spec, template, graph, uploads, graph_hash(graph, backend), workflow, outputs)


def build_jobs(loaded: LoadedSeries, backend: str | None = None, catalog: Catalog | None = None) -> list[SceneJob]:
    """Every scene's job; all problems of all scenes are reported together."""
    series_dir = loaded.path.parent / loaded.series.workflows if loaded.series.workflows else None
    templates = TemplateCache(catalog or bundled_catalog(load_lock(MODELS_LOCK)), series_dir)
    jobs: list[SceneJob] = []
    errors: list[str] = []
    on_oom = loaded.series.on_oom
    for spec in loaded.scenes:
        try:
            job = build_job(spec, templates, backend)
            if on_oom is not None:
                smaller = replace(spec, width=on_oom.width or spec.width, height=on_oom.height or spec.height,
                                  frames=on_oom.frames or spec.frames, params={**spec.params, **on_oom.params},
                                  where=f"{spec.where} (on_oom)")
                job.on_oom = build_job(smaller, templates, on_oom.backend or backend)
            jobs.append(job)
        except UserError as exc:
            errors.append(str(exc))
    if errors:
        raise UserError("\n".join(errors))
    return jobs
