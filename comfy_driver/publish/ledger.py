"""What has been published: per episode its upload session, video id and follow-ups, in publish.db.

A database of its own in the series folder, beside the run state: publishing is a separate concern
with its own life (a re-render must not forget what is on YouTube; deleting the run state to render
again must not upload again). Every step is committed (fsync) before the next one starts:
    session {uri, file sha256}  ->  uploaded {video id}  ->  thumbnail, playlist  ->  done
so a driver killed anywhere resumes at the step it was in.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from comfy_driver.errors import RunError

SCHEMA = """
CREATE TABLE IF NOT EXISTS uploads (
    episode TEXT PRIMARY KEY, sha256 TEXT NOT NULL, marker TEXT NOT NULL, state TEXT NOT NULL,
    session_uri TEXT, video_id TEXT, privacy TEXT, publish_at TEXT, thumbnail TEXT, playlist TEXT,
    playlist_id TEXT, bytes INTEGER, bytes_sent INTEGER NOT NULL DEFAULT 0, seconds REAL NOT NULL DEFAULT 0,
    retries INTEGER NOT NULL DEFAULT 0, previous TEXT NOT NULL DEFAULT '[]', updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS facts (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

SESSION, UPLOADED, DONE = "session", "uploaded", "done"
_COLUMNS = ("episode", "sha256", "marker", "state", "session_uri", "video_id", "privacy", "publish_at", "thumbnail",
            "playlist", "playlist_id", "bytes", "bytes_sent", "seconds", "retries", "previous")


@dataclass
class Upload:
    episode: str
    sha256: str
    marker: str
    state: str
    session_uri: str | None
    video_id: str | None
    privacy: str | None
    publish_at: str | None
    thumbnail: str | None  # "set", or why not
    playlist: str | None
    playlist_id: str | None
    bytes: int | None
    bytes_sent: int
    seconds: float
    retries: int
    previous: str  # JSON list of the video ids of earlier versions (--republish)

    @property
    def previous_ids(self) -> list[str]:
        return list(json.loads(self.previous))


class Ledger:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        try:
            self.db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=30)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.executescript(SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise RunError(f"{path}: the publishing record cannot be opened ({exc})",
                           hint="it says which episodes are on YouTube: restore it rather than delete it") from None

    def close(self) -> None:
        with self._lock:
            self.db.close()

    def _write(self, sql: str, args: tuple[Any, ...]) -> None:
        with self._lock:
            self.db.execute(sql, args)

    def get(self, episode: str) -> Upload | None:
        with self._lock:
            row = self.db.execute(f"SELECT {', '.join(_COLUMNS)} FROM uploads WHERE episode = ?",
                                  (episode,)).fetchone()
        return Upload(*row) if row else None

    def start(self, episode: str, sha256: str, marker: str, previous: list[str]) -> None:
        """A new upload of this file (a new version keeps the earlier video ids in `previous`)."""
        self._write("INSERT INTO uploads (episode, sha256, marker, state, previous, updated_at) VALUES (?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT(episode) DO UPDATE SET sha256=excluded.sha256, marker=excluded.marker, "
                    "state=excluded.state, session_uri=NULL, video_id=NULL, privacy=NULL, publish_at=NULL, "
                    "thumbnail=NULL, playlist=NULL, playlist_id=NULL, bytes=NULL, bytes_sent=0, seconds=0, "
                    "retries=0, previous=excluded.previous, updated_at=excluded.updated_at",
                    (episode, sha256, marker, SESSION, json.dumps(previous), time.time()))

    def session(self, episode: str, uri: str | None) -> None:
        self._write("UPDATE uploads SET session_uri = ?, updated_at = ? WHERE episode = ?", (uri, time.time(), episode))

    def add_effort(self, episode: str, sent: int, seconds: float, retries: int) -> None:
        self._write("UPDATE uploads SET bytes_sent = bytes_sent + ?, seconds = seconds + ?, retries = retries + ?, "
                    "updated_at = ? WHERE episode = ?", (sent, seconds, retries, time.time(), episode))

    def uploaded(self, episode: str, video_id: str, privacy: str | None, publish_at: str | None, size: int) -> None:
        self._write("UPDATE uploads SET state = ?, session_uri = NULL, video_id = ?, privacy = ?, publish_at = ?, "
                    "bytes = ?, updated_at = ? WHERE episode = ?",
                    (UPLOADED, video_id, privacy, publish_at, size, time.time(), episode))

    def thumbnail(self, episode: str, outcome: str) -> None:
        self._write("UPDATE uploads SET thumbnail = ?, updated_at = ? WHERE episode = ?", (outcome, time.time(), episode))

    def playlist(self, episode: str, title: str, playlist_id: str) -> None:
        self._write("UPDATE uploads SET playlist = ?, playlist_id = ?, updated_at = ? WHERE episode = ?",
                    (title, playlist_id, time.time(), episode))

    def done(self, episode: str) -> None:
        self._write("UPDATE uploads SET state = ?, updated_at = ? WHERE episode = ?", (DONE, time.time(), episode))

    def fact(self, key: str) -> str | None:
        """A cached channel fact (the uploads playlist id, a playlist id by title)."""
        with self._lock:
            row = self.db.execute("SELECT value FROM facts WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def forget(self, key: str) -> None:
        self._write("DELETE FROM facts WHERE key = ?", (key,))

    def remember(self, key: str, value: str) -> None:
        self._write("INSERT INTO facts (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                    (key, value))
