"""One test per protocol difference of ComfyUI 0.33 (PROTOCOL_FACTS of v0.33.0), against the simulator
playing that release (and 0.3.64 where the difference is the release's)."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest
import requests

from comfy_driver.comfy.catalog import combo_choices
from comfy_driver.comfy.client import ComfyClient
from comfy_driver.comfy.errors import OutputsDropped
from comfy_driver.comfy.events import BinaryText, FeatureFlags, PreviewImage, parse_binary, parse_text
from comfy_driver.comfy.follow import Follower
from comfy_driver.comfy.stream import EventStream
from comfy_driver.models.catalog import bundled_catalog
from comfy_driver.models.lock import load_lock
from comfy_driver.paths import MODELS_LOCK
from comfy_driver.sim.executor import Timing

from .conftest import IMAGE_GRAPH, shared_path


def _trace(name: str) -> dict[str, Any]:
    return json.loads(shared_path("fixtures", "comfyui", "v0.33.0", name).read_text())


@pytest.fixture
def sim033(sim_factory: Any) -> Any:
    return sim_factory(catalog=bundled_catalog(load_lock(MODELS_LOCK), "0.33.0"), timing=Timing(node=0.2))


def test_200_with_node_errors_is_a_failure_and_the_rest_is_cancelled(sim033: Any) -> None:
    graph = _trace("trace_validation_errors.json")["cases"]["one_good_one_broken_branch"]["request_prompt"]
    client = ComfyClient(sim033.url)
    with pytest.raises(OutputsDropped) as caught:
        client.queue_prompt(graph, client_id="c1", where="scene x: ")
    text = str(caught.value)
    assert "dropped node 4 (SaveImage)" in text and "node 3 (ImageInvert) input 'image': Required input is missing" in text
    deadline = time.monotonic() + 5
    while not sim033.history and time.monotonic() < deadline:
        time.sleep(0.02)
    (entry,) = sim033.history.values()  # it had started: interrupted, with nothing written
    assert entry["status"]["messages"][-1][0] == "execution_interrupted" and entry["outputs"] == {}
    assert client.queued_ids() == ([], [])


@pytest.mark.parametrize("release", ["0.3.64", "0.33.0"])
def test_prompt_ids_are_lowercase_canonical_uuids(sim_factory: Any, release: str) -> None:
    sim = sim_factory(catalog=bundled_catalog(release=release))
    raw = requests.post(f"{sim.url}/prompt", json={"prompt": IMAGE_GRAPH, "client_id": "c", "prompt_id": "Scene-1"})
    if release == "0.33.0":
        assert raw.status_code == 400 and raw.json()["error"]["type"] == "invalid_prompt_id"
    else:
        assert raw.status_code == 200  # 0.3.64 took any string
    sub = ComfyClient(sim.url).queue_prompt(IMAGE_GRAPH, client_id="c", prompt_id="Scene-1")
    assert sub.prompt_id == sub.prompt_id.lower() and len(sub.prompt_id) == 36


def test_unknown_node_answers_missing_node_type(sim033: Any) -> None:
    graph = {**IMAGE_GRAPH, "9": {"class_type": "VHS_LoadVideo", "inputs": {}, "_meta": {"title": "Clip"}}}
    reply = requests.post(f"{sim033.url}/prompt", json={"prompt": graph, "client_id": "c"}).json()
    assert reply["error"]["type"] == "missing_node_type"
    assert reply["error"]["extra_info"] == {"node_id": "9", "class_type": "VHS_LoadVideo", "node_title": "Clip"}


@pytest.mark.parametrize("release", ["0.3.64", "0.33.0"])
def test_cancel_goes_through_jobs_where_the_server_has_it(sim_factory: Any, release: str) -> None:
    sim = sim_factory(catalog=bundled_catalog(release=release), timing=Timing(node=0.3))
    client = ComfyClient(sim.url)
    assert client.jobs_api() == (release == "0.33.0")
    first = client.queue_prompt(IMAGE_GRAPH, client_id="c").prompt_id
    second = client.queue_prompt({**IMAGE_GRAPH, "3": {**IMAGE_GRAPH["3"], "inputs": {
        **IMAGE_GRAPH["3"]["inputs"], "filename_prefix": "other"}}}, client_id="c").prompt_id
    deadline = time.monotonic() + 5
    while client.queued_ids()[0] != [first] and time.monotonic() < deadline:
        time.sleep(0.02)
    assert client.cancel(second) and client.cancel(first)
    assert not client.cancel("0b5e1a2c-0000-4000-8000-000000000000")
    deadline = time.monotonic() + 5
    while first not in sim.history and time.monotonic() < deadline:
        time.sleep(0.02)
    assert sim.history[first]["status"]["messages"][-1][0] == "execution_interrupted"
    assert second not in sim.history and client.queued_ids() == ([], [])
    if release == "0.33.0":
        assert client._json("GET", f"/api/jobs/{first}")["status"] == "cancelled"
        assert requests.get(f"{sim.url}/api/jobs/{second}").status_code == 404
    else:
        assert requests.get(f"{sim.url}/api/jobs").status_code == 404


def test_jobs_routes_answer_as_recorded(sim033: Any) -> None:
    recorded = _trace("trace_jobs_cancel.json")
    for case in ("cancel_batch_bad_ids", "cancel_batch_not_list", "job_not_found", "cancel_unknown"):
        req = recorded[case]["request"]
        got = requests.request(req["method"], sim033.url + req["path"], json=req.get("json"))
        assert (got.status_code, got.json()) == (recorded[case]["status"], recorded[case]["response"]), case
    bad = _trace("trace_queue_history_ops.json")["jobs_bad_status"]
    got = requests.get(sim033.url + bad["request"]["path"], params=bad["request"]["params"])
    assert (got.status_code, got.json()) == (bad["status"], bad["response"])


def test_recorded_binary_frames_parse() -> None:
    trace = _trace("trace_binary_frames.json")
    seen = set()
    for key in ("L_messages", "M_messages", "O_messages"):
        for m in trace[key]:
            frame = m.get("binary")
            if frame is None:
                assert parse_text(json.dumps(m["text"])).type == m["text"]["type"]
                continue
            if "base64" not in frame:
                continue
            event = parse_binary(base64.b64decode(frame["base64"]))
            seen.add(frame["event_type"])
            if frame["event_type"] == 3:
                assert isinstance(event, BinaryText) and (event.node_id, event.text) == (frame["node_id"], frame["text"])
            else:
                assert isinstance(event, PreviewImage) and event.image.startswith(b"\x89PNG")
                if frame["event_type"] == 4:
                    assert event.prompt_id == frame["metadata"]["prompt_id"] and event.image_format == "png"
    assert seen == {1, 3, 4}
    flags = parse_text(json.dumps(trace["M_messages"][1]["text"]))
    assert isinstance(flags, FeatureFlags) and flags.flags["supports_preview_metadata"] is True


def _sampler_graph(release: str) -> dict[str, Any]:
    catalog = bundled_catalog(load_lock(MODELS_LOCK), release)
    ckpt = combo_choices(catalog.nodes["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"])[0]
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat", "clip": ["1", 1]}},
        "3": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "4": {"class_type": "KSampler", "inputs": {"model": ["1", 0], "seed": 1, "steps": 3, "cfg": 1.0,
                                                   "sampler_name": "euler", "scheduler": "normal", "positive": ["2", 0],
                                                   "negative": ["2", 0], "latent_image": ["3", 0], "denoise": 1.0}},
        "5": {"class_type": "VAEDecode", "inputs": {"samples": ["4", 0], "vae": ["1", 2]}},
        "6": {"class_type": "SaveImage", "inputs": {"images": ["5", 0], "filename_prefix": "p"}},
    }


@pytest.mark.parametrize("release", ["0.3.64", "0.33.0"])
def test_previews_arrive_as_type_4_after_negotiation(sim_factory: Any, release: str) -> None:
    sim = sim_factory(catalog=bundled_catalog(load_lock(MODELS_LOCK), release))
    client = ComfyClient(sim.url)
    events: list[Any] = []
    with EventStream(client.address, "previews") as stream:
        follower = Follower(client, stream)
        pid = client.queue_prompt(_sampler_graph(release), client_id="previews").prompt_id
        follower.watch(pid, {})
        follower.wait(pid, timeout=20, on_event=lambda w, e: events.append(e))
    flags = [e for e in events if isinstance(e, FeatureFlags)]
    assert len(flags) == 1 and flags[0].flags["supports_preview_metadata"] is True
    assert ("node_replacements" in flags[0].flags) == (release == "0.33.0")
    previews = [e for e in events if isinstance(e, PreviewImage)]
    assert len(previews) == 3 and all(p.prompt_id == pid and p.metadata["node_id"] == "4" for p in previews)
    kinds = [type(e).__name__ for e in events if type(e).__name__ in ("PreviewImage", "Progress")]
    assert kinds[:2] == ["PreviewImage", "Progress"]  # a negotiated client gets the frame before `progress`


def test_prompt_without_client_id_gets_no_finishing_message(sim033: Any) -> None:
    client = ComfyClient(sim033.url)
    events: list[Any] = []
    with EventStream(client.address, "bystander") as stream:
        reply = requests.post(f"{sim033.url}/prompt", json={"prompt": IMAGE_GRAPH}).json()
        deadline = time.monotonic() + 5
        while reply["prompt_id"] not in sim033.history and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.2)
        while (e := stream.get(timeout=0.05)) is not None:
            events.append(e)
    assert {e.type for e in events if e.prompt_id == reply["prompt_id"]} == {"progress_state"}
    with pytest.raises(ValueError, match="client_id"):
        client.queue_prompt(IMAGE_GRAPH, client_id="")
