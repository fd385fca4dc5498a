"""An episode's publishing as the run report shows it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel

if TYPE_CHECKING:  # the ledger (sqlite3) loads where uploads are, not with every run's report
    from comfy_driver.publish.ledger import Upload

Outcome = Literal["published", "already published", "changed", "failed", "stopped"]


class PublishRecord(BaseModel):
    status: Outcome
    video_id: str | None = None
    url: str | None = None
    privacy: str | None = None  # as YouTube reported it
    publish_at: str | None = None  # UTC, RFC 3339
    playlist: str | None = None
    playlist_id: str | None = None
    thumbnail: str | None = None  # "set", or why not
    bytes: int | None = None  # the file's size
    bytes_sent: int = 0  # bytes put on the wire by the run that finished the upload, retried chunks included
    upload_seconds: float = 0.0  # that run's upload time
    retries: int = 0  # that run's retried requests
    previous_videos: list[str] = []  # earlier versions' video ids (--republish)
    warnings: list[str] = []
    error: str | None = None

    @classmethod
    def of(cls, upload: Upload, status: Outcome, **extra: object) -> PublishRecord:
        return cls(status=status, video_id=upload.video_id,
                   url=f"https://youtu.be/{upload.video_id}" if upload.video_id else None, privacy=upload.privacy,
                   publish_at=upload.publish_at, playlist=upload.playlist, playlist_id=upload.playlist_id,
                   thumbnail=upload.thumbnail, bytes=upload.bytes, bytes_sent=upload.bytes_sent,
                   upload_seconds=round(upload.seconds, 3), retries=upload.retries,
                   previous_videos=upload.previous_ids, **extra)  # type: ignore[arg-type]

    def line(self) -> str:
        """One line for the run summary."""
        if self.status in ("failed", "stopped"):
            return f"{self.status}: {self.error}"
        text = f"{self.status} {self.url} ({self.privacy}"
        text += f", public at {self.publish_at})" if self.publish_at else ")"
        if self.status == "changed":
            text += "; re-rendered since: pass --republish to upload the new version"
        return text
