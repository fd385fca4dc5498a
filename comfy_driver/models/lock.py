"""models.lock: the pinned model files the backends need (Hub repo, path, revision, size, sha256)."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from comfy_driver.errors import UserError
from comfy_driver.models.packs import PackEntry
from comfy_driver.paths import is_shipped, user_lock
from comfy_driver.yamltext import Located, load_yaml, validate

FOLDERS = ("checkpoints", "diffusion_models", "unet", "loras", "vae", "text_encoders", "clip",
           "clip_vision", "upscale_models", "controlnet", "model_patches", "audio_encoders", "sam2")


class ModelEntry(BaseModel):
    """One file. The sha256 is what is trusted; an entry without one is pinned from the Hub's metadata
    (`lock pin`, shown to the user) before it is downloaded. revision and size, when null, are read
    from the Hub at the first download and written back."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    name: str = Field(description="file name as ComfyUI lists it in its folder")
    repo: str = Field(description="Hugging Face repo id, owner/name")
    path: str = Field(description="path of the file inside the repo")
    folder: str = Field(description="ComfyUI models folder")
    revision: str | None = None
    size: int | None = Field(default=None, ge=1, description="bytes")
    sha256: str | None = None
    license: str = ""
    backends: list[str] = []
    allow_pickle: bool = False

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return relative_name(v)

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        return relative_name(v, "path")

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


    @property
    def pickled(self) -> bool:
        """A pickle-based format: loading it can run arbitrary code."""
        return Path(self.name).suffix.lower() in PICKLE_SUFFIXES or Path(self.path).suffix.lower() in PICKLE_SUFFIXES

    @property
    def pinned(self) -> bool:
        return self.revision is not None and self.size is not None and self.sha256 is not None


LOCK_VERSION = 1
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".pkl")
_DRIVE = re.compile(r"^[A-Za-z]:")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def relative_name(value: str, what: str = "name") -> str:
    """A file name under a folder, as ComfyUI lists it: relative, '/'-separated, no '.' or '..' parts.

    Model names come from files people share (models.lock, downloaded workflows), so a name is never
    trusted to stay in its folder: absolute paths, drive letters, backslashes, parent references,
    control characters and empty parts are refused, and what is accepted is the normalised form.
    """
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{what} is empty")
    if _CONTROL.search(value):
        raise ValueError(f"{what} {value!r} has control characters")
    if "\\" in value:
        raise ValueError(f"{what} {value!r} uses '\\': write sub-folders with '/'")
    if value.startswith("/") or _DRIVE.match(value):
        raise ValueError(f"{what} {value!r} is an absolute path: give it relative to its ComfyUI folder")
    parts = value.split("/")
    if any(p in ("", ".", "..") or p != p.strip() for p in parts):
        raise ValueError(f"{what} {value!r} must be a plain relative path (no '..', '.', empty or padded parts)")
    if len(value) > 255 * 4 or any(len(p.encode()) > 255 for p in parts):
        raise ValueError(f"{what} {value!r} is too long")
    return value


class ModelsLock(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)

    version: int = 1
    models: list[ModelEntry] = []
    packs: list[PackEntry] = []  # custom node packs, each at one commit

    @field_validator("version")
    @classmethod
    def _version(cls, v: int) -> int:
        if v != LOCK_VERSION:
            raise ValueError(f"models.lock version {v} is not one this comfy-drive reads (it reads version "
                             f"{LOCK_VERSION}); a newer comfy-drive may have written it")
        return v

    @model_validator(mode="after")
    def _unique(self) -> ModelsLock:
        seen: set[tuple[str, str]] = set()
        for m in self.models:
            if (m.folder, m.name) in seen:
                raise ValueError(f"{m.folder}/{m.name} is listed twice")
            seen.add((m.folder, m.name))
        names = [p.name for p in self.packs]
        if len(names) != len(set(names)):
            raise ValueError(f"a pack is listed twice: {', '.join(sorted({n for n in names if names.count(n) > 1}))}")
        return self

    def by_folder(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for m in self.models:
            out.setdefault(m.folder, []).append(m.name)
        return out

    def for_backends(self, backends: list[str]) -> list[ModelEntry]:
        """The entries the named backends need (all entries when none are named)."""
        if not backends:
            return list(self.models)
        known = {b for m in self.models for b in m.backends}
        unknown = [b for b in backends if b not in known]
        if unknown:
            raise UserError(f"no model in models.lock is used by backend {', '.join(map(repr, unknown))}",
                            hint=f"backends in models.lock: {', '.join(sorted(known))}")
        return [m for m in self.models if set(m.backends) & set(backends)]


@dataclass
class LockFile:
    """models.lock as loaded, with the line of every field, so pins can be written back in place."""

    path: Path
    lock: ModelsLock
    located: Located

    def line(self, index: int, field: str | None = None) -> int | None:
        return self.located.lines.get(("models", index, field) if field else ("models", index))


def load_lock(path: Path) -> ModelsLock:
    return read_lock(path).lock


def read_lock(path: Path) -> LockFile:
    located = load_yaml(path, what="models.lock")
    return LockFile(path, validate(ModelsLock, located), located)


def write_pins(lockfile: LockFile, pins: dict[int, dict[str, object]]) -> None:
    """Write pinned values (revision, size, sha256, ...) into models.lock, keeping its comments.

    A field already present has its line rewritten; a missing one is added after the entry's name.
    """
    lockfile.path = writable_lock(lockfile.path)
    lines = lockfile.path.read_text(encoding="utf-8").splitlines(keepends=True)
    inserts: list[tuple[int, str]] = []
    for index, fields in pins.items():
        name_line = lockfile.line(index, "name")
        assert name_line is not None
        indent = re.match(r"\s*(?:- )?", lines[name_line - 1])
        pad = " " * (indent.end() if indent else 4)
        for field, value in fields.items():
            text = f"{field}: {_yaml_scalar(value)}"
            line = lockfile.line(index, field)
            if line is not None:
                old = lines[line - 1]
                lead = old[:len(old) - len(old.lstrip())]
                if old.lstrip().startswith("- "):
                    lead += "- "
                lines[line - 1] = f"{lead}{text}\n"
            else:
                inserts.append((name_line, f"{pad}{text}\n"))
    for after, text in sorted(inserts, key=lambda x: -x[0]):
        lines.insert(after, text)
    tmp = lockfile.path.with_name(f".{lockfile.path.name}.tmp")
    tmp.write_text("".join(lines), encoding="utf-8")
    os.replace(tmp, lockfile.path)


def append_entry(path: Path, entry: ModelEntry) -> Path:
    """Add an entry at the end of models.lock's models list (before its packs), in the file's own style;
    returns the file written."""
    path = writable_lock(path)
    text = path.read_text(encoding="utf-8")
    fields = entry.model_dump()
    block = [f"  - name: {_yaml_scalar(fields.pop('name'))}"]
    for key in ("repo", "path", "folder", "revision", "size", "sha256", "license", "backends", "allow_pickle"):
        value = fields[key]
        if key == "allow_pickle" and not value:
            continue
        block.append(f"    {key}: {_yaml_scalar(value)}")
    text = re.sub(r"(?m)^models:\s*\[\]\s*$", "models:", text)
    if not text.endswith("\n"):
        text += "\n"
    lines = text.splitlines(keepends=True)
    end = next((i for i, line in enumerate(lines) if re.match(r"packs:", line)), len(lines))
    while end > 0 and (lines[end - 1].startswith("#") or not lines[end - 1].strip()):
        end -= 1  # the comments that introduce the next section stay with it
    lines[end:end] = [line + "\n" for line in block]
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(lines), encoding="utf-8")
    os.replace(tmp, path)
    return path


def writable_lock(path: Path) -> Path:
    """Where changes to `path` go: itself, or for the shipped models.lock (never written), the user's
    own copy in the config folder, made from the shipped one the first time."""
    if not is_shipped(path):
        return path
    own = user_lock()
    if not own.is_file():
        own.parent.mkdir(parents=True, exist_ok=True)
        tmp = own.with_name(f".{own.name}.tmp")
        tmp.write_bytes(path.read_bytes())
        os.replace(tmp, own)
    return own


def _yaml_scalar(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(_yaml_scalar(v) for v in value) + "]"
    return json.dumps(str(value)) if re.search(r"[:#\[\]{},&*!|>'\"%@`]|^\s|\s$|^$", str(value)) else str(value)
