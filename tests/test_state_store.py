"""The run state store: what a step read answers is always what the file holds."""

from __future__ import annotations

import dataclasses
import sqlite3
from pathlib import Path

import pytest

from comfy_driver.confined import NoSpace
from comfy_driver.errors import RunError
from comfy_driver.pipeline.plan import SceneKey, StepKey
from comfy_driver.pipeline.state import DONE, FAILED, PENDING, SUBMITTED, StateStore

KEY = StepKey(SceneKey("e", "s1"), 0, 0)
OTHER = StepKey(SceneKey("e", "s2"), 0, 0)
OUTPUT = {"file": "clip.mp4", "sha256": "ab" * 32, "size": 3, "node_id": "9", "subfolder": "", "filename": "x.mp4"}


def from_file(path: Path, key: StepKey):
    fresh = StateStore(path)
    try:
        return fresh.step(key)
    finally:
        fresh.close()


def test_every_change_is_read_back_as_the_file_holds_it(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = StateStore(path)
    assert store.step(KEY) is None
    changes = [
        lambda: store.ensure(KEY, "s1", "id-1"),
        lambda: store.submitted(KEY, "p1", "http://a", 1, "g1"),
        lambda: store.ended(KEY, {"9": {"images": []}}, 5.0),
        lambda: store.done(KEY, started_at=5.0, finished_at=6.0, server_ms=7, cached_nodes=["1"], clip="clip.mp4",
                           outputs=[OUTPUT]),
        lambda: store.done(KEY, started_at=5, finished_at=6.0, server_ms=None, cached_nodes=[], clip=None,
                           outputs=[OUTPUT, {**OUTPUT, "file": "b.png", "filename": "b.png", "node_id": 9}],
                           server_outputs={"9": {"images": [{"filename": "b.png"}]}, 3: None}),  # as the file keeps them
        lambda: store.reset(KEY, "changed on disk"),
        lambda: store.submitted(KEY, "p2", "http://b", 2, "g2"),
        lambda: store.failed(KEY, "out of memory", "oom"),
        lambda: store.unsubmitted(KEY, "stopped"),
        lambda: store.ensure(KEY, "s1", "id-2"),  # a new identity starts over
    ]
    statuses = []
    for change in changes:
        store.step(KEY)  # read (and kept) before the change
        store.ensure(OTHER, "s2", "other")
        change()
        assert store.step(KEY) == from_file(path, KEY)
        statuses.append(store.step(KEY).status)
    assert statuses == [PENDING, SUBMITTED, SUBMITTED, DONE, DONE, PENDING, SUBMITTED, FAILED, PENDING, PENDING]
    assert store.step(OTHER) == from_file(path, OTHER)
    with pytest.raises(dataclasses.FrozenInstanceError):
        store.step(KEY).status = DONE  # type: ignore[misc]
    store.close()


def test_the_frequent_changes_are_read_back_without_reading_the_file(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.db")
    reads: list[str] = []
    store.db.set_trace_callback(lambda sql: reads.append(sql) if sql.startswith("SELECT") else None)
    assert store.ensure(KEY, "s1", "id-1").status == PENDING
    assert len(reads) == 1  # the one look that finds no such step: the new row is known without another
    reads.clear()
    store.submitted(KEY, "p1", "http://a", 1, "g1")
    assert store.step(KEY).prompt_id == "p1"
    store.done(KEY, started_at=5.0, finished_at=6.0, server_ms=7, cached_nodes=["1"], clip="clip.mp4",
               outputs=[OUTPUT], server_outputs={"9": {"images": []}})
    assert store.step(KEY).outputs == [OUTPUT] and store.step(KEY).server_outputs == {"9": {"images": []}}
    assert reads == []
    store.db.set_trace_callback(None)
    assert store.step(KEY) == from_file(tmp_path / "state.db", KEY)
    store.close()


def test_a_failed_write_is_never_answered_from_memory(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = StateStore(path)
    store.ensure(KEY, "s1", "id-1")
    store.db.execute("PRAGMA busy_timeout = 50")
    blocker = sqlite3.connect(str(path), isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another writer holds the file: the store's next write fails
    try:
        with pytest.raises(RunError):
            store.submitted(KEY, "p1", "http://a", 1, "g1")
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert store.step(KEY).status == PENDING == from_file(path, KEY).status
    store.close()


class FailingCommit:
    """The store's connection, whose COMMIT fails (as a full disk makes it fail)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    @property
    def in_transaction(self) -> bool:
        return self.db.in_transaction

    def execute(self, sql: str, *args: object) -> sqlite3.Cursor:
        if sql == "COMMIT":
            raise sqlite3.OperationalError("disk I/O error")
        return self.db.execute(sql, *args)


def test_a_rolled_back_batch_forgets_what_was_read_inside_it(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = StateStore(path)
    store.ensure(KEY, "s1", "id-1")
    real = store.db
    store.db = FailingCommit(real)  # type: ignore[assignment]
    with pytest.raises(NoSpace):
        with store.batch():
            store.submitted(KEY, "p1", "http://a", 1, "g1")
            assert store.step(KEY).status == SUBMITTED  # uncommitted, read inside the batch
    store.db = real
    assert store.step(KEY).status == PENDING == from_file(path, KEY).status
    store.close()


def test_a_file_listed_twice_by_one_node_is_one_output(tmp_path: Path) -> None:
    """A server listing one node's file twice made the step's record break the outputs table's key
    (a raw IntegrityError stopped the run): it is downloaded and recorded once."""
    from types import SimpleNamespace

    from comfy_driver.comfy.client import Downloaded
    from comfy_driver.comfy.outputs import OutputFile
    from comfy_driver.pipeline.finish import download

    folder = tmp_path / "step"
    folder.mkdir()
    fetched = []

    def fetch(f: OutputFile, into: Path, name: str | None) -> Downloaded:
        fetched.append(f.filename)
        path = into / (name or f.filename)
        path.write_bytes(b"clip")
        return Downloaded(path, "cd" * 32, 4)

    video = OutputFile(node_id="9", key="gifs", filename="x.mp4", format="video/h264-mp4")
    attempt = SimpleNamespace(step=SimpleNamespace(folder=folder, identity="i"),
                              rendered=SimpleNamespace(template=SimpleNamespace(clip_node="9")))
    outputs, clip = download(fetch, attempt, [video, video.model_copy()], retries=1)  # type: ignore[arg-type]
    assert (fetched, clip, len(outputs)) == (["x.mp4"], "clip.mp4", 1)
    store = StateStore(tmp_path / "state.db")
    store.ensure(KEY, "s1", "i")
    store.done(KEY, started_at=1.0, finished_at=2.0, server_ms=None, cached_nodes=[], clip=clip, outputs=outputs)
    assert from_file(tmp_path / "state.db", KEY).outputs == outputs
    store.close()
