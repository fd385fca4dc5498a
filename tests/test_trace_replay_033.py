"""Every ComfyUI 0.33.0 trace: its messages replayed through the client over a real websocket (as the
0.3.64 traces are in test_trace_replay), and the same requests put to the simulator playing 0.33.0,
whose answers must match the recorded ones."""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests
from aiohttp import web

from comfy_driver.comfy.catalog import Catalog
from comfy_driver.comfy.client import ComfyClient
from comfy_driver.comfy.errors import ExecutionFailed, Interrupted
from comfy_driver.comfy.follow import Follower
from comfy_driver.comfy.settings import Settings
from comfy_driver.comfy.stream import EventStream
from comfy_driver.comfy.versions import Version
from comfy_driver.sim.server import Faults

from .conftest import SHARED, shared_path
from .test_trace_replay import ReplayServer

FOLDER = SHARED / "fixtures" / "comfyui" / "v0.33.0"
TRACES = sorted(p.name for p in FOLDER.glob("trace_*.json")
                if "ws_messages" in json.loads(p.read_text()))  if FOLDER.is_dir() else []


def _load(name: str) -> dict[str, Any]:
    return json.loads(shared_path("fixtures", "comfyui", "v0.33.0", name).read_text())


def _posts(trace: dict[str, Any]) -> list[dict[str, Any]]:
    """Accepted POST /prompt requests in the 0.3.64 traces' shape: {request: {prompt, client_id}, response}."""
    raw = trace.get("posts") or ([trace["post_prompt"]] if "post_prompt" in trace else [])
    raw = raw + [{"request": {"json": c["request_body"]}, **c} for c in trace.get("cases", {}).values()
                 if c["status"] == 200]
    return [{"request": p["request"]["json"], "response": p["response"], "status": 200} for p in raw
            if p.get("status") == 200]


def _entries(trace: dict[str, Any]) -> dict[str, Any]:
    """Every history entry the trace recorded, whatever its key."""
    found: dict[str, Any] = {}
    for key, value in trace.items():
        if "history" in key and isinstance(value, dict):
            body = value.get("response", value)
            if isinstance(body, dict):
                found.update({k: v for k, v in body.items() if isinstance(v, dict) and "status" in v})
    return found


def _outcomes(trace: dict[str, Any]) -> dict[str, str]:
    ends = {}
    for m in trace["ws_messages"]:
        t = m.get("text") or {}
        if t.get("type") in ("execution_success", "execution_error", "execution_interrupted"):
            ends[t["data"]["prompt_id"]] = t["type"]
    return ends


@pytest.mark.parametrize("name", TRACES)
def test_client_follows_every_trace_to_its_recorded_outcome(name: str) -> None:
    trace = _load(name)
    posts = _posts(trace)
    adapted = {"ws_messages": trace["ws_messages"], "posts": posts, "history_immediately_after_done": _entries(trace)}
    server = ReplayServer(adapted)
    client = ComfyClient(f"http://127.0.0.1:{server.port}", settings=Settings(history_wait=2.0))
    outcomes = _outcomes(trace)
    graphs = {p["response"]["prompt_id"]: p["request"]["prompt"] for p in posts}
    results = {}
    try:
        with EventStream(client.address, posts[0]["request"]["client_id"]) as stream:
            follower = Follower(client, stream)
            for pid in outcomes:
                follower.watch(pid, graphs.get(pid, {}))
            while follower.pending:
                watch = follower.next_finished(timeout=15)
                assert watch is not None, "the trace's prompts did not finish"
                results[watch.prompt_id] = follower.resolve(watch)
    finally:
        server.stop()
    assert set(results) == set(outcomes)
    for pid, kind in outcomes.items():
        watch = results[pid]
        if kind == "execution_success":
            assert watch.error is None, watch.error
            entry = adapted["history_immediately_after_done"].get(pid)
            if entry is not None:
                want = sorted(i["filename"] for out in entry["outputs"].values() for k, items in out.items()
                              if k in ("images", "gifs") for i in items)
                assert sorted(f.filename for f in watch.result.files) == want
        elif kind == "execution_error":
            assert isinstance(watch.error, ExecutionFailed) and not watch.error.is_oom
        else:
            assert isinstance(watch.error, Interrupted)
    assert server.early_reads == 0  # never read /history before the entry was there


# ------------------------------------------------------------------------------- the simulator's answers
def _types(messages: list[dict[str, Any]], pid: str) -> list[str]:
    """The owner's message types for one prompt, progress chatter folded."""
    out: list[str] = []
    for m in messages:
        t = m.get("text") or m
        if t.get("data", {}).get("prompt_id") != pid or t["type"] in ("progress_state", "progress"):
            continue
        kind = t["type"] if t["type"] != "executing" or t["data"].get("node") else "executing:null"
        out.append(kind)
    return out


SIM_TRACES = {  # trace -> faults that stand in for what the simulator cannot compute
    "trace_success_image.json": None, "trace_success_video.json": None, "trace_success_video_auto.json": None,
    "trace_success_animated_webp.json": None, "trace_cached_rerun.json": None,
    "trace_runtime_error.json": Faults(error_at={"ComfyMathExpression": "error"}),
}


@pytest.mark.parametrize("name", sorted(SIM_TRACES))
def test_simulator_answers_as_recorded(sim_factory: Any, name: str) -> None:
    catalog = Catalog.from_file(FOLDER / "object_info.json", version=Version(0, 33, 0))
    sim = sim_factory(catalog=catalog, faults=SIM_TRACES[name])
    trace = _load(name)
    (post,) = _posts(trace)
    body = dict(post["request"])
    client = ComfyClient(sim.url)
    if name == "trace_cached_rerun.json":  # the recorded run is the second of the same graph
        with EventStream(client.address, body["client_id"]) as stream:
            follower = Follower(client, stream)
            first = client.queue_prompt(body["prompt"], client_id=body["client_id"])
            follower.watch(first.prompt_id, body["prompt"])
            follower.wait(first.prompt_id, timeout=20)
    got: list[dict[str, Any]] = []
    with EventStream(client.address, body["client_id"]) as stream:
        reply = requests.post(f"{sim.url}/prompt", json=body)
        assert reply.status_code == 200 and reply.json()["node_errors"] == post["response"]["node_errors"]
        pid = reply.json()["prompt_id"]
        follower = Follower(client, stream)
        follower.watch(pid, body["prompt"])
        try:
            follower.wait(pid, timeout=20, on_event=lambda w, e: got.append(e.model_dump(by_alias=True)))
        except ExecutionFailed:
            pass
    recorded = _types(trace["ws_messages"], post["response"]["prompt_id"])
    mine = [e["type"] if e["type"] != "executing" or e.get("node") else "executing:null" for e in got
            if e.get("prompt_id") == pid and e["type"] not in ("progress_state", "progress")]
    assert mine == recorded
    entry = sim.history[pid]
    recorded_entry = _entries(trace)[post["response"]["prompt_id"]]
    assert entry["status"]["status_str"] == recorded_entry["status"]["status_str"]
    assert [k for k, _ in entry["status"]["messages"]] == [k for k, _ in recorded_entry["status"]["messages"]]
    assert {n: sorted(o) for n, o in entry["outputs"].items()} == \
        {n: sorted(o) for n, o in recorded_entry["outputs"].items()}


class LaggingHistory(ReplayServer):
    """A server whose history entry appears some reads after the prompt ended (0.33.0 on heavy
    graphs: 7 of 12 immediate reads were empty, race_probe_heavy.json)."""

    lag_reads = 3

    async def history(self, request: Any) -> Any:
        if self.lag_reads > 0:
            self.lag_reads -= 1
            self.early_reads += 1
            return web.json_response({})
        return await super().history(request)


def test_history_lagging_the_end_is_waited_for() -> None:
    trace = _load("trace_success_image.json")
    posts = _posts(trace)
    server = LaggingHistory({"ws_messages": trace["ws_messages"], "posts": posts,
                             "history_immediately_after_done": _entries(trace)})
    client = ComfyClient(f"http://127.0.0.1:{server.port}", settings=Settings(history_wait=5.0))
    pid = posts[0]["response"]["prompt_id"]
    try:
        with EventStream(client.address, posts[0]["request"]["client_id"]) as stream:
            follower = Follower(client, stream)
            follower.watch(pid, posts[0]["request"]["prompt"])
            result = follower.wait(pid, timeout=15)
    finally:
        server.stop()
    assert [f.filename for f in result.files] == ["img_00001_.png"] and server.early_reads == 3
