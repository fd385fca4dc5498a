"""series.yaml: a series of episodes, each a few scenes; every error names file, line and field.

Strings are jinja2 templates rendered per scene with `series`, `episode`, `scene`, `character`,
`characters` and the user's `vars`; an undefined variable is an error, never an empty string.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from comfy_driver.comfy.target import V2_PREFIX, Target, native_only, parse_target
from comfy_driver.config.backends import Backends
from comfy_driver.config.publish import PublishSettings
from comfy_driver.config.templates import render
from comfy_driver.errors import UserError
from comfy_driver.yamltext import Located, load_yaml, validate

MAX_FRAMES = 10000  # frames of one scene, however they are given (frames, or duration x fps)
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


def _seed(v: Any) -> Any:
    if v is None or v == "random" or (isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**64):
        return v
    raise ValueError(f"seed must be a whole number from 0 to 2^64-1 or 'random', not {v!r}")


Seed = Annotated[Any, BeforeValidator(_seed)]


def _check_id(v: str | None) -> str | None:
    if v is not None and not _ID.match(v):
        raise ValueError(f"{v!r}: ids may use letters, digits, '-' and '_' (up to 64), starting with a letter or digit")
    return v


class SceneSettings(BaseModel):
    """What a scene can set; `defaults:` sets the same fields for every scene."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    prompt: str | None = None
    negative_prompt: str | None = None
    seed: Seed | None = None
    reference_image: str | None = None
    driving_video: str | None = None
    frames: int | None = Field(default=None, ge=1, le=MAX_FRAMES)
    duration: float | None = Field(default=None, gt=0, le=600)
    width: int | None = Field(default=None, ge=16, le=8192)
    height: int | None = Field(default=None, ge=16, le=8192)
    fps: float | None = Field(default=None, gt=0, le=240)
    backend: str | None = None
    params: dict[str, Any] = {}


class Scene(SceneSettings):
    id: str | None = None
    character: str | None = None

    @field_validator("id")
    @classmethod
    def _id(cls, v: str | None) -> str | None:
        return _check_id(v)


class Episode(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)

    id: str | None = None
    title: str | None = None
    scenes: list[Scene] = Field(min_length=1)

    @field_validator("id")
    @classmethod
    def _id(cls, v: str | None) -> str | None:
        return _check_id(v)


class Character(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)

    name: str = Field(min_length=1)
    reference_image: str | None = None
    description: str = ""


class OnOutOfMemory(BaseModel):
    """Tried once when a scene runs out of GPU memory: another backend and/or smaller settings."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    backend: str | None = None
    width: int | None = Field(default=None, ge=16, le=8192)
    height: int | None = Field(default=None, ge=16, le=8192)
    frames: int | None = Field(default=None, ge=1, le=MAX_FRAMES)
    params: dict[str, Any] = {}


class Series(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)

    title: str = Field(min_length=1)
    server: str | None = None
    servers: list[str | Target] = []  # a ComfyUI URL, v2+URL, or {url, api: v2, key_env, max_jobs}
    backend: str = "wan22_animate"
    output: str = "out"
    workflows: str | None = None
    vars: dict[str, Any] = {}
    defaults: SceneSettings = SceneSettings()
    characters: list[Character] = []
    episodes: list[Episode] = Field(min_length=1)
    on_oom: OnOutOfMemory | None = None
    backends: Backends | None = None  # additions to / overrides of backends.yaml
    publish: PublishSettings | None = None  # YouTube; used by run --publish and the publish command

    @model_validator(mode="after")
    def _checks(self) -> Series:
        names = [c.name for c in self.characters]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"character names must be unique: {', '.join(sorted(dup))}")
        if self.server and self.servers:
            raise ValueError("give either server or servers, not both")
        return self

    @field_validator("servers", mode="before")
    @classmethod
    def _targets(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [v if isinstance(v, str) and not v.lower().startswith(V2_PREFIX) else Target.model_validate(
                {"url": v[len(V2_PREFIX):], "api": "v2"} if isinstance(v, str) else v) for v in value]
        return value

    @property
    def targets(self) -> list[Target]:
        return [parse_target(self.server)] if self.server else [parse_target(s) for s in self.servers]

    @property
    def server_urls(self) -> list[str]:
        """The native ComfyUI servers (compare samples their memory; v2 targets are refused there)."""
        return native_only([self.server] if self.server else list(self.servers))


@dataclass
class SceneSpec:
    """One scene, fully resolved: defaults merged, templates rendered, paths absolute."""

    series: str
    episode_id: str
    episode_title: str
    scene_id: str
    index: int  # 1-based within the episode
    backend: str
    prompt: str | None
    negative_prompt: str
    seed: int
    frames: int | None
    width: int | None
    height: int | None
    fps: float | None
    reference_image: Path | None
    driving_video: Path | None
    params: dict[str, Any]
    where: str  # file:line of the scene, for messages
    explicit: set[str] = field(default_factory=set)  # fields the user set (not defaults)
    wheres: dict[str, str] = field(default_factory=dict)  # file:line of 'backend', the input files, 'params.NAME'

    @property
    def key(self) -> str:
        return f"{self.episode_id}/{self.scene_id}"


@dataclass
class LoadedSeries:
    path: Path
    series: Series
    scenes: list[SceneSpec]

    @property
    def output_dir(self) -> Path:
        try:
            return (self.path.parent / self.series.output).resolve()
        except (OSError, RuntimeError) as exc:  # a link loop
            raise UserError(f"{self.path}: output {self.series.output!r} cannot be used ({exc})") from None

    @property
    def slug(self) -> str:
        return slugify(self.series.title)


def slugify(text: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()
    return slug[:64] or "series"


def _render(text: str, ctx: dict[str, Any], where: str, field_name: str) -> str:
    return render(text, ctx, where=where, field=field_name)


def scene_seed(series: str, episode: str, scene: str) -> int:
    """The seed of a `random` scene: fixed per scene, so a rerun renders the very same graph."""
    digest = hashlib.sha256(f"{series}\0{episode}\0{scene}".encode()).digest()
    return int.from_bytes(digest[:6], "big")


def load_series(path: Path) -> LoadedSeries:
    located = load_yaml(path, what="series file")
    if not isinstance(located.data, dict):
        raise UserError(f"{path}: a series file is a mapping with title, episodes, ... at the top level")
    series = validate(Series, located)
    return LoadedSeries(path, series, _expand(series, located))


def _expand(series: Series, located: Located) -> list[SceneSpec]:
    base = located.path.parent
    series_ctx = {"series": {"title": series.title}, "vars": series.vars}
    chars = {c.name: c.model_copy(update={"description": _render(
        c.description, series_ctx, located.where(("characters", i, "description")), "description")})
        for i, c in enumerate(series.characters)}
    out: list[SceneSpec] = []
    seen_eps: set[str] = set()
    for e_i, ep in enumerate(series.episodes):
        ep_id = ep.id or f"ep{e_i + 1:02d}"
        if ep_id in seen_eps:
            raise UserError(f"{located.where(('episodes', e_i, 'id'))}: episode id {ep_id!r} is used twice")
        seen_eps.add(ep_id)
        ep_title = _render(ep.title, {**series_ctx, "episode": {"id": ep_id, "index": e_i + 1}},
                           located.where(("episodes", e_i, "title")), "title") if ep.title else ep_id
        seen: set[str] = set()
        for s_i, sc in enumerate(ep.scenes):
            loc = ("episodes", e_i, "scenes", s_i)
            where = located.where(loc)
            sc_id = sc.id or f"s{s_i + 1:02d}"
            if sc_id in seen:
                raise UserError(f"{located.where(loc + ('id',))}: scene id {sc_id!r} is used twice in {ep_id}")
            seen.add(sc_id)
            character = None
            if sc.character is not None:
                character = chars.get(sc.character)
                if character is None:
                    raise UserError(f"{located.where(loc + ('character',))}: unknown character {sc.character!r}",
                                    hint=f"characters: {', '.join(chars) or 'none defined'}")
            explicit = set(sc.model_fields_set) - {"id", "character"}
            merged: dict[str, Any] = {}
            for name in SceneSettings.model_fields:
                value = getattr(sc, name) if name in sc.model_fields_set else getattr(series.defaults, name)
                merged[name] = value
            merged["params"] = {**series.defaults.params, **sc.params}
            ctx = {**series_ctx,
                   "episode": {"id": ep_id, "title": ep_title, "index": e_i + 1},
                   "scene": {"id": sc_id, "index": s_i + 1},
                   "character": character.model_dump() if character else None,
                   "characters": {n: c.model_dump() for n, c in chars.items()}}

            def field_where(name: str) -> str:
                return located.where(loc + (name,)) if name in sc.model_fields_set else \
                    located.where(("defaults", name))

            texts = {}
            for name in ("prompt", "negative_prompt"):
                value = merged[name]
                texts[name] = _render(value, ctx, field_where(name), name) if value is not None else None
            params = {k: _render(v, ctx, field_where("params"), f"params.{k}") if isinstance(v, str) else v
                      for k, v in merged["params"].items()}
            ref = merged["reference_image"] or (character.reference_image if character else None)
            ref_where = field_where("reference_image") if merged["reference_image"] else \
                located.where(("characters", list(chars).index(character.name), "reference_image")) \
                if character else where
            fps = merged["fps"]
            frames = merged["frames"]
            if merged["duration"] is not None:
                if "frames" in sc.model_fields_set and "duration" in sc.model_fields_set:
                    raise UserError(f"{where}: give frames or duration, not both")
                if frames is None or "duration" in sc.model_fields_set:
                    if fps is None:
                        raise UserError(f"{field_where('duration')}: duration needs fps to become a frame count")
                    frames = max(1, round(merged["duration"] * fps))
                    if frames > MAX_FRAMES:
                        raise UserError(f"{field_where('duration')}: duration {merged['duration']:g} s at {fps:g} fps "
                                        f"is {frames} frames; a scene has at most {MAX_FRAMES}",
                                        hint="shorten it, lower fps, or split it into several scenes")
            seed = merged["seed"]
            if seed is None or seed == "random":
                seed = scene_seed(series.title, ep_id, sc_id)
            out.append(SceneSpec(
                series=series.title, episode_id=ep_id, episode_title=ep_title, scene_id=sc_id,
                index=s_i + 1, backend=merged["backend"] or series.backend, prompt=texts["prompt"],
                negative_prompt=texts["negative_prompt"] or "", seed=int(seed), frames=frames,
                width=merged["width"], height=merged["height"], fps=fps,
                reference_image=input_path(base, _render(ref, ctx, ref_where, "reference_image"), ref_where)
                if ref else None,
                driving_video=input_path(base, _render(merged["driving_video"], ctx, field_where("driving_video"),
                                                       "driving_video"), field_where("driving_video"))
                if merged["driving_video"] else None,
                params=params, where=where, explicit=explicit,
                wheres={"backend": field_where("backend") if "backend" in sc.model_fields_set
                        or "backend" in series.defaults.model_fields_set else located.where(("backend",)),
                        "reference_image": ref_where, "driving_video": field_where("driving_video"),
                        **{f"params.{k}": located.where(loc + ("params", k)) if k in sc.params
                           else located.where(("defaults", "params", k)) for k in params}}))
    return out


def input_path(base: Path, value: str, where: str) -> Path:
    """The file `value` names (relative to base), which must exist and be a regular file.

    What the file holds (an image, a video) is checked where the plan is built, which reads it anyway.
    """
    try:
        path = (base / value).resolve()
        is_file = path.is_file()
    except (OSError, RuntimeError, ValueError) as exc:  # a link loop, a NUL in the name, ...
        raise UserError(f"{where}: file {value!r} cannot be opened ({exc})") from None
    if not is_file:
        raise UserError(f"{where}: file {value!r} not found (looked in {path.parent})")
    return path
