"""Output files a prompt produced, as the server lists them, and safe local names for them."""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath
from typing import Any

from pydantic import BaseModel

from comfy_driver.errors import RunError

# Video containers ComfyUI nodes write (core SaveVideo, VHS_VideoCombine); ffmpeg reads their metadata.
VIDEO_SUFFIXES = {".mp4", ".webm", ".mov", ".mkv", ".avi"}
# Image formats that may be animated: a video only when the server says so.
ANIMATED_IMAGE_SUFFIXES = {".gif", ".webp"}


class OutputFile(BaseModel):
    """One file reference from `executed.output` or history `outputs[node_id]`."""

    node_id: str
    key: str  # images, gifs, videos, audio, ...
    filename: str
    subfolder: str = ""
    type: str = "output"
    animated: bool = False
    format: str | None = None

    @property
    def is_video(self) -> bool:
        suffix = PurePosixPath(self.filename).suffix.lower()
        if suffix in ANIMATED_IMAGE_SUFFIXES:
            return self.animated or self.key == "gifs"
        return suffix in VIDEO_SUFFIXES or bool(self.format and self.format.startswith("video/"))


def collect_outputs(outputs: dict[str, Any], *, include_temp: bool = False) -> list[OutputFile]:
    """Every file of a history `outputs` mapping, in node order.

    SaveImage gives `images`; SaveAnimatedWEBP and core SaveVideo give `images` plus `animated: [true]`;
    VHS_VideoCombine gives `gifs` (with `format`). Previews (`type: temp`) are skipped unless asked for.
    """
    files: list[OutputFile] = []
    for node_id, node_out in outputs.items():
        if not isinstance(node_out, dict):
            continue
        animated = node_out.get("animated")
        is_animated = bool(animated and any(animated))
        for key, entries in node_out.items():
            if key == "animated" or not isinstance(entries, list):
                continue
            for entry in entries:
                if not isinstance(entry, dict) or not isinstance(entry.get("filename"), str):
                    continue
                if entry.get("type", "output") == "temp" and not include_temp:
                    continue
                files.append(OutputFile(node_id=str(node_id), key=key, filename=entry["filename"],
                                        subfolder=str(entry.get("subfolder") or ""),
                                        type=str(entry.get("type") or "output"),
                                        animated=is_animated, format=entry.get("format")))
    return files


_UNSAFE = re.compile(r"[\x00-\x1f<>:\"|?*\\]")


def safe_component(name: str) -> str:
    """A single path component that cannot climb, hide or name a device."""
    name = _UNSAFE.sub("_", name).strip().strip(".")
    return name[:200] or "_"


def safe_destination(dest_dir: Path, subfolder: str, filename: str) -> Path:
    """Where an output named by the server may be written: always inside dest_dir.

    The server's subfolder and filename are split on both slash kinds, dot-only and empty parts are
    dropped, and every part is sanitised.
    """
    def parts_of(text: str) -> list[str]:
        return [p for p in re.split(r"[\\/]+", text) if p and p not in (".", "..")]

    name_parts = parts_of(filename)
    if not name_parts:
        raise RunError(f"the server reported an output with no usable file name ({filename!r})")
    parts = parts_of(subfolder) + name_parts
    # Every part is now a plain name (no separators, no dot-only names): the path cannot climb out.
    return dest_dir.joinpath(*(safe_component(p) for p in parts))
