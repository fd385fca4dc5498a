"""The public Python API: the README's script, jobs and their events, the exception tree, run_series."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import comfy_driver
from comfy_driver import (AccessRefused, BadInputFile, Cancelled, Client, Finished, JobTimeout, NodeOutput,
                          NodeStarted, OutOfMemory, PromptRejected, RunOptions, Started, StepProgress, UserError,
                          run_series)
from comfy_driver.cli import exit_status, main, render_error
from comfy_driver.comfy.errors import ServerUnreachable
from comfy_driver.paths import WORKFLOWS
from comfy_driver.sim.executor import Timing
from comfy_driver.sim.server import Faults

from .conftest import IMAGE_GRAPH, ROOT


def readme_script() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Use from Python"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)  # type: ignore[union-attr]


def test_the_readme_script_runs(tmp_path: Path) -> None:
    script = readme_script()
    assert len(script.strip().splitlines()) <= 16
    imported = re.findall(r"from (\S+) import (.*)", script)
    assert imported == [("comfy_driver", imported[0][1])]  # only the public front door
    assert all(name.strip() in comfy_driver.__all__ for name in imported[0][1].split(","))
    (tmp_path / "workflows").mkdir()
    shutil.copy(WORKFLOWS / "svd.json", tmp_path / "workflows" / "svd.json")
    (tmp_path / "script.py").write_text(script, encoding="utf-8")
    proc = subprocess.run([sys.executable, "script.py"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "running node 10 \"Video Sampler\" (KSampler)" in proc.stdout
    assert re.search(r"step \d+ of 20", proc.stdout)
    saved = [line.split()[1] for line in proc.stdout.splitlines() if line.startswith("saved ")]
    assert saved and all((tmp_path / p).is_file() for p in saved)
    assert any(p.endswith(".mp4") for p in saved)


def test_job_events_come_in_order_and_end_with_finished(sim: Any, tmp_path: Path) -> None:
    with Client(sim.url) as client:
        job = client.submit(IMAGE_GRAPH)
        events = list(job.events())
        kinds = [type(e) for e in events]
        assert kinds[0] is Started and kinds[-1] is Finished and events[-1].error is None  # type: ignore[attr-defined]
        assert [e.node for e in events if isinstance(e, NodeStarted)] == ["1", "2", "3"]
        (output,) = [e for e in events if isinstance(e, NodeOutput)]
        assert output.node == "3" and output.files[0].filename.endswith(".png")
        assert all(e.prompt_id == job.prompt_id for e in events)
        (got,) = job.download(tmp_path)
        assert got.path.is_file() and got.path.name == output.files[0].filename
        # a second job from a GUI-saved mapping, with a change by node title
        from comfy_driver.workflow.layout import api_to_ui

        ui = api_to_ui(IMAGE_GRAPH, client.catalog())
        again = client.submit(ui, sets={"Blank.width": 32})
        assert again.graph["1"]["inputs"]["width"] == 32
        assert again.result(timeout=30).files


def test_a_fast_prompt_does_not_wait_for_a_history_poll(sim: Any) -> None:
    """The socket is open before the submit, so the end is seen at once (not after poll_after)."""
    with Client(sim.url) as client:
        for _ in range(5):
            job = client.submit(IMAGE_GRAPH)
            job.result(timeout=5)  # poll_after is 30 s: a missed end would time out here


def test_rejected_and_bad_inputs_raise_before_anything_is_queued(sim: Any, tmp_path: Path) -> None:
    with Client(sim.url) as client:
        broken = json.loads(json.dumps(IMAGE_GRAPH))
        broken["1"]["inputs"]["width"] = 10**9
        with pytest.raises(PromptRejected) as info:
            client.submit(broken)
        assert "1" in info.value.node_errors and "Blank" in str(info.value)
        with pytest.raises(BadInputFile):
            client.submit({"hello": "world"})
        notes = tmp_path / "notes.txt"
        notes.write_text("hi")
        with pytest.raises(BadInputFile):
            client.submit(notes)
        with pytest.raises(UserError, match="did you mean 'width'"):
            client.submit(IMAGE_GRAPH, sets={"Blank.widht": 3})
    assert sim.submissions == []


def test_timeout_then_cancel(sim_factory: Any) -> None:
    sim = sim_factory(timing=Timing(per_class={"ImageInvert": 5.0}))
    with Client(sim.url) as client:
        running = client.submit(IMAGE_GRAPH)
        waiting = client.submit(IMAGE_GRAPH)
        with pytest.raises(JobTimeout) as info:
            running.result(timeout=0.2)
        assert isinstance(info.value, TimeoutError)
        waiting.cancel()  # still queued: taken off the queue
        with pytest.raises(Cancelled):
            waiting.result(timeout=10)
        running.cancel()  # running: interrupted
        with pytest.raises(Cancelled):
            running.result(timeout=10)
        assert client.http.queued_ids() == ([], [])


def test_out_of_memory_is_its_own_class(sim_factory: Any) -> None:
    sim = sim_factory(faults=Faults(error_at={"ImageInvert": "oom"}, error_times=1))
    with Client(sim.url) as client, pytest.raises(OutOfMemory) as info:
        client.submit(IMAGE_GRAPH).result(timeout=10)
    assert "comfy-drive" not in str(info.value)  # the library names no command
    assert "comfy-drive free" in render_error(info.value) and exit_status(info.value) == 1


def test_exit_statuses_are_the_command_lines_alone() -> None:
    refused = AccessRefused("http://x refused access (401) on /prompt", hint="set COMFY_DRIVE_TOKEN")
    assert exit_status(refused) == 2 and "comfy-drive login" in render_error(refused)
    assert exit_status(ServerUnreachable("gone")) == 1
    assert not hasattr(refused, "exit_code")


def test_an_unreachable_server() -> None:
    with Client("http://127.0.0.1:9", settings=comfy_driver.Settings(retries=1)) as client, \
            pytest.raises(ServerUnreachable):
        client.submit(IMAGE_GRAPH)


def test_run_series_reports_events_per_step(sim: Any, tmp_path: Path) -> None:
    series = tmp_path / "series.yaml"
    series.write_text("""\
title: Api Test
backend: svd
output: out
defaults: {width: 64, height: 64, fps: 8, frames: 4}
episodes:
  - id: one
    scenes:
      - {id: a, prompt: a fox}
      - {id: b, prompt: a hare}
""", encoding="utf-8")
    seen: list[tuple[str, Any]] = []
    report = run_series(series, servers=[sim.url], options=RunOptions(depth=1),
                        on_event=lambda step, event: seen.append((step, event)))
    assert [s.status for s in report.scenes] == ["done", "done"] and not report.failed
    steps = {step for step, _ in seen}
    assert steps == {"one/a", "one/b"}, steps
    assert any(isinstance(e, StepProgress) for _, e in seen)
    with pytest.raises(UserError, match="no such scene 'one/zz'"):
        run_series(series, servers=[sim.url], options=RunOptions(force={"one/zz"}))


# ------------------------------------------------------------------------------------------- TLS
@pytest.fixture
def https_comfy(tmp_path: Path) -> Any:
    """A local https server with a self-signed certificate answering /system_stats as ComfyUI does
    (and an empty node catalogue)."""
    import ssl
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    body = json.dumps({"system": {"comfyui_version": "0.3.64", "python_version": "3.12"}, "devices": []}).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            reply = {"/system_stats": body, "/object_info": b"{}"}.get(self.path)
            self.send_response(200 if reply else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(reply or b"")))
            self.end_headers()
            self.wfile.write(reply or b"")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"https://127.0.0.1:{server.server_address[1]}", cert
    server.shutdown()


def test_tls_trust_is_chosen_by_the_user(https_comfy: Any, monkeypatch: Any) -> None:
    url, cert = https_comfy
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    untrusted = CliRunner().invoke(main, ["stats", "--server", url, "--retries", "1"])
    assert untrusted.exit_code == 1 and "TLS failed" in untrusted.output
    for extra in (["--ca-bundle", str(cert)], ["--insecure"]):
        result = CliRunner().invoke(main, ["stats", "--server", url, *extra])
        assert result.exit_code == 0 and "ComfyUI 0.3.64" in result.output, result.output
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert))  # the environment's bundle is honoured
    with Client(url) as client:
        assert client.http.system_stats()["system"]["comfyui_version"] == "0.3.64"
    both = CliRunner().invoke(main, ["stats", "--server", url, "--insecure", "--ca-bundle", str(cert)])
    assert both.exit_code == 2 and "contradict" in both.output


# ------------------------------------------------------------------------------------------- not ComfyUI
def test_something_that_is_not_comfyui_gets_one_message_everywhere(tmp_path: Path) -> None:
    """Like `python -m http.server`: 404 to GETs, 501 to POSTs."""
    import threading
    from functools import partial
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(tmp_path)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    series = tmp_path / "series.yaml"
    series.write_text("title: T\nbackend: svd\nepisodes:\n  - scenes:\n      - prompt: a fox\n", encoding="utf-8")
    try:
        for args in (["stats"], ["free"], ["interrupt"], ["queue"], ["queue", "--delete", "x"],
                     ["run", str(series)], ["replay", str(tmp_path / "series.yaml")]):
            result = CliRunner().invoke(main, [*args, "--server", url])
            assert result.exit_code == 2, (args, result.output)
            assert "this is not a ComfyUI server" in result.output, (args, result.output)
    finally:
        server.shutdown()


def test_queue_delete_names_a_prompt_that_is_not_queued(sim: Any) -> None:
    result = CliRunner().invoke(main, ["queue", "--server", sim.url, "--delete", "no-such-prompt"])
    assert result.exit_code == 2 and "prompt no-such-prompt is not queued" in result.output


def test_every_option_of_every_command_says_what_it_does() -> None:
    import click

    ctx = click.Context(main)

    def commands(group: click.Group, path: str) -> Any:
        for name in group.list_commands(ctx):  # the top level imports each command's module here
            command = group.get_command(ctx, name)
            assert command is not None, name
            if isinstance(command, click.Group):
                yield from commands(command, f"{path} {name}")
            else:
                yield f"{path} {name}", command

    found = dict(commands(main, "comfy-drive"))
    assert {"comfy-drive run", "comfy-drive try", "comfy-drive lock add", "comfy-drive auth youtube"} <= set(found)
    missing = [f"{path} {param.opts[0]}" for path, command in found.items()
               for param in command.params if isinstance(param, click.Option) and not param.help]
    assert missing == []


def test_a_prompt_queued_before_the_socket_opened_is_not_waited_for_30_s(sim: Any) -> None:
    """Its events went by unheard: the follower looks it up after a second, not after poll_after."""
    import time

    from comfy_driver.comfy.client import ComfyClient
    from comfy_driver.comfy.follow import Follower
    from comfy_driver.comfy.stream import EventStream

    client = ComfyClient(sim.url)
    queued = client.queue_prompt(IMAGE_GRAPH, client_id="late")
    time.sleep(0.3)  # it has finished by now, unheard
    with EventStream(client.address, "late") as stream:
        follower = Follower(client, stream)
        follower.watch(queued.prompt_id, IMAGE_GRAPH)
        t0 = time.monotonic()
        result = follower.wait(queued.prompt_id, timeout=10)
    assert result.files and time.monotonic() - t0 < 5
