"""`comfy-drive fetch`: exactly the pinned model files, into the ComfyUI folders, verified, resumable.

Plan: every wanted entry is present (and verified), or to download. An entry without a sha256 is
refused until the user pins it (`lock pin` reads revision, size and sha256 from the Hub, shows them
and writes them into models.lock; `fetch --pin` does the same on the way); a pinned entry's missing
revision or size is read from the Hub and checked against its sha256. Downloads go to `<models>/.comfy-drive/partial/` (ComfyUI never looks
there), are hashed while they stream, and are moved into place only when the sha256 matches; a file
that does not match is moved to `.comfy-drive/quarantine/` and reported.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from comfy_driver.comfy.client import file_sha256
from comfy_driver.errors import DriveError, ModelVerificationFailed, RunError, UserError
from comfy_driver.models import hub
from comfy_driver.models.lock import LockFile, ModelEntry, write_pins
from comfy_driver.models.tree import ModelsTree, flat_name, inside
from comfy_driver.units import fmt_seconds

DISK_MARGIN = 256 << 20  # keep this much free beyond the downloads


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n} B"


@dataclass
class Item:
    index: int  # position in models.lock
    entry: ModelEntry
    target: Path
    present: Path | None = None
    status: str = "missing"  # present | missing | downloaded | mismatch | refused | failed
    message: str = ""
    downloaded: int = 0


@dataclass
class FetchReport:
    items: list[Item]
    bytes_downloaded: int = 0
    pinned: list[str] = field(default_factory=list)

    @property
    def failed(self) -> list[Item]:
        return [i for i in self.items if i.status in ("mismatch", "refused", "failed", "missing")]


class Stamps:
    """sha256 already verified per file (keyed by size and mtime), so reruns do not rehash 30 GB."""

    def __init__(self, tree: ModelsTree) -> None:
        self.path = tree.state / "verified.json"
        self.lock = threading.Lock()
        try:
            self.data: dict[str, dict[str, object]] = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            self.data = {}

    def verified(self, path: Path, sha256: str) -> bool:
        stat = path.stat()
        stamp = self.data.get(str(path))
        if stamp and stamp.get("size") == stat.st_size and stamp.get("mtime_ns") == stat.st_mtime_ns:
            return stamp.get("sha256") == sha256
        return self.record(path, file_sha256(path)) == sha256

    def record(self, path: Path, sha256: str) -> str:
        stat = path.stat()
        with self.lock:
            self.data[str(path)] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": sha256}
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(".verified.json.tmp")
            tmp.write_text(json.dumps(self.data, indent=1), encoding="utf-8")
            os.replace(tmp, self.path)
        return sha256


class Progress:
    """Total bytes, speed and ETA over all downloads, one line, redrawn at most twice a second."""

    def __init__(self, total: int, files: int, stream: TextIO | None = None) -> None:
        self.total, self.files = total, files
        self.done_bytes = 0
        self.done_files = 0
        self.started = time.monotonic()
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.lock = threading.Lock()
        self.last = 0.0

    def add(self, n: int) -> None:
        with self.lock:
            self.done_bytes += n
            now = time.monotonic()
            if now - self.last >= (0.5 if self.tty else 5.0):
                self.last = now
                self._draw(now)

    def file_done(self) -> None:
        with self.lock:
            self.done_files += 1

    def _draw(self, now: float) -> None:
        speed = self.done_bytes / max(now - self.started, 1e-6)
        eta = (self.total - self.done_bytes) / speed if speed > 0 and self.total else 0
        line = (f"fetch {self.done_files}/{self.files} files | {human(self.done_bytes)} of {human(self.total)} | "
                f"{human(speed)}/s | ETA {fmt_seconds(eta)}")
        self.stream.write(("\r" + line) if self.tty else line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")


def plan(lockfile: LockFile, entries: list[ModelEntry], tree: ModelsTree | None, stamps: Stamps | None) -> list[Item]:
    """What is there (verified) and what is not."""
    index = {id(m): i for i, m in enumerate(lockfile.lock.models)}
    items = []
    for entry in entries:
        item = Item(index[id(entry)], entry, tree.target(entry) if tree else Path(entry.folder) / entry.name)
        if entry.pickled and not entry.allow_pickle:
            item.status = "refused"
            item.message = (f"{entry.name} is a pickle-based file ({Path(entry.name).suffix}): loading it can run "
                            "arbitrary code. Use a .safetensors file, or set allow_pickle: true on this entry if you "
                            "trust it")
        elif tree is not None:
            item.present = find_present(entry, tree, stamps)
            item.status = "present" if item.present else "missing"
        items.append(item)
    return items


def download_size(items: list[Item]) -> str:
    """What the missing items weigh, for people: the known sizes, and how many the Hub gives later."""
    missing = [i for i in items if i.status == "missing"]
    unknown = sum(i.entry.size is None for i in missing)
    note = f" + {unknown} file(s) whose size the Hub gives at download" if unknown else ""
    return human(sum(i.entry.size or 0 for i in missing)) + note


def find_present(entry: ModelEntry, tree: ModelsTree, stamps: Stamps | None) -> Path | None:
    """Where the entry's file already is, checked against its pinned sha256 (a file of an entry not
    pinned yet is not taken on trust: it is checked once the pin is read). Without stamps (a dry
    run) name and size are enough, so nothing is hashed."""
    for place in tree.candidates(entry):
        if not place.is_file() or (entry.size is not None and place.stat().st_size != entry.size):
            continue
        if stamps is None or (entry.sha256 is not None and stamps.verified(place, entry.sha256)):
            return place
    return None


class UnpinnedError(UserError):
    """Entries with no sha256 yet: nothing is downloaded until the user has pinned them."""

    def __init__(self, lockfile: LockFile, items: list[Item]) -> None:
        names = ", ".join(f"{i.entry.folder}/{i.entry.name} ({lockfile.path}:{lockfile.line(i.index)})" for i in items)
        super().__init__(f"not pinned yet (no sha256 in models.lock): {names}",
                         hint="read the pins from the Hub and look at them first (`lock pin`), or fetch with --pin")


def pin(lockfile: LockFile, items: list[Item]) -> list[str]:
    """Read revision, size and sha256 of unpinned entries from the Hub and write them into models.lock.

    A value models.lock already has is compared with the Hub's, never overwritten: a pinned sha256 that
    the Hub no longer serves is an error before anything is downloaded."""
    pins: dict[int, dict[str, object]] = {}
    names = []
    for item in items:
        e = item.entry
        if e.pinned or item.status == "refused":
            continue
        where = f"{lockfile.path}:{lockfile.line(item.index)}: "
        info = hub.file_info(e.repo, e.path, e.revision, where=where)
        if info.sha256 is None:
            raise RunError(f"{where}{e.repo}/{e.path}: the Hub gives no sha256 for it (not an LFS file)")
        fields: dict[str, object] = {}
        for name, value in (("revision", info.revision), ("size", info.size), ("sha256", info.sha256)):
            current = getattr(e, name)
            if current is None:
                fields[name] = value
            elif current != value:
                raise ModelVerificationFailed(f"{where}{e.name}: models.lock says {name} {current}, "
                                              f"the Hub says {value} for revision {e.revision or 'main'}", hint="fix or remove that value")
        item.entry = e.model_copy(update=fields)
        pins[item.index] = fields
        names.append(e.name)
    if pins:
        write_pins(lockfile, pins)
    return names


def fetch(lockfile: LockFile, entries: list[ModelEntry], tree: ModelsTree, *, jobs: int = 3,
          dry_run: bool = False, allow_unpinned: bool = False, disk_free: Callable[[Path], int] | None = None,
          out: TextIO | None = None) -> FetchReport:
    """Download what is missing. An entry without a sha256 is refused unless `allow_unpinned`: the
    user pins it first (`pin_entries`), seeing what they are about to trust."""
    out = out or sys.stderr
    tree.root.mkdir(parents=True, exist_ok=True) if not dry_run else None
    stamps = Stamps(tree)
    items = plan(lockfile, entries, tree, stamps)
    report = FetchReport(items)
    wanted = [i for i in items if i.status == "missing"]
    unpinned = [i for i in wanted if i.entry.sha256 is None]
    if unpinned and not allow_unpinned and not dry_run:
        raise UnpinnedError(lockfile, unpinned)
    if not wanted or dry_run:
        return report
    if hub.offline():
        for item in wanted:
            item.message = "missing (offline: HF_HUB_OFFLINE is set)"
        return report
    report.pinned = pin(lockfile, wanted)
    # A file pinned just now may already be on disk (put there by hand): check it against the pin.
    for item in wanted:
        item.present = find_present(item.entry, tree, stamps)
        item.status = "present" if item.present else "missing"
    wanted = [i for i in wanted if i.status == "missing"]
    partial_dir = tree.state / "partial"
    need = sum(max(0, (i.entry.size or 0) - _partial_size(partial_dir, i.entry)) for i in wanted)
    free = (disk_free or (lambda p: shutil.disk_usage(p).free))(tree.root)
    if need + DISK_MARGIN > free:
        raise UserError(f"not enough disk space in {tree.root}: the downloads need {human(need)}, "
                        f"{human(free)} is free", hint="free space (or point --models-dir elsewhere) and run again")
    progress = Progress(need, len(wanted), out)
    with ThreadPoolExecutor(max(1, jobs), thread_name_prefix="fetch") as pool:
        results = list(pool.map(lambda item: _download_one(item, tree, stamps, progress), wanted))
    progress.close()
    report.bytes_downloaded = sum(results)
    return report


def _partial_path(partial_dir: Path, entry: ModelEntry) -> Path:
    return inside(partial_dir / entry.folder, f"{flat_name(entry.name)}.{(entry.sha256 or 'unpinned')[:16]}.part")


def _partial_size(partial_dir: Path, entry: ModelEntry) -> int:
    part = _partial_path(partial_dir, entry)
    return part.stat().st_size if part.is_file() else 0


def _download_one(item: Item, tree: ModelsTree, stamps: Stamps, progress: Progress) -> int:
    e = item.entry
    part = _partial_path(tree.state / "partial", e)
    part.parent.mkdir(parents=True, exist_ok=True)
    received = 0

    def count(n: int) -> None:
        nonlocal received
        received += max(n, 0)
        progress.add(n)

    info = hub.FileInfo(e.revision or "main", e.size or 0, e.sha256, hub.file_url(e.repo, e.path, e.revision))
    try:
        got = hub.download(info, part, count, repo=e.repo, path=e.path)
    except DriveError as exc:
        item.status, item.message, item.downloaded = "failed", str(exc), received
        return received
    item.downloaded = received
    if got != e.sha256:
        quarantine = inside(tree.state / "quarantine", f"{flat_name(e.name)}.{got[:16]}")
        quarantine.parent.mkdir(parents=True, exist_ok=True)
        os.replace(part, quarantine)
        item.status = "mismatch"
        item.message = (f"{e.name}: sha256 {got} does not match models.lock ({e.sha256}); the file was moved to "
                        f"{quarantine} and is not where ComfyUI loads from")
        return item.downloaded
    target = tree.target(e)  # the name is checked again right before the file is written
    if target != item.target:
        raise UserError(f"{e.name}: its target changed during the download ({item.target} -> {target})")
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(part, target)
    stamps.record(item.target, got)
    item.status, item.present = "downloaded", item.target
    progress.file_done()
    return item.downloaded
