"""The run state store: one SQLite file (WAL) in the series' output folder, written by one owner.

The plan, every step's identity, prompt id, server, status, timings, attempts, errors and outputs
(with sha256), and every episode, are recorded as they change, one transaction per change (or per
`batch` of changes that come together). Keys are typed: a step is (episode, scene, route, index) in
columns of their own, never a string parsed back. An output is identified by its node, subfolder and
file name, as the server names it.

The store is a record, not the only truth: each finished step also leaves a manifest beside its
files, and prompt ids are deterministic, so a lost or damaged state file is rebuilt from the disk
and the server (`open_state` moves a damaged one aside and says so).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from comfy_driver.confined import NoSpace, ReadOnly
from comfy_driver.errors import DriveError, RunError
from comfy_driver.pipeline.outlock import IDENTITY_NAME, LOCK_NAME
from comfy_driver.pipeline.plan import SceneKey, StepKey

SCHEMA = """
CREATE TABLE IF NOT EXISTS plan (id INTEGER PRIMARY KEY CHECK (id = 1), json TEXT NOT NULL, updated_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS steps (
    episode TEXT NOT NULL, scene TEXT NOT NULL, route INTEGER NOT NULL, idx INTEGER NOT NULL,
    label TEXT NOT NULL, identity TEXT NOT NULL, status TEXT NOT NULL, graph_hash TEXT, prompt_id TEXT,
    server TEXT, attempts INTEGER NOT NULL DEFAULT 0, queued_at REAL, started_at REAL, finished_at REAL,
    server_ms INTEGER, cached_nodes TEXT, clip TEXT, error TEXT, error_kind TEXT, server_outputs TEXT,
    updated_at REAL NOT NULL, PRIMARY KEY (episode, scene, route, idx)
);
CREATE TABLE IF NOT EXISTS outputs (
    episode TEXT NOT NULL, scene TEXT NOT NULL, route INTEGER NOT NULL, idx INTEGER NOT NULL,
    node_id TEXT NOT NULL, subfolder TEXT NOT NULL, filename TEXT NOT NULL, file TEXT NOT NULL,
    sha256 TEXT NOT NULL, size INTEGER NOT NULL,
    PRIMARY KEY (episode, scene, route, idx, node_id, subfolder, filename)
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, episode TEXT, scene TEXT, route INTEGER, idx INTEGER,
    at REAL NOT NULL, kind TEXT NOT NULL, detail TEXT
);
CREATE TABLE IF NOT EXISTS episodes (
    id TEXT PRIMARY KEY, path TEXT, sha256 TEXT, clips_hash TEXT, updated_at REAL NOT NULL
);
"""

def _write_failure(exc: sqlite3.OperationalError, path: Path) -> DriveError:
    """A failed write of the run state as one clear message (never a traceback in a thread)."""
    text = str(exc).lower()
    if "full" in text or "disk i/o" in text:
        return NoSpace(f"no space left while writing the run state {path} (disk full?); finished files are kept",
                       hint="free disk space and run the same command again to resume")
    if "readonly" in text or "read-only" in text:
        return ReadOnly(f"cannot write the run state {path}: the folder or file is read-only",
                         hint="make the output folder writable (or choose another output:) and rerun")
    return RunError(f"writing the run state {path} failed ({exc})")


# Step statuses: pending -> submitted -> done | failed (a submitted step may be re-attached).
PENDING, SUBMITTED, DONE, FAILED = "pending", "submitted", "done", "failed"
_STEP_COLUMNS = ("label, identity, status, graph_hash, prompt_id, server, attempts, queued_at, started_at, "
                 "finished_at, server_ms, cached_nodes, clip, error, error_kind, server_outputs")


@dataclass(frozen=True)
class StepState:
    """A step's row as last written (frozen: the store hands out the instance it keeps)."""

    key: StepKey
    label: str
    identity: str
    status: str
    graph_hash: str | None
    prompt_id: str | None
    server: str | None
    attempts: int
    queued_at: float | None
    started_at: float | None
    finished_at: float | None
    server_ms: int | None
    cached_nodes: list[str]
    clip: str | None  # relative to the step's folder
    error: str | None
    error_kind: str | None
    server_outputs: dict[str, Any] | None  # the prompt's outputs as the server listed them, once it succeeded
    outputs: list[dict[str, Any]]  # file (relative to the step's folder), sha256, size, node_id, subfolder, filename


def _k(key: StepKey) -> tuple[str, str, int, int]:
    return (key.scene.episode, key.scene.scene, key.route, key.index)


def _texts(*values: object) -> bool:
    """Values a TEXT column gives back unchanged (else a kept row is forgotten, not guessed)."""
    return all(v is None or type(v) is str for v in values)


def _reals(*values: object) -> bool:
    """Values a REAL column gives back unchanged."""
    return all(v is None or type(v) is float for v in values)


class StateStore:
    """Only the supervisor's thread writes; one transaction per change, or per `batch`.

    Step rows are read far more often than written (several looks per change), so each step row read
    is kept: a write forgets the row of the step it changes, or, for the frequent changes (a new step,
    submitted, done), keeps the row as the file now holds it; a failed or rolled-back write forgets
    them all. So a read never answers from a row the file does not hold.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=30)
        self._batched = False
        self._steps: dict[tuple[str, str, int, int], StepState] = {}
        self._lock = threading.Lock()  # a step read and a write's change of the kept rows never interleave
        try:
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            if self.db.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                raise sqlite3.DatabaseError("quick_check failed")
            self.db.executescript(SCHEMA)
            self.db.execute("SELECT episode, scene, route, idx, " + _STEP_COLUMNS + " FROM steps LIMIT 1")
        except sqlite3.DatabaseError:
            self.db.close()
            raise

    def close(self) -> None:
        self.db.close()

    def _write(self, *statements: tuple[str, tuple[Any, ...]], step: StepKey | None = None,
               then: Callable[[StepState | None], StepState | None] | None = None) -> None:
        """Run `statements` in one transaction (or in the open batch). `step`: the step they change; its
        kept row is forgotten, or, with `then`, replaced by `then(kept row or None)` once they ran (None:
        forgotten)."""
        k = _k(step) if step is not None else None
        with self._lock:
            known = self._steps.pop(k, None) if k is not None else None
            try:
                if self._batched:
                    for sql, args in statements:
                        self.db.execute(sql, args)
                else:
                    self.db.execute("BEGIN IMMEDIATE")
                    for sql, args in statements:
                        self.db.execute(sql, args)
                    self.db.execute("COMMIT")
            except sqlite3.Error as exc:  # (a constraint broken half-way is rolled back too, not left open)
                self._steps.clear()
                if self.db.in_transaction and not self._batched:
                    with contextlib.suppress(sqlite3.Error):
                        self.db.execute("ROLLBACK")
                if isinstance(exc, sqlite3.OperationalError):
                    raise _write_failure(exc, self.path) from None
                raise
            if k is not None and then is not None:
                changed = then(known)
                if changed is not None:
                    self._steps[k] = changed

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """The changes made inside, in one transaction: for changes that come together (a run's first look
        at every step). Each change is complete in itself, so what was written before an error is
        committed; a commit costs more than the statements of a change."""
        if self._batched:
            yield
            return
        try:
            self.db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise _write_failure(exc, self.path) from None
        self._batched = True
        try:
            yield
        finally:
            self._batched = False
            try:
                if self.db.in_transaction:  # (a failed write may have ended it)
                    self.db.execute("COMMIT")
            except sqlite3.Error as exc:
                with self._lock:
                    self._steps.clear()  # what was read inside the batch may be rolled back
                with contextlib.suppress(sqlite3.Error):
                    self.db.execute("ROLLBACK")
                if isinstance(exc, sqlite3.OperationalError):
                    raise _write_failure(exc, self.path) from None
                raise

    # --------------------------------------------------------------------------------------------- plan
    def save_plan(self, plan: dict[str, Any]) -> None:
        self._write(("INSERT INTO plan (id, json, updated_at) VALUES (1, ?, ?) ON CONFLICT(id) DO UPDATE SET "
                     "json=excluded.json, updated_at=excluded.updated_at", (json.dumps(plan), time.time())))

    def plan(self) -> dict[str, Any] | None:
        row = self.db.execute("SELECT json FROM plan WHERE id = 1").fetchone()
        return json.loads(row[0]) if row else None

    # --------------------------------------------------------------------------------------------- steps
    def step(self, key: StepKey) -> StepState | None:
        k = _k(key)
        known = self._steps.get(k)
        if known is not None:
            return known
        with self._lock:
            st = self._read_step(key)
            if st is not None:
                self._steps[k] = st
        return st

    def _read_step(self, key: StepKey) -> StepState | None:
        row = self.db.execute(f"SELECT {_STEP_COLUMNS} FROM steps WHERE episode = ? AND scene = ? AND route = ? "
                              "AND idx = ?", _k(key)).fetchone()
        if row is None:
            return None
        outputs = [{"file": f, "sha256": s, "size": n, "node_id": i, "subfolder": sub, "filename": name}
                   for f, s, n, i, sub, name in self.db.execute(
                       "SELECT file, sha256, size, node_id, subfolder, filename FROM outputs WHERE episode = ? AND "
                       "scene = ? AND route = ? AND idx = ? ORDER BY rowid", _k(key))]
        return StepState(key, *row[:11], json.loads(row[11] or "[]"), *row[12:15],  # type: ignore[arg-type, call-arg]
                         json.loads(row[15]) if row[15] else None, outputs)

    def ensure(self, key: StepKey, label: str, identity: str) -> StepState:
        """The step's state; a step new to the store, or whose identity changed, starts over as pending."""
        current = self.step(key)
        if current is None or current.identity != identity:
            def then(_: StepState | None) -> StepState | None:  # the row as the file now holds it
                if not _texts(label, identity):
                    return None
                if current is None:
                    return StepState(key, label, identity, PENDING, None, None, None, 0, None, None, None, None, [],
                                     None, None, None, None, [])
                return replace(current, label=label, identity=identity, status=PENDING, graph_hash=None,
                               prompt_id=None, server=None, attempts=0, error=None, error_kind=None, clip=None,
                               server_outputs=None, outputs=[])

            self._write(("INSERT INTO steps (episode, scene, route, idx, label, identity, status, attempts, "
                         "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, 0, ?) ON CONFLICT(episode, scene, route, idx) "
                         "DO UPDATE SET label=excluded.label, identity=excluded.identity, status=excluded.status, "
                         "graph_hash=NULL, prompt_id=NULL, server=NULL, attempts=0, error=NULL, error_kind=NULL, "
                         "clip=NULL, server_outputs=NULL, updated_at=excluded.updated_at",
                         (*_k(key), label, identity, PENDING, time.time())),
                        ("DELETE FROM outputs WHERE episode = ? AND scene = ? AND route = ? AND idx = ?", _k(key)),
                        *([self._event_sql(key, "changed", "what shapes this step's output changed: it is "
                                           "rendered again")] if current is not None else []), step=key, then=then)
            current = self.step(key)
            assert current is not None
        return current

    def reset(self, key: StepKey, why: str) -> None:
        self._write(("UPDATE steps SET status = ?, prompt_id = NULL, server = NULL, clip = NULL, error = NULL, "
                     "error_kind = NULL, server_outputs = NULL, updated_at = ? WHERE episode = ? AND scene = ? AND "
                     "route = ? AND idx = ?", (PENDING, time.time(), *_k(key))),
                    ("DELETE FROM outputs WHERE episode = ? AND scene = ? AND route = ? AND idx = ?", _k(key)),
                    self._event_sql(key, "reset", why), step=key)

    def submitted(self, key: StepKey, prompt_id: str, server: str, attempt: int, graph_hash: str,
                  what: str = "submitted") -> None:
        now = time.time()

        def then(st: StepState | None) -> StepState | None:  # the row as the file now holds it
            if st is None or not (_texts(prompt_id, server, graph_hash) and type(attempt) is int):
                return None
            return replace(st, status=SUBMITTED, prompt_id=prompt_id, server=server, attempts=attempt,
                           graph_hash=graph_hash, queued_at=now, started_at=None, finished_at=None, error=None,
                           error_kind=None, server_outputs=None)

        self._write(("UPDATE steps SET status = ?, prompt_id = ?, server = ?, attempts = ?, graph_hash = ?, "
                     "queued_at = ?, started_at = NULL, finished_at = NULL, error = NULL, error_kind = NULL, "
                     "server_outputs = NULL, updated_at = ? WHERE episode = ? AND scene = ? AND route = ? AND idx = ?",
                     (SUBMITTED, prompt_id, server, attempt, graph_hash, now, now, *_k(key))),
                    self._event_sql(key, what, f"{prompt_id} on {server} (attempt {attempt})"), step=key, then=then)

    def ended(self, key: StepKey, server_outputs: dict[str, Any], started_at: float | None) -> None:
        """The prompt finished on the server: what it made is known, even if its history is lost later."""
        self._write(("UPDATE steps SET server_outputs = ?, started_at = COALESCE(?, started_at), updated_at = ? "
                     "WHERE episode = ? AND scene = ? AND route = ? AND idx = ?",
                     (json.dumps(server_outputs), started_at, time.time(), *_k(key))), step=key)

    def done(self, key: StepKey, *, started_at: float | None, finished_at: float, server_ms: int | None,
             cached_nodes: list[str], clip: str | None, outputs: list[dict[str, Any]],
             server_outputs: dict[str, Any] | None = None) -> None:
        """The step's files are downloaded and intact (with what the server listed, if given: `ended`
        and `done` in one transaction)."""
        statements: list[tuple[str, tuple[Any, ...]]] = [("DELETE FROM outputs WHERE episode = ? AND scene = ? AND route = ? AND idx = ?", _k(key))]
        statements += [("INSERT INTO outputs (episode, scene, route, idx, node_id, subfolder, filename, file, sha256, "
                         "size) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                         (*_k(key), o["node_id"], o["subfolder"], o["filename"], o["file"], o["sha256"], o["size"]))
                       for o in outputs]
        nodes = json.dumps(cached_nodes)
        listed = None if server_outputs is None else json.dumps(server_outputs)

        def then(st: StepState | None) -> StepState | None:  # the row as the file now holds it
            fits = _reals(started_at, finished_at) and _texts(clip) and (server_ms is None or type(server_ms) is int)
            if st is None or not fits or not all(
                    _texts(o["node_id"], o["subfolder"], o["filename"], o["file"], o["sha256"]) and type(o["size"]) is int
                    for o in outputs):
                return None
            return replace(st, status=DONE, started_at=started_at, finished_at=finished_at, server_ms=server_ms,
                           cached_nodes=json.loads(nodes), clip=clip, error=None, error_kind=None,
                           server_outputs=st.server_outputs if listed is None else json.loads(listed),
                           outputs=[{"file": o["file"], "sha256": o["sha256"], "size": o["size"], "node_id": o["node_id"],
                                     "subfolder": o["subfolder"], "filename": o["filename"]} for o in outputs])

        self._write(("UPDATE steps SET status = ?, started_at = ?, finished_at = ?, server_ms = ?, cached_nodes = ?, "
                     "clip = ?, error = NULL, error_kind = NULL, server_outputs = COALESCE(?, server_outputs), "
                     "updated_at = ? WHERE episode = ? AND scene = ? AND route = ? AND idx = ?",
                     (DONE, started_at, finished_at, server_ms, nodes, clip, listed, time.time(), *_k(key))),
                    *statements, self._event_sql(key, "done", clip), step=key, then=then)

    def failed(self, key: StepKey, error: str, kind: str, *, started_at: float | None = None) -> None:
        self._write(("UPDATE steps SET status = ?, error = ?, error_kind = ?, started_at = COALESCE(?, started_at), "
                     "finished_at = ?, updated_at = ? WHERE episode = ? AND scene = ? AND route = ? AND idx = ?",
                     (FAILED, error, kind, started_at, time.time(), time.time(), *_k(key))),
                    self._event_sql(key, f"failed:{kind}", error), step=key)

    def unsubmitted(self, key: StepKey, why: str) -> None:
        """A prompt taken off the server's queue (a clean stop): the step waits for the next run."""
        self._write(("UPDATE steps SET status = ?, prompt_id = NULL, updated_at = ? WHERE episode = ? AND scene = ? "
                     "AND route = ? AND idx = ?", (PENDING, time.time(), *_k(key))),
                    self._event_sql(key, "unqueued", why), step=key)

    @staticmethod
    def _event_sql(key: StepKey | SceneKey, kind: str, detail: str | None) -> tuple[str, tuple[Any, ...]]:
        scene = key.scene if isinstance(key, StepKey) else key
        route, idx = (key.route, key.index) if isinstance(key, StepKey) else (None, None)
        return ("INSERT INTO events (episode, scene, route, idx, at, kind, detail) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (scene.episode, scene.scene, route, idx, time.time(), kind, detail))

    def event(self, key: StepKey | SceneKey, kind: str, detail: str | None = None) -> None:
        self._write(self._event_sql(key, kind, detail))

    def histories(self) -> dict[tuple[str, str], list[tuple[float, str, str | None]]]:
        """Every scene's events, those of each of its steps included, in order, by (episode, scene): one
        read of the table for a whole report (a read per scene would read it once a scene)."""
        found: dict[tuple[str, str], list[tuple[float, str, str | None]]] = {}
        for episode, scene, at, kind, detail in self.db.execute(
                "SELECT episode, scene, at, kind, detail FROM events ORDER BY id"):
            found.setdefault((episode, scene), []).append((at, kind, detail))
        return found

    # --------------------------------------------------------------------------------------------- episodes
    def episode(self, episode_id: str) -> tuple[str | None, str | None, str | None]:
        row = self.db.execute("SELECT path, sha256, clips_hash FROM episodes WHERE id = ?", (episode_id,)).fetchone()
        return row if row else (None, None, None)

    def episode_done(self, episode_id: str, path: str, sha256: str, clips_hash: str) -> None:
        self._write(("INSERT INTO episodes (id, path, sha256, clips_hash, updated_at) VALUES (?, ?, ?, ?, ?) "
                     "ON CONFLICT(id) DO UPDATE SET path=excluded.path, sha256=excluded.sha256, "
                     "clips_hash=excluded.clips_hash, updated_at=excluded.updated_at",
                     (episode_id, path, sha256, clips_hash, time.time())))


def open_state(path: Path, say: Callable[[str], None], *, claimed_before: bool = True) -> tuple[StateStore, bool]:
    """The run's state store, and whether it is being rebuilt (lost or damaged while the folder holds
    finished work, or after an earlier run claimed the folder and may have left prompts on a server):
    then finished steps are recognised from their manifests on disk and prompts from the server's queue
    and history, so nothing is rendered again. A folder no run has claimed before, holding only what
    claiming it just wrote, is a fresh start: nothing is looked up."""
    folder = path.parent
    bookkeeping = (LOCK_NAME, IDENTITY_NAME)
    had_work = claimed_before or (folder.is_dir() and any(
        not p.name.startswith(path.name) and p.name not in bookkeeping for p in folder.iterdir()))
    existed = path.exists()
    try:
        return StateStore(path), had_work and not existed
    except sqlite3.DatabaseError as exc:
        aside = path.with_name(f"{path.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
        for suffix in ("", "-wal", "-shm"):
            extra = Path(str(path) + suffix)
            if extra.exists():
                extra.replace(Path(str(aside) + suffix))
        say(f"{path} is damaged ({exc}); moved it to {aside.name} and rebuilding the run state: finished "
            "clips are recognised on disk by their hashes and prompts on the server by their ids, so nothing "
            "finished is rendered again")
        try:
            return StateStore(path), True
        except sqlite3.DatabaseError as again:
            raise RunError(f"{path}: the run state cannot be created ({again})") from None
