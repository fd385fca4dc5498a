"""The client over real sockets against the simulator (and a few hostile stand-ins)."""

from __future__ import annotations

import uuid

import contextlib
import json
import os
import stat
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from comfy_driver.comfy.address import ServerAddress, save_headers
from comfy_driver.comfy.client import ComfyClient, canonical_prompt_id, file_sha256
from comfy_driver.comfy.errors import (ExecutionFailed, Interrupted, NotComfyUI, PromptLost, PromptRejected,
                                       ServerUnreachable)
from comfy_driver.comfy.events import Disconnected, parse_binary, text_kind
from comfy_driver.comfy.follow import Follower
from comfy_driver.comfy.outputs import OutputFile, safe_destination
from comfy_driver.comfy.settings import Settings
from comfy_driver.comfy.stream import EventStream
from comfy_driver.errors import DriveError, RunError, UserError
from comfy_driver.media.ffmpeg import probe
from comfy_driver.sim.executor import Timing
from comfy_driver.sim.server import Faults, SimServer

from .conftest import IMAGE_GRAPH, load_trace


@contextlib.contextmanager
def following(client: ComfyClient, client_id: str, graph: dict[str, Any], *, settings: Settings | None = None,
              **queue: Any) -> Iterator[tuple[EventStream, Follower, str]]:
    """A websocket, a follower, and one prompt queued and watched on them."""
    with EventStream(client.address, client_id, settings=settings) as stream:
        follower = Follower(client, stream)
        sub = client.queue_prompt(graph, client_id=client_id, **queue)
        follower.watch(sub.prompt_id, graph)
        yield stream, follower, sub.prompt_id


def run_prompt(client: ComfyClient, graph: dict[str, Any], **queue: Any) -> Any:
    with following(client, "test-client", graph, **queue) as (_, follower, prompt_id):
        return follower.wait(prompt_id, timeout=30)


def test_image_end_to_end_with_embedded_workflow(client: ComfyClient, tmp_path: Path) -> None:
    workflow = {"nodes": [], "links": [], "note": "the GUI graph"}
    result = run_prompt(client, IMAGE_GRAPH, workflow=workflow)
    (ref,) = result.files
    got = client.download(ref, tmp_path)
    assert got.path == tmp_path / "trace" / "img_00001_.png"
    assert got.sha256 == file_sha256(got.path) and got.size == got.path.stat().st_size
    with Image.open(got.path) as img:
        assert img.size == (64, 48)
        assert json.loads(img.text["workflow"]) == workflow
        assert json.loads(img.text["prompt"]) == IMAGE_GRAPH


def test_video_outputs_of_all_three_savers(client: ComfyClient, tmp_path: Path) -> None:
    graph = load_trace("trace_success_video.json")["post_prompt"]["request"]["prompt"]
    result = run_prompt(client, graph)
    kinds = {f.node_id: f for f in result.files}
    assert kinds["2"].key == "gifs" and kinds["4"].animated and kinds["5"].animated
    info = probe(client.download(kinds["4"], tmp_path).path)
    assert (info.frames, info.width, info.height, info.fps, info.codec) == (12, 64, 64, 8.0, "h264")
    vhs = probe(client.download(kinds["2"], tmp_path).path)
    assert vhs.frames == 12
    webp = client.download(kinds["5"], tmp_path).path
    with Image.open(webp) as img:
        assert img.n_frames == 12


def test_cached_rerun_still_lists_outputs(client: ComfyClient) -> None:
    run_prompt(client, IMAGE_GRAPH)
    again = run_prompt(client, IMAGE_GRAPH)
    assert again.cached_nodes == ["1", "2", "3"]
    assert [f.filename for f in again.files] == ["img_00001_.png"]


def test_history_race_is_waited_out(sim_factory: Any) -> None:
    sim = sim_factory(timing=Timing(history_delay=0.3))
    result = run_prompt(ComfyClient(sim.url), IMAGE_GRAPH)
    assert [f.filename for f in result.files] == ["img_00001_.png"]


def test_validation_errors_name_node_title_input_and_text(client: ComfyClient) -> None:
    graph = load_trace("trace_validation_errors.json")["post_prompt"]["request"]["prompt"]
    graph["6"]["_meta"] = {"title": "Backdrop"}
    with pytest.raises(PromptRejected) as info:
        client.queue_prompt(graph, client_id="x")
    text = str(info.value)
    assert "node 6 \"Backdrop\" (EmptyImage) input 'width': Failed to convert an input value to a INT value" in text
    assert "node 6 \"Backdrop\" (EmptyImage) input 'height': Value 99999 bigger than max of 16384" in text
    assert "node 5 (SaveImage) input 'images': Return type mismatch between linked nodes" in text
    assert "node 2 (ImageInvert) input 'images': Exception when validating inner node" in text
    assert isinstance(info.value, UserError)  # bad input: the CLI exits 2


def test_unknown_node_names_it_and_suggests_a_pack(client: ComfyClient) -> None:
    graph = load_trace("trace_unknown_node.json")["post_prompt"]["request"]["prompt"]
    with pytest.raises(PromptRejected, match="node NoSuchNode does not exist") as info:
        client.queue_prompt(graph, client_id="x")
    assert "custom node pack" in str(info.value)


def test_out_of_memory_is_recognised(sim_factory: Any) -> None:
    sim = sim_factory(faults=Faults(error_at={"ImageInvert": "oom"}))
    with pytest.raises(ExecutionFailed) as info:
        run_prompt(ComfyClient(sim.url), IMAGE_GRAPH)
    assert info.value.is_oom and info.value.node_id == "2"
    assert "ran out of memory" in str(info.value)


def test_runtime_error_is_not_oom(sim_factory: Any) -> None:
    sim = sim_factory(faults=Faults(error_at={"ImageInvert": "error"}))
    with pytest.raises(ExecutionFailed) as info:
        run_prompt(ComfyClient(sim.url), IMAGE_GRAPH)
    assert not info.value.is_oom and "RuntimeError" in str(info.value)


def test_interrupt_own_prompt(sim_factory: Any) -> None:
    sim = sim_factory(timing=Timing(node=0.3))
    client = ComfyClient(sim.url)
    with following(client, "me", IMAGE_GRAPH) as (_, follower, prompt_id):
        threading.Timer(0.1, client.interrupt, args=(prompt_id,)).start()
        with pytest.raises(Interrupted):
            follower.wait(prompt_id, timeout=10)


def test_upload_is_content_addressed_and_not_resent(sim: SimServer, tmp_path: Path) -> None:
    image = tmp_path / "Ref Image.PNG"
    Image.new("RGB", (32, 16), "red").save(image)
    copy = tmp_path / "copy.png"
    copy.write_bytes(image.read_bytes())
    first = ComfyClient(sim.url).upload(image)
    assert first.startswith("comfy_drive/") and first.endswith(".png")
    assert ComfyClient(sim.url).upload(copy) == first  # same bytes: same name, fresh client
    assert sim.uploads == 1
    graph = {"1": {"class_type": "LoadImage", "inputs": {"image": first}},
             "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "up"}}}
    result = run_prompt(ComfyClient(sim.url), graph)
    assert result.files


def test_keepalive_survives_a_long_silent_node(sim_factory: Any) -> None:
    sim = sim_factory(timing=Timing(per_class={"ImageInvert": 1.5}))
    client = ComfyClient(sim.url)
    quick = Settings(keepalive=0.2, dead_after=0.6)
    with following(client, "quiet", IMAGE_GRAPH, settings=quick) as (stream, follower, prompt_id):
        seen = []
        follower.wait(prompt_id, timeout=10, on_event=lambda w, e: seen.append(e))
        assert stream.reconnects == 0 and not any(isinstance(e, Disconnected) for e in seen)


def test_dropped_websocket_is_recovered(sim_factory: Any) -> None:
    sim = sim_factory(faults=Faults(drop_ws_after=6))
    with following(ComfyClient(sim.url), "drop", IMAGE_GRAPH) as (stream, follower, prompt_id):
        result = follower.wait(prompt_id, timeout=10)
        assert stream.reconnects >= 1
    assert [f.filename for f in result.files] == ["img_00001_.png"]
    assert sim.submissions.count(prompt_id) == 1


def test_crashed_server_reports_the_prompt_lost(sim_factory: Any) -> None:
    sim = sim_factory(timing=Timing(node=0.05), faults=Faults(crash_at="ImageInvert", crash_down_for=0.3))
    with following(ComfyClient(sim.url), "crash", IMAGE_GRAPH, prompt_id="fixed-id-1") as (_, follower, prompt_id):
        with pytest.raises(PromptLost):
            follower.wait(prompt_id, timeout=10)


def test_chosen_prompt_id_is_used_in_canonical_form(client: ComfyClient) -> None:
    # ComfyUI 0.33 takes only lower-case canonical UUIDs: a UUID is rewritten, a name becomes its uuid5.
    upper = "6F1C0C1E-3A5E-4D59-9B43-9A3C2F6D1E20"
    assert client.queue_prompt(IMAGE_GRAPH, client_id="x", prompt_id=upper).prompt_id == upper.lower()
    named = client.queue_prompt(IMAGE_GRAPH, client_id="x", prompt_id="my-own-id").prompt_id
    assert named == canonical_prompt_id("my-own-id") == str(uuid.UUID(named))


def test_object_info_is_kept_by_its_client(client: ComfyClient) -> None:
    first = client.object_info()
    assert client.object_info() is first  # asked once per client
    assert client.object_info(refresh=True) is not first  # asked again when told to
    assert ComfyClient(client.address.http).object_info() is not first  # no process-wide cache
    assert "SaveImage" in client.catalog()


# ------------------------------------------------------------------------------------------- hostile
@pytest.mark.parametrize("subfolder,filename,expected", [
    ("", "../../etc/passwd", "etc/passwd"),
    ("/etc", "passwd", "etc/passwd"),
    ("..\\..\\win", "x.png", "win/x.png"),
    ("a/../../..", "b.png", "a/b.png"),
    ("", "/abs/path.mp4", "abs/path.mp4"),
    ("", "nul\x00byte.png", "nul_byte.png"),
    ("ok", "..", None),
])
def test_safe_destination_never_leaves_the_folder(tmp_path: Path, subfolder: str, filename: str,
                                                  expected: str | None) -> None:
    if expected is None:
        with pytest.raises(RunError):
            safe_destination(tmp_path, subfolder, filename)
        return
    target = safe_destination(tmp_path, subfolder, filename)
    assert target == tmp_path / expected


class _Hostile(BaseHTTPRequestHandler):
    body = b"pwned"

    def do_GET(self) -> None:  # noqa: N802
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: Any) -> None:
        pass


def _serve(handler: type[BaseHTTPRequestHandler]) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_hostile_output_names_stay_inside(tmp_path: Path) -> None:
    server = _serve(_Hostile)
    client = ComfyClient(f"http://127.0.0.1:{server.server_address[1]}")
    dest = tmp_path / "dest"
    for sub, name in [("../..", "evil.sh"), ("", "../../../evil.sh"), ("/tmp", "evil.sh")]:
        got = client.download(OutputFile(node_id="1", key="images", filename=name, subfolder=sub), dest)
        assert got.path.resolve().is_relative_to(dest.resolve())
    assert not (tmp_path / "evil.sh").exists()
    server.shutdown()


class _NotComfy(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        body = b"<html>welcome to nginx</html>" if "system_stats" in self.path else b"{}"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def test_a_server_that_is_not_comfyui() -> None:
    server = _serve(_NotComfy)
    with pytest.raises(NotComfyUI, match="not a ComfyUI server"):
        ComfyClient(f"http://127.0.0.1:{server.server_address[1]}").system_stats()
    server.shutdown()


def test_a_dead_server() -> None:
    with pytest.raises(ServerUnreachable, match="did not answer"):
        ComfyClient("http://127.0.0.1:9", settings=Settings(retries=2)).system_stats()


# ------------------------------------------------------------------------------------------- auth
def test_token_from_environment_reaches_http_and_websocket(sim_factory: Any, monkeypatch: Any,
                                                           tmp_path: Path) -> None:
    monkeypatch.setenv("COMFY_DRIVE_CREDENTIALS", str(tmp_path / "none.json"))
    sim = sim_factory(auth="Bearer s3cret-token")
    with pytest.raises(UserError, match="refused access"):
        ComfyClient(sim.url).system_stats()
    monkeypatch.setenv("COMFY_DRIVE_TOKEN", "s3cret-token")
    client = ComfyClient(sim.url)
    assert run_prompt(client, IMAGE_GRAPH).files
    assert "s3cret" not in repr(client.address) and "s3cret" not in client.address.display


def test_user_password_in_url_becomes_basic_auth(sim_factory: Any, monkeypatch: Any, tmp_path: Path) -> None:
    monkeypatch.setenv("COMFY_DRIVE_CREDENTIALS", str(tmp_path / "none.json"))
    import base64

    sim = sim_factory(auth="Basic " + base64.b64encode(b"ann:pa ss").decode())
    client = ComfyClient(f"http://ann:pa%20ss@127.0.0.1:{sim.port}")
    assert client.address.display == f"http://127.0.0.1:{sim.port}"
    assert run_prompt(client, IMAGE_GRAPH).files
    with pytest.raises(DriveError) as info:
        ComfyClient(f"http://ann:wrong@127.0.0.1:{sim.port}").system_stats()
    assert "wrong" not in str(info.value)


def test_credentials_file_is_private(sim_factory: Any, monkeypatch: Any, tmp_path: Path) -> None:
    creds = tmp_path / "cfg" / "credentials.json"
    monkeypatch.setenv("COMFY_DRIVE_CREDENTIALS", str(creds))
    sim = sim_factory(auth="Bearer from-file")
    save_headers(sim.url, {"Authorization": "Bearer from-file"})
    assert stat.S_IMODE(creds.stat().st_mode) == 0o600
    assert ComfyClient(sim.url).system_stats()["system"]
    os.chmod(creds, 0o644)
    with pytest.raises(UserError, match="chmod 600"):
        ServerAddress.parse(sim.url)


def test_https_url_gives_wss() -> None:
    address = ServerAddress.parse("https://gpu.example.com/comfy/")
    assert (address.http, address.ws) == ("https://gpu.example.com/comfy", "wss://gpu.example.com/comfy/ws")


def test_binary_preview_frames_parse() -> None:
    import struct

    event = parse_binary(struct.pack(">II", 1, 2) + b"\x89PNG")
    assert event.type == "preview" and event.image_format == "png" and event.image == b"\x89PNG"
    meta = json.dumps({"image_type": "image/jpeg", "prompt_id": "p1", "node_id": "5"}).encode()
    event = parse_binary(struct.pack(">II", 4, len(meta)) + meta + b"\xff\xd8")
    assert event.image_format == "jpeg" and event.prompt_id == "p1" and event.image == b"\xff\xd8"
    text = parse_binary(struct.pack(">II", 3, 2) + b"12hello")
    assert (text.node_id, text.text) == ("12", "hello")


def test_a_stream_drops_the_kinds_its_reader_never_looks_at_unparsed(client: ComfyClient) -> None:
    assert (text_kind(b'{"type": "progress_state", "data": {}}'), text_kind('{"type":"status"}'),
            text_kind(b'{"data": {}, "type": "executing"}')) == ("progress_state", "status", None)
    with EventStream(client.address, "skipper", skip=frozenset({"status", "progress_state"})) as stream:
        follower = Follower(client, stream)
        graph = {**IMAGE_GRAPH, "1": {**IMAGE_GRAPH["1"], "inputs": {**IMAGE_GRAPH["1"]["inputs"], "color": 4242}}}
        sub = client.queue_prompt(graph, client_id="skipper")
        follower.watch(sub.prompt_id, graph)
        seen: list[str] = []
        result = follower.wait(sub.prompt_id, timeout=30, on_event=lambda w, e: seen.append(type(e).__name__))
    assert result.files and "Executing" in seen and "ExecutionSuccess" in seen
    assert "Status" not in seen and "ProgressState" not in seen
