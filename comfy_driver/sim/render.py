"""Real output files for the simulator: PNG frames and H.264 MP4s that show the scene's prompt text."""

from __future__ import annotations

import hashlib
import io
import json
import struct
import textwrap
import zlib
from functools import lru_cache
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont
from PIL.PngImagePlugin import PngInfo

from comfy_driver.media.ffmpeg import encode_rgb


@lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType
        return ImageFont.load_default()


def _base_color(caption: str) -> tuple[int, int, int]:
    h = hashlib.sha256(caption.encode()).digest()
    return (40 + h[0] % 120, 40 + h[1] % 120, 40 + h[2] % 120)


@lru_cache(maxsize=512)
def _text_mask(text: str, size: int) -> tuple[Image.Image, int, int]:
    """A line of text as drawn at (0, 0): its coverage mask and the mask's offset. Rendering the glyphs is
    most of a small frame's cost, and a frame's lines repeat (every frame of a clip, every prompt of a scene),
    so each is rendered once; pasting the mask in a colour writes the pixels `ImageDraw.text` writes."""
    font = _font(size)
    box = ImageDraw.Draw(Image.new("L", (1, 1))).textbbox((0, 0), text, font=font)
    left, top, right, bottom = (int(v) for v in box)  # whole pixels, drawn at (0, 0)
    mask = Image.new("L", (max(1, right - left), max(1, bottom - top)))
    ImageDraw.Draw(mask).text((-left, -top), text, fill=255, font=font)
    return mask, left, top


def _draw_text(img: Image.Image, x: int, y: int, text: str, size: int, color: tuple[int, int, int]) -> None:
    mask, left, top = _text_mask(text, size)
    img.paste(color, (x + left, y + top), mask)


def frame(width: int, height: int, caption: str, index: int, count: int) -> Image.Image:
    """One frame: a colour keyed to the prompt, a bar that moves with time, the prompt text."""
    img = Image.new("RGB", (width, height), _base_color(caption))
    if count > 1:
        x = int((width - width // 8) * index / (count - 1))
        ImageDraw.Draw(img).rectangle([x, height - max(2, height // 12), x + width // 8, height],
                                      fill=(240, 240, 240))
    size = max(8, min(height // 10, 28))
    cols = max(8, int(width / (size * 0.55)))
    lines = textwrap.wrap(caption or "(no prompt)", cols)[: max(1, (height - size * 3) // (size + 2))]
    y = size // 2
    for line in lines:
        _draw_text(img, size // 2, y, line, size, (255, 255, 255))
        y += size + 2
    _draw_text(img, size // 2, height - size * 2 - max(2, height // 12), f"frame {index + 1}/{count}", size,
               (255, 255, 210))
    return img


def write_png(path: Path, width: int, height: int, caption: str, *, index: int = 0, count: int = 1,
              text: dict[str, Any] | None = None) -> None:
    """A PNG with ComfyUI's metadata chunks ("prompt", "workflow", ... as JSON text).

    The bytes are Pillow's for the frame saved with that text; the frame's encoding is reused (a run saves
    the same card again and again) and the text chunks, which Pillow writes right after the header, are
    put there."""
    info = PngInfo()
    for key, value in (text or {}).items():
        info.add_text(key, json.dumps(value))
    head, body = _png_parts(width, height, caption, index, count)
    chunks = (struct.pack(">I", len(data)) + cid + data + struct.pack(">I", zlib.crc32(cid + data))
              for cid, data, *_ in info.chunks)
    path.write_bytes(head + b"".join(chunks) + body)


@lru_cache(maxsize=32)
def _png_parts(width: int, height: int, caption: str, index: int, count: int) -> tuple[bytes, bytes]:
    """A frame as PNG without text, split after its header chunk (IHDR, 13 bytes of data)."""
    buf = io.BytesIO()
    frame(width, height, caption, index, count).save(buf, format="PNG", compress_level=1)
    data = buf.getvalue()
    cut = 8 + 4 + 4 + 13 + 4  # signature, then IHDR: length, type, data, crc
    assert data[12:16] == b"IHDR"
    return data[:cut], data[cut:]


def write_mp4(path: Path, frames: int, width: int, height: int, fps: float, caption: str, *,
              metadata: dict[str, Any] | None = None) -> None:
    """An H.264 MP4 with exactly `frames` frames of the given size and fps.

    The caption is kept in the `comment` tag too, so a later prompt that loads this clip (a denoise or
    upscale stage) shows the same scene's text.
    """
    w, h = width + width % 2, height + height % 2
    rendered = (frame(w, h, caption, i, frames).tobytes() for i in range(frames))
    meta = {k: json.dumps(v) for k, v in (metadata or {}).items()}
    if caption:
        meta["comment"] = caption
    encode_rgb(rendered, w, h, fps, path, metadata=meta)


def write_webp(path: Path, frames: int, width: int, height: int, fps: float, caption: str, *,
               text: dict[str, Any] | None = None) -> None:
    """An animated WebP with ComfyUI's EXIF metadata: 0x0110 'prompt:{json}', then 0x010f and down."""
    images = [frame(width, height, caption, i, frames) for i in range(frames)]
    exif = images[0].getexif()
    tag = 0x0110
    for key, value in (text or {}).items():
        exif[tag] = f"{key}:{json.dumps(value)}"
        tag = 0x010F if tag == 0x0110 else tag - 1
    images[0].save(path, format="WEBP", save_all=True, append_images=images[1:],
                   duration=int(1000 / max(fps, 1)), quality=60, exif=exif)


@lru_cache(maxsize=1)
def _preview_png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (90, 90, 90)).save(buf, format="PNG")
    return buf.getvalue()


def preview_frame(prompt_id: str, node_id: str, *, with_metadata: bool) -> bytes:
    """A sampler's preview as a binary websocket frame: type 1 (format 2 = PNG, then the image), or
    type 4 (length of a JSON header naming prompt and node, the header, then the image)."""
    if not with_metadata:
        return struct.pack(">II", 1, 2) + _preview_png()
    meta = json.dumps({"node_id": node_id, "prompt_id": prompt_id, "display_node_id": node_id,
                       "parent_node_id": None, "real_node_id": node_id, "image_type": "image/png"}).encode()
    return struct.pack(">II", 4, len(meta)) + meta + _preview_png()
