"""The simulator speaks the recorded protocol: same message order and shapes, same replies."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import pytest
import requests
import websocket

from comfy_driver.sim.executor import Timing
from comfy_driver.sim.server import Faults, SimServer

from .conftest import IMAGE_GRAPH, load_trace


def collect(sim: SimServer, posts: list[dict[str, Any]], *, until_done: int, client_id: str | None = None,
            between: float = 0.0) -> list[dict[str, Any]]:
    """Open a socket, post the prompts, return every text message until `until_done` prompts ended."""
    cid = client_id or uuid.uuid4().hex
    ws = websocket.create_connection(f"ws://127.0.0.1:{sim.port}/ws?clientId={cid}", timeout=10)
    for body in posts:
        r = requests.post(f"{sim.url}/prompt", json={**body, "client_id": cid}, timeout=10)
        assert r.status_code == 200, r.text
        time.sleep(between)
    messages = []
    ended = 0
    while ended < until_done:
        msg = json.loads(ws.recv())
        messages.append(msg)
        if msg["type"] == "executing" and msg["data"]["node"] is None:
            ended += 1
    ws.close()
    return messages


def types_of(trace_messages: list[dict[str, Any]]) -> list[str]:
    return [m["text"]["type"] for m in trace_messages if "text" in m]


def test_success_image_message_order_and_shapes(sim: SimServer) -> None:
    trace = load_trace("trace_success_image.json")
    got = collect(sim, [{"prompt": IMAGE_GRAPH}], until_done=1)
    assert [m["type"] for m in got] == types_of(trace["ws_messages"])
    recorded = [m["text"] for m in trace["ws_messages"] if "text" in m]
    for mine, theirs in zip(got, recorded):
        assert set(mine["data"]) == set(theirs["data"]), mine["type"]
    executed = next(m for m in got if m["type"] == "executed")
    assert executed["data"]["output"] == {"images": [{"filename": "img_00001_.png", "subfolder": "trace",
                                                      "type": "output"}]}


def test_cached_rerun_message_order(sim: SimServer) -> None:
    collect(sim, [{"prompt": IMAGE_GRAPH}], until_done=1)
    got = collect(sim, [{"prompt": IMAGE_GRAPH}], until_done=1)
    trace = load_trace("trace_cached_rerun.json")
    assert [m["type"] for m in got] == types_of(trace["ws_messages"])
    cached = next(m for m in got if m["type"] == "execution_cached")
    assert cached["data"]["nodes"] == ["1", "2", "3"]


def test_two_queued_run_back_to_back(sim_factory: Any) -> None:
    sim = sim_factory(timing=Timing(node=0.02))
    second = json.loads(json.dumps(IMAGE_GRAPH))
    second["1"]["inputs"]["color"] = 2
    got = collect(sim, [{"prompt": IMAGE_GRAPH}, {"prompt": second}], until_done=2)
    types = [m["type"] for m in got]
    # after the first prompt's final executing(null), the second starts with status + execution_start
    first_end = next(i for i, m in enumerate(got) if m["type"] == "executing" and m["data"]["node"] is None)
    assert types[first_end - 2:first_end + 3] == ["execution_success", "status", "executing", "status",
                                                  "execution_start"]


def test_history_entry_layout_matches_server(sim: SimServer) -> None:
    got = collect(sim, [{"prompt": IMAGE_GRAPH, "extra_data": {"extra_pnginfo": {"workflow": {"n": 1}}}}],
                  until_done=1)
    pid = got[-1]["data"]["prompt_id"]
    entry = requests.get(f"{sim.url}/history/{pid}", timeout=5).json()[pid]
    recorded = next(iter(load_trace("trace_success_image.json")["history_immediately_after_done"].values()))
    assert set(entry) == set(recorded)
    assert entry["prompt"][2] == IMAGE_GRAPH and entry["prompt"][4] == ["3"]
    assert entry["prompt"][3]["extra_pnginfo"] == {"workflow": {"n": 1}}
    assert [m[0] for m in entry["status"]["messages"]] == [m[0] for m in recorded["status"]["messages"]]
    assert entry["status"]["status_str"] == "success" and entry["status"]["completed"] is True


def test_events_only_reach_the_owning_client(sim: SimServer) -> None:
    other = websocket.create_connection(f"ws://127.0.0.1:{sim.port}/ws?clientId=someone-else", timeout=5)
    collect(sim, [{"prompt": IMAGE_GRAPH}], until_done=1)
    other.settimeout(0.3)
    seen = []
    try:
        while True:
            seen.append(json.loads(other.recv())["type"])
    except websocket.WebSocketTimeoutException:
        pass
    other.close()
    assert set(seen) == {"status"}


def test_oom_fault_gives_execution_error_like_the_trace(sim_factory: Any) -> None:
    sim = sim_factory(faults=Faults(error_at={"EmptyImage": "oom"}))
    got = collect(sim, [{"prompt": IMAGE_GRAPH}], until_done=1)
    trace = load_trace("trace_runtime_error_oom.json")
    assert [m["type"] for m in got] == types_of(trace["ws_messages"])
    err = next(m for m in got if m["type"] == "execution_error")["data"]
    recorded = next(m["text"]["data"] for m in trace["ws_messages"] if m.get("text", {}).get("type") == "execution_error")
    assert set(err) == set(recorded) and err["node_type"] == "EmptyImage"


@pytest.mark.parametrize("case,status", [("POST /prompt bad json", 500), ("POST /prompt no prompt key", 400)])
def test_bad_prompt_bodies(sim: SimServer, case: str, status: int) -> None:
    recorded = load_trace("trace_misc_routes.json")[case]
    data = b"{not json" if "bad json" in case else json.dumps({"client_id": "x"}).encode()
    r = requests.post(f"{sim.url}/prompt", data=data, timeout=5)
    assert r.status_code == recorded["status"] == status
    if status == 400:
        assert r.json() == json.loads(recorded["body"])


@pytest.mark.parametrize("query", ["/view?filename=../../etc/passwd&type=output",
                                   "/view?filename=passwd&subfolder=../../../etc&type=output",
                                   "/view?filename=nothere.png&type=output"])
def test_view_refuses_like_the_server(sim: SimServer, query: str) -> None:
    recorded = load_trace("trace_misc_routes.json")[query]
    assert requests.get(sim.url + query, timeout=5).status_code == recorded["status"]


def test_upload_naming_like_the_server(sim: SimServer, tmp_path: Any) -> None:
    recorded = load_trace("trace_validation_cases.json")["upload_same_name_different_content"]
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    a.write_bytes(b"first")
    b.write_bytes(b"second")

    def up(path: Any, **form: str) -> dict[str, Any]:
        with open(path, "rb") as fh:
            r = requests.post(f"{sim.url}/upload/image", files={"image": ("same.png", fh)}, data=form, timeout=5)
        return r.json()

    assert up(a) == recorded["first"]
    assert up(b) == recorded["second_no_overwrite"]
    assert up(b, overwrite="true") == recorded["third_overwrite_true"]
    assert up(b)["name"] == "same.png"  # identical content keeps its name
    traversal = requests.post(f"{sim.url}/upload/image", files={"image": ("x.png", b"x")},
                              data={"subfolder": "../../evil"}, timeout=5)
    assert traversal.status_code == load_trace("trace_upload.json")["traversal_subfolder"]["status"]


def test_queue_front_and_delete(sim_factory: Any) -> None:
    sim = sim_factory(timing=Timing(node=0.3))
    cid = "q"
    ids = []
    for color in range(3):
        g = json.loads(json.dumps(IMAGE_GRAPH))
        g["1"]["inputs"]["color"] = color
        body = {"prompt": g, "client_id": cid, "front": color == 2}
        ids.append(requests.post(f"{sim.url}/prompt", json=body, timeout=5).json())
    q = requests.get(f"{sim.url}/queue", timeout=5).json()
    assert [t[1] for t in q["queue_running"]] == [ids[0]["prompt_id"]]
    assert [t[1] for t in q["queue_pending"]] == [ids[2]["prompt_id"], ids[1]["prompt_id"]]
    assert ids[2]["number"] < 0
    requests.post(f"{sim.url}/queue", json={"delete": [ids[1]["prompt_id"]]}, timeout=5)
    q = requests.get(f"{sim.url}/queue", timeout=5).json()
    assert [t[1] for t in q["queue_pending"]] == [ids[2]["prompt_id"]]


def test_interrupt_of_another_prompt_does_nothing(sim_factory: Any) -> None:
    sim = sim_factory(timing=Timing(node=0.2))
    pid = requests.post(f"{sim.url}/prompt", json={"prompt": IMAGE_GRAPH, "client_id": "c"}, timeout=5).json()["prompt_id"]
    time.sleep(0.05)
    requests.post(f"{sim.url}/interrupt", json={"prompt_id": "someone-elses"}, timeout=5)
    deadline = time.time() + 5
    while pid not in requests.get(f"{sim.url}/history", timeout=5).json() and time.time() < deadline:
        time.sleep(0.05)
    assert requests.get(f"{sim.url}/history/{pid}", timeout=5).json()[pid]["status"]["status_str"] == "success"


def test_misc_routes_answer(sim: SimServer) -> None:
    for route in ("/system_stats", "/features", "/models", "/embeddings", "/extensions", "/prompt",
                  "/object_info/SaveImage", "/api/queue", "/api/history?max_items=1"):
        assert requests.get(sim.url + route, timeout=5).status_code == 200, route
    assert requests.get(f"{sim.url}/models/checkpoints", timeout=5).json() == sorted(
        ["sd_xl_turbo_1.0_fp16.safetensors", "svd_xt.safetensors"])


def test_model_loads_are_counted_as_the_server_pays_them(sim: SimServer) -> None:
    # A checkpoint is loaded when the previous prompt had not loaded it: A, A (loaded), B, A -> 3 loads.
    def graph(ckpt: str, width: int) -> dict[str, Any]:
        return {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
                "2": {"class_type": "EmptyLatentImage", "inputs": {"width": width, "height": 64, "batch_size": 1}},
                "3": {"class_type": "VAEDecode", "inputs": {"samples": ["2", 0], "vae": ["1", 2]}},
                "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "loads/img"}}}

    turbo, svd = "sd_xl_turbo_1.0_fp16.safetensors", "svd_xt.safetensors"
    posts = [{"prompt": graph(turbo, 64)}, {"prompt": graph(turbo, 72)}, {"prompt": graph(svd, 64)},
             {"prompt": graph(turbo, 64)}]
    collect(sim, posts, until_done=4)
    assert all(entry["status"]["status_str"] == "success" for entry in sim.history.values())
    assert requests.get(f"{sim.url}/sim/stats", timeout=5).json()["model_loads"] == 3


def test_late_wake_ups_do_not_add_up_over_a_samplers_steps(sim_factory: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # On a busy machine every sleep wakes late: here by 30 ms each. Ten steps of 20 ms still take about
    # 200 ms (plus one late wake-up), not ten times 50 ms.
    from comfy_driver.sim import execution

    async def late(delay: float) -> None:
        await asyncio.sleep(delay + 0.03)

    monkeypatch.setattr(execution, "_sleep", late)
    sim = sim_factory(timing=Timing(step=0.02))
    graph = {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd_xl_turbo_1.0_fp16.safetensors"}},
             "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "a fox", "clip": ["1", 1]}},
             "3": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
             "4": {"class_type": "KSampler", "inputs": {"model": ["1", 0], "positive": ["2", 0], "negative": ["2", 0],
                                                        "latent_image": ["3", 0], "seed": 1, "steps": 10, "cfg": 1.0,
                                                        "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0}},
             "5": {"class_type": "VAEDecode", "inputs": {"samples": ["4", 0], "vae": ["1", 2]}},
             "6": {"class_type": "SaveImage", "inputs": {"images": ["5", 0], "filename_prefix": "late/img"}}}
    pid = requests.post(f"{sim.url}/prompt", json={"prompt": graph}, timeout=10).json()["prompt_id"]
    deadline = time.time() + 10
    while pid not in sim.history and time.time() < deadline:
        time.sleep(0.02)
    stamps = dict((kind, data["timestamp"]) for kind, data in sim.history[pid]["status"]["messages"])
    assert 200 <= stamps["execution_success"] - stamps["execution_start"] < 400


def test_pngs_are_pillows_own_bytes_for_the_frame_and_its_text(tmp_path: Any) -> None:
    """The simulator reuses a frame's encoding and puts ComfyUI's text chunks into it: the file is still
    exactly what Pillow writes for that frame saved with that text."""
    import io

    from PIL.PngImagePlugin import PngInfo

    from comfy_driver.sim import render

    for width, height, caption in ((64, 64, ""), (320, 180, "a lighthouse in a storm ✓")):
        for text in (None, {"prompt": {"1": {"class_type": "SaveImage"}}, "workflow": {"nodes": []}}, {"ké": "✓"}):
            render.write_png(tmp_path / "a.png", width, height, caption, index=1, count=3, text=text)
            info = PngInfo()
            for key, value in (text or {}).items():
                info.add_text(key, json.dumps(value))
            expected = io.BytesIO()
            render.frame(width, height, caption, 1, 3).save(expected, format="PNG", pnginfo=info, compress_level=1)
            assert (tmp_path / "a.png").read_bytes() == expected.getvalue()


def test_view_answers_a_small_file_as_fileresponse_does(sim: SimServer) -> None:
    """A plain GET of a small output is answered from memory: the same status, headers (in order) and bytes
    as aiohttp's FileResponse, which answers the same request made conditional (If-Modified-Since)."""
    import http.client
    from urllib.parse import urlsplit

    where = urlsplit(sim.url)
    for name in ("a.png", "b.mp4", "c.webp"):
        (sim.root / "output" / name).write_bytes(name.encode() * 1000)
        answers = []
        for extra in ({}, {"If-Modified-Since": "Thu, 01 Jan 1970 00:00:00 GMT"}):
            conn = http.client.HTTPConnection(where.hostname, where.port)
            conn.request("GET", f"/view?filename={name}&type=output", headers={"Accept-Encoding": "gzip", **extra})
            reply = conn.getresponse()
            answers.append((reply.status, [h for h in reply.getheaders() if h[0] != "Date"], reply.read()))
            conn.close()
        assert answers[0] == answers[1]
        assert answers[0][0] == 200 and answers[0][2] == name.encode() * 1000
