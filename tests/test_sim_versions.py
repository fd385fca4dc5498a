"""The simulator in both version modes runs every backend of the examples, end to end."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import requests
from click.testing import CliRunner

from comfy_driver.api import simulator
from comfy_driver.cli import main
from comfy_driver.errors import UserError
from comfy_driver.models.catalog import bundled_catalog, sim_release
from comfy_driver.models.lock import load_lock
from comfy_driver.paths import EXAMPLES, MODELS_LOCK

RUNS = [("0.33.0", "wan_animate.yaml", None), ("0.33.0", "series.yaml", None),
        ("0.33.0", "wan_animate.yaml", "wan22_5b"), ("0.3.64", "wan_animate.yaml", "wan22_5b")]  # 0.3.64 with the examples' own backends: test_backends, test_run


@pytest.mark.parametrize(("release", "example", "backend"), RUNS)
def test_examples_run_on_each_release(sim_factory: Any, tmp_path: Path, release: str, example: str,
                                      backend: str | None) -> None:
    sim = sim_factory(catalog=bundled_catalog(load_lock(MODELS_LOCK), release))
    text = (EXAMPLES / example).read_text().replace("output: ../out", f"output: {tmp_path}")
    path = tmp_path / example
    path.write_text(text.replace("assets/", f"{EXAMPLES / 'assets'}/"))
    args = ["run", str(path), "--server", sim.url, "--json"] + (["--backend", backend] if backend else [])
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["scenes"] and all(s["status"] == "done" for s in report["scenes"])
    saves = [n for e in sim.history.values() for n in e["prompt"][2].values() if n["class_type"] == "SaveVideo"]
    assert saves
    if release == "0.33.0":  # the dynamic combo, as that release's GUI fills it
        assert all(n["inputs"]["format"] == "mp4" and "format.codec" in n["inputs"] for n in saves)
    else:
        assert all("format.codec" not in n["inputs"] for n in saves)


def test_sim_command_plays_the_release(tmp_path: Path) -> None:
    assert sim_release("0.33") == "0.33.0" and sim_release("v0.3.64") == "0.3.64"
    with pytest.raises(UserError, match="plays ComfyUI 0.3.64 and 0.33.0"):
        sim_release("0.20.1")
    server = simulator(tmp_path, speed="instant", comfyui="0.33.0")
    url = server.start()
    try:
        stats = requests.get(f"{url}/system_stats").json()["system"]
        assert (stats["comfyui_version"], stats["required_frontend_version"]) == ("0.33.0", "1.49.6")
        assert requests.get(f"{url}/api/jobs").status_code == 200
        assert "missing_node_type" in CliRunner().invoke(main, ["stats", "--server", url]).output
    finally:
        server.stop()
    result = CliRunner().invoke(main, ["sim", "--comfyui", "0.20", "--root", str(tmp_path)])
    assert result.exit_code != 0 and "plays ComfyUI 0.3.64 and 0.33.0" in result.output
