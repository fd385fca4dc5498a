"""The YouTube Data API client: google-api-python-client built from its bundled discovery document.

The bundled document needs no network. Another endpoint (a local test server) is set as the document's
rootUrl, the one way that also moves the media upload paths (`client_options` would send uploads to
https://host/upload/... of the real path). Every call that is not a media chunk goes through `call`:
retried on 5xx, 429 and dropped connections with backoff, its final error read into one clear
exception. The transport is httplib2 from googleapiclient's `build_http`, which keeps 308 replies
from being followed as redirects.
"""

from __future__ import annotations

import functools
import http.client
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httplib2
import tenacity
from googleapiclient.errors import HttpError

from comfy_driver.errors import UserError
from comfy_driver.publish.errors import TRANSIENT_STATUSES, PublishError, classify, reason

Sleep = Callable[[float], None]


@functools.lru_cache(maxsize=1)
def _discovery_text() -> str:
    import googleapiclient

    return (Path(googleapiclient.__file__).parent / "discovery_cache" / "documents" / "youtube.v3.json").read_text(
        encoding="utf-8")


def check_endpoint(endpoint: str) -> str:
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise UserError(f"--youtube-endpoint {endpoint!r} is not an http(s) address",
                        hint="write it like http://127.0.0.1:8080")
    return endpoint.rstrip("/") + "/"


def build_youtube(credentials: Any, endpoint: str | None = None) -> Any:
    """A youtube v3 Resource sending `credentials` to the Google API or to `endpoint`."""
    import google_auth_httplib2
    from googleapiclient.discovery import build_from_document
    from googleapiclient.http import build_http

    doc = json.loads(_discovery_text())
    if endpoint:
        doc["rootUrl"] = check_endpoint(endpoint)
    authorized = google_auth_httplib2.AuthorizedHttp(credentials, http=build_http())
    return build_from_document(doc, http=authorized)


def is_transient(exc: BaseException) -> bool:
    """A failure worth another try: 5xx, rate limits, and connections that dropped or timed out."""
    if isinstance(exc, HttpError):
        status = exc.status_code
        return status in TRANSIENT_STATUSES or status == 429 or (
            status == 403 and reason(exc) in ("rateLimitExceeded", "userRateLimitExceeded"))
    return isinstance(exc, (OSError, http.client.HTTPException, httplib2.HttpLib2Error)) and \
        not isinstance(exc, httplib2.ServerNotFoundError)


def unreachable(exc: BaseException, what: str) -> PublishError:
    """A connection failure that outlasted the retries."""
    return PublishError(f"{what}: no answer from YouTube after several tries ({type(exc).__name__}: {exc})",
                        hint="check the network; the next run resumes where this one stopped")


def retrying(attempts: int, sleep: Sleep | None, on_retry: Callable[[BaseException], None] | None = None,
             extra: Callable[[BaseException], bool] | None = None) -> tenacity.Retrying:
    """Backoff with jitter (1 s doubling to 60 s); `sleep` is injectable so tests never wait."""
    def retry(exc: BaseException) -> bool:
        return is_transient(exc) or (extra is not None and extra(exc))

    def before_sleep(state: tenacity.RetryCallState) -> None:
        if on_retry is not None and state.outcome is not None and state.outcome.exception() is not None:
            on_retry(state.outcome.exception())  # type: ignore[arg-type]

    kwargs: dict[str, Any] = {"sleep": sleep} if sleep is not None else {}
    return tenacity.Retrying(retry=tenacity.retry_if_exception(retry), stop=tenacity.stop_after_attempt(attempts),
                             wait=tenacity.wait_exponential_jitter(initial=1, max=60), reraise=True,
                             before_sleep=before_sleep, **kwargs)


class Calls:
    """Runs API requests with retries; counts the units they spend of the shared daily quota (uploads,
    videos.insert, have a bucket of their own and are not counted here)."""

    COSTS = {"thumbnails.set": 50, "playlists.insert": 50, "playlistItems.insert": 50, "videos.update": 50}

    def __init__(self, youtube: Any, *, attempts: int = 6, sleep: Sleep | None = None,
                 on_auth_error: Callable[[Exception], Exception] | None = None) -> None:
        self.youtube = youtube
        self.attempts = attempts
        self.sleep = sleep
        self.on_auth_error = on_auth_error
        self.units = 0

    def __call__(self, request: Any, what: str, *, retry_if: Callable[[BaseException], bool] | None = None) -> Any:
        from google.auth.exceptions import RefreshError

        self.units += self.COSTS.get(getattr(request, "methodId", "").removeprefix("youtube."), 1)
        try:
            for attempt in retrying(self.attempts, self.sleep, extra=retry_if):
                with attempt:
                    return request.execute(num_retries=0)
        except HttpError as exc:
            raise classify(exc, what) from None
        except (OSError, http.client.HTTPException, httplib2.HttpLib2Error) as exc:
            raise unreachable(exc, what) from None
        except RefreshError as exc:
            if self.on_auth_error is None:
                raise
            raise self.on_auth_error(exc) from None
        raise AssertionError("unreachable")
