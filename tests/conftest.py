"""Shared fixtures: the recorded ComfyUI facts in ../shared, and a simulated server on a real socket."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from comfy_driver.comfy.client import ComfyClient
from comfy_driver.models.catalog import bundled_catalog
from comfy_driver.models.lock import load_lock
from comfy_driver.paths import MODELS_LOCK
from comfy_driver.sim.executor import Timing
from comfy_driver.sim.server import Faults, SimServer

ROOT = Path(__file__).resolve().parent.parent  # the checkout
SHARED = ROOT.parent / "shared"


def shared_path(*parts: str) -> Path:
    """A file under ../shared; the test skips (naming the folder) where the folder is absent."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"needs {path.parent} (the shared fixtures beside the project)")
    return path


def load_trace(name: str) -> Any:
    return json.loads(shared_path("fixtures", "comfyui", name).read_text(encoding="utf-8"))


@pytest.fixture(autouse=True)
def own_config_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets an empty user config folder: the developer's own settings never leak in."""
    folder = tmp_path / "user-config"
    monkeypatch.setenv("COMFY_DRIVE_CONFIG", str(folder))
    return folder


@pytest.fixture
def sim_factory(tmp_path: Path) -> Iterator[Any]:
    servers: list[SimServer] = []

    def make(timing: Timing | None = None, faults: Faults | None = None, catalog: Any = None,
             **kw: Any) -> SimServer:
        server = SimServer(tmp_path / f"sim{len(servers)}", catalog or bundled_catalog(load_lock(MODELS_LOCK)),
                           timing=timing or Timing(), faults=faults, **kw)
        server.start()
        servers.append(server)
        return server

    yield make
    for s in servers:
        s.stop()


@pytest.fixture
def sim(sim_factory: Any) -> SimServer:
    return sim_factory()


@pytest.fixture
def client(sim: SimServer) -> Iterator[ComfyClient]:
    c = ComfyClient(sim.url)
    yield c
    c.close()


IMAGE_GRAPH = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 48, "batch_size": 1, "color": 16711680},
          "_meta": {"title": "Blank"}},
    "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
    "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "trace/img"}},
}


@pytest.fixture
def behind_proxy(sim_factory: Any) -> Iterator[Any]:
    """make(timing) -> (sim, proxy): a simulator playing ComfyUI 0.33.0 and the real comfy-api-proxy in
    front of it (a process), stopped after the test."""
    from .v2proxy import ProxyProcess

    proxies: list[Any] = []

    def make(timing: Timing | None = None, catalog: Any = None) -> tuple[SimServer, Any]:
        sim = sim_factory(timing=timing, catalog=catalog or bundled_catalog(load_lock(MODELS_LOCK), "0.33.0"))
        proxies.append(ProxyProcess(sim.url))
        return sim, proxies[-1]

    yield make
    for proxy in proxies:
        proxy.stop()
