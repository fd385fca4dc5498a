"""The v2 transport against a Comfy Cloud double: keys, limits, credits, signed downloads, expiry."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from comfy_driver.comfy.client import ComfyClient
from comfy_driver.comfy.errors import AccessRefused
from comfy_driver.comfy.target import Target
from comfy_driver.comfy.v2 import JobExpired, V2Client
from comfy_driver.comfy.v2http import Busy, InsufficientCredits

from .conftest import IMAGE_GRAPH
from .fakecloud import KEY, FakeCloud

CLIP = os.urandom(200_000)


@pytest.fixture
def cloud(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeCloud]:
    fake = FakeCloud(data=CLIP)
    fake.start()
    monkeypatch.setenv("COMFY_API_KEY", KEY)
    yield fake
    fake.stop()


def fast(url: str, **kw: Any) -> V2Client:
    return V2Client(url if isinstance(url, Target) else f"v2+{url}", poll=0.02, poll_max=0.05, **kw)


def test_the_key_is_required_and_never_leaves_its_origin(cloud: FakeCloud, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    with fast(cloud.url) as client:
        files = client.submit(IMAGE_GRAPH).download(tmp_path)
    assert files[0].path == tmp_path / "clip.mp4" and files[0].path.read_bytes() == CLIP
    storage = [s for s in cloud.seen if s[0] == "storage"]
    assert storage and all(auth is None for _, _, auth, _ in storage)  # the signed URL got no key
    assert all(auth == f"Bearer {KEY}" for site, _, auth, _ in cloud.seen if site == "cloud")
    monkeypatch.delenv("COMFY_API_KEY")
    with pytest.raises(AccessRefused) as err, fast(cloud.url) as client:
        client.submit(IMAGE_GRAPH)
    assert "COMFY_API_KEY" in str(err.value) and KEY not in str(err.value)


def test_a_cut_download_resumes_with_a_range(cloud: FakeCloud, tmp_path: Path) -> None:
    (tmp_path / ".clip.mp4.v2part").write_bytes(CLIP[:70_000])  # what a killed driver left
    with fast(cloud.url) as client:
        job = client.submit(IMAGE_GRAPH)
        got = job.download(tmp_path)
    assert got[0].path.read_bytes() == CLIP and got[0].size == len(CLIP)
    assert ("storage", f"/signed/out-{job.id}", None, "bytes=70000-") in cloud.seen
    assert not (tmp_path / ".clip.mp4.v2part").exists()


@pytest.mark.parametrize("reported", ["../../escape.mp4", "/etc/escape.mp4", "sub\\..\\..\\escape.mp4"])
def test_an_output_name_cannot_leave_the_output_folder(cloud: FakeCloud, tmp_path: Path, reported: str) -> None:
    cloud.output_name = reported
    out = tmp_path / "a" / "b"
    with fast(cloud.url) as client:
        got = client.submit(IMAGE_GRAPH).download(out)
    assert got[0].path == out / "escape.mp4" and got[0].path.read_bytes() == CLIP
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["escape.mp4"]


def test_429_retry_after_is_waited_out_then_given_up(cloud: FakeCloud) -> None:
    cloud.busy = 1
    with fast(cloud.url) as client:
        begun = time.monotonic()
        client.submit(IMAGE_GRAPH).result(timeout=10)
        assert time.monotonic() - begun >= 1.0  # Retry-After: 1
    cloud.busy = 5
    with pytest.raises(Busy) as err, fast(cloud.url, busy_budget=0.5) as client:
        client.submit(IMAGE_GRAPH)
    assert err.value.code == "queue_full" and len(cloud.jobs) == 1


def test_402_is_a_clear_error_of_its_own(cloud: FakeCloud) -> None:
    cloud.credits = 0
    with pytest.raises(InsufficientCredits) as err, fast(cloud.url) as client:
        client.submit(IMAGE_GRAPH)
    assert "insufficient credits" in str(err.value) and "top up" in (err.value.hint or "")


def test_an_expired_job_without_outputs_anywhere_is_given_up(cloud: FakeCloud) -> None:
    cloud.expire = True
    with fast(cloud.url, expired_grace=0.2) as client:
        job = client.submit(IMAGE_GRAPH)
        with pytest.raises(JobExpired):
            job.result(timeout=10)
    assert job.statuses[-1] == "expired"


def test_an_expired_job_is_found_in_the_native_history_of_a_self_hosted_target(cloud: FakeCloud, sim: Any,
                                                                                 tmp_path: Path) -> None:
    prompt_id = str(uuid.uuid4())
    native = ComfyClient(sim.url)
    native.queue_prompt(IMAGE_GRAPH, client_id="c", prompt_id=prompt_id)
    deadline = time.time() + 10
    while prompt_id not in native.history(prompt_id) and time.time() < deadline:
        time.sleep(0.02)
    cloud.expire, cloud.next_id = True, prompt_id
    target = Target(url=cloud.url, api="v2", native=sim.url)
    with fast(target, expired_grace=0.1) as client:  # type: ignore[arg-type]
        files = client.submit(IMAGE_GRAPH).download(tmp_path)
    assert [f.path.name for f in files] == ["img_00001_.png"] and files[0].size > 0


DRIVER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from comfy_driver.comfy.v2 import V2Client
    client = V2Client("v2+" + sys.argv[1], poll=0.02)
    record = lambda key: Path(sys.argv[2]).write_text(key)
    client.submit({"1": {"class_type": "EmptyImage", "inputs": {}}}, on_key=record).download(sys.argv[3])
""")


def test_a_driver_killed_mid_download_resumes_the_same_job(cloud: FakeCloud, tmp_path: Path) -> None:
    cloud.slow = True
    keyfile, out = tmp_path / "key", tmp_path / "out"
    driver = subprocess.Popen([sys.executable, "-c", DRIVER, cloud.url, str(keyfile), str(out)],
                              env={**os.environ, "COMFY_API_KEY": KEY})
    partial = out / ".clip.mp4.v2part"
    try:
        deadline = time.time() + 60
        while not (partial.exists() and partial.stat().st_size >= 30_000) and time.time() < deadline:
            assert driver.poll() is None, "the driver ended before it was killed"
            time.sleep(0.02)
        os.kill(driver.pid, signal.SIGKILL)
    finally:
        driver.wait(10)
    had = partial.stat().st_size
    assert 0 < had < len(CLIP) and not (out / "clip.mp4").exists()
    cloud.slow = False
    with fast(cloud.url) as client:
        job = client.find(keyfile.read_text())  # the recorded key finds the job: nothing is submitted again
        assert job is not None
        got = job.download(out)
    assert got[0].path.read_bytes() == CLIP and len(cloud.jobs) == 1
    assert any(site == "storage" and rng == f"bytes={had}-" for site, _, _, rng in cloud.seen)
