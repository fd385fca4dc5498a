"""Publishing one episode, never twice: upload (resumed if a session is recorded), thumbnail, playlist.

The ledger decides what is left. An episode with a video id for the same file is not uploaded again;
a re-rendered one (another sha256) is a new version and waits for --republish. A recorded session is
asked first: a finished one answers with its video. An expired one (404) could hide a finished upload
whose reply was lost, so the channel's uploads playlist (1 quota unit a page) is searched for the tag
that marks this episode's file before anything is uploaded again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from googleapiclient.errors import HttpError

from comfy_driver.errors import UserError
from comfy_driver.publish import auth
from comfy_driver.publish.errors import MetadataRejected, PublishError, reason
from comfy_driver.publish.ledger import DONE, Ledger, Upload
from comfy_driver.publish.metadata import EpisodeInfo, Frame, VideoMetadata, check_thumbnail_file
from comfy_driver.publish.record import PublishRecord
from comfy_driver.publish.service import Calls, Sleep, build_youtube
from comfy_driver.publish.upload import CHUNK, SessionExpired, Uploaded, upload_video


@dataclass
class PublishOptions:
    account: str = "default"
    playlists: bool = False  # the settings name a playlist: the sign-in needs the manage scope
    endpoint: str | None = None  # another API origin (a local test server)
    republish: bool = False
    chunk_size: int = CHUNK
    attempts: int = 8
    sleep: Sleep | None = None  # tests: no real backoff
    search_pages: int = 4  # pages of 50 recent uploads searched for an upload whose reply was lost


class Publisher:
    """Owns the YouTube client and the ledger of one series; publish_episode is called per episode."""

    def __init__(self, ledger_path: Path, options: PublishOptions, *, say: Callable[[str], None] = lambda _: None,
                 on_progress: Callable[[str, int, int], None] | None = None) -> None:
        self.options = options
        self.say = say
        self.on_progress = on_progress
        scopes = auth.scopes_for(options.playlists)
        creds = auth.load_credentials(options.account, scopes=scopes, endpoint=options.endpoint)
        self.calls = Calls(build_youtube(creds, options.endpoint), sleep=options.sleep,
                           on_auth_error=lambda exc: auth.dead_token(options.account, exc))
        self.youtube = self.calls.youtube
        self.ledger = Ledger(ledger_path)
        self._uploads_playlist: str | None = None

    def close(self) -> None:
        self.ledger.close()

    def check_channel(self) -> str:
        """The channel's uploads playlist id; proves the sign-in works before anything is sent."""
        if self._uploads_playlist is None:
            reply = self.calls(self.youtube.channels().list(mine=True, part="id,contentDetails"), "reading the channel")
            items = reply.get("items") or []
            if not items:
                raise UserError(f"the account {self.options.account!r} has no YouTube channel",
                                hint="create the channel at youtube.com, then publish again")
            self._uploads_playlist = items[0]["contentDetails"]["relatedPlaylists"]["uploads"]
        return self._uploads_playlist

    # --------------------------------------------------------------------------------------------------
    def publish_episode(self, episode: EpisodeInfo, meta: VideoMetadata) -> PublishRecord:
        """Upload the episode unless it is on YouTube already; then its thumbnail and playlist."""
        row = self.ledger.get(episode.id)
        if row is not None and row.video_id and row.sha256 != episode.sha256:
            if not self.options.republish:
                return PublishRecord.of(row, "changed")
            self.say(f"episode {episode.id}: re-rendered; uploading the new version (--republish)")
            row = self._start(episode, row.previous_ids + [row.video_id])
        if row is None or (not row.video_id and row.sha256 != episode.sha256):
            row = self._start(episode, row.previous_ids if row else [])
        if row.state == DONE:
            return PublishRecord.of(row, "already published")
        self.check_channel()
        warnings: list[str] = []
        if not row.video_id:
            video = self._upload(episode, meta, row)
            reported = (video.get("status") or {}).get("privacyStatus")
            if reported and reported != meta.privacy:
                warnings.append(f"YouTube reports the video as {reported}, not {meta.privacy} as asked: check the "
                                "channel's status in YouTube Studio; a project YouTube restricts can ask for an audit "
                                "(support.google.com/youtube/contact/yt_api_form)")
            self.ledger.uploaded(episode.id, video["id"], reported or meta.privacy,
                                 (video.get("status") or {}).get("publishAt"), episode.path.stat().st_size)
        row = self._get(episode.id)
        if meta.thumbnail is not None and row.thumbnail is None:
            outcome = self._thumbnail(episode, row, meta.thumbnail)
            if outcome != "set":
                warnings.append(f"thumbnail not set: {outcome}")
        if meta.playlist is not None and row.playlist_id is None:
            self._playlist(episode.id, row, meta.playlist, meta.playlist_privacy)
        self.ledger.done(episode.id)
        for text in warnings:
            self.say(f"episode {episode.id}: {text}")
        return PublishRecord.of(self._get(episode.id), "published", warnings=warnings)

    def _get(self, episode_id: str) -> Upload:
        row = self.ledger.get(episode_id)
        assert row is not None
        return row

    def _start(self, episode: EpisodeInfo, previous: list[str]) -> Upload:
        self.ledger.start(episode.id, episode.sha256, episode.marker, previous)
        return self._get(episode.id)

    def _upload(self, episode: EpisodeInfo, meta: VideoMetadata, row: Upload) -> dict[str, Any]:
        session = row.session_uri
        if session:
            self.say(f"episode {episode.id}: resuming its upload")
        for _ in range(2):
            try:
                done = upload_video(self.youtube, episode.path, meta.body(),
                                    notify_subscribers=meta.notify_subscribers, session_uri=session,
                                    on_session=lambda uri: self.ledger.session(episode.id, uri),
                                    on_progress=self._progress(episode.id), chunk_size=self.options.chunk_size,
                                    attempts=self.options.attempts, sleep=self.options.sleep)
            except SessionExpired:
                self.ledger.session(episode.id, None)
                found = self.find_upload(episode.marker)
                if found is not None:
                    self.say(f"episode {episode.id}: its upload had finished ({found['id']}); not uploading again")
                    return found
                self.say(f"episode {episode.id}: the upload session expired before the upload finished; starting "
                         "again")
                session = None
                continue
            self.ledger.add_effort(episode.id, done.sent, done.seconds, done.retries)
            return self._finished(episode, done)
        raise PublishError(f"episode {episode.id}: the new upload session expired too",
                           hint="run the same command again")

    def _finished(self, episode: EpisodeInfo, done: Uploaded) -> dict[str, Any]:
        if not isinstance(done.video, dict) or not done.video.get("id"):
            raise PublishError(f"episode {episode.id}: YouTube's reply to the upload has no video id")
        self.say(f"episode {episode.id}: uploaded as https://youtu.be/{done.video['id']}")
        return done.video

    def _progress(self, episode_id: str) -> Callable[[int, int], None] | None:
        if self.on_progress is None:
            return None
        report = self.on_progress
        return lambda sent, total: report(episode_id, sent, total)

    def find_upload(self, marker: str) -> dict[str, Any] | None:
        """A recent upload of the channel carrying `marker` among its tags."""
        playlist = self.check_channel()
        token = None
        for _ in range(self.options.search_pages):
            page = self.calls(self.youtube.playlistItems().list(playlistId=playlist, part="contentDetails",
                                                                 maxResults=50, pageToken=token),
                              "listing the channel's uploads")
            ids = [i["contentDetails"]["videoId"] for i in page.get("items") or []]
            if ids:
                videos = self.calls(self.youtube.videos().list(id=",".join(ids), part="snippet,status"),
                                    "reading the channel's uploads")
                for video in videos.get("items") or []:
                    if marker in ((video.get("snippet") or {}).get("tags") or []):
                        return dict(video)
            token = page.get("nextPageToken")
            if not token:
                break
        return None

    # --------------------------------------------------------------------------------------------------
    def _thumbnail(self, episode: EpisodeInfo, row: Upload, source: Path | Frame) -> str:
        from googleapiclient.http import MediaFileUpload

        from comfy_driver.media.ffmpeg import extract_frame

        if isinstance(source, Frame):
            image = extract_frame(source.clip, source.at, episode.path.parent / f"{episode.id}-thumbnail.jpg")
        else:
            image = source
        mime = check_thumbnail_file(image, str(image))
        media = MediaFileUpload(str(image), mimetype=mime, resumable=False)
        try:
            self.calls(self.youtube.thumbnails().set(videoId=row.video_id, media_body=media),
                       f"setting the thumbnail of episode {episode.id}")
            outcome = "set"
        except (PublishError, MetadataRejected) as exc:
            if exc.reason not in ("forbidden", "invalidImage"):
                raise
            outcome = exc.message
            if exc.reason == "forbidden":
                outcome += " (custom thumbnails need a verified channel: youtube.com/verify)"
        self.ledger.thumbnail(episode.id, outcome)
        return outcome

    def _playlist(self, episode_id: str, row: Upload, title: str, privacy: str) -> None:
        playlist_id = self._playlist_id(title, privacy)
        try:
            present = self.calls(self.youtube.playlistItems().list(playlistId=playlist_id, videoId=row.video_id,
                                                                   part="id"), f"reading playlist {title!r}")
        except PublishError as exc:
            if exc.reason != "playlistNotFound":
                raise
            self.ledger.forget(self._playlist_key(title))  # deleted on YouTube since: find or make it again
            playlist_id = self._playlist_id(title, privacy)
            present = {}
        if not present.get("items"):
            body = {"snippet": {"playlistId": playlist_id,
                                "resourceId": {"kind": "youtube#video", "videoId": row.video_id}}}
            self.calls(self.youtube.playlistItems().insert(part="snippet", body=body),
                       f"adding episode {episode_id} to playlist {title!r}", retry_if=_video_not_ready)
        self.ledger.playlist(episode_id, title, playlist_id)

    def _playlist_key(self, title: str) -> str:
        return f"{self.options.account}:playlist:{title}"

    def _playlist_id(self, title: str, privacy: str) -> str:
        key = self._playlist_key(title)
        known = self.ledger.fact(key)
        if known:
            return known
        token = None
        while True:
            page = self.calls(self.youtube.playlists().list(mine=True, part="snippet", maxResults=50, pageToken=token),
                              "listing the channel's playlists")
            for item in page.get("items") or []:
                if (item.get("snippet") or {}).get("title") == title:
                    self.ledger.remember(key, item["id"])
                    return str(item["id"])
            token = page.get("nextPageToken")
            if not token:
                break
        made = self.calls(self.youtube.playlists().insert(
            part="snippet,status", body={"snippet": {"title": title}, "status": {"privacyStatus": privacy}}),
            f"creating playlist {title!r}")
        self.ledger.remember(key, made["id"])
        self.say(f"created playlist {title!r} ({privacy})")
        return str(made["id"])


def _video_not_ready(exc: BaseException) -> bool:
    """A video just uploaded is sometimes not found by playlistItems.insert yet: worth a retry."""
    return isinstance(exc, HttpError) and exc.status_code == 404 and reason(exc) == "videoNotFound"
