"""Makespan of a series on 1, 2, 4 and 8 targets, native and Comfy API v2, against the ideal; and the
model loads model affinity saves on a series that alternates between two backends.

Targets are simulators with realistic timing (node, sampler-step and model-load times, scaled by
`--time-scale`), each in its own process; a v2 target is the same simulator behind its own real
comfy-api-proxy (`v2+http://...`). The driver is comfy-drive's Python API in this process
(`run_series`, episodes not joined: a run renders scenes only). Between runs every simulator unloads
its models and drops its cache, so each run starts cold as a fresh GPU box would.

Part 1: a series of `--scenes` svd scenes (SDXL-Turbo keyframe -> SVD), each its own seed. Per run:
- makespan: the wall time of `run_series`, from the call to its return (planning, the targets'
  checks, submitting, following and downloading included);
- work: the sum of the servers' own execution seconds (execution_start to execution_success in
  their /history) of that run's prompts, every model load of the pool included;
- efficiency = ideal / makespan, ideal = that run's work / targets. `strict` takes the 1-target
  run's work instead (the least the series needs: one model load), so it also charges a pool's
  extra loads and any slowing of the simulators by each other: on a 2-core machine the pool's
  simulators and proxies share the CPU that encodes their clips, so per-prompt seconds grow with
  the pool and `strict` measures the machine as much as the driver;
- from 1st start: the same without the run's startup (the call to the first prompt's start), the
  figure that holds for real scenes of minutes; balance: the mean target's work over the busiest
  one's, the most `from 1st start` can be with that spread of the work (60 equal scenes on 8
  targets: 7.5 / 8 = 93.8 %, a little more as each target's first prompt also loads the models);
- where a target's time went, as a mean per target: makespan = startup + late (its first prompt
  after the run's first) + work / targets + gaps (between its prompts) + after (its last prompt's
  end to the run's return); end spread: the first target done to the last; the CPU (cores) the
  driver, simulators and proxies used and their CPU per scene.
Part 2: `--mixed` scenes alternating svd and wan22_5b (different model files) on 2, 3 and 4 native
targets, model affinity (the default) against round-robin (`RunOptions(affinity=False)`): model
files loaded, as the simulators count them (/sim/stats), and makespan. (On 2 targets round-robin
can fall into the same split by itself, as the scenes alternate; on 3 it cannot.)

Medians of `--repeats` runs, each configuration interleaved with the others (the 1-target run, long
and steady, once). About 5 minutes with the defaults on 2 cores.

    python bench/makespan.py [--scenes 60] [--targets 1,2,4,8] [--repeats 3] [--time-scale 0.2]
                             [--steps 20] [--mixed 24] [--mixed-targets 2,3,4]
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import requests

from comfy_driver.api import run_series
from comfy_driver.pipeline.control import RunOptions

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from throughput import free_port  # noqa: E402 - one way to find a port, as the other benches

ASSETS = HERE.parent / "comfy_driver" / "data" / "examples" / "assets"


@dataclass
class Node:
    """A simulator process, and the real comfy-api-proxy in front of it once asked for."""

    sim: subprocess.Popen[bytes]
    url: str
    proxy: subprocess.Popen[bytes] | None = None
    v2: str = ""

    def stop(self) -> None:
        for proc in (self.proxy, self.sim):
            if proc is not None:
                proc.terminate()
                proc.wait(10)


def wait_for(url: str, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.time() + 60
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited")
        try:
            if requests.get(url, timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{what} did not start")


def start_nodes(count: int, root: Path, scale: float, proxies: bool) -> list[Node]:
    nodes = []
    for i in range(count):
        port = free_port()
        sim = subprocess.Popen([sys.executable, "-m", "comfy_driver.cli", "sim", "--speed", "realistic",
                                "--time-scale", str(scale), "--comfyui", "0.33.0", "--port", str(port),
                                "--root", str(root / f"sim{i}")], stderr=subprocess.DEVNULL)
        nodes.append(Node(sim, f"http://127.0.0.1:{port}"))
    for node in nodes:
        wait_for(node.url + "/system_stats", node.sim, "a simulator")
    if proxies:
        for node in nodes:
            port = free_port()
            node.proxy = subprocess.Popen([sys.executable, "-m", "comfy_api_proxy.cli", "run", "--comfyui", node.url,
                                           "--host", "127.0.0.1", "--port", str(port)],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            node.v2 = f"v2+http://127.0.0.1:{port}"
        for node in nodes:
            assert node.proxy is not None
            wait_for(node.v2[3:] + "/api/v2/health", node.proxy, "comfy-api-proxy")
    return nodes


def cpu_seconds(proc: subprocess.Popen[bytes] | None) -> float:
    """User + system CPU of a process and its ended children (a simulator's clip encoders) so far (Linux)."""
    if proc is None:
        return 0.0
    with open(f"/proc/{proc.pid}/stat", encoding="ascii") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def write_series(folder: Path, scenes: int, seed: int, steps: int, mixed: bool) -> Path:
    lines = [f"title: makespan\nbackend: svd\noutput: out\ndefaults:\n  width: 64\n  height: 64\n  fps: 8\n"
             f"  frames: 8\n  params: {{steps: {steps}}}\nepisodes:"]
    per_episode = 10
    for e in range(0, scenes, per_episode):
        lines.append(f"  - id: e{e // per_episode}\n    scenes:")
        for i in range(e, min(e + per_episode, scenes)):
            other = f", backend: wan22_5b, reference_image: {ASSETS / 'mira.png'}" if mixed and i % 2 else ""
            lines.append(f"      - {{id: s{i}, seed: {seed + i}, prompt: scene {i}{other}}}")
    path = folder / "series.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def spans(url: str, known: set[str]) -> list[tuple[float, float]]:
    """(execution_start, execution_success) in seconds of this server's prompts not in `known`."""
    history = requests.get(url + "/history?max_items=100000", timeout=30).json()
    out = []
    for pid, entry in history.items():
        if pid in known:
            continue
        msgs = dict((kind, data) for kind, data in entry["status"]["messages"])
        out.append((msgs["execution_start"]["timestamp"] / 1000, msgs["execution_success"]["timestamp"] / 1000))
    return sorted(out)


def measure(nodes: list[Node], v2: bool, folder: Path, series: Path, affinity: bool) -> dict[str, float]:
    known, loads = [], []
    for node in nodes:
        requests.post(node.url + "/free", json={"unload_models": True, "free_memory": True}, timeout=10)
        known.append(set(requests.get(node.url + "/history?max_items=100000", timeout=30).json()))
        loads.append(requests.get(node.url + "/sim/stats", timeout=10).json()["model_loads"])
    servers = [node.v2 if v2 else node.url for node in nodes]
    sims0, proxies0 = sum(cpu_seconds(n.sim) for n in nodes), sum(cpu_seconds(n.proxy) for n in nodes)
    cpu0, t0 = time.process_time(), time.time()
    report = run_series(series, servers=servers, options=RunOptions(episodes=False, affinity=affinity))
    t1, driver = time.time(), time.process_time() - cpu0
    sims, proxies = sum(cpu_seconds(n.sim) for n in nodes) - sims0, sum(cpu_seconds(n.proxy) for n in nodes) - proxies0
    failed = [s.error for s in report.scenes if s.status != "done"]
    if failed:
        raise SystemExit(f"{len(failed)} scenes not done: {failed[:2]}")
    per = [spans(node.url, seen) for node, seen in zip(nodes, known)]
    loaded = sum(requests.get(node.url + "/sim/stats", timeout=10).json()["model_loads"] - n
                 for node, n in zip(nodes, loads))
    used = [p for p in per if p]
    n, wall, scenes = len(nodes), t1 - t0, len(report.scenes)
    first = min(p[0][0] for p in used)
    return {"makespan": wall, "work": sum(e - s for p in per for s, e in p), "loads": loaded,
            "startup": first - t0,  # planning, the targets' checks, the first submissions
            "late": sum(p[0][0] - first for p in used) / n + (n - len(used)) * (t1 - first) / n,
            "gaps": sum(nxt[0] - prev[1] for p in used for prev, nxt in zip(p, p[1:])) / n,
            "after": sum(t1 - p[-1][1] for p in used) / n,
            "spread": max(p[-1][1] for p in used) - min(p[-1][1] for p in used),
            "busiest": max(sum(e - s for s, e in p) for p in used),
            "prompts_max": max(len(p) for p in per), "prompts_min": min(len(p) for p in per),
            "driver_ms": 1000 * driver / scenes, "sim_ms": 1000 * sims / scenes, "proxy_ms": 1000 * proxies / scenes,
            "cores": (driver + sims + proxies) / wall}


def median(runs: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scenes", type=int, default=60)
    ap.add_argument("--targets", default="1,2,4,8", help="pool sizes, comma-separated")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--time-scale", type=float, default=0.2, help="the simulators' realistic durations x this")
    ap.add_argument("--steps", type=int, default=20, help="video sampler steps of a scene (its length)")
    ap.add_argument("--mixed", type=int, default=24, help="scenes of the mixed-backend series (0: skip part 2)")
    ap.add_argument("--mixed-targets", default="2,3,4")
    ap.add_argument("--modes", default="native,v2")
    args = ap.parse_args()
    sizes = [int(x) for x in args.targets.split(",")]
    mixed_sizes = [int(x) for x in args.mixed_targets.split(",")] if args.mixed else []
    modes = args.modes.split(",")
    runs: dict[tuple[str, int], list[dict[str, float]]] = {}
    loads: dict[tuple[int, bool], list[dict[str, float]]] = {}
    seed = 1
    with tempfile.TemporaryDirectory() as tmp:
        nodes = start_nodes(max(sizes + mixed_sizes), Path(tmp), args.time_scale, "v2" in modes)
        try:
            for rep in range(args.repeats):
                for mode in modes:
                    for n in sizes:
                        if n == 1 and rep:  # the long, steady 1-target run is the baseline: once is enough
                            continue
                        folder = Path(tmp) / f"{mode}-{n}-{rep}"
                        folder.mkdir()
                        series = write_series(folder, args.scenes, seed, args.steps, mixed=False)
                        runs.setdefault((mode, n), []).append(measure(nodes[:n], mode == "v2", folder, series, True))
                        seed += args.scenes
                for n in mixed_sizes:
                    for affinity in (True, False):
                        folder = Path(tmp) / f"mixed-{n}-{affinity}-{rep}"
                        folder.mkdir()
                        series = write_series(folder, args.mixed, seed, args.steps, mixed=True)
                        loads.setdefault((n, affinity), []).append(measure(nodes[:n], False, folder, series, affinity))
                        seed += args.mixed
        finally:
            for node in nodes:
                node.stop()
    print(f"{args.scenes} svd scenes (64x64, 8 frames, {args.steps} steps) per run, simulators at realistic timing "
          f"x{args.time_scale:g}, median of {args.repeats} runs (1 target: one run)")
    print("ideal = work / targets, work = the servers' execution seconds of the run's own prompts; "
          "strict: the 1-target run's work (one model load) / targets")
    print(f"{'mode':<7} {'targets':>7} {'makespan s':>10} {'ideal s':>8} {'efficiency':>10} {'strict':>7} "
          f"{'from 1st start':>14} {'balance':>7} {'work s':>7} {'loads':>5} {'prompts':>8}")
    for mode in modes:
        one = median(runs[(mode, 1)])["work"] if (mode, 1) in runs else float("nan")
        for n in sizes:
            for r in runs[(mode, n)]:  # ratios per run, then their medians
                r["ideal"] = r["work"] / n
                r["efficiency"], r["strict"] = r["ideal"] / r["makespan"], one / n / r["makespan"]
                r["from_start"] = r["ideal"] / (r["makespan"] - r["startup"])
                r["balance"] = r["ideal"] / r["busiest"]
            m = median(runs[(mode, n)])
            strict = "-" if math.isnan(m["strict"]) else f"{m['strict']:.1%}"  # no 1-target run
            print(f"{mode:<7} {n:>7} {m['makespan']:>10.2f} {m['ideal']:>8.2f} {m['efficiency']:>10.1%} {strict:>7} "
                  f"{m['from_start']:>14.1%} {m['balance']:>7.1%} {m['work']:>7.2f} {m['loads']:>5.0f} "
                  f"{m['prompts_min']:>4.0f}-{m['prompts_max']:.0f}")
    print("\nwhere a target's time went besides work (seconds, mean per target): makespan = startup + late + "
          "work/targets + gaps + after")
    print(f"{'mode':<7} {'targets':>7} {'startup':>8} {'late':>6} {'gaps':>6} {'after':>6} {'end spread':>10} "
          f"{'cores':>6} | CPU ms/scene {'driver':>6} {'sims':>6} {'proxies':>7}")
    for mode in modes:
        for n in sizes:
            m = median(runs[(mode, n)])
            print(f"{mode:<7} {n:>7} {m['startup']:>8.2f} {m['late']:>6.2f} {m['gaps']:>6.2f} {m['after']:>6.2f} "
                  f"{m['spread']:>10.2f} {m['cores']:>6.2f} | {'':>12} {m['driver_ms']:>6.1f} {m['sim_ms']:>6.1f} "
                  f"{m['proxy_ms']:>7.1f}")
    if "native" in modes and "v2" in modes:
        for n in sizes:
            a, b = median(runs[("native", n)]), median(runs[("v2", n)])
            print(f"{n} targets: v2 makespan {b['makespan'] / a['makespan']:.2f}x native")
    if mixed_sizes:
        print(f"\n{args.mixed} scenes alternating svd / wan22_5b (different model files), native targets, "
              f"median of {args.repeats} runs")
        print(f"{'targets':>7} {'policy':<12} {'model loads':>11} {'makespan s':>10}   (loads: model files)")
        for n in mixed_sizes:
            for affinity in (True, False):
                m = median(loads[(n, affinity)])
                policy = "affinity" if affinity else "round-robin"
                print(f"{n:>7} {policy:<12} {m['loads']:>11.0f} {m['makespan']:>10.2f}")
            a, r = median(loads[(n, True)]), median(loads[(n, False)])
            print(f"{n} targets: affinity {a['loads']:.0f} loads vs round-robin {r['loads']:.0f} "
                  f"({a['loads'] / r['loads']:.2f}x), makespan {a['makespan'] / r['makespan']:.2f}x")


if __name__ == "__main__":
    main()
