"""Joining an episode: stream copy vs normalising the very same clips, and memory against length.

    python bench/stitch.py [--clips 4,16,64] [--repeats 3] [--size 512x320] [--seconds 2]

For each episode length N, N matching clips (H.264, SIZE at 16 fps) are joined twice: by stream copy
(what an episode of matching clips gets) and by normalising them to another fps
(what a mixed episode gets: one decode per clip, one encode). Each join runs in a fresh process, so
its figure is the peak resident memory of that join's largest process (Python or ffmpeg). Medians of
`repeats` runs; the ratio is normalise / copy time for the same clips, and the RSS column shows
whether memory stays flat as the episode grows.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from comfy_driver.media.stitch import plan, stitch
from comfy_driver.sim.render import write_mp4


def join_once(clips: list[Path], out: Path, fps: float | None) -> None:
    """In this (fresh) process: join, then print seconds and the peak RSS of this process and its children."""
    t0 = time.perf_counter()
    done = stitch(plan(clips, fps), out)
    seconds = time.perf_counter() - t0
    rss = max(resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    print(json.dumps({"seconds": seconds, "rss_kib": rss, "mode": done.mode}))


def measure(clips: list[Path], out: Path, fps: float | None) -> dict:
    args = [sys.executable, __file__, "--join", json.dumps({"clips": [str(c) for c in clips], "out": str(out),
                                                            "fps": fps})]
    return json.loads(subprocess.run(args, capture_output=True, check=True, text=True).stdout)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clips", default="4,16,64")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--size", default="512x320")
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--join", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.join:
        job = json.loads(args.join)
        join_once([Path(c) for c in job["clips"]], Path(job["out"]), job["fps"])
        return
    width, height = (int(v) for v in args.size.split("x"))
    counts = [int(n) for n in args.clips.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        made = []
        for n in range(max(counts)):
            path = folder / f"clip{n:03d}.mp4"
            write_mp4(path, round(args.seconds * 16), width, height, 16, f"scene {n}: a fox in a yellow raincoat")
            made.append(path)
        # normalising to another fps makes every clip count as converted (one decode each, one encode)
        print(f"{'clips':>5} {'episode s':>9} {'copy s':>8} {'normalise s':>11} {'ratio':>6} "
              f"{'copy RSS MiB':>12} {'normalise RSS MiB':>17}")
        for count in counts:
            rows = {"copy": [], "normalise": []}
            for _ in range(args.repeats):
                for mode, fps in (("copy", 16.0), ("normalise", 24.0)):
                    got = measure(made[:count], folder / f"ep-{mode}.mp4", fps)
                    assert got["mode"] == mode, got
                    rows[mode].append(got)
            med = {m: (statistics.median(r["seconds"] for r in rows[m]),
                       statistics.median(r["rss_kib"] for r in rows[m]) / 1024) for m in rows}
            print(f"{count:>5} {count * args.seconds:>9.0f} {med['copy'][0]:>8.3f} {med['normalise'][0]:>11.3f} "
                  f"{med['normalise'][0] / med['copy'][0]:>6.1f} {med['copy'][1]:>12.1f} {med['normalise'][1]:>17.1f}")


if __name__ == "__main__":
    main()
