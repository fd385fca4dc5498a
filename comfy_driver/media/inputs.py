"""Input media (reference images, driving videos) checked for what they are, not what they are named.

An image is opened by its content and must be one of the formats ComfyUI's loaders read, within a
size that cannot be a decompression bomb (its header is read before any pixel is decoded). A video
must start like a real video container (MP4/MOV, Matroska/WebM, AVI, GIF) and hold a decodable video
stream of a sane size: a PNG renamed .mp4, or an ffconcat text file (which would make ffmpeg read
other files) is refused whatever its suffix.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from comfy_driver.errors import BadInputFile, UserError
from comfy_driver.media.ffmpeg import VideoInfo, probe

IMAGE_FORMATS = {"PNG": "PNG", "JPEG": "JPEG", "WEBP": "WebP", "GIF": "GIF", "BMP": "BMP", "TIFF": "TIFF"}
MAX_SIDE = 16384  # ComfyUI's largest image side
MAX_PIXELS = 8192 * 8192
MAX_VIDEO_SIDE = 8192


def check_image(path: Path, where: str, value: str) -> tuple[int, int]:
    """(width, height) of an image ComfyUI can load; anything else is a clear UserError."""
    from PIL import Image, UnidentifiedImageError

    hint = "use a PNG, JPEG or WebP file"
    too_large = f"too large to load (at most {MAX_SIDE} a side and {MAX_PIXELS // 1_000_000} megapixels)"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the size is checked below
            img = Image.open(path)
        with img:
            fmt, (width, height) = img.format, img.size
            if fmt not in IMAGE_FORMATS:
                raise BadInputFile(f"{where}: {value!r} is a {fmt} image; ComfyUI loads "
                                f"{', '.join(IMAGE_FORMATS.values())}", hint=hint)
            if max(width, height) > MAX_SIDE or width * height > MAX_PIXELS:
                raise BadInputFile(f"{where}: {value!r} is {width}x{height} pixels, {too_large}", hint="scale it down first")
            img.verify()
    except Image.DecompressionBombError:  # PIL refuses to open it at all: far past the limit
        raise BadInputFile(f"{where}: {value!r} is {too_large}", hint="scale it down first") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise BadInputFile(f"{where}: {value!r} is not an image ComfyUI can load", hint=hint) from None
    return width, height


def check_video(path: Path, where: str, value: str) -> VideoInfo:
    """What a video holds, read from its content; anything but a real video is a clear UserError."""
    try:
        info = probe(path)
    except UserError:
        raise BadInputFile(f"{where}: {value!r} is not a video ffmpeg can read",
                        hint="use an MP4 (H.264) or WebM file") from None
    if max(info.width, info.height) > MAX_VIDEO_SIDE:
        raise BadInputFile(f"{where}: {value!r} is {info.width}x{info.height}, larger than {MAX_VIDEO_SIDE} a side",
                        hint="scale it down first")
    return info
