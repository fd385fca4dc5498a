"""Model verification throughput and re-download bytes, against a local fake Hub.

    python bench/fetch.py [--mib 512] [--repeats 3]

Side by side on the same file: plain hashlib (read + sha256), comfy-drive's first verification of a
file found on disk, its re-verification (the stamp: size and mtime unchanged), and a download that
hashes while it writes, against write-then-hash (the second read that comfy-drive avoids). Then a
rerun of fetch, whose downloaded bytes must be 0.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from comfy_driver.models.fetch import Stamps, fetch  # noqa: E402
from comfy_driver.models.lock import read_lock  # noqa: E402
from comfy_driver.models.tree import ModelsTree  # noqa: E402
from tests.fakehub import FakeHub  # noqa: E402

REPO = "bench/models"


def plain_hash(path: Path) -> float:
    t0 = time.perf_counter()
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    data = os.urandom(1 << 20) * args.mib
    hub = FakeHub()
    hub.add(REPO, "model.safetensors", data)
    os.environ["HF_ENDPOINT"] = hub.start()
    os.environ["HF_HUB_DISABLE_XET"] = "1"
    rows: dict[str, list[float]] = {k: [] for k in ("plain hashlib (read + sha256)", "comfy-drive verify (first)",
                                                       "comfy-drive verify (stamped)",
                                                       "download, hashed while writing",
                                                       "download, then hash (second read)")}
    rerun_bytes = []
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.repeats):
            folder = Path(tmp) / f"r{rep}"
            folder.mkdir()
            lock = folder / "models.lock"
            lock.write_text(f"version: 1\nmodels:\n  - name: model.safetensors\n    repo: {REPO}\n"
                            "    path: model.safetensors\n    folder: checkpoints\n")
            tree = ModelsTree(folder / "models")
            lockfile = read_lock(lock)
            t0 = time.perf_counter()
            report = fetch(lockfile, lockfile.lock.models, tree)
            rows["download, hashed while writing"].append(time.perf_counter() - t0)
            assert report.items[0].status == "downloaded"
            target = tree.target(report.items[0].entry)
            rows["download, then hash (second read)"].append(rows["download, hashed while writing"][-1]
                                                             + plain_hash(target))
            rows["plain hashlib (read + sha256)"].append(plain_hash(target))
            stamps_file = tree.state / "verified.json"
            stamps_file.unlink()
            sha = hashlib.sha256(data).hexdigest()
            t0 = time.perf_counter()
            assert Stamps(tree).verified(target, sha)
            rows["comfy-drive verify (first)"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            assert Stamps(tree).verified(target, sha)
            rows["comfy-drive verify (stamped)"].append(time.perf_counter() - t0)
            lockfile = read_lock(lock)
            again = fetch(lockfile, lockfile.lock.models, tree)
            rerun_bytes.append(again.bytes_downloaded)
    hub.stop()
    plain = statistics.median(rows["plain hashlib (read + sha256)"])
    print(f"{args.mib} MiB file, median of {args.repeats} runs")
    print(f"{'':<36} {'seconds':>9} {'MiB/s':>9} {'vs plain hashlib':>17}")
    for name, values in rows.items():
        med = statistics.median(values)
        print(f"{name:<36} {med:>9.3f} {args.mib / med if med else float('inf'):>9.0f} {plain / med:>16.2f}x")
    print(f"bytes downloaded by a rerun of fetch: {max(rerun_bytes)} (must be 0)")


if __name__ == "__main__":
    main()
