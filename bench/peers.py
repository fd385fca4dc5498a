"""comfy-drive beside other ComfyUI client libraries, on the same instant simulator, in one run.

Each client queues N prompts (EmptyImage 64x64 -> SaveImage, a different colour each, so none is
served from cache) and downloads every output, from a fresh process: interpreter start, imports and
(for comfy-drive) series load and planning are included. Per client, the median of the repeats:

- prompts/s: N over the wall time of that process;
- CPU ms per prompt: the process's user + system CPU over N;
- idle gap: the server's own timestamps, execution_success of one prompt to execution_start of the
  next; the time the GPU would have waited for the client;
- start CPU ms: the CPU of a 1-prompt run of the same client (its process start, imports, for
  comfy-drive the series load, planning and preflight), and CPU ms per prompt after start: the
  N-prompt run's CPU less that, over N - 1.

The peers are installed in the bench's own virtual environment (`--venv`, made on first use with
pip), never as dependencies of comfy-drive: comfy-toolkit (its websocket tracker, `[ws]`) and
comfy-api-simplified; a peer pip cannot install is reported and left out. pip byte-compiles what it
installs; comfy-drive's own modules are byte-compiled first in the same way, so that a checkout run
where PYTHONDONTWRITEBYTECODE is set does not compile its sources in every run while the peers load
theirs compiled. The peers submit one prompt at a time, as their documentation shows; comfy-drive
keeps the next prompt queued (`--depth`, queue-ahead). A last row, the bare protocol with queue-ahead
and nothing else, is the yardstick: about what the simulator on this machine allows any client.

`--baseline PYTHON` adds a row for the comfy-drive installed in another environment (an earlier
release, or a checkout of an earlier commit installed there), driven exactly as this one.

Every client's files (and the simulator's) go under one temporary folder, made where TMPDIR says: on
a machine whose /tmp is slow to create files and folders in (a full, churned file system), point
TMPDIR elsewhere, as creating them is part of what every client pays.

With `--server URL` the clients drive that server instead (a real ComfyUI: the graph needs only core
nodes), and the figures are those of the clients beside that server's own cost per prompt.

    python bench/peers.py [--prompts 200] [--repeats 5] [--venv bench/.peers-venv] [--server URL]
                          [--baseline PYTHON]
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from throughput import start_sim  # noqa: E402 - the simulator in its own process, as the other benches

import comfy_driver  # noqa: E402

PEERS = {"comfy-toolkit": "comfy-toolkit[ws]", "comfy-api-simplified": "comfy-api-simplified"}
# Not a peer but a yardstick: the protocol alone (one thread, one keep-alive connection, one websocket, the
# next prompt queued before the last one's download), no client library, no state, no files but the
# outputs: about what this simulator on this machine allows a client that does nothing else.
BARE = "bare protocol"
BASELINE = "comfy-drive baseline"
REQUIREMENTS = {**PEERS, BARE: "websocket-client"}

# Each peer as its documentation shows it: submit, follow to the end, download the outputs.
SCRIPTS = {
    "comfy-toolkit": """
import sys
from comfy_toolkit import ComfyClient
url, count, offset, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
client = ComfyClient(url)
for i in range(count):
    graph = {GRAPH}
    graph["1"]["inputs"]["color"] = offset + i
    result = client.submit_and_track(graph)
    for image in result["images"]:
        client.save(image, out)
""",
    "comfy-api-simplified": """
import sys
from pathlib import Path
from comfy_api_simplified import ComfyApiWrapper, ComfyWorkflowWrapper
url, count, offset, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])
api = ComfyApiWrapper(url)
for i in range(count):
    graph = {GRAPH}
    graph["1"]["inputs"]["color"] = offset + i
    for name, data in api.queue_and_wait_images(ComfyWorkflowWrapper(graph), "Save").items():
        (out / f"{offset + i}-{name}").write_bytes(data)
""",
    BARE: """
import http.client, json, sys, uuid
from pathlib import Path
from urllib.parse import urlencode, urlsplit
import websocket
url, count, offset, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])
where = urlsplit(url)
http_conn = http.client.HTTPConnection(where.hostname, where.port)
client_id = uuid.uuid4().hex
ws = websocket.create_connection(f"ws://{where.hostname}:{where.port}/ws?clientId={client_id}")

def submit(i):
    graph = {GRAPH}
    graph["1"]["inputs"]["color"] = offset + i
    body = json.dumps({"prompt": graph, "client_id": client_id})
    http_conn.request("POST", "/prompt", body, {"Content-Type": "application/json"})
    return json.loads(http_conn.getresponse().read())["prompt_id"]

queued = [submit(i) for i in range(min(2, count))]
files, done = {}, 0
while done < count:
    message = ws.recv()
    if not isinstance(message, str):
        continue
    message = json.loads(message)
    data = message.get("data") or {}
    if message["type"] == "executed" and data.get("prompt_id") in queued:
        files[data["prompt_id"]] = data["output"]["images"]
    elif message["type"] == "executing" and data.get("node") is None and data.get("prompt_id") in queued:
        queued.remove(data["prompt_id"])
        if done + len(queued) + 1 < count:
            queued.append(submit(done + len(queued) + 1))
        done += 1
        for image in files.pop(data["prompt_id"]):
            http_conn.request("GET", "/view?" + urlencode({**image, "type": image.get("type", "output")}))
            (out / f"{done}-{image['filename']}").write_bytes(http_conn.getresponse().read())
""",
}

GRAPH = {"1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0},
               "_meta": {"title": "Canvas"}},
         "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "peers/img"},
               "_meta": {"title": "Save"}}}


def peers_venv(venv: Path) -> tuple[Path, dict[str, str]]:
    """The bench's own environment with every peer pip can install; (python, {peer: why not})."""
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    missing = {}
    marker = venv / "installed-peers.json"
    installed = json.loads(marker.read_text()) if marker.exists() else {}
    for name, requirement in REQUIREMENTS.items():
        if installed.get(name) == requirement:
            continue
        got = subprocess.run([str(python), "-m", "pip", "install", "-q", requirement], capture_output=True, text=True)
        if got.returncode == 0:
            installed[name] = requirement
        else:
            missing[name] = (got.stderr.strip().splitlines() or ["pip failed"])[-1]
    marker.write_text(json.dumps(installed))
    return python, missing


def history(url: str) -> dict[str, dict]:
    with urllib.request.urlopen(f"{url}/history?max_items=100000", timeout=30) as reply:
        return json.load(reply)


def idle_gaps(entries: list[dict]) -> list[float]:
    spans = []
    for entry in entries:
        msgs = dict((kind, data) for kind, data in entry["status"]["messages"])
        spans.append((msgs["execution_start"]["timestamp"], msgs["execution_success"]["timestamp"]))
    spans.sort()
    return [float(nxt[0] - prev[1]) for prev, nxt in zip(spans, spans[1:])]


def drive_series(folder: Path, count: int, offset: int) -> Path:
    lines = [f"title: peers\nbackend: tiny\noutput: out\nworkflows: {HERE.parent / 'tests' / 'workflows'}\n"
             "episodes:\n  - id: e\n    scenes:"]
    lines += [f"      - {{id: s{i}, seed: {offset + i}}}" for i in range(count)]
    path = folder / "series.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def measure(command: list[str], url: str, count: int, out: Path) -> dict[str, float]:
    before = set(history(url))
    usage0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    wall = time.perf_counter() - t0
    usage1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{command[:3]} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    cpu = (usage1.ru_utime - usage0.ru_utime) + (usage1.ru_stime - usage0.ru_stime)
    after = history(url)
    new = [after[pid] for pid in after if pid not in before]
    files = [p for p in out.rglob("*.png")]
    if len(new) != count or len(files) != count:
        raise SystemExit(f"{command[:3]}: {len(new)} prompts ran and {len(files)} files arrived, not {count}")
    gaps = idle_gaps(new)
    return {"prompts_per_s": count / wall, "cpu_ms_per_prompt": 1000 * cpu / count,
            "gap_ms_median": statistics.median(gaps) if gaps else 0.0, "cpu_ms": 1000 * cpu}


def command(client: str, python: Path, folder: Path, url: str, count: int, offset: int, depth: int,
            baseline: Path | None = None) -> list[str]:
    """The command line running `client` for `count` prompts (colours from `offset`) into folder/out."""
    (folder / "out").mkdir(parents=True)
    if client in ("comfy-drive", BASELINE):
        series = drive_series(folder, count, offset)
        drive = sys.executable if client == "comfy-drive" else str(baseline)
        return [drive, "-m", "comfy_driver.cli", "run", str(series), "--server", url, "--depth", str(depth)]
    script = folder / "peer.py"
    script.write_text(SCRIPTS[client].replace("{GRAPH}", repr(GRAPH)), encoding="utf-8")
    return [str(python), str(script), url, str(count), str(offset), str(folder / "out")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prompts", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--venv", type=Path, default=HERE / ".peers-venv", help="the peers' own environment")
    ap.add_argument("--depth", type=int, default=2, help="comfy-drive's queue-ahead depth")
    ap.add_argument("--server", help="drive this ComfyUI instead of a simulator started for the bench")
    ap.add_argument("--baseline", type=Path, help="a python with another comfy-drive installed: one row more")
    args = ap.parse_args()
    python, missing = peers_venv(args.venv)
    compileall.compile_dir(Path(comfy_driver.__file__).parent, quiet=1)  # as pip does for an installed package
    clients = ["comfy-drive", *([BASELINE] if args.baseline else []), *(p for p in REQUIREMENTS if p not in missing)]
    results: dict[str, list[dict[str, float]]] = {c: [] for c in clients}
    with tempfile.TemporaryDirectory() as tmp:
        proc, url = start_sim(Path(tmp) / "sim") if args.server is None else (None, args.server.rstrip("/"))
        try:
            # colours never used before on this server, so no prompt is served from its cache
            offset = 0 if proc is not None else \
                random.randrange(16_000_000 - len(clients) * args.repeats * (args.prompts + 1))
            for rep in range(args.repeats):
                for client in clients:  # interleaved, so drift of the machine hits every client alike
                    # one prompt first: the process's start (imports, series load, connecting) on its own
                    folder = Path(tmp) / f"{client}-{rep}-1"
                    one = measure(command(client, python, folder, url, 1, offset, args.depth, args.baseline), url, 1,
                                  folder / "out")
                    folder = Path(tmp) / f"{client}-{rep}"
                    got = measure(command(client, python, folder, url, args.prompts, offset + 1, args.depth,
                                          args.baseline), url, args.prompts, folder / "out")
                    got["start_ms"] = one["cpu_ms"]
                    got["after_ms"] = (got["cpu_ms"] - one["cpu_ms"]) / (args.prompts - 1)
                    results[client].append(got)
                    offset += args.prompts + 1
        finally:
            if proc is not None:
                proc.terminate()
    med = {c: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for c, rs in results.items()}
    where = "instant simulator" if args.server is None else f"the server at {args.server}"
    print(f"{args.prompts} prompts (EmptyImage 64x64 -> SaveImage, downloaded) per run, median of "
          f"{args.repeats} runs, {where}, each client a fresh process")
    print(f"{'client':<22} {'prompts/s':>10} {'CPU ms/prompt':>14} {'idle gap ms (median)':>21} "
          f"{'start CPU ms':>13} {'CPU ms/prompt after start':>26}")
    for client, m in med.items():
        print(f"{client:<22} {m['prompts_per_s']:>10.1f} {m['cpu_ms_per_prompt']:>14.2f} {m['gap_ms_median']:>21.1f} "
              f"{m['start_ms']:>13.0f} {m['after_ms']:>26.2f}")
    for name, why in missing.items():
        print(f"{name:<22} not installable here: {why}")
    peers = [c for c in clients if c in PEERS]
    if BARE in med:
        print(f"{BARE}: the protocol alone, about what this server allows a client here "
              f"({med[BARE]['prompts_per_s']:.1f} prompts/s, {med[BARE]['cpu_ms_per_prompt']:.2f} ms CPU each)")
    if peers:
        ours = med["comfy-drive"]
        best = max(peers, key=lambda c: med[c]["prompts_per_s"])
        lightest = min(peers, key=lambda c: med[c]["cpu_ms_per_prompt"])
        print(f"comfy-drive: {ours['prompts_per_s'] / med[best]['prompts_per_s']:.2f}x the prompts/s of the best peer "
              f"({best}); {ours['cpu_ms_per_prompt'] / med[lightest]['cpu_ms_per_prompt']:.2f}x the CPU per prompt "
              f"of the lightest ({lightest})")
        after = min(peers, key=lambda c: med[c]["after_ms"])
        print(f"after its start, comfy-drive uses {ours['after_ms'] / med[after]['after_ms']:.2f}x the CPU per prompt "
              f"of the lightest peer after its own ({after})")
    if BASELINE in med:
        ours, base = med["comfy-drive"], med[BASELINE]
        print(f"against the baseline: {ours['prompts_per_s'] / base['prompts_per_s']:.2f}x the prompts/s, "
              f"{ours['cpu_ms_per_prompt'] / base['cpu_ms_per_prompt']:.2f}x the CPU per prompt, "
              f"{ours['start_ms'] / base['start_ms']:.2f}x the start CPU")


if __name__ == "__main__":
    main()
