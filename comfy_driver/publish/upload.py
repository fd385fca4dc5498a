"""A resumable upload of one file as a new video, its session recorded before any byte is sent.

googleapiclient's `next_chunk` does the protocol (the session POST, 256 KiB-aligned chunk PUTs, 308 +
Range, the `bytes */TOTAL` status query after an error). Two things are done here instead:
- Retries: `next_chunk(num_retries=0)` inside tenacity. The library's own chunk retries re-read an
  exhausted file slice (a full Content-Length with no bytes, hanging to the socket timeout); after any
  failure googleapiclient marks the request in error, so the next call asks the server where it stands
  and resumes from there.
- The session URI: the transport hands the POST's `Location` to `on_session` (the caller stores it)
  before the first chunk leaves, so a driver killed at any later point resumes the same session in a
  new process: `resumable_uri` set and the request marked in error, the first call is the status query,
  which answers 308 (go on) or, for a finished upload, the video itself. 404 means the session expired
  (SessionExpired: the caller looks for the finished video before starting again).
The file is read a chunk at a time, so memory does not grow with its size.
"""

from __future__ import annotations

import http.client
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httplib2
from googleapiclient.errors import HttpError

from comfy_driver.publish.errors import PublishError, classify
from comfy_driver.publish.service import Sleep, retrying, unreachable

CHUNK = 8 * 1024 * 1024  # a multiple of 256 KiB, as the protocol requires of every chunk but the last
ALIGN = 256 * 1024


class SessionExpired(PublishError):
    """The recorded upload session is gone (404): whether it finished must be found out another way."""


@dataclass
class Uploaded:
    video: dict[str, Any]  # the videos.insert reply
    sent: int  # media bytes this process put on the wire (a resumed upload sends only the rest)
    seconds: float
    retries: int


class _SessionRecorder:
    """An http object passed to next_chunk: reports the upload session as soon as the server opens it."""

    def __init__(self, inner: Any, on_session: Callable[[str], None]) -> None:
        self.http = inner
        self.on_session = on_session
        self.sent = 0  # media bytes put on the wire, resent ones included

    def request(self, uri: str, method: str = "GET", body: Any = None, headers: Any = None, **kw: Any) -> Any:
        if hasattr(body, "read"):
            # One chunk in memory: httplib2 resends a body after a stale connection, and a half-read file slice
            # would then send nothing under a full Content-Length.
            body = body.read()
        if method == "PUT" and headers and "*/" not in str(headers.get("Content-Range", "*/")):
            self.sent += int(headers.get("Content-Length", 0))
        resp, content = self.http.request(uri, method, body=body, headers=headers, **kw)
        if method == "POST" and resp.status == 200 and "location" in resp:
            self.on_session(resp["location"])
        return resp, content


def upload_video(youtube: Any, path: Path, body: dict[str, Any], *, notify_subscribers: bool = True,
                 session_uri: str | None = None, on_session: Callable[[str], None],
                 on_progress: Callable[[int, int], None] | None = None, chunk_size: int = CHUNK,
                 attempts: int = 8, sleep: Sleep | None = None) -> Uploaded:
    """Upload `path` as a new video with `body` (snippet, status), or resume `session_uri`."""
    from googleapiclient.http import MediaFileUpload

    if chunk_size % ALIGN:
        raise ValueError(f"chunk size {chunk_size} is not a multiple of 256 KiB")
    media = MediaFileUpload(str(path), mimetype="video/mp4", chunksize=chunk_size, resumable=True)
    request = youtube.videos().insert(part="snippet,status", body=body, media_body=media,
                                      notifySubscribers=notify_subscribers)
    if session_uri:
        request.resumable_uri = session_uri
        request._in_error_state = True  # the first call asks the session where it stands (pinned: 2.202)
    transport = _SessionRecorder(request.http, on_session)
    total = media.size()
    retries = 0
    started = time.monotonic()

    def count(_: BaseException) -> None:
        nonlocal retries
        retries += 1

    response = None
    if on_progress is not None and not session_uri:
        on_progress(0, total)
    try:
        while response is None:
            for attempt in retrying(attempts, sleep, on_retry=count):
                with attempt:
                    status, response = request.next_chunk(http=transport, num_retries=0)
            if on_progress is not None:
                on_progress(status.resumable_progress if status else total, total)
    except HttpError as exc:
        if request.resumable_uri and exc.status_code in (404, 410):
            raise SessionExpired(f"the upload session of {path.name} has expired") from None
        raise classify(exc, f"uploading {path.name}") from None
    except (OSError, http.client.HTTPException, httplib2.HttpLib2Error) as exc:
        raise unreachable(exc, f"uploading {path.name}") from None
    return Uploaded(video=response, sent=transport.sent, seconds=time.monotonic() - started, retries=retries)
