"""`run --publish`, `publish` and `auth youtube` from the command line, against the fake YouTube."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from comfy_driver.cli import main
from comfy_driver.config.series import load_series
from comfy_driver.models.catalog import bundled_catalog
from comfy_driver.models.lock import load_lock
from comfy_driver.paths import EXAMPLES, MODELS_LOCK
from comfy_driver.pipeline.plan import build_plan
from comfy_driver.pipeline.supervisor import Supervisor
from comfy_driver.sim.executor import Timing
from comfy_driver.sim.server import SimServer
from tests.fakeyoutube import FakeYouTube
from tests.youtubekit import file_sha, sign_in

SERIES = """\
title: Publish Test
backend: svd
output: out
defaults: {width: 64, height: 64, fps: 8, frames: 8, params: {steps: 2}}
episodes:
  - id: one
    title: "{{ series.title }}: One"
    scenes:
      - {id: a, prompt: first scene, seed: 1}
      - {id: b, prompt: second scene, seed: 2}
  - id: two
    scenes:
      - {id: c, prompt: third scene, seed: 3}
publish:
"""
PUBLISH = """\
  title: "{{ episode.title }}"
  tags: [test]
  privacy: unlisted
"""


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The series rendered once (instant simulator); tests publish copies of it."""
    base = tmp_path_factory.mktemp("rendered")
    (base / "series.yaml").write_text(SERIES + PUBLISH, encoding="utf-8")
    sim = SimServer(base / "sim", bundled_catalog(load_lock(MODELS_LOCK)), timing=Timing())
    sim.start()
    try:
        loaded = load_series(base / "series.yaml")
        Supervisor(build_plan(loaded), [sim.url]).run()
    finally:
        sim.stop()
    shutil.rmtree(base / "sim")
    return base


@pytest.fixture
def yt() -> Iterator[FakeYouTube]:
    server = FakeYouTube()
    server.start()
    yield server
    server.stop()


def series(rendered: Path, tmp_path: Path, publish: str = PUBLISH) -> Path:
    folder = tmp_path / "series"
    shutil.copytree(rendered, folder)
    path = folder / "series.yaml"
    path.write_text(SERIES + publish, encoding="utf-8")
    return path


def cli(*args: Any) -> Any:
    return CliRunner().invoke(main, [str(a) for a in args])


def test_run_publish_uploads_each_episode_once_and_a_rerun_nothing(yt: FakeYouTube, tmp_path: Path) -> None:
    text = (EXAMPLES / "series.yaml").read_text(encoding="utf-8").replace("output: ../out", "output: out")
    path = tmp_path / "series.yaml"
    path.write_text(text, encoding="utf-8")
    sign_in(yt)
    result = cli("run", path, "--simulate", "instant", "--publish", "--youtube-endpoint", yt.url)
    assert result.exit_code == 0, result.output
    assert len(yt.videos) == 2 and yt.inserts == 2
    report = json.loads((tmp_path / "out" / "tiny-adventures" / "report.json").read_text())
    for episode in report["episodes"]:
        published = episode["published"]
        video = yt.videos[published["video_id"]]
        assert video["_sha256"] == file_sha(tmp_path / "out" / "tiny-adventures" / episode["path"])
        assert video["snippet"]["title"] == f"Tiny Adventures: {episode['title'].split(': ', 1)[1]}"
        assert video["status"]["privacyStatus"] == "private" and video["status"]["containsSyntheticMedia"] is True
        assert video["snippet"]["categoryId"] == "1" and video["snippet"]["defaultLanguage"] == "en"
        assert yt.thumbnails[video["id"]].startswith(b"\xff\xd8\xff")
        assert yt.playlist_of(video["id"]) == ["Tiny Adventures"]
        assert published["thumbnail"] == "set" and published["playlist"] == "Tiny Adventures"
    ep01 = yt.videos[report["episodes"][0]["published"]["video_id"]]
    assert "0:00 Arrival\n0:02 Stall" in ep01["snippet"]["description"]
    again = cli("run", path, "--simulate", "instant", "--publish", "--youtube-endpoint", yt.url)
    assert again.exit_code == 0, again.output
    assert "already published" in again.output and yt.inserts == 2 and len(yt.videos) == 2


def test_publish_command_dry_run_then_episode_then_all(yt: FakeYouTube, rendered: Path, tmp_path: Path) -> None:
    path = series(rendered, tmp_path)
    sign_in(yt, playlists=False)
    dry = cli("publish", path, "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "title:       Publish Test: One" in dry.output and "privacy:     unlisted" in dry.output
    assert "2 episode(s) valid; nothing uploaded" in dry.output and not yt.requests
    assert "64x64, 2 s: YouTube shows a square or vertical video of 3 minutes or less as a Short" in dry.output
    one = cli("publish", path, "--episode", "one", "--youtube-endpoint", yt.url)
    assert one.exit_code == 0, one.output
    assert len(yt.videos) == 1
    both = cli("publish", path, "--youtube-endpoint", yt.url)
    assert both.exit_code == 0 and "already published" in both.output and len(yt.videos) == 2


def test_quota_stops_publishing_and_the_next_run_continues(yt: FakeYouTube, rendered: Path, tmp_path: Path) -> None:
    path = series(rendered, tmp_path)
    sign_in(yt)
    yt.insert_quota = 1
    result = cli("publish", path, "--youtube-endpoint", yt.url)
    assert result.exit_code == 1
    assert "quota" in result.output and "midnight Pacific" in result.output and len(yt.videos) == 1
    yt.insert_quota = None
    result = cli("publish", path, "--youtube-endpoint", yt.url)
    assert result.exit_code == 0 and len(yt.videos) == 2 and yt.inserts == 3


@pytest.mark.parametrize("publish, expected", [
    ('  title: "{{ episode.title }} {{ \'x\' * 90 }}"\n', r"series.yaml:\d+: title: \d+ characters for episode one"),
    ('  title: "{{ episode.title }} <b>"\n', r"series.yaml:\d+: title: YouTube refuses '<' and '>'"),
    ("  tags: [\"{{ 'a' * 499 }}\"]\n", r"series.yaml:\d+: tags: \d+ characters"),
    ("  description: \"{{ 'x' * 5001 }}\"\n", r"series.yaml:\d+: description: \d+ bytes"),
    ('  schedule: {start: 2020-01-06, at: "17:00", timezone: Europe/Berlin}\n',
     r"series.yaml:\d+: schedule: episode one would go public at 2020-01-06T16:00:00Z, which is in the past"),
    ('  publish_at: "2020-01-01 10:00"\n  privacy: public\n', r"series.yaml:\d+: publish: a scheduled video stays"),
    ("  privacy: secret\n", r"series.yaml:\d+: publish.privacy: Input should be"),
    ("  titel: x\n", r"series.yaml:\d+: unknown key 'publish.titel'; did you mean 'title'"),
    ('  thumbnail: {scene: nope}\n', r"series.yaml:\d+: thumbnail.scene: episode one has no scene 'nope'"),
    ('  schedule: {start: 2030-01-06, at: "25:00", timezone: Mars/Base}\n', r"publish.schedule.at: '25:00'"),
])
def test_bad_publish_settings(yt: FakeYouTube, rendered: Path, tmp_path: Path, publish: str, expected: str) -> None:
    path = series(rendered, tmp_path, publish)
    sign_in(yt)
    result = cli("publish", path, "--youtube-endpoint", yt.url)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    import re

    assert re.search(expected, result.output), result.output
    assert not yt.sessions and not yt.videos


def test_no_token_revoked_token_and_missing_client_secrets(yt: FakeYouTube, rendered: Path, tmp_path: Path) -> None:
    path = series(rendered, tmp_path)
    result = cli("publish", path, "--youtube-endpoint", yt.url)
    assert result.exit_code == 2 and "no YouTube sign-in for account 'default'" in result.output
    assert f"run: comfy-drive auth youtube --series {path}" in result.output
    sign_in(yt, expired=True, refresh_token="revoked")
    result = cli("publish", path, "--youtube-endpoint", yt.url)
    assert result.exit_code == 2 and "has expired or was revoked" in result.output and "7 days" in result.output
    sign_in(yt)
    result = cli("publish", path, "--youtube-endpoint", "http://127.0.0.1:1/")
    assert result.exit_code == 2 and "a token is never sent to another address" in result.output
    result = cli("auth", "youtube", "--client-secrets", tmp_path / "missing.json", "--no-browser")
    assert result.exit_code == 2 and "missing.json: no such client secrets file" in result.output
    (tmp_path / "bad.json").write_text('{"web": {}}')
    result = cli("auth", "youtube", "--client-secrets", tmp_path / "bad.json", "--no-browser")
    assert result.exit_code == 2 and "not an OAuth client secrets file of a Desktop app" in result.output
    assert not yt.sessions and not yt.videos


def test_run_publish_checks_before_rendering(yt: FakeYouTube, rendered: Path, tmp_path: Path) -> None:
    path = tmp_path / "fresh" / "series.yaml"
    path.parent.mkdir()
    path.write_text(SERIES + '  title: "{{ episode.nope }}"\n', encoding="utf-8")
    result = cli("run", path, "--simulate", "instant", "--publish", "--youtube-endpoint", yt.url)
    assert result.exit_code == 2 and "undefined template variable" in result.output
    path.write_text(SERIES + PUBLISH, encoding="utf-8")
    result = cli("run", path, "--simulate", "instant", "--publish", "--youtube-endpoint", yt.url)
    assert result.exit_code == 2 and "no YouTube sign-in" in result.output
    assert not (path.parent / "out").exists() and not yt.sessions


def test_auth_youtube_signs_in_with_the_installed_app_flow(yt: FakeYouTube, tmp_path: Path) -> None:
    import os
    import stat
    import subprocess
    import sys

    import requests

    from comfy_driver.publish.auth import token_path

    secrets = tmp_path / "client_secret.json"
    secrets.write_text(json.dumps({"installed": {
        "client_id": "cid", "client_secret": "csecret", "auth_uri": f"{yt.url}o/oauth2/auth",
        "token_uri": f"{yt.url}token", "redirect_uris": ["http://localhost"]}}), encoding="utf-8")
    env = {**os.environ, "OAUTHLIB_INSECURE_TRANSPORT": "1"}  # the fake's token endpoint is plain http
    proc = subprocess.Popen([sys.executable, "-m", "comfy_driver.cli", "auth", "youtube", "--client-secrets",
                             str(secrets), "--no-browser", "--port", "0", "--account", "studio", "--playlists"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    url = next(line.strip() for line in proc.stdout if line.startswith("http"))
    requests.get(url, timeout=30)  # the user's browser: consent, then back to the local server
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "signed in: account 'studio'" in out
    consent = yt.consents[-1]
    assert consent["prompt"] == "consent" and consent["access_type"] == "offline" and consent["code_challenge"]
    assert sorted(consent["scope"].split()) == sorted(
        f"https://www.googleapis.com/auth/{s}" for s in ("youtube.upload", "youtube.readonly", "youtube"))
    path = token_path("studio")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    token = json.loads(path.read_text(encoding="utf-8"))
    assert token["refresh_token"] == "test-refresh-token" and token["client_id"] == "cid"
    assert "test-refresh-token" not in out + err and "csecret" not in out + err


def test_an_episode_is_published_while_the_next_one_renders(yt: FakeYouTube, tmp_path: Path) -> None:
    """`run --publish` hands each joined episode to the publisher at once: episode one is on YouTube
    before episode two has finished rendering."""
    import time

    from comfy_driver.pipeline.control import RunOptions
    from comfy_driver.pipeline.publishing import PublishAsJoined, open_publisher

    (tmp_path / "series.yaml").write_text(SERIES + PUBLISH, encoding="utf-8")
    loaded = load_series(tmp_path / "series.yaml")
    root = loaded.output_dir / loaded.slug
    sign_in(yt)
    sim = SimServer(tmp_path / "sim", bundled_catalog(load_lock(MODELS_LOCK)), timing=Timing(node=0.15))
    sim.start()
    publisher = open_publisher(loaded, root, endpoint=yt.url, republish=False, say=lambda _: None)
    started: dict[str, float] = {}
    publish_episode = publisher.publish_episode

    def timed(episode: Any, meta: Any) -> Any:
        started[episode.id] = time.time()
        return publish_episode(episode, meta)

    publisher.publish_episode = timed  # type: ignore[method-assign]
    joined = PublishAsJoined(loaded, root, publisher, lambda _: None)
    try:
        report = Supervisor(build_plan(loaded), [sim.url], RunOptions(depth=1, after_episode=joined)).run()
    finally:
        publisher.close()
        sim.stop()
    assert report.complete and set(joined.records) == {"one", "two"}
    assert all(r.status == "published" for r in joined.records.values()) and len(yt.videos) == 2
    two_done = max(m[1]["timestamp"] for e in sim.history.values() if e["prompt"][2] and
                   any(n["inputs"].get("text") == "third scene" for n in e["prompt"][2].values())
                   for m in e["status"]["messages"] if m[0] == "execution_success") / 1000
    assert started["one"] < two_done, "episode one waited for the whole run"
