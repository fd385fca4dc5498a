"""Cheap objective measures of a clip from its decoded frames, with ffmpeg's own analysis filters.

Only measures that mean what they say: blur (ffmpeg's blurdetect, the width of edges: lower is
sharper), flicker (how much the mean brightness jumps from one frame to the next) and frame change
(the mean absolute luma difference between consecutive frames: motion plus flicker). Medians over
the frames, so one cut or glitch does not dominate. No invented quality score.
"""

from __future__ import annotations

import math
import statistics
import subprocess
from dataclasses import dataclass
from pathlib import Path

from comfy_driver.errors import RunError
from comfy_driver.media.ffmpeg import ffmpeg_exe


@dataclass(frozen=True)
class Measures:
    blur: float | None  # median blurdetect value: lower is sharper; None for frames without edges
    flicker: float  # median |change of mean luma| between consecutive frames, 0-255
    frame_change: float  # median mean |luma difference| between consecutive frames, 0-255


def measure(path: Path) -> Measures:
    proc = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-i", str(path),
                           "-map", "0:v:0", "-vf", "signalstats,blurdetect,metadata=print:file=-", "-f", "null", "-"],
                          capture_output=True, check=False)
    if proc.returncode != 0:
        raise RunError(f"cannot measure {path.name}: {proc.stderr.decode('utf-8', 'replace').strip()[-200:]}")
    values: dict[str, list[float]] = {"lavfi.blur": [], "lavfi.signalstats.YAVG": [], "lavfi.signalstats.YDIF": []}
    for line in proc.stdout.decode("utf-8", "replace").splitlines():
        key, eq, value = line.partition("=")
        if eq and key in values and math.isfinite(number := float(value)):  # flat frames: blur is nan
            values[key].append(number)
    luma = values["lavfi.signalstats.YAVG"]
    if not luma:
        raise RunError(f"cannot measure {path.name}: no frames decoded")
    jumps = [abs(b - a) for a, b in zip(luma, luma[1:])] or [0.0]
    blurs = values["lavfi.blur"]
    return Measures(blur=statistics.median(blurs) if blurs else None, flicker=statistics.median(jumps),
                    frame_change=statistics.median(values["lavfi.signalstats.YDIF"][1:] or [0.0]))
