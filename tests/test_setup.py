"""`comfy-drive setup` against local git repositories, the fake Hub, and a ComfyUI folder whose main.py
starts the simulator (the short start that checks the nodes is a real process on a real port)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from comfy_driver.cli import main

from .fakehub import FakeHub
from .test_fetch import REPO, hub, payload  # noqa: F401  (the fake Hub fixture)

GIT = ["git", "-c", "user.name=test", "-c", "user.email=test@example.invalid", "-c", "init.defaultBranch=main"]

MAIN_PY = """\
import sys
from comfy_driver.cli import main
port = sys.argv[sys.argv.index("--port") + 1]
main(["sim", "--port", port, "--speed", "instant", "--root", "sim-root"])
"""


def git_repo(path: Path, files: dict[str, str]) -> str:
    path.mkdir(parents=True)
    subprocess.run([*GIT, "init", "-q", str(path)], check=True)
    for name, text in files.items():
        (path / name).write_text(text)
    subprocess.run([*GIT, "-C", str(path), "add", "."], check=True)
    subprocess.run([*GIT, "-C", str(path), "commit", "-q", "-m", "one"], check=True)
    return subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], check=True, capture_output=True,
                          text=True).stdout.strip()


@pytest.fixture
def world(hub: FakeHub, tmp_path: Path) -> dict[str, Any]:  # noqa: F811
    kj = git_repo(tmp_path / "repos" / "kj", {"__init__.py": "", "requirements.txt": "# nothing to install\n"})
    aux = git_repo(tmp_path / "repos" / "aux", {"__init__.py": ""})
    hub.add(REPO, "upscale_models/x4.safetensors", payload(200_000, 7))
    sha = hub.files[(REPO, "upscale_models/x4.safetensors")].sha256
    lock = tmp_path / "models.lock"
    lock.write_text(f"""\
version: 1
models:
  - name: x4.safetensors
    repo: {REPO}
    path: upscale_models/x4.safetensors
    folder: upscale_models
    size: 200000
    sha256: {sha}
    backends: [upscale]
packs:
  - name: ComfyUI-KJNodes
    url: file://{tmp_path / "repos" / "kj"}
    commit: {kj}
    nodes: [ImageUpscaleWithModelBatched]
  - name: comfyui_controlnet_aux
    url: file://{tmp_path / "repos" / "aux"}
    commit: {aux}
    nodes: [DWPreprocessor]
""")
    comfy = tmp_path / "ComfyUI"
    (comfy / "custom_nodes").mkdir(parents=True)
    (comfy / "main.py").write_text(MAIN_PY)
    return {"lock": lock, "comfy": comfy, "kj": kj}


def setup(world: dict[str, Any], *extra: str) -> Any:
    return CliRunner().invoke(main, ["setup", "--comfyui", str(world["comfy"]), "--backend", "svd+upscale",
                                     "--lock", str(world["lock"]), "--python", sys.executable, *extra])


def test_dry_run_lists_every_step_and_does_nothing(world: dict[str, Any]) -> None:
    result = setup(world, "--dry-run")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert [line.split()[0] for line in lines] == ["clone", "requirements", "models", "check"]
    assert "ComfyUI-KJNodes" in lines[0] and world["kj"][:12] in lines[0]
    assert "fetch 1 of 1 model files" in lines[2]
    assert "comfyui_controlnet_aux" not in result.output  # svd+upscale uses no node of it
    assert list((world["comfy"] / "custom_nodes").iterdir()) == []


def test_installs_then_is_idempotent(world: dict[str, Any], hub: FakeHub) -> None:  # noqa: F811
    first = setup(world)
    assert first.exit_code == 0, first.output
    pack = world["comfy"] / "custom_nodes" / "ComfyUI-KJNodes"
    head = subprocess.run(["git", "-C", str(pack), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    assert head.strip() == world["kj"]
    assert (world["comfy"] / "user" / "comfy-drive" / "requirements" / "ComfyUI-KJNodes.txt").is_file()
    assert subprocess.run(["git", "-C", str(pack), "status", "--porcelain"], capture_output=True,
                          text=True).stdout == ""  # the checkout is left as cloned
    assert (world["comfy"] / "models" / "upscale_models" / "x4.safetensors").read_bytes() == payload(200_000, 7)
    assert "setup done: 3 change(s)" in first.output
    sent = hub.bytes_sent
    again = setup(world)
    assert again.exit_code == 0, again.output
    assert "setup done: 0 change(s)" in again.output
    assert "present at" in again.output and "requirements already installed" in again.output
    assert hub.bytes_sent == sent


def test_a_pack_at_another_commit_is_refused(world: dict[str, Any]) -> None:
    pack = world["comfy"] / "custom_nodes" / "ComfyUI-KJNodes"
    git_repo(pack, {"__init__.py": "# someone else's version\n"})
    result = setup(world)
    assert result.exit_code == 2, result.output
    assert f"models.lock pins ComfyUI-KJNodes at {world['kj'][:12]}" in result.output
    assert (pack / "__init__.py").read_text() == "# someone else's version\n"


def test_a_server_without_the_nodes_fails_the_check(world: dict[str, Any], tmp_path: Path) -> None:
    world["lock"].write_text(world["lock"].read_text().replace("nodes: [ImageUpscaleWithModelBatched]",
                                                               "nodes: [ImageUpscaleWithModelBatched, NoSuchNode]"))
    result = setup(world)
    assert result.exit_code == 1, result.output
    assert "does not list NoSuchNode" in result.output
