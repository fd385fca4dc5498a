"""`comfy-drive fetch` with the real huggingface_hub against a local fake Hub."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from comfy_driver.cli import main
from comfy_driver.errors import UserError
from comfy_driver.models.fetch import fetch
from comfy_driver.models.lock import ModelEntry, append_entry, read_lock
from comfy_driver.models.tree import ModelsTree
from comfy_driver.paths import MODELS_LOCK

from .fakehub import FakeHub

REPO = "acme/video-models"
UNPINNED = """\
# test lock
version: 1
models:
  - name: small.safetensors
    repo: acme/video-models
    path: split_files/vae/small.safetensors
    folder: vae
    revision: null
    size: null
    sha256: null
    backends: [demo]
  - name: big.safetensors
    repo: acme/video-models
    path: big.safetensors
    folder: diffusion_models
    backends: [demo, other]
"""


def payload(n: int, seed: int) -> bytes:
    block = hashlib.sha256(str(seed).encode()).digest() * 2048  # 64 KiB of a pattern per seed
    return (block * (n // len(block) + 1))[:n]


@pytest.fixture
def hub(monkeypatch: Any) -> Iterator[FakeHub]:
    fake = FakeHub()
    fake.add(REPO, "split_files/vae/small.safetensors", payload(300_000, 1))
    fake.add(REPO, "big.safetensors", payload(3_000_000, 2))
    url = fake.start()
    monkeypatch.setenv("HF_ENDPOINT", url)
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HOME", "/nonexistent-hf-home")  # no saved token from the machine
    yield fake
    fake.stop()


def lock_file(tmp_path: Path, text: str = UNPINNED) -> Path:
    path = tmp_path / "models.lock"
    path.write_text(text)
    return path


def run_fetch(lock: Path, models: Path, **kw: Any) -> Any:
    lockfile = read_lock(lock)
    kw.setdefault("allow_unpinned", True)  # as `fetch --pin`
    return fetch(lockfile, lockfile.lock.for_backends(kw.pop("backends", [])), ModelsTree(models), **kw)


def test_fresh_download_pins_and_verifies(hub: FakeHub, tmp_path: Path) -> None:
    lock = lock_file(tmp_path)
    report = run_fetch(lock, tmp_path / "models")
    assert [i.status for i in report.items] == ["downloaded", "downloaded"]
    small = tmp_path / "models" / "vae" / "small.safetensors"
    assert small.read_bytes() == hub.files[(REPO, "split_files/vae/small.safetensors")].data
    assert report.bytes_downloaded == 3_300_000
    pinned = read_lock(lock).lock.models
    assert pinned[0].revision == hub.commit and pinned[0].size == 300_000
    assert pinned[1].sha256 == hub.files[(REPO, "big.safetensors")].sha256
    assert "# test lock" in lock.read_text()  # comments kept
    assert not list((tmp_path / "models").glob("*/*.part"))


def test_rerun_downloads_nothing(hub: FakeHub, tmp_path: Path) -> None:
    lock = lock_file(tmp_path)
    run_fetch(lock, tmp_path / "models")
    sent = hub.bytes_sent
    again = run_fetch(lock, tmp_path / "models")
    assert [i.status for i in again.items] == ["present", "present"]
    assert again.bytes_downloaded == 0 and hub.bytes_sent == sent


def test_dry_run_sees_what_is_already_there(hub: FakeHub, tmp_path: Path) -> None:
    lock = lock_file(tmp_path)
    run_fetch(lock, tmp_path / "models")
    (tmp_path / "models" / "vae" / "small.safetensors").unlink()
    result = CliRunner().invoke(main, ["fetch", "--lock", str(lock), "--models-dir", str(tmp_path / "models"),
                                       "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "missing  vae/small.safetensors" in result.output
    assert "present  diffusion_models/big.safetensors" in result.output
    assert "1 of 2 file(s) to download: 293.0 KiB" in result.output


def test_only_the_backends_asked_for(hub: FakeHub, tmp_path: Path) -> None:
    report = run_fetch(lock_file(tmp_path), tmp_path / "models", backends=["other"])
    assert [i.entry.name for i in report.items] == ["big.safetensors"]
    with pytest.raises(UserError, match="no model in models.lock is used by backend 'nope'"):
        run_fetch(lock_file(tmp_path), tmp_path / "models", backends=["nope"])


def test_resume_after_the_process_is_killed(hub: FakeHub, tmp_path: Path) -> None:
    lock = lock_file(tmp_path)
    models = tmp_path / "models"
    hub.chunk_delay = 0.03
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "comfy_driver.cli", "fetch", "--pin", "--lock", str(lock),
                             "--models-dir", str(models), "--backend", "other"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    part_dir = models / ".comfy-drive" / "partial" / "diffusion_models"
    deadline = time.time() + 30
    while time.time() < deadline:
        parts = list(part_dir.glob("*.part")) if part_dir.is_dir() else []
        if parts and parts[0].stat().st_size > 1_000_000:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    output = proc.communicate()[0]
    assert parts, output
    kept = parts[0].stat().st_size
    assert 1_000_000 < kept < 3_000_000
    hub.chunk_delay = 0
    before = hub.bytes_sent
    report = run_fetch(lock, models, backends=["other"])
    assert report.items[0].status == "downloaded"
    assert hub.bytes_sent - before == 3_000_000 - kept
    assert hub.requests[-1][2] == f"bytes={kept}-"
    target = models / "diffusion_models" / "big.safetensors"
    assert hashlib.sha256(target.read_bytes()).hexdigest() == hub.files[(REPO, "big.safetensors")].sha256


def test_corrupted_bytes_are_quarantined(hub: FakeHub, tmp_path: Path) -> None:
    lock = lock_file(tmp_path)
    hub.files[(REPO, "big.safetensors")].served = payload(3_000_000, 99)
    report = run_fetch(lock, tmp_path / "models")
    big = report.items[1]
    assert big.status == "mismatch" and "does not match models.lock" in big.message
    assert not (tmp_path / "models" / "diffusion_models" / "big.safetensors").exists()
    assert len(list((tmp_path / "models" / ".comfy-drive" / "quarantine").iterdir())) == 1
    result = CliRunner().invoke(main, ["fetch", "--lock", str(lock), "--models-dir", str(tmp_path / "models")])
    assert result.exit_code == 1


@pytest.mark.parametrize("setup,expected", [
    (lambda hub: hub.gated.add(REPO), "gated"),
    (lambda hub: hub.private.update({REPO: "tok"}), "HF_TOKEN"),
    (lambda hub: hub.files.pop((REPO, "big.safetensors")), "no such file in the repo"),
])
def test_hub_refusals_are_clear(hub: FakeHub, tmp_path: Path, setup: Any, expected: str) -> None:
    setup(hub)
    result = CliRunner().invoke(main, ["fetch", "--pin", "--lock", str(lock_file(tmp_path)),
                                       "--models-dir", str(tmp_path / "models")])
    assert result.exit_code == 2, result.output
    assert expected in result.output and "Traceback" not in result.output
    assert f"{tmp_path / 'models.lock'}:" in result.output  # names the entry's line


def test_token_opens_a_private_repo(hub: FakeHub, tmp_path: Path, monkeypatch: Any) -> None:
    hub.private[REPO] = "s3cret"
    monkeypatch.setenv("HF_TOKEN", "s3cret")
    report = run_fetch(lock_file(tmp_path), tmp_path / "models")
    assert all(i.status == "downloaded" for i in report.items)


def test_wrong_pin_is_an_error(hub: FakeHub, tmp_path: Path) -> None:
    lock = lock_file(tmp_path, UNPINNED.replace("    size: null\n", "    size: 12\n", 1))
    with pytest.raises(UserError, match="models.lock says size 12, the Hub says 300000"):
        run_fetch(lock, tmp_path / "models")


def test_disk_space_is_checked_first(hub: FakeHub, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not enough disk space"):
        run_fetch(lock_file(tmp_path), tmp_path / "models", disk_free=lambda path: 1_000_000)
    assert hub.bytes_sent == 0


def test_pickles_are_refused_unless_allowed(hub: FakeHub, tmp_path: Path) -> None:
    hub.add(REPO, "old.ckpt", b"pickle")
    text = UNPINNED + "  - name: old.ckpt\n    repo: acme/video-models\n    path: old.ckpt\n    folder: checkpoints\n"
    result = CliRunner().invoke(main, ["fetch", "--pin", "--lock", str(lock_file(tmp_path, text)),
                                       "--models-dir", str(tmp_path / "models")])
    assert result.exit_code == 2 and "pickle-based file" in result.output and "allow_pickle" in result.output
    report = run_fetch(lock_file(tmp_path, text + "    allow_pickle: true\n"), tmp_path / "models")
    assert report.items[2].status == "downloaded"


def test_offline_reports_what_is_missing(hub: FakeHub, tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    report = run_fetch(lock_file(tmp_path), tmp_path / "models")
    assert [i.status for i in report.items] == ["missing", "missing"] and "offline" in report.items[0].message
    assert hub.requests == []


def test_extra_model_paths_count_as_present(hub: FakeHub, tmp_path: Path) -> None:
    lock = lock_file(tmp_path)
    run_fetch(lock, tmp_path / "elsewhere")
    extra = tmp_path / "extra_model_paths.yaml"
    extra.write_text(f"mine:\n  base_path: {tmp_path / 'elsewhere'}\n  vae: vae\n  diffusion_models: |\n"
                     "    diffusion_models\n")
    tree = ModelsTree.locate(tmp_path / "models", None, extra)
    lockfile = read_lock(lock)
    sent = hub.bytes_sent
    report = fetch(lockfile, lockfile.lock.models, tree)
    assert [i.status for i in report.items] == ["present", "present"] and hub.bytes_sent == sent


def test_dry_run_of_the_shipped_lock_needs_no_network() -> None:
    result = CliRunner().invoke(main, ["fetch", "--backend", "wan22_animate", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "diffusion_models/Wan2_2-Animate-14B_fp8_e4m3fn_scaled_KJ.safetensors" in result.output
    assert "loras/WanAnimate_relight_lora_fp16.safetensors" in result.output
    assert "6 of 6 file(s) to download" in result.output


def test_lock_add_and_from_workflow(hub: FakeHub, tmp_path: Path) -> None:
    lock = lock_file(tmp_path, "version: 1\nmodels: []\n")
    url = f"{hub_url(hub)}/{REPO}/resolve/main/split_files/vae/small.safetensors"
    result = CliRunner().invoke(main, ["lock", "add", url, "--lock", str(lock), "--backend", "demo"])
    assert result.exit_code == 0, result.output
    entry = read_lock(lock).lock.models[0]
    assert (entry.folder, entry.size, entry.revision) == ("vae", 300_000, hub.commit)
    workflow = {"nodes": [{"id": 1, "type": "UNETLoader", "properties": {"models": [
        {"name": "big.safetensors", "url": f"https://huggingface.co/{REPO}/resolve/main/big.safetensors",
         "directory": "diffusion_models"}]}}], "links": [], "version": 0.4}
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps(workflow))
    result = CliRunner().invoke(main, ["lock", "from-workflow", str(wf), "--lock", str(lock)])
    assert result.exit_code == 0, result.output
    models = read_lock(lock).lock.models
    assert [m.name for m in models] == ["small.safetensors", "big.safetensors"]
    assert models[1].sha256 == hub.files[(REPO, "big.safetensors")].sha256
    again = CliRunner().invoke(main, ["lock", "add", url, "--lock", str(lock), "--backend", "demo"])
    assert "same:" in again.output and len(read_lock(lock).lock.models) == 2


def hub_url(hub: FakeHub) -> str:
    return f"http://127.0.0.1:{hub.port}"


def test_doctor_against_the_simulator(sim_factory: Any, tmp_path: Path) -> None:
    from comfy_driver.comfy.catalog import Catalog
    from comfy_driver.models.catalog import bundled_catalog
    from comfy_driver.models.lock import load_lock

    nodes = dict(bundled_catalog(load_lock(MODELS_LOCK)).nodes)
    del nodes["ImageUpscaleWithModelBatched"]  # a server without the KJNodes pack
    sim = sim_factory(catalog=Catalog(nodes))
    lock = tmp_path / "models.lock"
    lock.write_text(MODELS_LOCK.read_text())
    append_entry(lock, ModelEntry(name="extra.safetensors", repo="acme/x", path="extra.safetensors", folder="loras",
                                  backends=["svd"]))
    result = CliRunner().invoke(main, ["doctor", "--server", sim.url, "--lock", str(lock)])
    assert "model checkpoints/svd_xt.safetensors: on the server" in result.output
    assert "model loras/extra.safetensors: NOT on the server" in result.output
    assert "node pack missing on the server: ComfyUI-KJNodes (ImageUpscaleWithModelBatched)" in result.output
    assert result.exit_code == 1


HOSTILE_NAMES = ["../../../victim.txt", "/tmp/victim.txt", "C:/victim.txt", "sub\\..\\..\\victim.txt",
                 "sub/../../victim.txt", "./x.safetensors", "a//b.safetensors", "", "x\x00.safetensors"]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_lock_names_cannot_leave_their_folder(tmp_path: Path, name: str) -> None:
    text = UNPINNED.replace("name: small.safetensors", f"name: {json.dumps(name)}")
    with pytest.raises(UserError, match=r"models.lock:4: models\[0\]\.name|models.lock:4"):
        read_lock(lock_file(tmp_path, text))


def test_sub_folder_names_are_kept(hub: FakeHub, tmp_path: Path) -> None:
    text = UNPINNED.replace("name: small.safetensors", "name: wan/small.safetensors")
    run_fetch(lock_file(tmp_path, text), tmp_path / "models", backends=["demo"])
    assert (tmp_path / "models" / "vae" / "wan" / "small.safetensors").is_file()


def test_a_name_is_checked_again_right_before_writing(hub: FakeHub, tmp_path: Path) -> None:
    lockfile = read_lock(lock_file(tmp_path))
    lockfile.lock.models[0] = lockfile.lock.models[0].model_copy(update={"name": "../../victim.txt"})
    with pytest.raises(UserError, match="refusing to write model file '../../victim.txt'"):
        fetch(lockfile, lockfile.lock.models[:1], ModelsTree(tmp_path / "models"))
    assert not (tmp_path / "victim.txt").exists()
    assert not list(tmp_path.rglob("victim.txt*"))


@pytest.mark.parametrize("name", ["../../../victim.txt", "/tmp/victim.txt", "..\\..\\victim.txt"])
def test_lock_from_a_hostile_workflow_writes_nothing(hub: FakeHub, tmp_path: Path, name: str) -> None:
    lock = lock_file(tmp_path, "version: 1\nmodels: []\n")
    before = lock.read_text()
    workflow = {"nodes": [{"id": 1, "type": "UNETLoader", "properties": {"models": [
        {"name": name, "url": f"https://huggingface.co/{REPO}/resolve/main/big.safetensors",
         "directory": "diffusion_models"}]}}], "links": [], "version": 0.4}
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps(workflow))
    result = CliRunner().invoke(main, ["lock", "from-workflow", str(wf), "--lock", str(lock)])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert "absolute path" in result.output or "plain relative path" in result.output or "uses '\\'" in result.output
    assert lock.read_text() == before


def test_unpinned_entries_are_refused_until_pinned(hub: FakeHub, tmp_path: Path) -> None:
    lock, models = lock_file(tmp_path), tmp_path / "models"
    refused = CliRunner().invoke(main, ["fetch", "--lock", str(lock), "--models-dir", str(models)])
    assert refused.exit_code == 2, refused.output
    assert "not pinned yet" in refused.output and "lock pin" in refused.output
    assert hub.bytes_sent == 0 and not list(models.rglob("*.safetensors"))
    shown = CliRunner().invoke(main, ["lock", "pin", "--lock", str(lock), "--backend", "other"])
    assert shown.exit_code == 0, shown.output
    big = hub.files[(REPO, "big.safetensors")]
    assert f"pinned   diffusion_models/big.safetensors  revision {hub.commit}  size 3000000  sha256 {big.sha256}" \
        in shown.output
    assert [m.sha256 is not None for m in read_lock(lock).lock.models] == [False, True]
    fetched = CliRunner().invoke(main, ["fetch", "--lock", str(lock), "--models-dir", str(models),
                                        "--backend", "other"])
    assert fetched.exit_code == 0, fetched.output
    assert (models / "diffusion_models" / "big.safetensors").read_bytes() == payload(3_000_000, 2)


def test_a_pinned_sha256_the_hub_no_longer_serves_stops_before_downloading(hub: FakeHub, tmp_path: Path) -> None:
    text = UNPINNED.replace("    sha256: null\n", f"    sha256: {'ab' * 32}\n", 1)
    with pytest.raises(UserError, match="models.lock says sha256 abab.*the Hub says"):
        run_fetch(lock_file(tmp_path, text), tmp_path / "models", backends=["demo"])
    assert hub.bytes_sent == 0
