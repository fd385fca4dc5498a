"""Every recorded trace, replayed over a real websocket, through the client's event handling.

A small aiohttp server plays a trace's messages in their recorded order (and with their recorded gaps,
shortened) and answers /history the way the real server did: the entry exists only from the moment
after `execution_success` at which the server stored it. The client must reach the recorded outcome
and must never read /history before the entry was there.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from aiohttp import web

from comfy_driver.comfy.client import ComfyClient
from comfy_driver.comfy.errors import ExecutionFailed, Interrupted
from comfy_driver.comfy.follow import Follower
from comfy_driver.comfy.settings import Settings
from comfy_driver.comfy.stream import EventStream

from .conftest import load_trace


def _graphs(trace: dict[str, Any]) -> dict[str, dict[str, Any]]:
    posts = trace.get("posts") or [trace["post_prompt"]]
    return {p["response"]["prompt_id"]: p["request"]["prompt"] for p in posts if p.get("status") == 200}


def _history_from_messages(pid: str, messages: list[dict[str, Any]]) -> dict[str, Any]:
    """For traces recorded without the entry: build it from the messages, as the server does."""
    outputs: dict[str, Any] = {}
    kept = []
    status = "success"
    for m in messages:
        t = m.get("text")
        if not t or t["data"].get("prompt_id") != pid:
            continue
        if t["type"] == "executed":
            outputs[t["data"]["node"]] = t["data"]["output"]
        if t["type"] in ("execution_start", "execution_cached", "execution_success", "execution_error",
                         "execution_interrupted"):
            kept.append([t["type"], t["data"]])
            if t["type"] in ("execution_error", "execution_interrupted"):
                status = "error"
    return {"prompt": [0, pid, {}, {}, []], "outputs": outputs,
            "status": {"status_str": status, "completed": status == "success", "messages": kept}, "meta": {}}


class ReplayServer:
    def __init__(self, trace: dict[str, Any]) -> None:
        self.messages = [m for m in trace["ws_messages"] if "text" in m]
        self.entries: dict[str, Any] = dict(trace.get("history_immediately_after_done") or {})
        for pid in _graphs(trace):
            if pid not in self.entries and any(m["text"]["data"].get("prompt_id") == pid for m in self.messages):
                self.entries[pid] = _history_from_messages(pid, self.messages)
        self.stored: set[str] = set()
        self.early_reads = 0
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self._ready = threading.Event()
        threading.Thread(target=self._main, daemon=True).start()
        self._ready.wait(10)

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        app = web.Application()
        app.add_routes([web.get("/ws", self.ws), web.get("/history/{pid}", self.history),
                        web.get("/queue", self.queue)])
        runner = self.runner = web.AppRunner(app)
        self.loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        self.loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._ready.set()
        self.loop.run_forever()

    async def ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        last_t = 0.0
        success_of: str | None = None
        for m in self.messages:
            await asyncio.sleep(min(m["t"] - last_t, 0.05))
            last_t = m["t"]
            t = m["text"]
            pid = t["data"].get("prompt_id")
            if success_of is not None and t["type"] != "execution_success":
                self.stored.add(success_of)  # the server stores the entry right after execution_success
                success_of = None
            if t["type"] == "execution_success":
                success_of = pid
            if t["type"] == "executing" and t["data"].get("node") is None:
                self.stored.add(pid)
            await ws.send_json(t)
        async for _ in ws:
            pass
        return ws

    async def history(self, request: web.Request) -> web.Response:
        pid = request.match_info["pid"]
        if pid not in self.stored:
            self.early_reads += 1
            return web.json_response({})
        return web.json_response({pid: self.entries[pid]} if pid in self.entries else {})

    async def queue(self, request: web.Request) -> web.Response:
        return web.json_response({"queue_running": [], "queue_pending": []})

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)


def replay(name: str) -> tuple[dict[str, Any], ReplayServer]:
    trace = load_trace(name)
    server = ReplayServer(trace)
    client = ComfyClient(f"http://127.0.0.1:{server.port}", settings=Settings(history_wait=2.0))
    results: dict[str, Any] = {}
    executed_pids = {m["text"]["data"].get("prompt_id") for m in server.messages
                     if m["text"]["type"] == "execution_start"}
    client_id = (trace.get("posts") or [trace["post_prompt"]])[0]["request"]["client_id"]
    with EventStream(client.address, client_id) as stream:
        follower = Follower(client, stream)
        for pid, graph in _graphs(trace).items():
            if pid in executed_pids:
                follower.watch(pid, graph)
        while follower.pending:
            watch = follower.next_finished(timeout=15)
            assert watch is not None, "the trace's prompts did not finish"
            results[watch.prompt_id] = follower.resolve(watch)
    server.stop()
    return results, server


def test_success_image() -> None:
    results, server = replay("trace_success_image.json")
    (watch,) = results.values()
    assert watch.error is None
    assert [f.filename for f in watch.result.files] == ["img_00001_.png"]
    assert watch.result.started_ms == 1795535759381 and watch.result.finished_ms == 1795535759390
    assert server.early_reads == 0


def test_success_video_three_savers() -> None:
    results, server = replay("trace_success_video.json")
    (watch,) = results.values()
    files = {f.filename: f for f in watch.result.files}
    assert set(files) == {"webp_00001_.webp", "vhs_00001.mp4", "core_00001_.mp4"}
    assert all(f.is_video for f in files.values())
    assert files["vhs_00001.mp4"].key == "gifs" and files["vhs_00001.mp4"].format == "video/h264-mp4"
    assert files["core_00001_.mp4"].animated
    assert server.early_reads == 0


def test_cached_rerun_takes_outputs_from_history() -> None:
    results, _ = replay("trace_cached_rerun.json")
    (watch,) = results.values()
    assert watch.result.cached_nodes == ["1", "2", "3"]
    assert [f.filename for f in watch.result.files] == ["img_00001_.png"]


def test_interrupt() -> None:
    results, _ = replay("trace_interrupt.json")
    (watch,) = results.values()
    assert isinstance(watch.error, Interrupted)
    assert "node 2 (ImageBlur)" in str(watch.error)


def test_runtime_error_is_recognised_as_out_of_memory() -> None:
    results, _ = replay("trace_runtime_error_oom.json")
    (watch,) = results.values()
    assert isinstance(watch.error, ExecutionFailed)
    assert watch.error.is_oom and watch.error.node_id == "1"
    assert 'node 1 (EmptyImage) ran out of memory' in str(watch.error)


def test_wan_loader_failure_is_not_oom() -> None:
    results, _ = replay("trace_wan_animate_placeholder_models.json")
    (watch,) = results.values()
    assert isinstance(watch.error, ExecutionFailed) and not watch.error.is_oom
    assert watch.error.node_type == "VAELoader" and "header too small" in str(watch.error)


def test_two_queued_prompts_both_finish_in_order() -> None:
    results, server = replay("trace_two_queued.json")
    assert len(results) == 2 and all(w.error is None for w in results.values())
    assert sorted(f.filename for w in results.values() for f in w.result.files) == ["img_00002_.png",
                                                                                    "img_00003_.png"]
    assert server.early_reads == 0


def test_queue_ops_interrupted_then_front_prompt_runs() -> None:
    results, _ = replay("trace_queue_ops.json")
    outcomes = {pid: type(w.error).__name__ if w.error else "ok" for pid, w in results.items()}
    assert outcomes == {"acc9a509-1659-4898-b7ca-58e40cc1cd66": "Interrupted",
                        "df504956-a917-44fc-afab-31422e1fd0a5": "ok"}


@pytest.mark.parametrize("name", ["trace_success_image.json", "trace_success_video.json",
                                  "trace_cached_rerun.json", "trace_interrupt.json", "trace_two_queued.json",
                                  "trace_queue_ops.json", "trace_runtime_error_oom.json"])
def test_every_message_parses_to_a_known_event(name: str) -> None:
    from comfy_driver.comfy.events import Unknown, parse_text

    import json

    for m in load_trace(name)["ws_messages"]:
        event = parse_text(json.dumps(m["text"]))
        assert not isinstance(event, Unknown), m["text"]["type"]
