"""The plan of a run, as data: scenes -> routes (the backend, then its fallbacks) -> steps.

Expanding a series yields a `Plan`; preflight, dry runs, resume, `--force`, the supervisor and the
report all read it. Each step has a typed key, the rule that renders its graph (fixed for a first
step, from the previous step's clip for the others) and its folder. Where every file of a run lies
is decided here, in `Layout`, and nowhere else.

A step's identity chains the identities of the steps before it with its own rendered graph (inputs
appear in graphs under content-addressed names, so their bytes are covered too); a scene is done
when the last step of one of its routes is done under the identity the plan gives it now. Editing
anything that shapes a scene's output (prompt, seed, a reference image, a stage's parameter) thus
renders it again; editing nothing keeps it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from comfy_driver.comfy.catalog import Catalog
from comfy_driver.comfy.outputs import safe_component
from comfy_driver.config.backends import fitted, load_backends
from comfy_driver.config.series import LoadedSeries, SceneSpec
from comfy_driver.errors import UserError
from comfy_driver.paths import BACKENDS, models_lock
from comfy_driver.pipeline.choose import AUTO, check_version, choose
from comfy_driver.pipeline.steps import Rendered, Step, TemplateCache, plan_steps, render_step, scope_params

if TYPE_CHECKING:  # loaded for the bundled catalogue or `backend: auto` (lock, needs), a scene's inputs (ffmpeg)
    from comfy_driver.media.ffmpeg import VideoInfo
    from comfy_driver.models.lock import ModelsLock
    from comfy_driver.models.needs import ServerFacts

# The nodes that read a driving video and, where it ends within a window, pad the pose with its last
# frame (ComfyUI's comfy_extras/nodes_wan.py); other readers are only said to follow no motion there.
HOLD_LAST_FRAME = frozenset({"WanAnimateToVideo", "WanAnimate2ToVideo"})
_NAMESPACE = uuid.UUID("6c1f0c1e-3a5e-4d59-9b43-9a3c2f6d1e20")


@dataclass(frozen=True, order=True)
class SceneKey:
    episode: str
    scene: str

    def __str__(self) -> str:
        return f"{self.episode}/{self.scene}"

    @classmethod
    def parse(cls, text: str) -> SceneKey:
        """'EPISODE/SCENE' as the user types it (ids never contain '/')."""
        episode, sep, scene = text.partition("/")
        if not sep or not episode or not scene or "/" in scene:
            raise UserError(f"{text!r} is not a scene key", hint="write it as EPISODE/SCENE, e.g. ep01/s01")
        return cls(episode, scene)


@dataclass(frozen=True, order=True)
class StepKey:
    scene: SceneKey
    route: int  # 0: the scene's backend; 1, 2, ...: its fallbacks, in the order they are tried
    index: int  # 0-based within the route

    def __str__(self) -> str:
        fallback = f" fallback {self.route}" if self.route else ""
        return f"{self.scene}{fallback} step {self.index + 1}"


class Layout:
    """Where a run's files lie, under the series' output folder (the one place that says so).

    A scene's clip is `<episode>/<scene>/clip.<ext>`, whatever route made it; the steps before a
    route's last keep their files in `<episode>/<scene>/<n>-<label>/` (fallbacks: `f<route>-<n>-...`).
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    @property
    def state_db(self) -> Path:
        return self.root / "state.db"

    @property
    def report(self) -> Path:
        return self.root / "report.json"

    def scene_dir(self, key: SceneKey) -> Path:
        return self.root / safe_component(key.episode) / safe_component(key.scene)

    def step_dir(self, key: StepKey, label: str, last: bool) -> Path:
        if last:
            return self.scene_dir(key.scene)
        prefix = f"f{key.route}-" if key.route else ""
        return self.scene_dir(key.scene) / safe_component(f"{prefix}{key.index + 1}-{label}".replace(" ", "-"))

    def episode_file(self, episode: str) -> Path:
        return self.root / safe_component(episode) / f"{safe_component(episode)}.mp4"

    def relative(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()


@dataclass
class PlannedStep:
    """One prompt of a scene: its key, its rule of rendering, its identity and its folder."""

    key: StepKey
    step: Step
    first: Rendered  # the graph as planned; a step taking a clip has the placeholder in it
    identity: str
    folder: Path
    last: bool
    count: int  # steps in the route
    spec: SceneSpec
    templates: TemplateCache

    @property
    def label(self) -> str:
        return self.step.label

    @property
    def name(self) -> str:
        """The step for messages: 'ep01/s02 step 2/3 (denoise)'; a one-step scene is its key."""
        if self.count == 1 and not self.key.route:
            return str(self.key.scene)
        return f"{self.key} of {self.count} ({self.label})"

    @property
    def takes_clip(self) -> bool:
        return self.step.takes_clip

    def render(self, clip: Path | None) -> Rendered:
        """This step's graph: as planned for a first step, from the previous step's clip otherwise."""
        if not self.step.takes_clip:
            return self.first
        if clip is None:
            raise ValueError(f"{self.name} takes the previous step's clip")
        return render_step(self.spec, self.templates, self.step, clip)

    def prompt_id(self, series: str, graph_hash: str, attempt: int) -> str:
        """Deterministic per step, graph and attempt: a lost reply (or a lost state file) is looked up on
        the server, never posted twice."""
        return str(uuid.uuid5(_NAMESPACE, f"{series}/{self.key}/{graph_hash}/{attempt}"))


@dataclass
class Route:
    """One way to render a scene: a backend with its windows and stages."""

    backend: str
    steps: list[PlannedStep]
    fallback_on: tuple[str, ...] = ()  # error kinds that send the scene on to the next route
    note: str | None = None  # what was adapted for this route (frames a fallback can take)
    skipped: tuple[str, ...] = ()  # what of the scene this backend does not use (parameters, inputs)

    @property
    def identity(self) -> str:
        return self.steps[-1].identity


@dataclass
class ScenePlan:
    key: SceneKey
    spec: SceneSpec
    index: int  # 1-based over the whole run
    routes: list[Route]
    unavailable: str | None = None  # the fallback after the last route cannot render this scene: why
    notes: list[str] = field(default_factory=list)  # said before submitting, and in the report

    @property
    def steps(self) -> list[PlannedStep]:
        return [s for r in self.routes for s in r.steps]


@dataclass
class EpisodePlan:
    id: str
    title: str
    scenes: list[SceneKey]
    file: Path


@dataclass
class Plan:
    series: str
    source: Path
    layout: Layout
    scenes: list[ScenePlan]
    episodes: list[EpisodePlan]

    def scene(self, key: SceneKey) -> ScenePlan:
        return self._by_key[key]

    def __post_init__(self) -> None:
        self._by_key = {s.key: s for s in self.scenes}

    def scene_keys(self, texts: list[str]) -> set[SceneKey]:
        """Scene keys as the user typed them (--force); 'all' is every scene."""
        if "all" in texts:
            return set(self._by_key)
        by_text = {str(k): k for k in self._by_key}
        unknown = [t for t in texts if t not in by_text]
        if unknown:
            raise UserError(f"no such scene {unknown[0]!r} to render again",
                            hint=f"scenes: {', '.join(by_text)}")
        return {by_text[t] for t in texts}

    def moved(self, root: Path) -> Plan:
        """The same plan writing under another folder (a comparison's run folder of one backend)."""
        def move(path: Path) -> Path:
            return root / path.relative_to(self.layout.root)

        scenes = [replace(s, routes=[replace(r, steps=[replace(p, folder=move(p.folder)) for p in r.steps])
                                     for r in s.routes]) for s in self.scenes]
        return Plan(self.series, self.source, Layout(root), scenes,
                    [replace(e, file=move(e.file)) for e in self.episodes])

    def only(self, keys: list[SceneKey]) -> Plan:
        """These scenes alone, and no episodes (a comparison renders scenes only)."""
        return Plan(self.series, self.source, self.layout, [self._by_key[k] for k in keys], [])

    def to_json(self) -> dict[str, Any]:
        """What the state database records of the plan: every scene, route and step with its identity."""
        return {"series": self.series, "scenes": [
            {"key": str(s.key), "routes": [
                {"backend": r.backend, "fallback_on": list(r.fallback_on), "note": r.note,
                 "skipped": list(r.skipped), "steps": [
                    {"label": p.label, "workflow": p.step.workflow, "identity": p.identity,
                     "prompt": p.first.prompt_text, "nodes": len(p.first.graph), "uploads": len(p.first.uploads),
                     "graph_hash": p.first.graph_hash, "folder": self.layout.relative(p.folder)
                     if p.folder != self.layout.root else ""} for p in r.steps]} for r in s.routes],
             "unavailable": s.unavailable, "notes": s.notes}
            for s in self.scenes]}


def _default(param: Any) -> Any:
    """A template parameter's default (None when the template has no such parameter or no default)."""
    return param.default if param is not None else None


def _chain(previous: str, backend: str, rendered: Rendered) -> str:
    text = json.dumps([previous, backend, rendered.template.name, rendered.graph_hash])
    return hashlib.sha256(text.encode()).hexdigest()


class _Planner:
    def __init__(self, loaded: LoadedSeries, catalog: Catalog | None,
                 servers: list[ServerFacts] | None = None) -> None:
        series_dir = loaded.path.parent / loaded.series.workflows if loaded.series.workflows else None
        self.target = "the server" if catalog is not None else "the bundled catalogue (no --server given)"
        if catalog is None:
            from comfy_driver.models.catalog import bundled_catalog
            catalog = bundled_catalog(self.lock)
        self.templates = TemplateCache(catalog, series_dir)
        self.servers = servers or []  # what the run's servers offer, for backend auto
        self.backends = load_backends(BACKENDS).merged(loaded.series.backends)
        self.layout = Layout(loaded.output_dir / loaded.slug)
        self.loaded = loaded
        self._videos: dict[Path, VideoInfo] = {}  # driving videos probed, each once
        self._images: set[Path] = set()  # reference images checked

    @functools.cached_property
    def lock(self) -> ModelsLock:
        """The shipped models.lock: read for the bundled catalogue or `backend: auto`, else never."""
        from comfy_driver.models.lock import load_lock
        return load_lock(models_lock())

    def check_inputs(self, spec: SceneSpec) -> None:
        """The reference image and the driving video are what they claim, read from their content (each
        file once, however many scenes use it)."""
        if spec.reference_image is None and spec.driving_video is None:
            return
        from comfy_driver.media.inputs import check_image, check_video  # ffmpeg's probe: for a scene with inputs
        if spec.reference_image is not None and spec.reference_image not in self._images:
            check_image(spec.reference_image, spec.wheres.get("reference_image", spec.where),
                        self._shown(spec.reference_image))
            self._images.add(spec.reference_image)
        if spec.driving_video is not None and spec.driving_video not in self._videos:
            self._videos[spec.driving_video] = check_video(
                spec.driving_video, spec.wheres.get("driving_video", spec.where), self._shown(spec.driving_video))

    def _shown(self, path: Path) -> str:
        """A file as the series names it: relative to the series' folder when it lies inside."""
        folder = self.loaded.path.parent.resolve()
        return str(path.relative_to(folder)) if path.is_relative_to(folder) else str(path)

    def check_backend(self, spec: SceneSpec, backend: str, where: str | None) -> None:
        """A backend that is neither declared nor a workflow: one message at the line that names it (none
        when the caller chose it for every scene)."""
        base, _ = self.backends.parse(backend)
        if base in self.backends.backends or self.templates.has(base):
            return
        known = sorted(self.backends.backends)
        import difflib  # a suggestion for a bad name: the error path only
        guess = difflib.get_close_matches(base, known, n=1)
        raise UserError(f"{where + ': ' if where else ''}unknown backend {base!r}"
                        + (f"; did you mean {guess[0]!r}?" if guess else ""),
                        hint=f"backends: {', '.join(known)} (or a workflow of the series' own workflows folder)")

    def route(self, spec: SceneSpec, backend: str, route: int) -> Route:
        steps = plan_steps(spec, self.backends, backend)
        for step in steps:  # every problem of every step now, before anything runs
            self.templates.get(step.workflow)
        params, skipped = scope_params(spec, steps, self.backends.parse(backend)[0], self.backends, self.templates)
        steps = [replace(step, params=p) for step, p in zip(steps, params)]
        key = SceneKey(spec.episode_id, spec.scene_id)
        planned: list[PlannedStep] = []
        identity = ""
        for i, step in enumerate(steps):
            rendered = render_step(spec, self.templates, step, None)
            identity = _chain(identity, backend, rendered)
            step_key = StepKey(key, route, i)
            last = i == len(steps) - 1
            planned.append(PlannedStep(step_key, step, rendered, identity,
                                       self.layout.step_dir(step_key, step.label, last), last, len(steps), spec,
                                       self.templates))
        return Route(backend, planned, skipped=tuple(skipped))

    def driving_video_fits(self, spec: SceneSpec, route: Route) -> list[str]:
        """What a driving video shorter than the scene does, said before anything is submitted.

        The Animate workflows read its frames one for one (LoadVideo keeps the file's own rate), each
        window from where the scene has got to (`video_frame_offset`). A window that would start at or
        past its end is refused: there ComfyUI's WanAnimateToVideo drops the pose altogether and
        WanAnimate2ToVideo fails. A shortfall within a window (the only one, or the last) is said, with
        what the node does about it: the core Animate nodes hold the last frame (nothing loops).
        """
        assert spec.driving_video is not None
        info = self._videos[spec.driving_video]  # probed by check_inputs
        name = self._shown(spec.driving_video)
        for step in route.steps:
            start = step.step.values.get("video_frame_offset")
            if start is not None and start >= info.frames:
                raise UserError(f"{spec.where}: driving video {name} has {info.frames} frames, but {step.label} of "
                                f"this scene would start at its frame {start}, past its end",
                                hint=f"make the scene at most {info.frames} frames long, or use a longer driving "
                                     "video")
        params = self.templates.get(route.steps[0].step.workflow).params
        frames = spec.frames or _default(params.get("frames"))
        fps = spec.fps or _default(params.get("fps"))
        notes = []
        if frames and frames > info.frames:
            readers = {node.get("class_type") for step in route.steps for node in step.first.graph.values()}
            what = ("hold its last frame (the video is not looped)" if readers & HOLD_LAST_FRAME
                    else "follow no driving motion")
            notes.append(f"driving video {name} has {info.frames} frames, the scene {frames}: its last "
                         f"{frames - info.frames} frame(s) {what}")
        if fps and info.fps and abs(fps - info.fps) > 0.01:
            notes.append(f"driving video {name} runs at {info.fps:g} fps, the scene at {fps:g}: its frames are taken "
                         f"one for one, so its motion plays {fps / info.fps:.2f}x as fast")
        return notes

    def fallback(self, scene: ScenePlan, spec: SceneSpec, base: str, stages: list[str]) -> Route | None:
        """The route of a fallback backend; its own limits apply (frames it can take, no driving video).

        A fallback that cannot render the scene at all is recorded with its reason: the scene fails
        with it if the fallback is ever needed, and runs otherwise.
        """
        number = len(scene.routes)
        backend = self.backends.backend(base)
        note = None
        if spec.driving_video is not None and not backend.takes_driving_video:
            spec = replace(spec, driving_video=None)  # the fallback animates the reference alone
        try:
            frames = self.templates.get(plan_steps(spec, self.backends, base)[0].workflow).params.get("frames")
            if frames is not None and frames.max is not None and spec.frames and spec.frames > frames.max:
                note = f"{base} takes at most {frames.max:g} frames: its clip has {frames.max:g} of {spec.frames}"
                spec = replace(spec, frames=int(frames.max))
            route = self.route(spec, "+".join([base, *stages]), number)
        except UserError as exc:
            scene.unavailable = f"fallback {base!r} cannot render this scene: {exc}"
            return None
        route.note = note
        return route

    def scene(self, spec: SceneSpec, index: int, backend: str | None) -> ScenePlan:
        self.check_inputs(spec)
        chosen = backend or spec.backend
        base, stages = self.backends.parse(chosen)
        why = ""
        if base == AUTO:  # the best backend the servers can run for this scene (pipeline/choose.py)
            choice = choose(spec, self.backends, self.servers, self.lock, self.templates.params, stages)
            base, why = choice.backend, choice.why
            chosen = "+".join([base, *stages])
        else:
            check_version(base, self.backends, self.templates.catalog.version, self.target)
        self.check_backend(spec, chosen, None if backend else spec.wheres.get("backend", spec.where))
        asked, step = spec.frames, self.backends.backend(base).frame_step if base in self.backends.backends else None
        dropped: tuple[str, ...] = ()
        if (backend or why) and spec.driving_video is not None and base in self.backends.backends \
                and not self.backends.backend(base).takes_driving_video:  # the series was written for another
            spec, dropped = replace(spec, driving_video=None), (f"driving_video ({base} takes none)",)
        own = replace(spec, frames=fitted(asked, step)) if asked else spec  # as its model makes them (fallbacks: theirs)
        first = self.route(own, chosen, 0)
        first.skipped = dropped + first.skipped
        scene = ScenePlan(SceneKey(spec.episode_id, spec.scene_id), own, index, [first])
        if why:
            scene.notes.append(why)
        if asked != own.frames:
            scene.notes.append(f"{base} makes {step}·k+1 frames: the clip has {own.frames} frames ({asked} asked)")
        if own.driving_video is not None:
            scene.notes += self.driving_video_fits(own, first)
        on_oom = self.loaded.series.on_oom
        tried = [base]
        following: str | None = self.backends.backend(base).fallback
        kinds = tuple(self.backends.fallback_on)
        if on_oom is not None:
            spec = replace(spec, width=on_oom.width or spec.width, height=on_oom.height or spec.height,
                           frames=on_oom.frames or spec.frames, params={**spec.params, **on_oom.params},
                           where=f"{spec.where} (on_oom)")
            following, kinds = on_oom.backend or base, ("oom",)
            if on_oom.backend is None:
                tried = []
        while following and following not in tried:
            scene.routes[-1].fallback_on = kinds
            route = self.fallback(scene, spec, following, stages)
            if route is None:
                break
            scene.routes.append(route)
            tried.append(following)
            following, kinds = self.backends.backend(following).fallback, tuple(self.backends.fallback_on)
        return scene


def build_plan(loaded: LoadedSeries, backend: str | None = None, catalog: Catalog | None = None, *,
               servers: list[ServerFacts] | None = None) -> Plan:
    """The plan of a series; every problem of every scene is reported together.

    `catalog` converts GUI-saved workflows as that server would (default: the catalogue shipped).
    The run's folder is the series' output folder, under its title's slug (see `Plan.moved`).
    `servers`: what the run's servers offer, for `backend: auto`.
    """
    planner = _Planner(loaded, catalog, servers)
    scenes: list[ScenePlan] = []
    errors: list[UserError] = []
    for i, spec in enumerate(loaded.scenes):
        try:
            scenes.append(planner.scene(spec, i + 1, backend))
        except UserError as exc:  # each problem once (a series-wide mistake is every scene's)
            errors += [exc] if exc.message not in [e.message for e in errors] else []
    if len(errors) == 1:
        raise errors[0]  # keeps its class (a BadInputFile stays one)
    if errors:
        hints = dict.fromkeys(e.hint for e in errors if e.hint)
        raise UserError("\n".join(e.message for e in errors), hint="; ".join(hints) or None)
    episodes: dict[str, EpisodePlan] = {}
    for spec, scene in zip(loaded.scenes, scenes):
        ep = episodes.get(spec.episode_id)
        if ep is None:
            ep = episodes[spec.episode_id] = EpisodePlan(spec.episode_id, spec.episode_title, [],
                                                         planner.layout.episode_file(spec.episode_id))
        ep.scenes.append(scene.key)  # (the scene's own key: a look-up by it finds it by identity)
    return Plan(loaded.series.title, loaded.path, planner.layout, scenes, list(episodes.values()))
