"""A local stand-in for the YouTube Data API v3, enough for the real google-api-python-client.

It speaks the resumable upload protocol (a POST opening a session: 200 + Location; PUTs with
Content-Range: 308 + Range while partial, the video on completion; the `bytes */TOTAL` status query,
which answers a finished session with its video; 404 for an expired session), checks metadata as
YouTube does, bills quota, and serves channels, videos, playlists, playlistItems, thumbnails.set and
an OAuth token endpoint. Faults are injected per test: 5xx replies, connections dropped mid-chunk, a
lost final reply, expired sessions, spent quota, revoked refresh tokens, and holds (the handler waits
at a byte count or at completion, so a test can kill the client at that very moment).

Received bytes are hashed as they arrive (sha256) and not kept, so a multi-gigabyte upload needs no
memory or disk here.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import threading
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

CATEGORIES = {"1", "2", "10", "15", "17", "19", "20", "22", "23", "24", "25", "26", "27", "28", "29"}
ACCESS = "test-access-token"
REFRESH = "test-refresh-token"


def error(status: int, why: str, message: str, domain: str = "youtube.api") -> web.Response:
    body = {"error": {"code": status, "message": message, "errors": [{"message": message, "domain": domain,
                                                                      "reason": why}]}}
    return web.json_response(body, status=status)


@dataclass
class Session:
    id: str
    total: int
    body: dict[str, Any]
    received: int = 0
    digest: Any = field(default_factory=hashlib.sha256)
    video_id: str | None = None
    expired: bool = False


@dataclass
class Hold:
    """Pause the upload handler once `at` bytes have arrived over all sessions (or at a completion: None)."""

    at: int | None
    reached: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)


class FakeYouTube:
    def __init__(self, port: int = 0) -> None:
        self.port = port
        self.sessions: dict[str, Session] = {}
        self.videos: dict[str, dict[str, Any]] = {}
        self.uploads: list[str] = []  # newest first, as the uploads playlist lists them
        self.playlists: dict[str, dict[str, Any]] = {}
        self.items: list[tuple[str, str, str]] = []  # (item id, playlist id, video id)
        self.thumbnails: dict[str, bytes] = {}
        self.access = {ACCESS}
        self.revoked: set[str] = set()
        self.units = 0
        self.insert_quota: int | None = None  # videos.insert calls allowed (then quotaExceeded)
        self.inserts = 0
        self.upload_limit = False  # the channel's daily cap is reached
        self.put_faults: list[int] = []  # statuses for the next chunk PUTs (the body is read, then refused)
        self.drops: list[int] = []  # file offsets at which a chunk's connection is cut (in order)
        self.lose_final_reply = 0  # completions whose reply is lost (the connection is cut)
        self.thumbnail_forbidden = False
        self.playlist_item_not_found = 0  # playlistItems.insert answering 404 videoNotFound this often
        self.force_privacy: str | None = None  # what the channel makes of every upload
        self.hold: Hold | None = None
        self.requests: list[tuple[str, str]] = []
        self.consents: list[dict[str, str]] = []  # the authorization requests of sign-ins (the user said yes)
        self.token_requests: list[dict[str, str]] = []
        self._ids = itertools.count(1)

    # ------------------------------------------------------------------------------------------ control
    def start(self) -> str:
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()

        def main() -> None:
            asyncio.set_event_loop(self._loop)
            app = web.Application(client_max_size=1024 ** 4)
            app.router.add_post("/token", self._token)
            app.router.add_get("/o/oauth2/auth", self._consent)
            app.router.add_route("*", "/upload/youtube/v3/videos", self._upload)
            app.router.add_post("/upload/youtube/v3/thumbnails/set", self._thumbnail)
            app.router.add_get("/youtube/v3/channels", self._channels)
            app.router.add_get("/youtube/v3/videos", self._videos)
            app.router.add_route("*", "/youtube/v3/playlists", self._playlists)
            app.router.add_route("*", "/youtube/v3/playlistItems", self._playlist_items)
            self._runner = web.AppRunner(app, access_log=None)
            self._loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, "127.0.0.1", self.port)
            self._loop.run_until_complete(site.start())
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=main, daemon=True)
        self._thread.start()
        ready.wait(10)
        self.url = f"http://127.0.0.1:{self.port}/"
        return self.url

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def expire_sessions(self) -> None:
        for s in self.sessions.values():
            s.expired = True

    def video_sha256(self, video_id: str) -> str:
        return str(self.videos[video_id]["_sha256"])

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}{next(self._ids):08d}"

    # ------------------------------------------------------------------------------------------ auth
    async def _consent(self, request: web.Request) -> web.Response:
        """The browser's visit to Google's consent page, answered yes: back to the app with a code."""
        query = dict(request.query)
        self.consents.append(query)
        raise web.HTTPFound(f"{query['redirect_uri']}?code=consented-code&state={query['state']}")

    async def _token(self, request: web.Request) -> web.Response:
        form = await request.post()
        self.token_requests.append({k: str(v) for k, v in form.items()})
        if form.get("grant_type") == "authorization_code":
            if form.get("code") != "consented-code" or not form.get("code_verifier"):
                return web.json_response({"error": "invalid_grant"}, status=400)
            return web.json_response({"access_token": ACCESS, "refresh_token": REFRESH, "expires_in": 3599,
                                      "token_type": "Bearer", "scope": self.consents[-1]["scope"]})
        token = str(form.get("refresh_token", ""))
        if form.get("grant_type") != "refresh_token" or token in self.revoked or token != REFRESH:
            return web.json_response({"error": "invalid_grant", "error_description":
                                      "Token has been expired or revoked."}, status=400)
        fresh = f"access-{next(self._ids)}"
        self.access.add(fresh)
        return web.json_response({"access_token": fresh, "expires_in": 3599, "token_type": "Bearer"})

    def _authorized(self, request: web.Request) -> bool:
        self.requests.append((request.method, request.path))
        header = request.headers.get("Authorization", "")
        return header.startswith("Bearer ") and header[7:] in self.access

    @staticmethod
    def _unauthorized() -> web.Response:
        return error(401, "authError", "Invalid Credentials", "global")

    # ------------------------------------------------------------------------------------------ upload
    async def _upload(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request):
            return self._unauthorized()
        if request.method == "POST" and request.query.get("uploadType") == "resumable":
            return await self._open(request)
        if request.method == "PUT" and "upload_id" in request.query:
            return await self._put(request)
        return error(400, "badRequest", f"unsupported {request.method} {request.query_string}")

    async def _open(self, request: web.Request) -> web.Response:
        self.units += 1
        self.inserts += 1
        if self.insert_quota is not None and self.inserts > self.insert_quota:
            return error(403, "quotaExceeded", "The request cannot be completed because you have exceeded your "
                         "<a href=\"/youtube/v3/getting-started#quota\">quota</a>.", "youtube.quota")
        if self.upload_limit:
            return error(400, "uploadLimitExceeded", "The user has exceeded the number of videos they may upload.",
                         "youtube.video")
        body = await request.json()
        problem = self._check_metadata(body)
        if problem is not None:
            return problem
        total = int(request.headers["X-Upload-Content-Length"])
        session = Session(self._new_id("up"), total, body)
        session.body["_notify"] = request.query.get("notifySubscribers", "true")
        self.sessions[session.id] = session
        location = f"http://{request.host}/upload/youtube/v3/videos?uploadType=resumable&upload_id={session.id}"
        return web.Response(status=200, headers={"Location": location})

    @staticmethod
    def _check_metadata(body: dict[str, Any]) -> web.Response | None:
        snippet = body.get("snippet") or {}
        status = body.get("status") or {}
        title = snippet.get("title") or ""
        if not title or len(title) > 100 or "<" in title or ">" in title:
            return error(400, "invalidTitle", "The request metadata specifies an invalid or empty video title.")
        description = snippet.get("description") or ""
        if len(description.encode()) > 5000 or "<" in description or ">" in description:
            return error(400, "invalidDescription", "The request metadata specifies an invalid video description.")
        tags = snippet.get("tags") or []
        if sum(len(t) + (2 if " " in t else 0) for t in tags) + max(0, len(tags) - 1) > 500:
            return error(400, "invalidTags", "The request metadata specifies invalid video keywords.")
        if snippet.get("categoryId") not in CATEGORIES:
            return error(400, "invalidCategoryId", "The snippet.categoryId property specifies an invalid category "
                         "ID. Use the videoCategories.list method to retrieve supported categories.")
        if status.get("publishAt") and status.get("privacyStatus") != "private":
            return error(400, "invalidPublishAt", "The request metadata specifies an invalid scheduled publishing "
                         "time.")
        return None

    async def _put(self, request: web.Request) -> web.StreamResponse:
        session = self.sessions.get(request.query["upload_id"])
        if session is None or session.expired:
            return error(404, "notFound", "The upload session was not found.")
        content_range = request.headers.get("Content-Range", "")
        if content_range.startswith("bytes */"):
            await request.read()
            return self._state(session)
        first, last, total = _parse_range(content_range)
        if total != session.total or first > session.received:
            await request.read()
            return self._state(session)
        if self.put_faults:
            await request.read()
            status = self.put_faults.pop(0)
            return error(status, "backendError", "Backend Error")
        cut = self.drops[0] if self.drops and first <= self.drops[0] <= last else None
        offset = first
        while True:
            block = await request.content.read(256 * 1024 if cut is None else max(1, min(64 * 1024, cut - offset)))
            if not block:
                break
            # bytes already held (a chunk sent again) are skipped, the rest appended in order
            fresh = block[max(0, session.received - offset):]
            offset += len(block)
            if fresh:
                session.digest.update(fresh)
                session.received += len(fresh)
            if cut is not None and offset >= cut:
                self.drops.pop(0)
                assert request.transport is not None
                request.transport.close()
                return web.Response(status=500)
            await self._maybe_hold()
        if session.received < session.total:
            return self._state(session)
        if session.video_id is None:
            self._complete(session)
        if self.hold is not None and self.hold.at is None:
            await self._wait(self.hold)
        if self.lose_final_reply:
            self.lose_final_reply -= 1
            assert request.transport is not None
            request.transport.close()
            return web.Response(status=500)
        return self._state(session)

    @property
    def received(self) -> int:
        return sum(s.received for s in self.sessions.values())

    async def _maybe_hold(self) -> None:
        hold = self.hold
        if hold is not None and hold.at is not None and self.received >= hold.at:
            await self._wait(hold)

    async def _wait(self, hold: Hold) -> None:
        self.hold = None
        hold.reached.set()
        for _ in range(200):
            if hold.release.is_set():
                return
            await asyncio.sleep(0.025)

    def _state(self, session: Session) -> web.Response:
        if session.video_id is not None:
            return web.json_response(self._public(self.videos[session.video_id]), status=201)
        headers = {"Range": f"bytes=0-{session.received - 1}"} if session.received else {}
        return web.Response(status=308, headers=headers)

    def _complete(self, session: Session) -> None:
        video_id = self._new_id("vid")
        status = dict(session.body.get("status") or {})
        status["privacyStatus"] = self.force_privacy or status.get("privacyStatus") or "public"
        status["uploadStatus"] = "uploaded"
        self.videos[video_id] = {"kind": "youtube#video", "id": video_id, "snippet": session.body.get("snippet"),
                                 "status": status, "_sha256": session.digest.hexdigest(), "_size": session.received,
                                 "_notify": session.body.get("_notify")}
        self.uploads.insert(0, video_id)
        session.video_id = video_id

    @staticmethod
    def _public(video: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in video.items() if not k.startswith("_")}

    # ------------------------------------------------------------------------------------------ the rest
    async def _thumbnail(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self._unauthorized()
        self.units += 50
        video_id = request.query.get("videoId", "")
        data = await request.read()
        if video_id not in self.videos:
            return error(404, "videoNotFound", "The video that you are trying to update cannot be found.")
        if self.thumbnail_forbidden:
            return error(403, "forbidden", "The authenticated user doesn't have permissions to upload and set custom "
                         "video thumbnails.", "youtube.thumbnail")
        if not (data.startswith(b"\xff\xd8\xff") or data.startswith(b"\x89PNG")):
            return error(400, "invalidImage", "The provided image content is invalid.", "youtube.thumbnail")
        self.thumbnails[video_id] = data
        return web.json_response({"kind": "youtube#thumbnailSetResponse",
                                  "items": [{"default": {"url": f"https://i.ytimg.com/vi/{video_id}/default.jpg"}}]})

    async def _channels(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self._unauthorized()
        self.units += 1
        return web.json_response({"items": [{"id": "UCfakechannel", "contentDetails": {
            "relatedPlaylists": {"uploads": "UUfakechannel"}}}]})

    async def _videos(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self._unauthorized()
        self.units += 1
        ids = request.query.get("id", "").split(",")
        return web.json_response({"items": [self._public(self.videos[i]) for i in ids if i in self.videos]})

    async def _playlists(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self._unauthorized()
        if request.method == "POST":
            self.units += 50
            body = await request.json()
            playlist_id = self._new_id("PL")
            self.playlists[playlist_id] = {"id": playlist_id, "snippet": body["snippet"], "status": body.get("status")}
            return web.json_response(self.playlists[playlist_id])
        self.units += 1
        return web.json_response(_page(list(self.playlists.values()), request))

    async def _playlist_items(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self._unauthorized()
        if request.method == "POST":
            self.units += 50
            body = await request.json()
            snippet = body["snippet"]
            video_id = snippet["resourceId"]["videoId"]
            if self.playlist_item_not_found:
                self.playlist_item_not_found -= 1
                return error(404, "videoNotFound", "The video cannot be found.")
            if snippet["playlistId"] not in self.playlists or video_id not in self.videos:
                return error(404, "playlistNotFound", "The playlist cannot be found.")
            item_id = self._new_id("PLI")
            self.items.append((item_id, snippet["playlistId"], video_id))
            return web.json_response({"id": item_id, "snippet": snippet})
        self.units += 1
        playlist_id = request.query.get("playlistId", "")
        if playlist_id == "UUfakechannel":
            rows = [(f"UU-{v}", playlist_id, v) for v in self.uploads]
        elif playlist_id not in self.playlists:
            return error(404, "playlistNotFound", "The playlist identified with the request's playlistId parameter "
                         "cannot be found.")
        else:
            rows = [r for r in self.items if r[1] == playlist_id]
        if "videoId" in request.query:
            rows = [r for r in rows if r[2] == request.query["videoId"]]
        items = [{"id": i, "contentDetails": {"videoId": v}, "snippet": {"playlistId": p,
                                                                         "resourceId": {"videoId": v}}}
                 for i, p, v in rows]
        return web.json_response(_page(items, request))

    # ------------------------------------------------------------------------------------------ views
    def videos_of(self, marker: str) -> list[dict[str, Any]]:
        """The videos carrying a tag (an episode's marker)."""
        return [v for v in self.videos.values() if marker in ((v.get("snippet") or {}).get("tags") or [])]

    def playlist_of(self, video_id: str) -> list[str]:
        return [self.playlists[p]["snippet"]["title"] for _, p, v in self.items if v == video_id]


def _parse_range(value: str) -> tuple[int, int, int]:
    span, _, total = value.removeprefix("bytes ").partition("/")
    first, _, last = span.partition("-")
    return int(first), int(last), int(total)


def _page(items: list[dict[str, Any]], request: web.Request) -> dict[str, Any]:
    size = int(request.query.get("maxResults", "5"))
    start = int(request.query.get("pageToken") or 0)
    page: dict[str, Any] = {"items": items[start:start + size], "pageInfo": {"totalResults": len(items)}}
    if start + size < len(items):
        page["nextPageToken"] = str(start + size)
    return page



def main() -> None:
    """`python -m tests.fakeyoutube --port 8099`: serve the fake and sign the default account in to it
    (in the user config folder: point COMFY_DRIVE_CONFIG at a scratch folder, not your real one)."""
    import argparse
    import signal
    import time

    from tests.youtubekit import sign_in

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--port", type=int, default=8099)
    args = parser.parse_args()
    server = FakeYouTube(port=args.port)
    url = server.start()
    print(f"fake YouTube on {url}; signed in: {sign_in(server)}", flush=True)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        for video in server.videos.values():
            print(f"{video['id']}: {video['snippet']['title']!r} {video['status']['privacyStatus']} "
                  f"{video['_size']} bytes, playlists {server.playlist_of(video['id'])}, "
                  f"thumbnail {'yes' if video['id'] in server.thumbnails else 'no'}", flush=True)


if __name__ == "__main__":
    main()
