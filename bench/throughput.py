"""Driver throughput against the simulator with zero-time nodes: queue-ahead vs one-at-a-time.

One-at-a-time keeps one prompt on the server (depth 1): the next is submitted when one ends.
Queue-ahead is comfy-drive's way: two prompts on the server, outputs fetched on the supervisor's pool.

Prints, side by side from one run: scenes per second, driver CPU per scene, and the server's idle gap
between consecutive prompts (execution_success of one to execution_start of the next, from the
server's own timestamps), for small and large outputs.

    python bench/throughput.py [--scenes 300] [--repeats 3]

The simulator runs in its own process so the driver's CPU time is its own.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from comfy_driver.comfy.client import ComfyClient
from comfy_driver.comfy.settings import Settings
from comfy_driver.config.series import load_series
from comfy_driver.pipeline.plan import build_plan
from comfy_driver.pipeline.control import RunOptions
from comfy_driver.pipeline.supervisor import Supervisor

HERE = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_sim(root: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "comfy_driver.cli", "sim", "--speed", "instant", "--port",
                             str(port), "--root", str(root)], stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    client = ComfyClient(url, settings=Settings(retries=1))
    for _ in range(200):
        try:
            client.system_stats()
            return proc, url
        except Exception:  # noqa: BLE001 - still starting
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("the simulator did not start")


def series(folder: Path, scenes: int, size: int, offset: int) -> Path:
    lines = [f"title: bench\nbackend: tiny\noutput: out\nworkflows: {HERE.parent / 'tests' / 'workflows'}\nepisodes:\n  - id: e\n"
             "    scenes:"]
    for i in range(scenes):
        lines.append(f"      - {{id: s{i}, seed: {offset + i}, params: {{width: {size}, height: {size}}}}}")
    path = folder / "series.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def measure(url: str, folder: Path, scenes: int, size: int, depth: int, offset: int) -> dict[str, float]:
    loaded = load_series(series(folder, scenes, size, offset))
    supervisor = Supervisor(build_plan(loaded), [url], RunOptions(depth=depth))
    cpu0, t0 = time.process_time(), time.perf_counter()
    report = supervisor.run()
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    assert all(s.status == "done" for s in report.scenes), [s.error for s in report.scenes if s.error][:1]
    history = ComfyClient(url).history()
    spans = []
    for s in report.scenes:
        msgs = dict((k, v) for k, v in history[s.prompt_id]["status"]["messages"])
        spans.append((msgs["execution_start"]["timestamp"], msgs["execution_success"]["timestamp"]))
    spans.sort()
    gaps = [nxt[0] - prev[1] for prev, nxt in zip(spans, spans[1:])]
    return {"scenes_per_s": scenes / wall, "cpu_ms_per_scene": 1000 * cpu / scenes,
            "idle_gap_ms_median": statistics.median(gaps), "idle_gap_ms_p90": sorted(gaps)[int(0.9 * len(gaps))]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scenes", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        proc, url = start_sim(Path(tmp) / "sim")
        try:
            offset = 0
            for size, label in ((64, "64x64 PNG"), (1024, "1024x1024 PNG")):
                results: dict[int, list[dict[str, float]]] = {1: [], 2: []}
                for rep in range(args.repeats):
                    for depth in (1, 2):
                        folder = Path(tmp) / f"run-{size}-{depth}-{rep}"
                        folder.mkdir()
                        results[depth].append(measure(url, folder, args.scenes, size, depth, offset))
                        offset += args.scenes
                for depth in (1, 2):
                    med = {k: statistics.median(r[k] for r in results[depth]) for k in results[depth][0]}
                    rows.append((label, "queue-ahead" if depth == 2 else "one-at-a-time", med))
        finally:
            proc.terminate()
    print(f"{args.scenes} scenes per run, median of {args.repeats} runs, simulator with zero-time nodes")
    print(f"{'output':<14} {'mode':<14} {'scenes/s':>9} {'CPU ms/scene':>13} {'idle gap ms (median)':>21} {'p90':>6}")
    for label, mode, m in rows:
        print(f"{label:<14} {mode:<14} {m['scenes_per_s']:>9.1f} {m['cpu_ms_per_scene']:>13.2f} "
              f"{m['idle_gap_ms_median']:>21.1f} {m['idle_gap_ms_p90']:>6.1f}")
    for label in ("64x64 PNG", "1024x1024 PNG"):
        one = next(m for lbl, mode, m in rows if lbl == label and mode == "one-at-a-time")
        ahead = next(m for lbl, mode, m in rows if lbl == label and mode == "queue-ahead")
        print(f"{label}: queue-ahead runs {ahead['scenes_per_s'] / one['scenes_per_s']:.2f}x the scenes/s of "
              f"one-at-a-time")


if __name__ == "__main__":
    main()
