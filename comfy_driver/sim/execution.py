"""The simulated server's worker: it runs queued prompts one at a time, node by node, as ComfyUI does.

`Execution` is mixed into `SimServer`, which owns the queue, history, sockets and caches; this part
takes a task from the queue, orders its nodes, sends the messages a real server sends (with the
timing of `Timing`), evaluates nodes abstractly and writes real output files (`render`).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from comfy_driver.comfy.catalog import Catalog
from comfy_driver.errors import DriveError
from comfy_driver.media.ffmpeg import probe
from comfy_driver.sim import render
from comfy_driver.sim.executor import (SAMPLERS, VISUAL, Counters, NodeFailure, Timing, Value, evaluate, execution_order,
                                       model_files, number, signatures, split_prefix)

# Sent to every socket even for a prompt posted without client_id (whose other messages go nowhere).
BROADCAST_WITHOUT_CLIENT = ("progress_state", "execution_interrupted")
# Output nodes that write PNGs; up to this many pixels in all they are written on the event loop.
STILL_SAVERS = ("SaveImage", "PreviewImage")
SMALL_STILL_PIXELS = 128 * 128
OOM_MESSAGE = ("CUDA out of memory. Tried to allocate 2.50 GiB. GPU 0 has a total capacity of 15.69 GiB "
               "of which 1.12 GiB is free.")


@dataclass
class Faults:
    """Failures to inject. Counters decrement as faults fire; None means 'every time'."""

    drop_ws_after: int | None = None  # close a client's socket after it was sent this many messages
    drop_ws_times: int | None = 1
    error_at: dict[str, str] = field(default_factory=dict)  # class_type -> "oom" | "error"
    error_times: int | None = None
    crash_at: str | None = None  # class_type: the server crashes when such a node starts
    crash_down_for: float = 1.0
    crash_times: int | None = 1
    slow_view: float = 0.0  # seconds before each /view answer
    fail_view: int = 0  # this many /view requests answer 500


@dataclass
class _Task:
    number: float
    prompt_id: str
    prompt: dict[str, Any]
    extra_data: dict[str, Any]
    outputs: list[str]
    graph: str  # the prompt's key in the submission and finished logs (`_graph_key`), computed once

    def as_list(self) -> list[Any]:
        return [self.number, self.prompt_id, self.prompt, self.extra_data, self.outputs]


class _Interrupted(Exception):
    pass


class Execution:
    """The worker half of `SimServer` (which sets every attribute declared here)."""

    root: Path
    timing: Timing
    faults: Faults
    pending: list[_Task]
    running: _Task | None
    history: dict[str, dict[str, Any]]
    socket_flags: dict[str, dict[str, Any]]
    cache: dict[str, tuple[tuple[Value, ...], dict[str, Any] | None]]
    loaded_models: set[str]
    interrupt_flag: bool
    counters: Counters
    last_end: float | None
    idle_gaps: list[float]
    model_loads: int
    finished_log: list[dict[str, Any]]
    executions: list[str]
    upload_inputs: dict[str, tuple[str, ...]]
    _wake: asyncio.Event | None
    _current_node: str | None

    if TYPE_CHECKING:
        def catalog(self) -> Catalog: ...

        async def _send(self, kind: str, data: dict[str, Any], sid: str | None) -> None: ...

        async def _send_bytes(self, frame: bytes, sid: str | None) -> None: ...

        async def _status(self) -> None: ...

        async def _crash(self, down_for: float) -> None: ...

    async def _work(self) -> None:
        assert self._wake is not None
        while True:
            if not self.pending:
                self._wake.clear()
                await self._wake.wait()
                continue
            task = self.pending.pop(0)
            self.running = task
            if self.last_end is not None:
                self.idle_gaps.append(time.perf_counter() - self.last_end)
            await self._status()
            try:
                await self._execute(task)
            finally:
                self.running = None
                self._current_node = None
                self.last_end = time.perf_counter()

    async def _execute(self, task: _Task) -> None:
        pid, prompt, sid = task.prompt_id, task.prompt, task.extra_data.get("client_id")
        self.executions.append(pid)
        self.interrupt_flag = False
        messages: list[list[Any]] = []

        async def emit(kind: str, data: dict[str, Any], *, keep: bool = False) -> None:
            if keep:
                messages.append([kind, data])
            if sid is not None:
                await self._send(kind, data, sid)
            elif kind in BROADCAST_WITHOUT_CLIENT:
                await self._send(kind, data, None)

        await emit("execution_start", {"prompt_id": pid, "timestamp": _ms()}, keep=True)
        catalog = self.catalog()
        sigs = signatures(prompt)
        order = execution_order(prompt, task.outputs, catalog)
        cached = [n for n in order if sigs[n] in self.cache]
        await emit("execution_cached", {"nodes": cached, "prompt_id": pid, "timestamp": _ms()}, keep=True)
        values: dict[str, tuple[Value, ...]] = {}
        outputs: dict[str, Any] = {}
        states: dict[str, dict[str, Any]] = {}
        new_cache: dict[str, tuple[tuple[Value, ...], dict[str, Any] | None]] = {}
        models: set[str] = set()

        async def state(node: str, value: float, maximum: float, st: str) -> None:
            states[node] = {"value": value, "max": maximum, "state": st, "node_id": node, "prompt_id": pid,
                            "display_node_id": node, "parent_node_id": None, "real_node_id": node}
            await emit("progress_state", {"prompt_id": pid, "nodes": dict(states)})

        executed: list[str] = []
        current = ""

        async def record(node_id: str, vals: tuple[Value, ...], ui: dict[str, Any] | None) -> None:
            values[node_id] = vals
            new_cache[sigs[node_id]] = (vals, ui)
            if ui is not None:
                outputs[node_id] = ui
                await emit("executed", {"node": node_id, "display_node": node_id, "output": ui, "prompt_id": pid})

        try:
            for node_id in order:
                node = prompt[node_id]
                models.update(model_files(node.get("inputs", {})))
                if node_id in cached:
                    vals, ui = self.cache[sigs[node_id]]
                    await record(node_id, vals, ui)
                    if ui is not None:
                        await state(node_id, 1.0, 1.0, "finished")
                    continue
                current = node_id
                self._current_node = node_id
                await state(node_id, 0.0, 1.0, "running")
                await emit("executing", {"node": node_id, "display_node": node_id, "prompt_id": pid})
                if self.interrupt_flag:
                    raise _Interrupted
                vals, ui = await self._run_node(task, node_id, values, emit, state)
                await record(node_id, vals, ui)
                executed.append(node_id)
                await state(node_id, 1.0, 1.0, "finished")
        except _Interrupted:
            data = {"prompt_id": pid, "node_id": current, "node_type": prompt[current]["class_type"],
                    "executed": executed, "timestamp": _ms()}
            await emit("execution_interrupted", data, keep=True)
            await self._finish(task, outputs, messages, "error", completed=False)
            return
        except NodeFailure as exc:
            node = prompt[current]
            data = {"prompt_id": pid, "node_id": current, "node_type": node["class_type"], "executed": executed,
                    "exception_message": exc.message, "exception_type": exc.exception_type,
                    "traceback": ["  File \"execution.py\", line 1, in execute\n"],
                    "current_inputs": {}, "current_outputs": {}, "timestamp": _ms()}
            await emit("execution_error", data, keep=True)
            await self._finish(task, outputs, messages, "error", completed=False)
            return
        self.cache = new_cache
        self.loaded_models = models
        await emit("execution_success", {"prompt_id": pid, "timestamp": _ms()}, keep=True)
        if self.timing.history_delay:
            await asyncio.sleep(self.timing.history_delay)
        if self.timing.queue_gap:  # widens the window a reader of /history, then /queue, misses it in
            self.running = None
            await asyncio.sleep(self.timing.queue_gap)
        await self._finish(task, outputs, messages, "success", completed=True)

    async def _finish(self, task: _Task, outputs: dict[str, Any], messages: list[list[Any]], status: str,
                      *, completed: bool) -> None:
        self.finished_log.append({"prompt_id": task.prompt_id, "graph": task.graph, "status": status,
                                  "t": time.time()})
        self.history[task.prompt_id] = {
            "prompt": task.as_list(), "outputs": outputs,
            "status": {"status_str": status, "completed": completed, "messages": messages},
            "meta": {n: {"node_id": n, "display_node": n, "parent_node": None, "real_node_id": n} for n in outputs}}
        self.running = None
        await self._status()
        if task.extra_data.get("client_id") is not None:  # a prompt without one gets no finishing message
            await self._send("executing", {"node": None, "prompt_id": task.prompt_id}, task.extra_data["client_id"])

    async def _run_node(self, task: _Task, node_id: str, values: dict[str, tuple[Value, ...]], emit: Any,
                        state: Any) -> tuple[tuple[Value, ...], dict[str, Any] | None]:
        node = task.prompt[node_id]
        class_type = node["class_type"]
        inputs = node.get("inputs", {})
        f = self.faults
        if f.crash_at == class_type and f.crash_times != 0:
            if f.crash_times is not None:
                f.crash_times -= 1
            asyncio.get_running_loop().create_task(self._crash(f.crash_down_for))
            await asyncio.sleep(3600)  # cancelled by the crash
        if class_type in f.error_at and f.error_times != 0:
            if f.error_times is not None:
                f.error_times -= 1
            if f.error_at[class_type] == "oom":
                raise NodeFailure("torch.OutOfMemoryError", OOM_MESSAGE)
            raise NodeFailure("RuntimeError", f"simulated failure in {class_type}")
        t = self.timing
        seconds = t.per_class.get(class_type, t.node)
        fresh = [m for m in model_files(inputs) if m not in self.loaded_models]
        self.model_loads += len(fresh)
        seconds += t.model_load * len(fresh)
        # Durations are slept to deadlines from the node's start, so on a busy machine the late wake-ups
        # of a sampler's steps do not add up: a node takes its simulated time, late by one wake-up at most.
        clock = asyncio.get_running_loop().time() + seconds
        if seconds:
            await _until(clock)
        if class_type in SAMPLERS:
            steps = int(inputs.get("steps", 1)) if isinstance(inputs.get("steps"), (int, float)) else 1
            start = int(inputs.get("start_at_step", 0) or 0) if class_type == "KSamplerAdvanced" else 0
            end = min(int(inputs.get("end_at_step", steps) or steps), steps) if class_type == "KSamplerAdvanced" \
                else steps
            total = max(1, end - start)
            for k in range(1, total + 1):
                if self.interrupt_flag:
                    raise _Interrupted
                if t.step:
                    clock += t.step
                    await _until(clock)
                await state(node_id, float(k), float(total), "running")
                # A latent preview per step: after `progress` in the legacy format (type 1), before it
                # as type 4 with its JSON header to a client that negotiated preview metadata.
                sid = task.extra_data.get("client_id")
                rich = bool(self.socket_flags.get(sid or "", {}).get("supports_preview_metadata"))
                if rich:
                    await self._send_bytes(render.preview_frame(task.prompt_id, node_id, with_metadata=True), sid)
                await emit("progress", {"value": k, "max": total, "prompt_id": task.prompt_id, "node": node_id})
                if not rich:
                    await self._send_bytes(render.preview_frame(task.prompt_id, node_id, with_metadata=False), sid)
        resolved: dict[str, Any] = {}
        for name, value in inputs.items():
            if isinstance(value, list) and len(value) == 2 and str(value[0]) in values:
                outs = values[str(value[0])]
                resolved[name] = outs[value[1]] if value[1] < len(outs) else None
            else:
                resolved[name] = value
        media = None
        upload = next((n for n in self._upload_inputs(class_type) if isinstance(inputs.get(n), str)), None)
        if upload is not None:
            media = await asyncio.get_running_loop().run_in_executor(None, self._media, inputs[upload])
        vals = evaluate(class_type, resolved, self.catalog(), media)
        ui = None
        if self.catalog().is_output_node(class_type):
            if _small_still(class_type, resolved):  # written here: a thread hop would cost more than the write
                ui = self._write_outputs(task, class_type, resolved)
            else:
                ui = await asyncio.get_running_loop().run_in_executor(
                    None, self._write_outputs, task, class_type, resolved)
        return vals, ui

    def _upload_inputs(self, class_type: str) -> tuple[str, ...]:
        """The inputs of a node class that name a file in input/, in input order (asked once per class)."""
        names = self.upload_inputs.get(class_type)
        if names is None:
            catalog = self.catalog()
            names = self.upload_inputs[class_type] = tuple(
                n for n, _ in catalog.input_order(class_type) if catalog.upload_kind(class_type, n))
        return names

    def _media(self, name: str) -> Value | None:
        """What an input file holds: an image's size, a video's frames, size and fps."""
        from PIL import Image, UnidentifiedImageError

        path = self.root / "input" / name
        try:
            with Image.open(path) as img:
                return Value("IMAGE", frames=1, width=img.size[0], height=img.size[1])
        except (UnidentifiedImageError, OSError):
            pass
        try:
            info = probe(path)
        except DriveError:
            return None
        return Value("VIDEO", frames=info.frames, width=info.width, height=info.height, fps=info.fps,
                     caption=str(info.metadata.get("comment", "")))  # a clip this simulator made: its scene

    def _write_outputs(self, task: _Task, class_type: str, inputs: dict[str, Any]) -> dict[str, Any] | None:
        """Real files for an output node; returns its ui output as ComfyUI reports it."""
        source = _source(inputs)
        prefix = str(inputs.get("filename_prefix", "ComfyUI"))
        sub, stem = split_prefix(prefix)
        kind = "temp" if class_type.startswith("Preview") else "output"
        folder = self.root / kind / sub
        folder.mkdir(parents=True, exist_ok=True)
        extra = task.extra_data.get("extra_pnginfo") or {}
        meta = {"prompt": task.prompt, **extra}
        caption, w, h = source.caption, source.width, source.height
        fps = float(number(inputs.get("fps", inputs.get("frame_rate"))) or source.fps or 8)
        if class_type in STILL_SAVERS:
            images = []
            for i in range(source.frames):
                name = self.counters.next_name(folder, stem, ".png")
                render.write_png(folder / name, w, h, caption, index=i, count=source.frames, text=meta)
                images.append({"filename": name, "subfolder": sub, "type": kind})
            return {"images": images}
        if class_type == "SaveVideo":
            name = self.counters.next_name(folder, stem, ".mp4")
            render.write_mp4(folder / name, source.frames, w, h, fps, caption, metadata=meta)
            return {"images": [{"filename": name, "subfolder": sub, "type": kind}], "animated": [True]}
        if class_type == "SaveAnimatedWEBP":
            name = self.counters.next_name(folder, stem, ".webp")
            render.write_webp(folder / name, source.frames, w, h, fps, caption, text=meta)
            return {"images": [{"filename": name, "subfolder": sub, "type": kind}], "animated": [True]}
        if class_type == "VHS_VideoCombine":
            if not inputs.get("save_output", True):
                kind, folder = "temp", self.root / "temp" / sub
                folder.mkdir(parents=True, exist_ok=True)
            name = self.counters.next_name(folder, stem, ".mp4", trailing_underscore=False)
            render.write_mp4(folder / name, source.frames, w, h, fps, caption,
                             metadata={"comment": {"prompt": task.prompt, **extra}})
            png = name[:-4] + ".png"
            render.write_png(folder / png, w, h, caption, text=meta)
            return {"gifs": [{"filename": name, "subfolder": sub, "type": kind, "format": "video/h264-mp4",
                              "frame_rate": fps, "workflow": png, "fullpath": str(folder / name)}]}
        return {}


def _source(inputs: dict[str, Any]) -> Value:
    """What an output node saves: its first visual input (a 512x512 image when it has none)."""
    return next((v for v in inputs.values() if isinstance(v, Value) and v.type in VISUAL), None) or Value("IMAGE")


def _small_still(class_type: str, inputs: dict[str, Any]) -> bool:
    source = _source(inputs)
    return class_type in STILL_SAVERS and source.frames * source.width * source.height <= SMALL_STILL_PIXELS


async def _until(deadline: float) -> None:
    delay = deadline - asyncio.get_running_loop().time()
    if delay > 0:
        await _sleep(delay)


_sleep = asyncio.sleep  # the one way simulated time passes


def _ms() -> int:
    return int(time.time() * 1000)


def _graph_key(prompt: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(prompt, sort_keys=True).encode()).hexdigest()[:16]
