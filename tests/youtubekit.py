"""Helpers for the publishing tests: a signed-in account for the fake YouTube, episodes, a publisher."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from comfy_driver.config.publish import PublishSettings
from comfy_driver.publish import auth
from comfy_driver.publish.metadata import EpisodeInfo, SceneInfo, VideoMetadata, render_metadata
from comfy_driver.publish.publisher import PublishOptions, Publisher
from tests.fakeyoutube import ACCESS, REFRESH, FakeYouTube

CHUNK = 256 * 1024


def sign_in(yt: FakeYouTube, account: str = "default", *, playlists: bool = True, expired: bool = False,
            refresh_token: str = REFRESH) -> Path:
    """A token file for the fake server, as `auth youtube` would write it (in the user config folder: tests
    get their own, COMFY_DRIVE_CONFIG)."""
    from google.oauth2.credentials import Credentials

    expiry = datetime.now(timezone.utc).replace(tzinfo=None) + timedelta(hours=-1 if expired else 1)
    creds = Credentials(token=ACCESS, refresh_token=refresh_token, token_uri=f"{yt.url}token", client_id="cid",
                        client_secret="csecret", scopes=auth.scopes_for(playlists), expiry=expiry)
    return auth.save_token(account, creds, yt.url)


def episode(folder: Path, ep_id: str = "ep01", size: int = 3 * CHUNK + 1234, *, index: int = 1,
            seed: int = 0, write: bool = True) -> EpisodeInfo:
    """An episode whose file is `size` bytes of noise (the upload does not care what is inside); with
    write=False, the file written earlier."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{ep_id}.mp4"
    if write:
        block = hashlib.sha256(f"{ep_id}{seed}".encode()).digest() * 4096
        with path.open("wb") as fh:
            for start in range(0, size, len(block)):
                fh.write(block[:min(len(block), size - start)])
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    scenes = [SceneInfo("intro", 1, "a fox", "svd", path, 2.0), SceneInfo("walk", 2, "a fox walks", "svd", path, 3.0)]
    return EpisodeInfo("Tiny", ep_id, index, f"Tiny: {ep_id}", path, digest, scenes, models=["svd_xt.safetensors"])


def metadata(ep: EpisodeInfo, **settings: Any) -> VideoMetadata:
    return render_metadata(PublishSettings(**settings), ep, lambda name: f"series.yaml:{name}", ep.path.parent.parent)


def publisher(yt: FakeYouTube, ledger: Path, **options: Any) -> Publisher:
    options.setdefault("playlists", True)
    options.setdefault("chunk_size", CHUNK)
    return Publisher(ledger, PublishOptions(endpoint=yt.url, sleep=lambda _: None, **options))


def file_sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()

