"""Against a real ComfyUI: set COMFY_LIVE=http://host:port to run (skipped otherwise).

Queues a core-node graph, follows it, downloads its outputs, reruns it (all nodes cached, outputs
from history) and checks that a broken graph is rejected with the server's validation errors.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from comfy_driver.comfy.client import ComfyClient, file_sha256
from comfy_driver.comfy.errors import PromptRejected
from comfy_driver.comfy.follow import Follower
from comfy_driver.comfy.stream import EventStream

LIVE = os.environ.get("COMFY_LIVE")
pytestmark = [pytest.mark.live, pytest.mark.skipif(not LIVE, reason="set COMFY_LIVE=http://host:port")]


def test_live_round_trip(tmp_path: Path) -> None:
    client = ComfyClient(LIVE or "")
    stats = client.system_stats()
    assert stats["system"]["comfyui_version"]
    color = uuid.uuid4().int & 0xFFFFFF  # a fresh graph, so the first run is not cached
    graph = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 48, "batch_size": 1, "color": color},
              "_meta": {"title": "Blank"}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "comfy_drive_live/img"}},
    }
    client_id = uuid.uuid4().hex
    with EventStream(client.address, client_id) as stream:
        follower = Follower(client, stream)
        first = client.queue_prompt(graph, client_id=client_id, workflow={"note": "comfy-drive live test"})
        follower.watch(first.prompt_id, graph)
        result = follower.wait(first.prompt_id, timeout=300)
        (ref,) = result.files
        got = client.download(ref, tmp_path)
        assert got.sha256 == file_sha256(got.path)
        with Image.open(got.path) as img:
            assert img.size == (64, 48)
            assert "comfy-drive live test" in img.text["workflow"]
        second = client.queue_prompt(graph, client_id=client_id)
        follower.watch(second.prompt_id, graph)
        again = follower.wait(second.prompt_id, timeout=300)
        assert sorted(again.cached_nodes) == ["1", "2", "3"]
        assert [f.filename for f in again.files] == [ref.filename]
    broken = {"1": {"class_type": "EmptyImage", "inputs": {"width": 0, "height": 48, "batch_size": 1, "color": 0}},
              "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}}}
    with pytest.raises(PromptRejected, match=r"node 1 \(EmptyImage\) input 'width': Value 0 smaller than min of 1"):
        client.queue_prompt(broken, client_id=client_id)
    # the client's validation agrees with the server's on what it rejected
    local = client.catalog().validate(broken)
    assert local.node_errors["1"]["errors"][0]["type"] == "value_smaller_than_min"


def _every_example_prompt(client: ComfyClient) -> list[tuple[str, Any]]:
    from comfy_driver.config.series import load_series
    from comfy_driver.paths import EXAMPLES
    from comfy_driver.pipeline.plan import build_plan

    catalog = client.catalog()
    out = []
    for example, backends in (("wan_animate.yaml", [None, "svd", "wan22_5b", "wan22_animate"]),
                              ("series.yaml", [None])):
        loaded = load_series(EXAMPLES / example)
        for backend in backends:
            for scene in build_plan(loaded, backend, catalog).scenes:
                for step in scene.steps:
                    out.append((f"{example} --backend {backend or 'default'}: {step.name} "
                                f"({step.first.template.name})", step.first))
    return out


def test_live_every_example_prompt_passes_the_servers_validation() -> None:
    """Each backend's prompts (later windows, stages and fallbacks too) are accepted by the server: each
    is queued, checked to carry no node_errors, and cancelled at once (its loaders would fail anyway
    on placeholder model files). The driver's own preflight agrees."""
    from comfy_driver.comfy.client import upload_name
    from comfy_driver.pipeline.steps import PLACEHOLDER_CLIP

    client = ComfyClient(LIVE or "")
    catalog = client.catalog()
    client_id = uuid.uuid4().hex
    clip = Path(__file__).resolve().parent.parent / "examples" / "assets" / "dance.mp4"
    sub, name = PLACEHOLDER_CLIP.split("/")
    with open(clip, "rb") as fh:  # a real clip under the placeholder's name, for the stages' inputs
        client._request("POST", "/upload/image", files={"image": (name, fh)},
                        form={"subfolder": sub, "type": "input", "overwrite": "true"})
    checked = set()
    for label, job in _every_example_prompt(client):
        for server_name, path in job.uploads.items():
            if path is not None:
                assert client.upload(path) == server_name == upload_name(path, file_sha256(path))
        key = job.graph_hash
        if key in checked:
            continue
        checked.add(key)
        local = catalog.validate(job.graph, file_exists=lambda kind, value: True, stricter=True)
        assert local.ok and not local.node_errors, (label, local.response())
        submitted = client.queue_prompt(job.graph, client_id=client_id, where=f"{label}: ")
        client.cancel(submitted.prompt_id)
        assert submitted.node_errors == {}, label
    assert len(checked) >= 8
