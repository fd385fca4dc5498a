"""Input files as Comfy API v2 assets: content-addressed by blake3, uploaded only when new.

Decisions:
- A file is hashed locally first (`blake3:<hex>`, the API's hash form); `HEAD /assets/by-hash/...`
  says whether the endpoint already holds those bytes, and `POST /assets/from-hash` then reuses them
  without sending a byte. Only a miss uploads (multipart, with `expected_hash` so a corrupted
  transfer is refused by the server, 409 `hash_mismatch`).
- The graph refers to an asset as `{"__type": "core/ASSET", "info": {id, hash, file_path}}`, the
  value the endpoint resolves to the file name the loader node expects.
"""

from __future__ import annotations

import mimetypes
from pathlib import Path
from typing import Any

import blake3

from comfy_driver.comfy.v2http import V2Error, V2Http

_CHUNK = 1 << 20


def hash_file(path: Path) -> str:
    """The API's content hash of a file: `blake3:` and 64 hex digits."""
    digest = blake3.blake3()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return "blake3:" + digest.hexdigest()


def asset_ref(asset: dict[str, Any]) -> dict[str, Any]:
    """How a graph input names an asset."""
    return {"__type": "core/ASSET", "info": {"id": asset["id"], "hash": asset.get("hash"),
                                             "file_path": asset.get("file_path")}}


def put_asset(http: V2Http, path: Path, *, name: str | None = None) -> tuple[dict[str, Any], bool]:
    """The asset holding `path`'s bytes, and whether they were sent (False: reused by hash)."""
    digest = hash_file(path)
    name = name or path.name
    if http.send("HEAD", f"/assets/by-hash/{digest}").status_code == 200:
        try:
            asset = http.json("POST", "/assets/from-hash", json={"hash": digest, "file_path": name})
            return asset, False
        except V2Error as exc:
            if exc.status != 404:  # gone between the two calls: upload it after all
                raise
    content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
    with path.open("rb") as fh:
        asset = http.json("POST", "/assets", files={"file": (name, fh, content_type)},
                          data={"content_type": content_type, "file_path": name, "expected_hash": digest,
                                "tags": "input"})
    if asset.get("hash") not in (None, digest):
        raise V2Error(f"{http.target.display}: the asset for {name} has hash {asset.get('hash')}, not {digest}",
                      code="hash_mismatch")
    return asset, True
