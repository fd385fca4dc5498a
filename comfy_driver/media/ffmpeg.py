"""Video files through the ffmpeg binary that imageio-ffmpeg ships: run it, probe, encode frames.

ffmpeg is driven directly (no moviepy): every operation is one ffmpeg process over files or pipes,
so memory does not grow with a video's length. Joining clips is `media.stitch`.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from comfy_driver import confined
from comfy_driver.errors import RunError, UserError


@lru_cache(maxsize=1)
def ffmpeg_exe() -> str:
    """The ffmpeg binary: $COMFY_DRIVE_FFMPEG, else the one imageio-ffmpeg ships."""
    if os.environ.get("COMFY_DRIVE_FFMPEG"):
        return os.environ["COMFY_DRIVE_FFMPEG"]
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def run_ffmpeg(args: list[str], *, stdin: bytes | None = None, what: str) -> subprocess.CompletedProcess[bytes]:
    proc = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", *args], input=stdin,
                          capture_output=True, check=False)
    if proc.returncode != 0:
        tail = proc.stderr.decode("utf-8", "replace").strip().splitlines()[-3:]
        if any("No space left" in line for line in tail):
            raise RunError(f"disk full while {what}", hint="free disk space and rerun")
        raise RunError(f"ffmpeg failed while {what}: {' | '.join(tail)}")
    return proc


@dataclass(frozen=True)
class VideoInfo:
    width: int
    height: int
    fps: float
    frames: int
    duration: float
    codec: str
    metadata: dict[str, str]
    pix_fmt: str = ""
    video_streams: int = 1


_STREAM = re.compile(r"Stream #\S+.*?Video: (\w+).*?, (\d{2,5})x(\d{2,5})")
_PIX_FMT = re.compile(r"Video: [^,]*(?:\([^)]*\))*, (\w+)")
_FPS = re.compile(r"(\d+(?:\.\d+)?) fps")
_FRAME = re.compile(r"frame=\s*(\d+)")
_TIME = re.compile(r"time=(\d+):(\d+):(\d+(?:\.\d+)?)")
_META = re.compile(r"^\s{4}(\w+)\s*:\s(.*)$")


def container(path: Path) -> str | None:
    """The ffmpeg demuxer of a video file, told from its first bytes (not its suffix); None if it
    does not start like a video container ffmpeg should read."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(16)
    except OSError:
        return None
    if head[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip", b"pnot"):
        return "mov"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "matroska"
    if head.startswith(b"RIFF") and head[8:12] == b"AVI ":
        return "avi"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "gif"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "webp_pipe"
    return None


def probe(path: Path) -> VideoInfo:
    """Size, fps, exact frame count (decoded), duration and container metadata of a video file.

    ffmpeg reads it with the demuxer its first bytes name, never by guessing: a text file of
    ffmpeg's own formats (ffconcat, playlists) would otherwise make it open other files.
    """
    if not path.is_file():
        raise UserError(f"{path}: no such video file")
    demuxer = container(path)
    if demuxer is None:
        raise UserError(f"{path}: not a readable video file")
    proc = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-f", demuxer, "-i", str(path),
                           "-map", "0:v:0", "-f", "null", "-"], capture_output=True, check=False)
    err = proc.stderr.decode("utf-8", "replace")
    stream = _STREAM.search(err)
    if proc.returncode != 0 or stream is None:
        raise UserError(f"{path}: not a readable video file")
    fps_match = _FPS.search(err[stream.start():])
    frames = [int(x) for x in _FRAME.findall(err)]
    times = _TIME.findall(err)
    duration = 0.0
    if times:
        h, m, s = times[-1]
        duration = int(h) * 3600 + int(m) * 60 + float(s)
    inputs = err.split("\nOutput #", 1)[0]
    pix_fmt = _PIX_FMT.search(err[stream.start():])
    metadata: dict[str, str] = {}
    header = err[:stream.start()]
    if "Metadata:" in header:
        for line in header.split("Metadata:", 1)[1].splitlines():
            if (m := _META.match(line)) is not None:
                metadata[m.group(1)] = m.group(2)
    return VideoInfo(width=int(stream.group(2)), height=int(stream.group(3)),
                     fps=float(fps_match.group(1)) if fps_match else 0.0, frames=frames[-1] if frames else 0,
                     duration=duration, codec=stream.group(1), metadata=metadata,
                     pix_fmt=pix_fmt.group(1) if pix_fmt else "",
                     video_streams=len(re.findall(r"Stream #\S+.*?: Video: ", inputs)))


def encode_rgb(frames: Iterable[bytes], width: int, height: int, fps: float, out: Path, *,
               metadata: dict[str, str] | None = None) -> Path:
    """Encode raw RGB24 frames to an H.264 MP4 (yuv420p, plays everywhere)."""
    if width % 2 or height % 2:
        raise UserError(f"video size {width}x{height} must be even for H.264")
    meta_args: list[str] = []
    for key, value in (metadata or {}).items():
        meta_args += ["-metadata", f"{key}={value}"]
    data = b"".join(frames)
    with confined.tool_output(out.parent, out.name) as tmp:
        run_ffmpeg(["-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}",
                    "-r", f"{fps:g}", "-i", "-", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
                    "-movflags", "+faststart+use_metadata_tags", *meta_args, str(tmp)], stdin=data,
                   what=f"encoding {out.name}")
    return out


def extract_frame(video: Path, at: float, out: Path) -> Path:
    """The frame `at` seconds into a video, written as a JPEG (a thumbnail)."""
    with confined.tool_output(out.parent, out.name) as tmp:
        run_ffmpeg(["-y", "-loglevel", "error", "-ss", f"{at:.3f}", "-i", str(video), "-frames:v", "1", "-q:v", "2",
                    str(tmp)], what=f"taking a frame of {video.name}")
        if tmp.stat().st_size == 0:
            raise UserError(f"{video}: no frame at {at:g} s")
    return out
