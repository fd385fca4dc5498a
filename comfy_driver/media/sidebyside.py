"""One video with a column per clip, each under a label: the same scene from several backends.

Clips of different size, fps or length are normalised in one ffmpeg graph and encoded once (H.264,
yuv420p): every column is scaled to the tallest clip's height (aspect kept, so nothing tall is
scaled down), resampled to the highest fps, and held on its last frame until the longest clip ends.
Labels are drawn with Pillow into a small image per column and overlaid, so no font setup of the
ffmpeg build matters.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from comfy_driver import confined
from comfy_driver.errors import RunError
from comfy_driver.media.ffmpeg import VideoInfo, probe, run_ffmpeg


@dataclass(frozen=True)
class Column:
    clip: Path
    title: str  # the first label line (the backend)
    detail: str = ""  # the second (seconds taken, resolution, fps)


@dataclass(frozen=True)
class Layout:
    height: int  # of the video part; each column adds a label band above it
    fps: float
    duration: float
    widths: list[int]
    band: int

    @property
    def width(self) -> int:
        return sum(self.widths)


def layout(infos: list[VideoInfo]) -> Layout:
    height = max(i.height for i in infos)
    height += height % 2
    widths = [max(2, round(i.width * height / i.height / 2) * 2) for i in infos]
    band = max(28, min(96, height // 6)) // 2 * 2
    return Layout(height, max(i.fps for i in infos), max(i.duration for i in infos), widths, band)


def _label(path: Path, width: int, height: int, title: str, detail: str) -> None:
    img = Image.new("RGB", (width, height), (16, 16, 16))
    draw = ImageDraw.Draw(img)
    size = max(8, height * 2 // 5 - 2)
    try:
        font = ImageFont.load_default(size=size)
        small = ImageFont.load_default(size=max(8, size * 4 // 5))
    except TypeError:  # Pillow without FreeType
        font = small = ImageFont.load_default()
    draw.text((6, 2), title, fill=(255, 255, 255), font=font)
    draw.text((6, 2 + size + 2), detail, fill=(200, 200, 160), font=small)
    img.save(path)


def side_by_side(columns: list[Column], out: Path) -> VideoInfo:
    """Write the side-by-side MP4 of `columns` to `out` (atomically); its probed info."""
    if not columns:
        raise RunError("nothing to put side by side")
    infos = [probe(c.clip) for c in columns]
    plan = layout(infos)
    frames = max(1, round(plan.duration * plan.fps))
    with tempfile.TemporaryDirectory() as scratch, confined.tool_output(out.parent, out.name) as tmp:
        inputs: list[str] = []
        chains: list[str] = []
        n = len(columns)
        for k, (column, info, width) in enumerate(zip(columns, infos, plan.widths)):
            label = Path(scratch) / f"label{k}.png"
            _label(label, width, plan.band, column.title, column.detail)
            inputs += ["-i", str(column.clip)]
            chains.append(f"[{k}:v]scale={width}:{plan.height},setsar=1,fps={plan.fps:g},format=yuv420p,"
                          f"tpad=stop_mode=clone:stop=-1,pad={width}:{plan.height + plan.band}:0:{plan.band}[v{k}]")
            chains.append(f"[v{k}][{n + k}:v]overlay=0:0:format=auto,format=yuv420p[c{k}]")
        for k in range(n):
            inputs += ["-i", str(Path(scratch) / f"label{k}.png")]
        stacked = "".join(f"[c{k}]" for k in range(n))
        chains.append(f"{stacked}hstack=inputs={n}[out]" if n > 1 else "[c0]null[out]")
        run_ffmpeg(["-y", "-loglevel", "error", *inputs, "-filter_complex", ";".join(chains), "-map", "[out]",
                    "-frames:v", str(frames), "-r", f"{plan.fps:g}", "-c:v", "libx264", "-preset", "veryfast",
                    "-pix_fmt", "yuv420p", "-movflags", "+faststart", str(tmp)], what=f"writing {out.name}")
    return probe(out)
