"""Joining clips into one episode: stream copy when they match, else one encode to the episode's format.

Clips of one episode usually come from one workflow and match, so they are joined by the concat
demuxer without re-encoding. A clip from a fallback backend or a per-scene backend can differ in
size or fps; then every clip is decoded in turn, scaled (aspect kept, padded) to the episode's
format, resampled to its fps and trimmed to its exact share of frames, and the raw frames go to a
single encoder. One clip is decoded at a time, so memory stays flat however long the episode.

The episode's format is the largest clip's size (finished work is never scaled down) at the fps
the series declares (else the largest clip's). Every joined file is checked: it decodes, has one
video stream, the episode's fps, and lasts the sum of its clips within one frame. Sound: a
stream-copied episode keeps its clips' audio track; a normalised one is video only.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

from comfy_driver import confined
from comfy_driver.errors import RunError
from comfy_driver.media.ffmpeg import VideoInfo, ffmpeg_exe, probe, run_ffmpeg

_COPYABLE = ("h264", "yuv420p")  # what plays everywhere; anything else is normalised


@dataclass(frozen=True)
class Format:
    """An episode's video format."""

    width: int
    height: int
    fps: float

    def __str__(self) -> str:
        return f"{self.width}x{self.height} {self.fps:g} fps"

    @classmethod
    def of(cls, info: VideoInfo) -> Format:
        return cls(info.width, info.height, info.fps)


@dataclass(frozen=True)
class Stitched:
    path: Path
    mode: Literal["copy", "normalise"]
    format: Format
    converted: list[int]  # indexes of the clips whose size or fps was changed
    info: VideoInfo  # the joined file, as probed


def episode_format(infos: list[VideoInfo], fps: float | None = None) -> Format:
    """The largest clip (by area; the first of equals) at the declared fps, else at that clip's fps."""
    largest = max(infos, key=lambda i: i.width * i.height)
    w, h = largest.width + largest.width % 2, largest.height + largest.height % 2
    return Format(w, h, fps or largest.fps)


def _fits(info: VideoInfo, fmt: Format) -> bool:
    return Format.of(info) == fmt and (info.codec, info.pix_fmt) == _COPYABLE


@dataclass(frozen=True)
class Plan:
    clips: list[Path]
    infos: list[VideoInfo]
    format: Format
    converted: list[int]  # indexes of the clips that need converting


def plan(clips: list[Path], fps: float | None = None) -> Plan:
    """Probe every clip: the episode's format and the clips that need converting to it."""
    if not clips:
        raise RunError("no clips to join")
    infos = [probe(c) for c in clips]
    fmt = episode_format(infos, fps)
    return Plan(clips, infos, fmt, [n for n, i in enumerate(infos) if not _fits(i, fmt)])


def stitch(planned: Plan, out: Path) -> Stitched:
    """Join the planned clips into `out` (written atomically) and verify the result."""
    clips, infos, fmt, converted = planned.clips, planned.infos, planned.format, planned.converted
    mode: Literal["copy", "normalise"] = "normalise" if converted else "copy"
    with confined.tool_output(out.parent, out.name) as tmp:
        if mode == "copy":
            _copy(clips, tmp)
            try:
                info = verify(tmp, infos, fmt)
            except RunError:  # e.g. clips whose timestamps the demuxer cannot join: encode them instead
                mode = "normalise"
        if mode == "normalise":
            _normalise(clips, infos, fmt, tmp)
            info = verify(tmp, infos, fmt)
    return Stitched(out, mode, fmt, converted, info)


def verify(path: Path, infos: list[VideoInfo], fmt: Format) -> VideoInfo:
    """The joined file decodes, has one video stream at the episode's size and fps, and lasts the
    sum of its clips within one frame."""
    got = probe(path)
    expected = sum(i.duration for i in infos)
    problems = []
    if got.video_streams != 1:
        problems.append(f"{got.video_streams} video streams")
    if (got.width, got.height) != (fmt.width, fmt.height):
        problems.append(f"size {got.width}x{got.height}, expected {fmt.width}x{fmt.height}")
    if abs(got.fps - fmt.fps) > 0.01:
        problems.append(f"{got.fps:g} fps, expected {fmt.fps:g}")
    if abs(got.duration - expected) > 1 / fmt.fps + 1e-3:
        problems.append(f"lasts {got.duration:.3f} s, its clips {expected:.3f} s")
    if problems:
        raise RunError(f"joined episode {path.name} is wrong: {'; '.join(problems)}")
    return got


def _copy(clips: list[Path], tmp: Path) -> None:
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False, dir=tmp.parent) as listing:
        for clip in clips:
            escaped = str(clip.resolve()).replace("'", "'\\''")
            listing.write(f"file '{escaped}'\n")
    try:
        run_ffmpeg(["-y", "-loglevel", "error", "-f", "concat", "-safe", "0", "-i", listing.name, "-map", "0:v",
                    "-map", "0:a?", "-c", "copy", "-movflags", "+faststart", str(tmp)],
                   what=f"joining clips into {tmp.name}")
    finally:
        os.unlink(listing.name)


def frame_shares(durations: list[float], fps: float) -> list[int]:
    """Each clip's frame count at `fps`, cut at the rounded running total so the sum stays exact."""
    shares, total, done = [], 0.0, 0
    for d in durations:
        total += d
        end = round(total * fps)
        shares.append(end - done)
        done = end
    return shares


def _normalise(clips: list[Path], infos: list[VideoInfo], fmt: Format, tmp: Path) -> None:
    """Decode each clip in turn to raw frames of the episode's format; one encoder writes them all."""
    w, h = fmt.width, fmt.height
    with tempfile.TemporaryFile() as enc_err, tempfile.TemporaryFile() as dec_err:
        encoder = subprocess.Popen(
            [ffmpeg_exe(), "-hide_banner", "-nostdin", "-y", "-loglevel", "error", "-f", "rawvideo",
             "-pix_fmt", "yuv420p", "-s", f"{w}x{h}", "-r", f"{fmt.fps:g}", "-i", "-", "-c:v", "libx264",
             "-preset", "veryfast", "-pix_fmt", "yuv420p", "-movflags", "+faststart", str(tmp)],
            stdin=subprocess.PIPE, stderr=enc_err)
        assert encoder.stdin is not None
        failed = None
        try:
            for clip, frames in zip(clips, frame_shares([i.duration for i in infos], fmt.fps)):
                chain = (f"scale={w}:{h}:force_original_aspect_ratio=decrease:force_divisible_by=2,"
                         f"pad={w}:{h}:(ow-iw)/2:(oh-ih)/2,setsar=1,fps={fmt.fps:g},format=yuv420p,"
                         "tpad=stop_mode=clone:stop=-1")  # a clip short of its share holds its last frame
                dec_err.seek(0)
                dec_err.truncate()
                decoder = subprocess.Popen(
                    [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-i", str(clip),
                     "-map", "0:v:0", "-vf", chain, "-frames:v", str(frames), "-f", "rawvideo", "-"],
                    stdout=subprocess.PIPE, stderr=dec_err)
                assert decoder.stdout is not None
                with decoder.stdout:
                    shutil.copyfileobj(decoder.stdout, encoder.stdin, 1 << 20)
                if decoder.wait() != 0:
                    failed = f"decoding {clip.name}: {_last_line(dec_err)}"
                    break
            encoder.stdin.close()
        except BrokenPipeError:
            pass  # the encoder stopped: its own message says why
        except BaseException:
            encoder.kill()
            raise
        finally:
            code = encoder.wait()
        if failed is None and code != 0:
            failed = f"encoding {tmp.name}: {_last_line(enc_err)}"
    if failed is not None:
        tmp.unlink(missing_ok=True)
        if "No space left" in failed:
            raise RunError("disk full while joining clips", hint="free disk space and rerun")
        raise RunError(f"ffmpeg failed while {failed}")


def _last_line(log: IO[bytes]) -> str:
    log.seek(0)
    lines = log.read().decode("utf-8", "replace").strip().splitlines()
    return lines[-1] if lines else "no message"
