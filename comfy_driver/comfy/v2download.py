"""Downloading a v2 output with Range resume, confined to the output folder.

Decisions:
- The bytes go to a partial file named after the output (`.NAME.v2part`) in the output folder,
  which is reached without following links and opened without following one; a download cut
  short (a killed driver, a dropped connection) resumes from the partial file's length with
  `Range: bytes=N-`. A server that answers 200 instead of 206 sends it all again.
- The output's name is the server's, sanitised to a plain name inside the folder; the file
  appears under it only when complete (a rename), and its sha256 is taken from the finished file.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import requests

from comfy_driver import confined
from comfy_driver.comfy.client import Downloaded
from comfy_driver.comfy.outputs import safe_destination
from comfy_driver.comfy.v2http import V2Http
from comfy_driver.errors import RunError

_CHUNK = 1 << 16
_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
_FLAGS = os.O_WRONLY | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)


def fetch_resumable(http: V2Http, url: str, folder: Path, name: str, *, within: Path | None = None) -> Downloaded:
    """GET `url` into folder/name (sanitised), resuming a partial file; the finished file's digest.
    `folder` is reached from `within` (default: itself), the folder the write must stay in, without
    following a link."""
    plain = next((p for p in reversed(re.split(r"[\\/]+", name)) if p not in ("", ".", "..")), "")
    target = safe_destination(folder, "", plain)  # one plain name: the file lands in folder itself
    root = within or folder
    confined.folder(root, folder.relative_to(root).as_posix() if folder != root else "")
    partial = folder / f".{target.name[:120]}.v2part"
    fd = os.open(partial, _FLAGS, 0o644)
    try:
        have = os.fstat(fd).st_size
        response = http.send("GET", url, stream=True, headers={"Range": f"bytes={have}-"} if have else {})
        with response:
            if response.status_code == 416 and have:  # nothing past what we hold: start over
                os.ftruncate(fd, 0)
                os.close(fd)
                fd = -1
                partial.unlink()
                return fetch_resumable(http, url, folder, name, within=within)
            start = 0
            if response.status_code == 206:
                match = _RANGE.match(response.headers.get("Content-Range", ""))
                start = int(match.group(1)) if match else 0
                total = int(match.group(3)) if match and match.group(3) != "*" else None
            elif response.status_code == 200:
                length = response.headers.get("Content-Length")
                total = int(length) if length is not None else None
            else:
                raise RunError(f"downloading {name!r} from {http.target.display} failed ({response.status_code})")
            if start > have:
                raise RunError(f"downloading {name!r}: the server resumed at byte {start}, not {have}")
            os.lseek(fd, start, os.SEEK_SET)
            try:
                for chunk in response.iter_content(_CHUNK):
                    os.write(fd, chunk)
            except requests.exceptions.RequestException as exc:
                raise RunError(f"download of {name!r} was cut short ({exc}); run again to resume it") from None
            size = os.lseek(fd, 0, os.SEEK_CUR)
            os.ftruncate(fd, size)
            if total is not None and size != total:
                raise RunError(f"download of {name!r} was cut short ({size} of {total} bytes); run again to resume it")
    finally:
        if fd >= 0:
            os.close(fd)
    digest = hashlib.sha256()
    with partial.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    os.replace(partial, target)
    return Downloaded(target, digest.hexdigest(), size)
