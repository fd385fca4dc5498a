"""The run state store: one SQLite file (WAL) in the series' output folder.

Every scene's graph hash, prompt id, server, status, timings, attempts, errors and outputs (with
sha256), and every episode, are recorded as they change, one transaction per change. A run killed
at any moment leaves a state the next run resumes from: finished scenes are kept (their files are
checked by sha256), prompts still queued or running on a server are re-attached, not sent again.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from comfy_driver.confined import NoSpace, ReadOnly
from comfy_driver.errors import DriveError, RunError

SCHEMA = """
CREATE TABLE IF NOT EXISTS scenes (
    key TEXT PRIMARY KEY, episode TEXT NOT NULL, scene TEXT NOT NULL, backend TEXT NOT NULL,
    graph_hash TEXT NOT NULL, status TEXT NOT NULL, prompt_id TEXT, server TEXT,
    attempts INTEGER NOT NULL DEFAULT 0, queued_at REAL, started_at REAL, finished_at REAL,
    server_ms INTEGER, cached_nodes TEXT, clip TEXT, error TEXT, error_kind TEXT, server_outputs TEXT,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS outputs (
    scene_key TEXT NOT NULL, file TEXT NOT NULL, sha256 TEXT NOT NULL, size INTEGER NOT NULL,
    node_id TEXT NOT NULL, PRIMARY KEY (scene_key, file)
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, scene_key TEXT, at REAL NOT NULL, kind TEXT NOT NULL, detail TEXT
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


# Scene statuses: pending -> submitted -> done | failed (a submitted scene may be re-attached).
PENDING, SUBMITTED, DONE, FAILED = "pending", "submitted", "done", "failed"


@dataclass
class SceneState:
    key: str
    graph_hash: str
    status: str
    prompt_id: str | None
    server: str | None
    attempts: int
    queued_at: float | None
    started_at: float | None
    finished_at: float | None
    server_ms: int | None
    cached_nodes: list[str]
    clip: str | None
    error: str | None
    error_kind: str | None
    server_outputs: dict[str, Any] | None  # the prompt's outputs as the server listed them, once it succeeded
    outputs: list[dict[str, Any]]


class StateStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        try:
            self.db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=30)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.executescript(SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise RunError(f"{path}: the run state cannot be opened ({exc})",
                           hint="if it is damaged, move it away; finished files stay and are rechecked") from None

    def close(self) -> None:
        with self._lock:
            self.db.close()

    def _write(self, sql: str, args: tuple[Any, ...] = (), *more: tuple[str, tuple[Any, ...]]) -> None:
        with self._lock:
            try:
                self.db.execute("BEGIN IMMEDIATE")
                self.db.execute(sql, args)
                for extra_sql, extra_args in more:
                    self.db.execute(extra_sql, extra_args)
                self.db.execute("COMMIT")
            except sqlite3.OperationalError as exc:
                if self.db.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        self.db.execute("ROLLBACK")
                raise _write_failure(exc, self.path) from None

    # ---------------------------------------------------------------------------------------------
    def scene(self, key: str) -> SceneState | None:
        with self._lock:
            row = self.db.execute("SELECT key, graph_hash, status, prompt_id, server, attempts, queued_at, "
                                  "started_at, finished_at, server_ms, cached_nodes, clip, error, error_kind, "
                                  "server_outputs FROM scenes WHERE key = ?", (key,)).fetchone()
            if row is None:
                return None
            outputs = [{"file": f, "sha256": s, "size": n, "node_id": i} for f, s, n, i in self.db.execute(
                "SELECT file, sha256, size, node_id FROM outputs WHERE scene_key = ? ORDER BY rowid", (key,))]
        server_outputs = json.loads(row[14]) if row[14] else None
        return SceneState(*row[:10], json.loads(row[10] or "[]"), *row[11:14], server_outputs,  # type: ignore[call-arg]
                          outputs)

    def ensure(self, key: str, episode: str, scene: str, backend: str, graph_hash: str) -> SceneState:
        """The scene's state; a scene new to the store, or whose graph changed, starts over as pending."""
        current = self.scene(key)
        if current is None or current.graph_hash != graph_hash:
            self._write("INSERT INTO scenes (key, episode, scene, backend, graph_hash, status, attempts, updated_at) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(key) DO UPDATE SET backend=excluded.backend, "
                        "graph_hash=excluded.graph_hash, status=excluded.status, prompt_id=NULL, server=NULL, "
                        "attempts=0, error=NULL, error_kind=NULL, clip=NULL, server_outputs=NULL, "
                        "updated_at=excluded.updated_at",
                        (key, episode, scene, backend, graph_hash, PENDING, 0, time.time()),
                        ("DELETE FROM outputs WHERE scene_key = ?", (key,)))
            if current is not None:
                self.event(key, "changed", "the scene's graph changed: it is rendered again")
            current = self.scene(key)
            assert current is not None
        return current

    def reset(self, key: str, why: str) -> None:
        self._write("UPDATE scenes SET status = ?, prompt_id = NULL, server = NULL, clip = NULL, error = NULL, "
                    "error_kind = NULL, server_outputs = NULL, updated_at = ? WHERE key = ?", (PENDING, time.time(), key),
                    ("DELETE FROM outputs WHERE scene_key = ?", (key,)))
        self.event(key, "reset", why)

    def submitted(self, key: str, prompt_id: str, server: str, attempt: int, backend: str) -> None:
        self._write("UPDATE scenes SET status = ?, prompt_id = ?, server = ?, attempts = ?, backend = ?, "
                    "queued_at = ?, started_at = NULL, finished_at = NULL, error = NULL, error_kind = NULL, "
                    "server_outputs = NULL, updated_at = ? WHERE key = ?",
                    (SUBMITTED, prompt_id, server, attempt, backend, time.time(), time.time(), key),
                    self._event_sql(key, "submitted", f"{prompt_id} on {server} (attempt {attempt}, {backend})"))

    @staticmethod
    def _event_sql(key: str | None, kind: str, detail: str | None) -> tuple[str, tuple[Any, ...]]:
        return ("INSERT INTO events (scene_key, at, kind, detail) VALUES (?, ?, ?, ?)", (key, time.time(), kind, detail))

    def ended(self, key: str, server_outputs: dict[str, Any], started_at: float | None) -> None:
        """The prompt finished on the server: what it made is known, even if its history is lost later."""
        self._write("UPDATE scenes SET server_outputs = ?, started_at = ?, updated_at = ? WHERE key = ?",
                    (json.dumps(server_outputs), started_at, time.time(), key))

    def done(self, key: str, *, started_at: float | None, finished_at: float, server_ms: int | None,
             cached_nodes: list[str], clip: str | None, outputs: list[dict[str, Any]]) -> None:
        statements: list[tuple[str, tuple[Any, ...]]] = [("DELETE FROM outputs WHERE scene_key = ?", (key,))]
        statements += [("INSERT INTO outputs (scene_key, file, sha256, size, node_id) VALUES (?, ?, ?, ?, ?)",
                        (key, o["file"], o["sha256"], o["size"], o["node_id"])) for o in outputs]
        self._write("UPDATE scenes SET status = ?, started_at = ?, finished_at = ?, server_ms = ?, "
                    "cached_nodes = ?, clip = ?, error = NULL, error_kind = NULL, updated_at = ? WHERE key = ?",
                    (DONE, started_at, finished_at, server_ms, json.dumps(cached_nodes), clip, time.time(), key),
                    *statements, self._event_sql(key, "done", clip))

    def failed(self, key: str, error: str, kind: str, *, started_at: float | None = None,
               finished_at: float | None = None) -> None:
        self._write("UPDATE scenes SET status = ?, error = ?, error_kind = ?, started_at = COALESCE(?, started_at), "
                    "finished_at = ?, updated_at = ? WHERE key = ?",
                    (FAILED, error, kind, started_at, finished_at or time.time(), time.time(), key),
                    self._event_sql(key, f"failed:{kind}", error))

    def unsubmitted(self, key: str, why: str) -> None:
        """A prompt taken off the server's queue (a clean stop): the scene waits for the next run."""
        self._write("UPDATE scenes SET status = ?, prompt_id = NULL, updated_at = ? WHERE key = ?",
                    (PENDING, time.time(), key))
        self.event(key, "unqueued", why)

    def event(self, key: str | None, kind: str, detail: str | None = None) -> None:
        self._write(*self._event_sql(key, kind, detail))

    def events(self, key: str) -> list[tuple[float, str, str | None]]:
        """A scene's events, those of its chained prompts ('key:1-denoise') included."""
        with self._lock:
            return list(self.db.execute("SELECT at, kind, detail FROM events WHERE scene_key = ? "
                                        "OR scene_key LIKE ? ORDER BY id", (key, key + ":%")))

    # ---------------------------------------------------------------------------------------------
    def episode(self, episode_id: str) -> tuple[str | None, str | None, str | None]:
        with self._lock:
            row = self.db.execute("SELECT path, sha256, clips_hash FROM episodes WHERE id = ?",
                                  (episode_id,)).fetchone()
        return row if row else (None, None, None)

    def episode_done(self, episode_id: str, path: str, sha256: str, clips_hash: str) -> None:
        self._write("INSERT INTO episodes (id, path, sha256, clips_hash, updated_at) VALUES (?, ?, ?, ?, ?) "
                    "ON CONFLICT(id) DO UPDATE SET path=excluded.path, sha256=excluded.sha256, "
                    "clips_hash=excluded.clips_hash, updated_at=excluded.updated_at",
                    (episode_id, path, sha256, clips_hash, time.time()))
