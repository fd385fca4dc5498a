"""models.lock: the pinned model files the backends need (Hub repo, path, revision, size, sha256)."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from comfy_driver.config.source import load_yaml, validate

FOLDERS = ("checkpoints", "diffusion_models", "unet", "loras", "vae", "text_encoders", "clip",
           "clip_vision", "upscale_models", "controlnet", "model_patches", "audio_encoders", "sam2")


class ModelEntry(BaseModel):
    """One file. revision/size/sha256 may be null until `comfy-drive fetch` pins them from the Hub."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="file name as ComfyUI lists it in its folder")
    repo: str = Field(description="Hugging Face repo id, owner/name")
    path: str = Field(description="path of the file inside the repo")
    folder: str = Field(description="ComfyUI models folder")
    revision: str | None = None
    size: int | None = None
    sha256: str | None = None
    license: str = ""
    backends: list[str] = []
    allow_pickle: bool = False

    @field_validator("repo")
    @classmethod
    def _repo(cls, v: str) -> str:
        if not re.fullmatch(r"[\w.-]+/[\w.-]+", v):
            raise ValueError(f"{v!r} is not a Hub repo id (owner/name)")
        return v

    @field_validator("folder")
    @classmethod
    def _folder(cls, v: str) -> str:
        if v not in FOLDERS:
            raise ValueError(f"unknown ComfyUI models folder {v!r} (one of: {', '.join(FOLDERS)})")
        return v

    @field_validator("sha256")
    @classmethod
    def _sha(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"[0-9a-f]{64}", v):
            raise ValueError("sha256 must be 64 lowercase hex digits")
        return v

    @field_validator("revision")
    @classmethod
    def _rev(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"[0-9a-f]{40}", v):
            raise ValueError("revision must be a full 40-hex commit id")
        return v


class ModelsLock(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int = 1
    models: list[ModelEntry] = []

    def by_folder(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for m in self.models:
            out.setdefault(m.folder, []).append(m.name)
        return out


def load_lock(path: Path) -> ModelsLock:
    return validate(ModelsLock, load_yaml(path, what="models.lock"))
