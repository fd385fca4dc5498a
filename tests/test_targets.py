"""Targets: native ComfyUI or Comfy API v2, in series.yaml and on the command line; keys never in the file."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from comfy_driver.comfy.target import Target, native_only, parse_target
from comfy_driver.config.series import load_series
from comfy_driver.errors import UserError

SERIES = """title: t
servers:
  - http://gpu1:8188
  - {url: "https://cloud.comfy.org", api: v2, key_env: STUDIO_KEY, max_jobs: 3}
  - v2+http://127.0.0.1:8189
episodes:
  - title: e
    scenes: [{prompt: a cat}]
"""


def test_series_lists_native_and_v2_targets(tmp_path: Path) -> None:
    path = tmp_path / "series.yaml"
    path.write_text(SERIES)
    targets = load_series(path).series.targets
    assert [t.display for t in targets] == ["http://gpu1:8188", "v2+https://cloud.comfy.org", "v2+http://127.0.0.1:8189"]
    assert targets[1] == Target(url="https://cloud.comfy.org", api="v2", key_env="STUDIO_KEY", max_jobs=3)
    with pytest.raises(UserError, match="compare measures time and memory on native ComfyUI servers only") as err:
        load_series(path).series.server_urls  # noqa: B018 - compare samples memory, which v2 does not report
    assert "v2+https://cloud.comfy.org" in str(err.value) and "--simulate" in str(err.value)


def test_a_key_in_series_yaml_is_refused_with_the_way_to_give_it(tmp_path: Path) -> None:
    path = tmp_path / "series.yaml"
    path.write_text(SERIES.replace("max_jobs: 3}", "max_jobs: 3, api_key: sk-secret-1}"))
    with pytest.raises(UserError) as err:
        load_series(path)
    assert "key_env" in str(err.value) and "sk-secret-1" not in str(err.value)
    with pytest.raises(UserError, match="no user:password") as err:
        parse_target("v2+https://me:sk-secret-2@cloud.comfy.org")
    assert "sk-secret-2" not in str(err.value)


@pytest.mark.parametrize("entry, message", [
    ("v2+ftp://host", "not an http"),
    ({"url": "http://h:8188", "key_env": "K"}, "belong to an api: v2 target"),
    ({"url": "http://h", "api": "v3"}, "api"),
    ({"url": "http://h", "api": "v2", "max_jobs": 0}, "max_jobs"),
    ({"url": "http://h", "api": "v2", "key_env": "not a name"}, "key_env"),
])
def test_bad_targets_are_clear_errors(entry: object, message: str) -> None:
    with pytest.raises(UserError, match=message):
        parse_target(entry)  # type: ignore[arg-type]


def test_key_from_environment_then_credentials_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = tmp_path / "credentials.json"
    store.write_text(json.dumps({"servers": {"https://dep.run.comfy.app": {"headers": {"Authorization": "Bearer stored"}}}}))
    os.chmod(store, 0o600)
    monkeypatch.setenv("COMFY_DRIVE_CREDENTIALS", str(store))
    monkeypatch.delenv("COMFY_API_KEY", raising=False)
    target = parse_target("v2+https://dep.run.comfy.app")
    assert target.auth_headers() == {"Authorization": "Bearer stored"}
    monkeypatch.setenv("COMFY_API_KEY", "from-env")
    assert target.auth_headers() == {"Authorization": "Bearer from-env"}
    assert "from-env" not in repr(target) and "stored" not in repr(target)
    assert parse_target("v2+https://other.example").auth_headers() == {"Authorization": "Bearer from-env"}
    monkeypatch.delenv("COMFY_API_KEY")
    assert parse_target("v2+https://other.example").auth_headers() == {}  # a proxy without --token
    assert parse_target("http://gpu1:8188").auth_headers() == {}


def test_compare_refuses_a_v2_server_on_the_command_line() -> None:
    assert native_only(["http://a:8188", Target(url="http://b:8188")]) == ["http://a:8188", "http://b:8188"]
    with pytest.raises(UserError, match="native ComfyUI servers only"):
        native_only(["http://a:8188", "V2+http://b:8189"])
