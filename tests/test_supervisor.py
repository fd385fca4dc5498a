"""The supervisor owns every task: an unexpected error in any of them (queueing, following, downloading,
stitching) stops the run cleanly with one message naming the scene and step, exit 1, and the next run
finishes with no scene rendered twice."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from comfy_driver.cli import main
from comfy_driver.comfy.client import ComfyClient
from comfy_driver.comfy.events import Executing
from comfy_driver.comfy.follow import Follower
from comfy_driver.media import stitch as media_stitch

from .simproc import resubmitted_after_success
from .test_run import SERIES, series_file


def _about_a_prompt(args: tuple[Any, ...]) -> bool:
    """Follower.feed(self, event): an event naming a node of a prompt (not a queue status)."""
    return isinstance(args[1], Executing) and args[1].node is not None


def _fail_on_call(monkeypatch: Any, owner: Any, name: str, call: int) -> list[int]:
    """Make owner.name raise KeyError('injected') on its `call`-th call (1-based; for Follower.feed, its
    `call`-th event about a prompt's node); count those calls."""
    real = getattr(owner, name)
    calls = [0]

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if owner is Follower and not _about_a_prompt(args):
            return real(*args, **kwargs)
        calls[0] += 1
        if calls[0] == call:
            raise KeyError("injected")
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, wrapper)
    return calls


@pytest.mark.parametrize("kind,owner,name,call,named", [
    ("queue", ComfyClient, "queue_prompt", 2, "one/b: queueing it on"),
    ("follow", Follower, "feed", 4, ": following it on"),
    ("download", ComfyClient, "download", 2, "one/b: reading its outcome and downloading its outputs"),
    ("stitch", media_stitch, "stitch", 1, ": joining its clips"),
])
def test_an_unexpected_error_in_any_task_stops_cleanly_and_the_rerun_finishes(
        sim: Any, tmp_path: Path, monkeypatch: Any, kind: str, owner: Any, name: str, call: int, named: str) -> None:
    path = series_file(tmp_path, SERIES)
    with monkeypatch.context() as patch:
        calls = _fail_on_call(patch, owner, name, call)
        result = CliRunner().invoke(main, ["run", str(path), "--server", sim.url, "--depth", "1"])
    assert calls[0] >= call
    assert result.exit_code == 1, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and named in errors[0] and "KeyError: 'injected'" in errors[0], result.output
    assert errors[0].startswith(("error: one/", "error: two/", "error: episode ")), errors  # names the scene
    assert "Traceback" not in result.output
    client = ComfyClient(sim.url)
    assert client.queued_ids()[1] == []  # our pending prompts were taken off the queue
    client.close()
    again = CliRunner().invoke(main, ["run", str(path), "--server", sim.url])
    assert again.exit_code == 0, again.output
    stats = {"submissions": sim.submission_log, "finished": sim.finished_log}
    assert resubmitted_after_success(stats) == []
    succeeded = [f["graph"] for f in sim.finished_log if f["status"] == "success"]
    assert len(succeeded) == len(set(succeeded)) == 3  # every scene rendered exactly once
    assert (tmp_path / "out" / "run-test" / "one" / "one.mp4").is_file()


def test_with_debug_the_traceback_is_shown(sim: Any, tmp_path: Path, monkeypatch: Any) -> None:
    _fail_on_call(monkeypatch, ComfyClient, "download", 1)
    result = CliRunner().invoke(main, ["--debug", "run", str(series_file(tmp_path)), "--server", sim.url])
    assert result.exit_code == 1 and "Traceback" in result.output and "KeyError: 'injected'" in result.output
