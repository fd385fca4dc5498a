"""The v2 transport against the real comfy-api-proxy in front of the simulator (instant, or with a few
tenths of a second per node where a test needs a job to be running)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from PIL import Image

from comfy_driver.comfy.job import Cancelled, Finished, Started, StepProgress
from comfy_driver.comfy.target import Target
from comfy_driver.comfy.v2 import V2Client
from comfy_driver.comfy.v2http import V2Error, WorkflowRefused
from comfy_driver.models.catalog import bundled_catalog
from comfy_driver.models.lock import load_lock
from comfy_driver.sim.executor import Timing

from .conftest import IMAGE_GRAPH, MODELS_LOCK

ROOT = Path(__file__).resolve().parents[1]


def test_a_job_runs_through_the_proxy_with_uploads_progress_and_downloads(behind_proxy: Any, tmp_path: Path) -> None:
    sim, proxy = behind_proxy(Timing(node=0.1))
    image = tmp_path / "ref.png"
    Image.new("RGB", (32, 16), "red").save(image)
    graph = {"1": {"class_type": "LoadImage", "inputs": {"image": "placeholder.png"}},
             "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
             "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "v2/inverted"}}}
    with V2Client(f"v2+{proxy.url}") as client:
        job = client.submit(graph, files={("1", "image"): image})
        assert job.graph is not None and job.graph["1"]["inputs"]["image"]["__type"] == "core/ASSET"
        events = list(job.events(timeout=30))
        assert isinstance(events[-1], Finished) and events[-1].error is None
        assert any(isinstance(e, Started) for e in events)
        steps = [e for e in events if isinstance(e, StepProgress)]
        assert steps and steps[-1].fraction == 1.0
        files = job.download(tmp_path / "out")
        assert [f.path for f in files] == [tmp_path / "out" / "inverted_00001_.png"]
        ran = client.http.json("GET", f"/jobs/{job.id}/workflow")["workflow"]
        assert ran["1"]["inputs"]["image"] == "ref.png" and sim.uploads == 1  # the asset, as a loader's file name
        again = client.submit(graph, files={("1", "image"): image})  # same bytes: reused by hash, not sent
        again.result(timeout=30)
        assert sim.uploads == 1


def test_an_expired_answer_for_a_finished_prompt_loses_nothing(behind_proxy: Any, tmp_path: Path) -> None:
    # The prompt leaves the queue half a second before its history entry appears: the proxy calls it
    # "expired" in between (on a real server the window is between the proxy's /history and /queue
    # reads). The transport asks again instead of calling it failed.
    _, proxy = behind_proxy(Timing(node=0.05, queue_gap=0.6))
    with V2Client(f"v2+{proxy.url}", poll=0.05, poll_max=0.1) as client:
        job = client.submit(IMAGE_GRAPH)
        files = job.download(tmp_path)
    assert "expired" in job.statuses and job.statuses[-1] == "succeeded"
    assert len(files) == 1 and files[0].size > 0


def test_cancel_through_the_proxy(behind_proxy: Any) -> None:
    sim, proxy = behind_proxy(Timing(node=0.5))
    with V2Client(f"v2+{proxy.url}", poll=0.05) as client:
        running = client.submit(IMAGE_GRAPH)
        waiting = client.submit(IMAGE_GRAPH)
        waiting.cancel()  # queued: taken off the queue (the proxy then no longer finds it)
        running.cancel()  # running: interrupted
        for job in (running, waiting):
            with pytest.raises(Cancelled):
                job.result(timeout=30)
    assert not any(entry["status"]["status_str"] == "success" for entry in sim.history.values())


def test_cancel_through_a_proxy_in_front_of_comfyui_without_per_job_cancel(behind_proxy: Any) -> None:
    # ComfyUI 0.3.64 has no /api/jobs/{id}/cancel: the proxy answers 200 and the job runs on. With the
    # ComfyUI behind the proxy named (`native`), the job is cancelled there (its id is the prompt id).
    sim, proxy = behind_proxy(Timing(node=0.5), catalog=bundled_catalog(load_lock(MODELS_LOCK), "0.3.64"))
    assert not sim.versions.has("jobs_api")
    with V2Client(Target(url=proxy.url, api="v2", native=sim.url), poll=0.05) as client:
        running = client.submit(IMAGE_GRAPH)
        waiting = client.submit(IMAGE_GRAPH)
        while running.refresh()["status"] != "running":
            time.sleep(0.05)
        waiting.cancel()
        running.cancel()
        for job in (running, waiting):
            with pytest.raises(Cancelled):
                job.result(timeout=30)
    assert not any(entry["status"]["status_str"] == "success" for entry in sim.history.values())


DRIVER = textwrap.dedent("""
    import json, sys, time
    from comfy_driver.comfy.v2 import V2Client
    graph, keyfile = json.loads(sys.argv[2]), sys.argv[3]
    def record(key):
        with open(keyfile, "w") as fh:
            fh.write(key)
    V2Client("v2+" + sys.argv[1]).submit(graph, on_key=record)
    time.sleep(60)  # killed here: the job was created, its id never recorded
""")


def test_a_driver_killed_mid_submit_reattaches_without_a_second_job(behind_proxy: Any, tmp_path: Path) -> None:
    sim, proxy = behind_proxy()
    keyfile = tmp_path / "key"
    driver = subprocess.Popen([sys.executable, "-c", DRIVER, proxy.url, json.dumps(IMAGE_GRAPH), str(keyfile)],
                              cwd=ROOT)
    try:
        for _ in range(300):
            if sim.history or driver.poll() is not None:
                break
            subprocess.run(["sleep", "0.05"])
        os.kill(driver.pid, signal.SIGKILL)
    finally:
        driver.wait(10)
    key = keyfile.read_text()
    with V2Client(f"v2+{proxy.url}") as client:
        job = client.find(key)
        assert job is not None
        assert job.download(tmp_path / "out")
        with pytest.raises(V2Error) as err:  # keys are single-use: resending it is refused, so find() it is
            client.http.request("POST", "/jobs", json={"workflow": IMAGE_GRAPH}, headers={"Idempotency-Key": key})
        assert err.value.code == "idempotency_key_reuse"
        assert client.find("never-sent") is None
    assert len(sim.history) == 1


def test_a_bad_graph_is_refused_with_the_endpoint_reason(behind_proxy: Any) -> None:
    _, proxy = behind_proxy()
    broken = json.loads(json.dumps(IMAGE_GRAPH))
    broken["2"]["inputs"]["image"] = ["9", 0]
    with V2Client(f"v2+{proxy.url}") as client:
        with pytest.raises(WorkflowRefused) as err:
            client.submit(broken)
        assert err.value.code == "invalid_workflow"
        assert requests.get(proxy.url + "/api/v2/jobs", timeout=5).json()["jobs"] == []


def test_a_refused_graph_names_each_node_error_the_endpoint_sent(behind_proxy: Any) -> None:
    # The proxy passes ComfyUI's node_errors on in the 422's details: the message names node and input
    # (as a native server's rejection does), not only "Prompt outputs failed validation".
    _, proxy = behind_proxy()
    broken = json.loads(json.dumps(IMAGE_GRAPH))
    broken["1"]["inputs"]["width"] = "wide"
    with V2Client(f"v2+{proxy.url}") as client:
        with pytest.raises(WorkflowRefused) as err:
            client.submit(broken)
    assert err.value.code == "invalid_workflow"
    lines = err.value.message.splitlines()
    assert len(lines) == 2 and lines[1].startswith('  node 1 "Blank" (EmptyImage) input \'width\': ')


def test_replay_a_gui_workflow_through_the_proxy(behind_proxy: Any, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from comfy_driver.cli import main

    sim, proxy = behind_proxy()
    result = CliRunner().invoke(main, ["replay", str(ROOT / "workflows" / "svd_from_image.json"), "--server",
                                       f"v2+{proxy.url}", "--set",
                                       f"Reference Image.image={ROOT / 'examples' / 'assets' / 'mira.png'}",
                                       "-o", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "validation skipped" in result.output  # the proxy serves no node catalogue, and that is said
    assert (tmp_path / "out" / "svd_00001_.mp4").stat().st_size > 0 and sim.uploads == 1


def test_preflight_uses_the_native_catalogue_behind_a_proxy(behind_proxy: Any) -> None:
    from comfy_driver.api_v2 import V2Target
    from comfy_driver.comfy.errors import PromptRejected
    from comfy_driver.comfy.target import Target

    sim, proxy = behind_proxy()
    with V2Target(Target(url=proxy.url, api="v2", native=sim.url)) as target:
        assert target.catalog_source == f"the node catalogue of {sim.url}"
        with pytest.raises(PromptRejected, match="Blank"):
            target.submit(IMAGE_GRAPH, sets={"Blank.width": "wide"})
        assert target.submit(IMAGE_GRAPH, sets={"Blank.width": 40}).result(timeout=30).outputs
    assert len(sim.history) == 1  # the bad one never reached the server


def test_doctor_reports_on_a_v2_target(behind_proxy: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from comfy_driver.api_v2 import V2Target
    from comfy_driver.cli import main
    from comfy_driver.comfy.target import Target
    from comfy_driver.config.backends import Backends
    from comfy_driver.comfy.catalog import Catalog
    from comfy_driver.models.doctor import pack_of
    from comfy_driver.models.doctor_v2 import diagnose_v2
    from comfy_driver.workflow.files import workflow_class_types

    monkeypatch.delenv("COMFY_API_KEY", raising=False)
    sim, proxy = behind_proxy()
    result = CliRunner().invoke(main, ["doctor", "--server", f"v2+{proxy.url}"])
    assert result.exit_code == 0, result.output
    assert "reachable" in result.output and "key from none" in result.output
    assert "not checked here" in result.output
    full = bundled_catalog(load_lock(MODELS_LOCK), "0.33.0")
    wan = workflow_class_types(json.loads((ROOT / "workflows" / "wan22_animate.json").read_text()))
    gone = sorted(c for c in wan if str(full.nodes[c].get("python_module", "")).startswith("custom_nodes."))[0]
    partial, partial_proxy = behind_proxy(catalog=Catalog({k: v for k, v in full.nodes.items() if k != gone},
                                                          version=full.version))
    lines: list[str] = []
    with V2Target(Target(url=partial_proxy.url, api="v2", native=partial.url)) as target:
        problems = diagnose_v2(target, lines.append, Backends(), ["svd", "wan22_animate"])
    report = "\n".join(lines)
    assert f"node catalogue: the node catalogue of {partial.url}" in report
    assert "workflow svd: passes this server's validation" in report
    assert f"node pack missing on the target: {pack_of(gone)} ({gone})" in report and problems == 1
    # a self-hosted proxy: the packs go into the ComfyUI behind it (no deployment, no Cloud)
    assert f"fix: on the ComfyUI behind the proxy ({partial.url}), install the packs" in report
    assert "serverless" not in report
