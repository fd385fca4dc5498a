"""Upload throughput against the local fake YouTube, next to raw file read speed; peak memory by file size.

    python bench/publish.py [--sizes 64,512,2048] [--repeats 3]

For each file size, a fresh driver process reads the file once (raw read, then read + sha256, as
publishing identifies an episode by its hash), then uploads it with comfy-drive's publisher (the
real google-api-python-client, resumable, 8 MiB chunks) to the fake server in this process, which
hashes what it receives. Medians of the repeats; the driver's peak RSS is measured by the OS
(wait4), so a file loaded into memory would show as a peak growing with the size.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fakeyoutube import FakeYouTube  # noqa: E402
from tests.youtubekit import sign_in  # noqa: E402

MIB = 1 << 20


def child(endpoint: str, path: Path, ledger: Path) -> None:
    """One driver: raw read, read + sha256, then the upload; prints its timings as JSON."""
    from comfy_driver.publish.metadata import EpisodeInfo, SceneInfo, VideoMetadata
    from comfy_driver.publish.publisher import PublishOptions, Publisher

    t0 = time.perf_counter()
    with open(path, "rb") as fh:
        while fh.read(MIB):
            pass
    read = time.perf_counter() - t0
    t0 = time.perf_counter()
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(MIB):
            digest.update(block)
    hashed = time.perf_counter() - t0
    episode = EpisodeInfo("Bench", path.stem, 1, path.stem, path, digest.hexdigest(),
                          [SceneInfo("s", 1, None, "svd", path, 1.0)])
    meta = VideoMetadata(title=path.stem, description="", tags=[episode.marker], category_id="1", language=None,
                         privacy="private", publish_at=None, made_for_kids=False, contains_synthetic_media=True,
                         notify_subscribers=False, playlist=None, playlist_privacy="private", thumbnail=None)
    publisher = Publisher(ledger, PublishOptions(endpoint=endpoint))
    t0 = time.perf_counter()
    record = publisher.publish_episode(episode, meta)
    upload = time.perf_counter() - t0
    publisher.close()
    print(json.dumps({"read": read, "hash": hashed, "upload": upload, "video": record.video_id}))


def run_child(endpoint: str, path: Path, ledger: Path, env: dict[str, str]) -> tuple[dict[str, float], float]:
    proc = subprocess.Popen([sys.executable, __file__, "--child", endpoint, str(path), str(ledger)],
                            stdout=subprocess.PIPE, env=env, text=True)
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        raise SystemExit(f"driver failed ({status}): {out}")
    return json.loads(out), usage.ru_maxrss / 1024  # KiB -> MiB (Linux)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="64,512", help="file sizes in MiB, comma-separated")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child[0], Path(args.child[1]), Path(args.child[2]))
        return
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "COMFY_DRIVE_CONFIG": str(Path(tmp) / "config"), "PYTHONPATH": str(ROOT)}
        os.environ["COMFY_DRIVE_CONFIG"] = env["COMFY_DRIVE_CONFIG"]
        fake = FakeYouTube()
        fake.start()
        sign_in(fake, playlists=False)
        print(f"{'size':>8} {'read MB/s':>10} {'sha256 MB/s':>12} {'upload MB/s':>12} {'upload/read':>12} "
              f"{'peak RSS MiB':>13}")
        for size in (int(s) for s in args.sizes.split(",")):
            path = Path(tmp) / f"ep{size}.mp4"
            block = os.urandom(MIB)
            with open(path, "wb") as fh:
                for _ in range(size):
                    fh.write(block)
            rows: dict[str, list[float]] = {"read": [], "hash": [], "upload": [], "rss": []}
            for rep in range(args.repeats):
                timings, rss = run_child(fake.url, path, Path(tmp) / f"publish-{size}-{rep}.db", env)
                video = fake.videos[str(timings["video"])]
                assert video["_size"] == path.stat().st_size, "the fake received another size"
                for key in ("read", "hash", "upload"):
                    rows[key].append(size * MIB / 1e6 / timings[key])
                rows["rss"].append(rss)
            med = {k: statistics.median(v) for k, v in rows.items()}
            print(f"{size:>5} MiB {med['read']:>10.0f} {med['hash']:>12.0f} {med['upload']:>12.0f} "
                  f"{med['upload'] / med['read']:>12.2f} {med['rss']:>13.0f}")
            path.unlink()
        fake.stop()


if __name__ == "__main__":
    main()
