"""A ComfyUI models tree: where each file goes, and where ComfyUI would also look for it.

Files land in `<models>/<folder>/<name>`. ComfyUI's extra_model_paths.yaml adds more folders to
search; a file already present in one of them is not downloaded again.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from comfy_driver.errors import UserError
from comfy_driver.models.lock import ModelEntry, relative_name

# ComfyUI's legacy folder names that point at the same place as the current ones.
ALIASES = {"diffusion_models": ("unet",), "text_encoders": ("clip",), "unet": ("diffusion_models",),
           "clip": ("text_encoders",)}
STATE_DIR = ".comfy-drive"  # partial downloads, quarantine, verification stamps: never loaded by ComfyUI


@dataclass
class ModelsTree:
    root: Path
    extra: dict[str, list[Path]] = field(default_factory=dict)

    @classmethod
    def locate(cls, models_dir: Path | None, comfyui: Path | None, extra_paths: Path | None) -> ModelsTree:
        if models_dir is not None and comfyui is not None:
            raise UserError("give --models-dir or --comfyui, not both")
        if comfyui is not None:
            if not (comfyui / "main.py").is_file() and not (comfyui / "models").is_dir():
                raise UserError(f"{comfyui}: does not look like a ComfyUI folder (no main.py, no models/)")
            root = comfyui / "models"
            if extra_paths is None and (comfyui / "extra_model_paths.yaml").is_file():
                extra_paths = comfyui / "extra_model_paths.yaml"
        elif models_dir is not None:
            root = models_dir
        else:
            raise UserError("where is the models folder?", hint="pass --comfyui DIR or --models-dir DIR")
        return cls(root.resolve(), read_extra_paths(extra_paths) if extra_paths else {})

    @property
    def state(self) -> Path:
        return self.root / STATE_DIR

    def target(self, entry: ModelEntry) -> Path:
        """Where the file goes, checked to stay inside its folder (called again right before writing)."""
        return inside(self.root / entry.folder, entry.name)

    def candidates(self, entry: ModelEntry) -> list[Path]:
        """Every place ComfyUI would find this file, the download target first."""
        places = [self.target(entry)]
        for folder in (entry.folder, *ALIASES.get(entry.folder, ())):
            if folder != entry.folder:
                places.append(self.root / folder / entry.name)
            places += [d / entry.name for d in self.extra.get(folder, [])]
        return places


def inside(folder: Path, name: str) -> Path:
    """folder/name, refusing a name that would leave the folder (however the name is written)."""
    try:
        relative_name(name)
    except ValueError as exc:
        raise UserError(f"refusing to write model file {name!r}: {exc}") from None
    target = folder / name
    base = os.path.normpath(folder)
    if os.path.commonpath([base, os.path.normpath(target)]) != base:
        raise UserError(f"refusing to write model file {name!r}: it is not inside {folder}")
    return target


def flat_name(name: str) -> str:
    """One file name for a model name with sub-folders (for partial and quarantined files)."""
    return name.replace("/", "--")


def read_extra_paths(path: Path) -> dict[str, list[Path]]:
    """ComfyUI's extra_model_paths.yaml: per section a base_path and folder -> path(s) lines."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise UserError(f"{path}: cannot read extra_model_paths.yaml ({exc})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected sections of folder paths")
    folders: dict[str, list[Path]] = {}
    for section, spec in data.items():
        if not isinstance(spec, dict):
            raise UserError(f"{path}: section {section!r} is not a mapping")
        base = Path(str(spec.get("base_path", ""))).expanduser()
        if not base.is_absolute():
            base = path.parent / base
        for folder, value in spec.items():
            if folder in ("base_path", "is_default") or value is None:
                continue
            for line in str(value).splitlines():
                if line.strip():
                    folders.setdefault(str(folder), []).append((base / line.strip()).resolve())
    return folders
