"""The prompt and workflow ComfyUI embeds in the files it saves, read back.

- PNG (SaveImage): tEXt chunks "prompt" and "workflow", JSON.
- WebP (SaveAnimatedWEBP): EXIF tags 0x0110 "prompt:{json}" and 0x010f "workflow:{json}".
- MP4/WebM (core SaveVideo): container metadata keys "prompt" and "workflow", JSON;
  (VHS_VideoCombine): a "comment" holding {"prompt": ..., "workflow": ...}.
"""

from __future__ import annotations

import subprocess
import warnings
from pathlib import Path
from typing import Any

from comfy_driver import jsontext
from comfy_driver.comfy.outputs import VIDEO_SUFFIXES
from comfy_driver.errors import BadInputFile, UserError
from comfy_driver.media.ffmpeg import container, ffmpeg_exe


def _json_or_none(text: Any) -> Any:
    if not isinstance(text, (str, bytes)):
        return None
    try:
        return jsontext.loads(text)
    except ValueError:
        return None


def read_embedded(path: Path) -> dict[str, Any]:
    """{"prompt": api graph or None, "workflow": UI graph or None} from a file ComfyUI saved."""
    suffix = path.suffix.lower()
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    if suffix in VIDEO_SUFFIXES:
        return _from_video(path)
    from PIL import Image, UnidentifiedImageError  # here: a run that replays nothing never loads Pillow

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # only its text is read
            img = Image.open(path)
        with img:
            if img.format == "PNG":
                return {"prompt": _json_or_none(img.info.get("prompt")),
                        "workflow": _json_or_none(img.info.get("workflow"))}
            if img.format == "WEBP":
                found: dict[str, Any] = {"prompt": None, "workflow": None}
                for value in img.getexif().values():
                    if isinstance(value, bytes):
                        value = value.decode("utf-8", "replace")
                    if isinstance(value, str) and ":" in value:
                        key, _, rest = value.partition(":")
                        if key in found:
                            found[key] = _json_or_none(rest)
                return found
            raise BadInputFile(f"{path}: a {img.format} image; ComfyUI embeds workflows only in PNG and WebP")
    except Image.DecompressionBombError:
        raise BadInputFile(f"{path}: an image far too large to be one ComfyUI saved") from None
    except (UnidentifiedImageError, OSError):
        raise BadInputFile(f"{path}: not an image, video or workflow file ComfyUI writes") from None


def _from_video(path: Path) -> dict[str, Any]:
    demuxer = container(path)  # by its first bytes: ffmpeg never guesses (an ffconcat text opens other files)
    if demuxer is None:
        raise BadInputFile(f"{path}: not a readable video file")
    proc = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-f", demuxer, "-i",
                           str(path), "-f", "ffmetadata", "-"], capture_output=True, check=False)
    if proc.returncode != 0:
        raise BadInputFile(f"{path}: not a readable video file")
    meta = parse_ffmetadata(proc.stdout.decode("utf-8", "replace"))
    found = {"prompt": _json_or_none(meta.get("prompt")), "workflow": _json_or_none(meta.get("workflow"))}
    comment = _json_or_none(meta.get("comment"))
    if isinstance(comment, dict):
        found["prompt"] = found["prompt"] or comment.get("prompt")
        found["workflow"] = found["workflow"] or comment.get("workflow")
    return found


def parse_ffmetadata(text: str) -> dict[str, str]:
    """ffmpeg's ffmetadata format: key=value lines; '=', ';', '#', '\\' and newlines escaped by '\\'."""
    values: dict[str, str] = {}
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if not line or line.startswith(";") or line.startswith("#") or line.startswith("["):
            continue
        while line.endswith("\\") and not line.endswith("\\\\") and i < len(lines):
            line = line[:-1] + "\n" + lines[i]
            i += 1
        key: list[str] = []
        value: list[str] = []
        escaped, in_key = False, True
        for ch in line:
            if escaped:
                (key if in_key else value).append(ch)
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == "=" and in_key:
                in_key = False
            else:
                (key if in_key else value).append(ch)
        if not in_key:
            values["".join(key)] = "".join(value)
    return values
