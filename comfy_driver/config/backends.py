"""backends.yaml: which workflows make up each backend, the stages that can follow, and fallbacks."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from comfy_driver.errors import UserError
from comfy_driver.yamltext import load_yaml, validate

ErrorKind = Literal["oom", "execution", "interrupted", "lost", "validation", "download", "server"]


class Needs(BaseModel):
    """What a server must offer beyond what the backend's workflows and models.lock already say
    (their node classes give the packs, models.lock's `backends:` the model files)."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    vram_gb: float | None = Field(default=None, gt=0, le=1024)  # the GPU memory its defaults run in
    comfyui: str | None = None  # the oldest ComfyUI release that has its core nodes

    @field_validator("comfyui")
    @classmethod
    def _version(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"\d+\.\d+(\.\d+)?", v):
            raise ValueError(f"{v!r} is not a ComfyUI version (like 0.33.0)")
        return v


class Backend(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)

    workflow: str
    without_driving_video: str | None = None  # the workflow for scenes without a driving video
    with_reference_image: str | None = None  # the workflow for scenes with a reference image
    extend: str | None = None  # the workflow of each further window of a long scene
    extend_without_driving_video: str | None = None
    window_frames: int | None = Field(default=None, ge=8, le=1000)
    frame_step: int | None = Field(default=None, ge=2, le=16)  # its model makes frame_step·k+1 frames (Wan: 4)
    carry_frames: int | None = Field(default=None, ge=0, le=64)  # frames a further window repeats, fixed by
    # its node (WanAnimate2ToVideo: 1); unset: the continue_motion_frames parameter (5 by default)
    takes_driving_video: bool = False
    fallback: str | None = None
    needs: Needs = Needs()

    @model_validator(mode="after")
    def _whole_windows(self) -> Backend:
        if self.carry_frames is not None and self.window_frames and self.carry_frames >= self.window_frames:
            raise ValueError(f"carry_frames {self.carry_frames}: a window repeats fewer frames than it has "
                             f"({self.window_frames})")
        if self.frame_step and self.carry_frames is not None and (self.carry_frames - 1) % self.frame_step:
            raise ValueError(f"carry_frames {self.carry_frames}: this model makes {self.frame_step}·k+1 frames, "
                             f"so a window carries 1, {1 + self.frame_step}, {1 + 2 * self.frame_step} ... of them")
        if self.frame_step and self.window_frames and (self.window_frames - 1) % self.frame_step:
            raise ValueError(f"window_frames {self.window_frames}: this model makes {self.frame_step}·k+1 frames, "
                             f"so a window is one of {fitted(self.window_frames, self.frame_step) - self.frame_step}, "
                             f"{fitted(self.window_frames, self.frame_step)}")
        return self

    def workflows(self) -> list[str]:
        """Every workflow this backend may run, its variants and further windows included."""
        names = [self.workflow, self.without_driving_video, self.with_reference_image, self.extend,
                 self.extend_without_driving_video]
        return list(dict.fromkeys(n for n in names if n))


class Stage(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)

    workflow: str


class Backends(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)

    backends: dict[str, Backend] = {}
    stages: dict[str, Stage] = {}
    fallback_on: list[ErrorKind] = ["oom"]
    auto: list[str] = []  # `backend: auto` tries these, best first, and takes the first the server can run

    def merged(self, other: Backends | None) -> Backends:
        if other is None:
            return self
        return Backends(backends={**self.backends, **other.backends}, stages={**self.stages, **other.stages},
                        fallback_on=other.fallback_on if "fallback_on" in other.model_fields_set else self.fallback_on,
                        auto=other.auto if "auto" in other.model_fields_set else self.auto)

    _workflows: dict[str, Backend] = PrivateAttr(default_factory=dict)  # one-workflow backends, made once

    def backend(self, name: str) -> Backend:
        """A backend by name; a workflow name that is no declared backend is a one-workflow backend (one
        instance per name, as a declared one is: planning asks several times a scene)."""
        found = self.backends.get(name) or self._workflows.get(name)
        if found is None:
            found = self._workflows[name] = Backend(workflow=name)
        return found

    def parse(self, text: str) -> tuple[str, list[str]]:
        """'wan22_animate+denoise+upscale' -> ('wan22_animate', ['denoise', 'upscale'])."""
        base, *stages = [part.strip() for part in text.split("+")]
        unknown = [s for s in stages if s not in self.stages]
        if not base or unknown:
            bad = unknown[0] if unknown else text
            import difflib  # a suggestion for a bad name: the error path only
            guess = difflib.get_close_matches(bad, list(self.stages), n=1)
            raise UserError(f"backend {text!r}: unknown stage {bad!r}"
                            + (f"; did you mean {guess[0]!r}?" if guess else f" (stages: {', '.join(self.stages)})"))
        return base, stages

    def chain(self, name: str) -> list[str]:
        """A backend and the fallbacks it may hand a scene to, in order (a loop ends the chain)."""
        chain = [name]
        following = self.backend(name).fallback
        while following and following not in chain:
            chain.append(following)
            following = self.backend(following).fallback
        return chain

    def owner_workflows(self, owner: str) -> list[str] | None:
        """The workflows a 'owner.param' name may set: a declared backend's or a stage's; None for neither."""
        if owner in self.stages:
            return [self.stages[owner].workflow]
        return self.backends[owner].workflows() if owner in self.backends else None

    def all_workflows(self) -> list[str]:
        names = [w for b in self.backends.values() for w in b.workflows()]
        return list(dict.fromkeys(names + [s.workflow for s in self.stages.values()]))

    def takers_of_driving_video(self) -> list[str]:
        return sorted(n for n, b in self.backends.items() if b.takes_driving_video)


def load_backends(path: Path) -> Backends:
    return validate(Backends, load_yaml(path, what="backends file"))


def fitted(frames: int, step: int | None) -> int:
    """`frames` rounded up to what a model making step·k+1 frames gives (itself without a step)."""
    return frames if not step or frames < 1 else -(-(frames - 1) // step) * step + 1
