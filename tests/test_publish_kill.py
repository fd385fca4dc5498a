"""SIGKILL a publishing driver at random points, resume: exactly one video per episode, every byte intact."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakeyoutube import FakeYouTube, Hold
from tests.youtubekit import CHUNK, episode, sign_in

ROOT = Path(__file__).resolve().parent.parent  # the checkout: tests/ is imported from there
SIZES = {"ep01": 19 * CHUNK + 100, "ep02": 17 * CHUNK + 3}


class Drivers:
    """Forks publishing drivers from one process that has imported everything (tests/publish_driver.py)."""

    def __init__(self, config: Path) -> None:
        self.config = config  # the drivers' user config folder: where the sign-in is
        env = {**os.environ, "COMFY_DRIVE_CONFIG": str(config), "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.publish_driver"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
        assert self._ask(None) == "ready"
        self.args = ""

    def _ask(self, line: str | None) -> str:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        if line is not None:
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    def start(self) -> int:
        return int(self._ask(f"fork {self.args}"))

    def kill(self, pid: int) -> int:
        """SIGKILL a driver; its exit status (0 when it had already finished its work)."""
        os.kill(pid, signal.SIGKILL)
        return int(self._ask(f"wait {pid}"))

    def wait(self, pid: int) -> int:
        return int(self._ask(f"wait {pid}"))

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(10)


@pytest.fixture(scope="module")
def zygote(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Drivers]:
    drivers = Drivers(tmp_path_factory.mktemp("config"))
    yield drivers
    drivers.close()


@pytest.fixture
def setup(tmp_path: Path, zygote: Drivers, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[FakeYouTube, Drivers]]:
    monkeypatch.setenv("COMFY_DRIVE_CONFIG", str(zygote.config))
    server = FakeYouTube()
    server.start()
    sign_in(server)
    for ep_id, size in SIZES.items():
        episode(tmp_path / "eps" / ep_id, ep_id, size)
    zygote.args = f"{server.url} {tmp_path / 'publish.db'} {tmp_path / 'eps'} " + \
        " ".join(f"{k}:{v}" for k, v in SIZES.items())
    yield server, zygote
    server.stop()


def _check(yt: FakeYouTube, tmp_path: Path) -> None:
    for ep_id in SIZES:
        ep = episode(tmp_path / "eps" / ep_id, ep_id, write=False)
        videos = yt.videos_of(ep.marker)
        assert len(videos) == 1, f"{ep_id}: {len(videos)} videos"
        assert videos[0]["_sha256"] == ep.sha256 and videos[0]["_size"] == SIZES[ep_id]
        assert yt.playlist_of(videos[0]["id"]) == ["Kill test"]


def test_sigkill_at_random_points_then_resume(setup: tuple[FakeYouTube, Drivers], tmp_path: Path) -> None:
    yt, drivers = setup
    rng = random.Random(20261130)
    total = sum(SIZES.values())
    mid_chunk = 0
    for kill in range(20):
        ahead = yt.received + rng.randrange(1, 2 * CHUNK)
        hold = None
        if kill % 4 != 3 and ahead < total:  # mostly mid-chunk, at a random byte ahead of the server
            hold = yt.hold = Hold(at=ahead)
        pid = drivers.start()
        if hold is not None:
            mid_chunk += hold.reached.wait(10)
        else:  # anywhere: opening the session, between chunks, thumbnail, playlist
            time.sleep(rng.uniform(0, 0.02))
        status = drivers.kill(pid)
        # A held driver is always killed; one killed "anywhere" may have finished first on a fast machine.
        assert status == -signal.SIGKILL or (hold is None and status == 0), status
        yt.hold = None
        if hold is not None:
            hold.release.set()
    assert mid_chunk >= 12  # the kills landed in the middle of chunks
    assert drivers.wait(drivers.start()) == 0
    _check(yt, tmp_path)


def test_kill_after_the_upload_completes_before_the_id_is_saved(setup: tuple[FakeYouTube, Drivers],
                                                                tmp_path: Path) -> None:
    yt, drivers = setup
    for expire in (False, True):  # the session answers with the video; or it expired: the marker finds it
        hold = yt.hold = Hold(at=None)
        pid = drivers.start()
        assert hold.reached.wait(20)
        assert drivers.kill(pid) == -signal.SIGKILL
        hold.release.set()
        if expire:
            yt.expire_sessions()
    assert drivers.wait(drivers.start()) == 0
    _check(yt, tmp_path)
    assert len(yt.sessions) == 2  # one per episode: nothing was uploaded twice
