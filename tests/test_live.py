"""Against a real ComfyUI: set COMFY_LIVE=http://host:port to run (skipped otherwise).

Queues a core-node graph, follows it, downloads its outputs, reruns it (all nodes cached, outputs
from history) and checks that a broken graph is rejected with the server's validation errors.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

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
