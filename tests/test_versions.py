"""Version facts: what each server says about itself, and what follows from it."""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import CliRunner

from comfy_driver.cli import main
from comfy_driver.comfy.versions import FACTS, OLDEST, ServerVersions, Version, frontend_for
from comfy_driver.models.catalog import bundled_catalog

from .conftest import load_trace, shared_path


def test_version_parsing() -> None:
    assert Version.parse("0.3.64") == (0, 3, 64)
    assert Version.parse("v0.33.0") == (0, 33, 0)
    assert Version.parse("1.49.6") == (1, 49, 6)
    assert Version.parse("0.33") == (0, 33, 0)
    assert Version.parse("0.3.64-dev+abc") == (0, 3, 64)
    assert Version.parse("") is None and Version.parse(None) is None and Version.parse("nightly") is None
    assert Version(0, 3, 64) < Version(0, 4, 0) < Version(0, 33, 0)  # numeric, not text, order


def _stats_064() -> dict[str, Any]:
    return load_trace("trace_misc_routes.json")["/system_stats"]["body"]


def _stats_033() -> dict[str, Any]:
    probes = json.loads(shared_path("fixtures", "comfyui", "v0.33.0", "routes.json").read_text())["probes"]
    return next(p["body"] for p in probes if p["path"] == "/system_stats")


def test_recorded_servers_are_recognised() -> None:
    old = ServerVersions.from_system_stats(_stats_064())
    new = ServerVersions.from_system_stats(_stats_033())
    assert (old.comfyui, old.frontend) == ((0, 3, 64), (1, 27, 10))
    assert (new.comfyui, new.frontend) == ((0, 33, 0), (1, 49, 6))
    assert old.support_note() is None and new.support_note() is None
    assert old.facts == [f for f in FACTS if f.since <= (0, 3, 64)]
    assert {f.name for f in new.facts} == {f.name for f in FACTS}
    assert not old.has("uuid_prompt_ids") and new.has("uuid_prompt_ids")
    assert not old.has("jobs_api") and new.has("jobs_api")


def test_every_supported_release_between() -> None:
    oldest = ServerVersions.of("0.3.60")
    assert oldest.support_note() is None and oldest.frontend == (1, 26, 13)
    assert not oldest.has("templates_version") and ServerVersions.of("0.3.62").has("templates_version")
    assert ServerVersions.of("0.33.7").has("missing_node_type") and ServerVersions.of("0.33.7").frontend == (1, 49, 6)
    assert "older than the oldest supported" in str(ServerVersions.of("0.3.59").support_note())
    assert str(OLDEST) in str(ServerVersions.of("0.3.59").support_note())
    assert "newer than the newest supported" in str(ServerVersions.of("0.34.0").support_note())
    assert frontend_for(Version(0, 3, 1)) is None


def test_missing_frontend_version_is_filled_from_the_release() -> None:
    stats = _stats_033()
    stats["system"] = {k: v for k, v in stats["system"].items() if k != "required_frontend_version"}
    got = ServerVersions.from_system_stats(stats)
    assert got.frontend == (1, 49, 6) and not got.frontend_reported
    assert "not reported" in got.describe()
    unknown = ServerVersions.from_system_stats({"system": {}, "devices": []})
    assert unknown.comfyui is None and unknown.has("jobs_api")  # an unknown release is taken as the newest
    assert "does not report" in str(unknown.support_note())


@pytest.mark.parametrize("release", ["0.3.64", "0.33.0"])
def test_stats_shows_what_it_detected(sim_factory: Any, release: str) -> None:
    sim = sim_factory(catalog=bundled_catalog(release=release))
    result = CliRunner().invoke(main, ["stats", "--server", sim.url])
    assert result.exit_code == 0, result.output
    frontend = "1.27.10" if release == "0.3.64" else "1.49.6"
    assert result.output.startswith(f"ComfyUI {release}, frontend {frontend}\n  supported release\n")
    assert "node catalogue: " in result.output and "core" in result.output
    assert ("uuid_prompt_ids (since 0.33.0)" in result.output) == (release == "0.33.0")
    as_json = json.loads(CliRunner().invoke(main, ["stats", "--server", sim.url, "--json"]).output)
    assert as_json["comfyui"] == release and as_json["frontend"] == frontend and as_json["supported"]
    assert as_json["node_classes"] == len(bundled_catalog(release=release).nodes)
