"""What a render costs, measured while it runs: time per node, sampler steps, model loading, memory.

Node times come from the websocket: a node runs from its `executing` message to the next one (or
the end of the prompt); a sampler's seconds per step are the gaps between its `progress` messages;
model load time is the time of the loader nodes that were not cached. Memory is what the server's
/system_stats says, sampled while the render runs (peak VRAM and RAM in use); a server reports
what it knows, so those figures are the server's own.
"""

from __future__ import annotations

import statistics
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from comfy_driver.comfy.client import ComfyClient
from comfy_driver.comfy.errors import ServerUnreachable
from comfy_driver.comfy.events import Event, Executing, ExecutionStart, ExecutionSuccess, Progress
from comfy_driver.comfy.follow import Watch
from comfy_driver.comfy.settings import Settings


def is_loader(class_type: str) -> bool:
    """Nodes that load model weights: ComfyUI's loaders and the wrappers' model loaders."""
    return "Loader" in class_type or class_type.startswith(("Load", "DownloadAndLoad"))


@dataclass
class PromptTimes:
    """One prompt's node times and sampler step gaps, from its websocket messages."""

    nodes: dict[str, float] = field(default_factory=dict)  # node id -> seconds
    titles: dict[str, str] = field(default_factory=dict)  # node id -> title (class type if untitled)
    loaders: list[str] = field(default_factory=list)
    step_gaps: list[float] = field(default_factory=list)
    _node: str | None = None
    _since: float = 0.0
    _last_step: tuple[str, float] | None = None

    def _close(self, now: float) -> None:
        if self._node is not None:
            self.nodes[self._node] = self.nodes.get(self._node, 0.0) + now - self._since
            self._node = None

    def as_json(self) -> dict[str, Any]:
        return {"nodes": {self.titles.get(n, n): round(s, 4) for n, s in self.nodes.items()},
                "model_load_s": round(sum(self.nodes.get(n, 0.0) for n in self.loaders), 4),
                "s_per_step": round(statistics.median(self.step_gaps), 4) if self.step_gaps else None}


class Collector:
    """The `on_event` hook of a run: node and step timings per prompt id."""

    def __init__(self) -> None:
        self.prompts: dict[str, PromptTimes] = {}
        self._lock = threading.Lock()

    def __call__(self, client_id: str, watch: Watch | None, event: Event) -> None:
        pid = event.prompt_id
        if pid is None or watch is None:
            return
        now = time.monotonic()
        with self._lock:
            times = self.prompts.setdefault(pid, PromptTimes())
            if isinstance(event, ExecutionStart):
                times._close(now)
            elif isinstance(event, Executing):
                times._close(now)
                if event.node is not None:
                    node = watch.graph.get(event.node, {})
                    class_type = str(node.get("class_type", ""))
                    times.titles[event.node] = str((node.get("_meta") or {}).get("title") or class_type or event.node)
                    if is_loader(class_type) and event.node not in times.loaders:
                        times.loaders.append(event.node)
                    times._node, times._since = event.node, now
            elif isinstance(event, Progress) and event.node is not None:
                if times._last_step is not None and times._last_step[0] == event.node and event.value > 1:
                    times.step_gaps.append(now - times._last_step[1])
                times._last_step = (event.node, now)
            elif isinstance(event, ExecutionSuccess):
                times._close(now)

    def results(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {pid: t.as_json() for pid, t in self.prompts.items() if t.nodes}


class ResourceSampler:
    """Peak VRAM and RAM in use on the servers (the highest of any), from /system_stats every `every`
    seconds while open."""

    def __init__(self, servers: list[str], settings: Settings | None = None, every: float = 0.5) -> None:
        self.clients = [ComfyClient(s, settings=settings) for s in servers]
        self.every = every
        self.peak_vram: int | None = None
        self.peak_ram: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="system-stats", daemon=True)

    def sample(self) -> None:
        for client in self.clients:
            try:
                self._read(client.system_stats())
            except ServerUnreachable:
                continue

    def _read(self, stats: dict[str, Any]) -> None:
        system = stats.get("system", {})
        if "ram_total" in system and "ram_free" in system:
            self.peak_ram = max(self.peak_ram or 0, int(system["ram_total"]) - int(system["ram_free"]))
        used = [int(d["vram_total"]) - int(d["vram_free"]) for d in stats.get("devices", [])
                if "vram_total" in d and "vram_free" in d]
        if used:
            self.peak_vram = max(self.peak_vram or 0, max(used))

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.every)

    def __enter__(self) -> ResourceSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()
        for client in self.clients:
            client.close()
