"""Publishing with the real google-api-python-client against the local fake YouTube: uploads, resumes, faults."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from comfy_driver.errors import UserError
from comfy_driver.publish.errors import QuotaExhausted
from tests.fakeyoutube import FakeYouTube
from tests.youtubekit import CHUNK, episode, metadata, publisher, sign_in


@pytest.fixture
def yt() -> Iterator[FakeYouTube]:
    server = FakeYouTube()
    server.start()
    sign_in(server)
    yield server
    server.stop()


def publish(yt: FakeYouTube, tmp_path: Path, ep: Any, **settings: Any) -> Any:
    pub = publisher(yt, tmp_path / "publish.db")
    try:
        return pub.publish_episode(ep, metadata(ep, **settings))
    finally:
        pub.close()


def test_upload_sends_every_byte_and_the_metadata(yt: FakeYouTube, tmp_path: Path) -> None:
    ep = episode(tmp_path / "ep01")
    record = publish(yt, tmp_path, ep, title="{{ episode.title }} ({{ scenes | length }} scenes)",
                     tags=["fox", "watercolor art"], privacy="unlisted", chapters=True, made_for_kids=False,
                     notify_subscribers=False)
    assert record.status == "published"
    video = yt.videos[record.video_id]
    assert video["_sha256"] == ep.sha256 and video["_size"] == ep.path.stat().st_size
    assert video["snippet"]["title"] == "Tiny: ep01 (2 scenes)"
    assert video["snippet"]["tags"] == ["fox", "watercolor art", ep.marker]
    assert "0:00 Intro\n0:02 Walk" in video["snippet"]["description"]
    assert "svd_xt.safetensors" in video["snippet"]["description"]
    assert video["status"] == {"privacyStatus": "unlisted", "selfDeclaredMadeForKids": False,
                               "containsSyntheticMedia": True, "uploadStatus": "uploaded"}
    assert video["_notify"] == "false"
    assert record.url == f"https://youtu.be/{record.video_id}" and record.bytes == ep.path.stat().st_size
    assert record.bytes_sent == ep.path.stat().st_size and record.retries == 0
    # chunked: one session, 4 PUTs of 256 KiB-aligned chunks
    assert sum(1 for m, p in yt.requests if m == "PUT") == 4


def test_second_publish_uploads_nothing(yt: FakeYouTube, tmp_path: Path) -> None:
    ep = episode(tmp_path / "ep01")
    first = publish(yt, tmp_path, ep)
    again = publish(yt, tmp_path, ep)
    assert again.status == "already published" and again.video_id == first.video_id
    assert len(yt.videos) == 1 and yt.inserts == 1


def test_transient_failures_are_retried_and_resume_where_the_server_stands(yt: FakeYouTube, tmp_path: Path) -> None:
    ep = episode(tmp_path / "ep01", size=6 * CHUNK + 7)
    yt.put_faults = [503, 500]
    yt.drops = [CHUNK // 2, 3 * CHUNK + 1000]  # connections cut mid-chunk, twice
    record = publish(yt, tmp_path, ep)
    video = yt.videos[record.video_id]
    assert video["_sha256"] == ep.sha256
    assert not yt.put_faults and not yt.drops and len(yt.videos) == 1
    # the 5xx are retried here; a cut connection is retried here or already by httplib2's reconnect
    assert record.retries >= 2
    assert record.bytes_sent > ep.path.stat().st_size  # the refused chunks went twice


def test_a_session_recorded_by_a_killed_driver_is_resumed(yt: FakeYouTube, tmp_path: Path) -> None:
    ep = episode(tmp_path / "ep01", size=8 * CHUNK)
    yt.drops = [3 * CHUNK + 5, 3 * CHUNK + 15]  # cut twice in a row: httplib2's own reconnect fails too
    pub = publisher(yt, tmp_path / "publish.db", attempts=1)
    with pytest.raises(Exception):
        pub.publish_episode(ep, metadata(ep))
    pub.close()
    session = next(iter(yt.sessions.values()))
    assert 0 < session.received < session.total
    record = publish(yt, tmp_path, ep)
    assert len(yt.sessions) == 1  # the same session, not a new upload
    assert yt.videos[record.video_id]["_sha256"] == ep.sha256
    assert record.bytes_sent < 2 * ep.path.stat().st_size


def test_a_lost_final_reply_is_recovered_by_the_status_query(yt: FakeYouTube, tmp_path: Path) -> None:
    ep = episode(tmp_path / "ep01")
    yt.lose_final_reply = 2
    record = publish(yt, tmp_path, ep)
    assert len(yt.videos) == 1 and record.video_id in yt.videos


def test_an_expired_session_of_a_finished_upload_finds_the_video_by_its_marker(yt: FakeYouTube,
                                                                               tmp_path: Path) -> None:
    ep = episode(tmp_path / "ep01")
    yt.lose_final_reply = 2  # the reply, and the one to httplib2's resend
    pub = publisher(yt, tmp_path / "publish.db", attempts=1)
    with pytest.raises(Exception):
        pub.publish_episode(ep, metadata(ep))
    pub.close()
    yt.expire_sessions()
    for i in range(60):  # the lost one is not the newest upload: the search pages
        yt.uploads.insert(0, f"other{i}")
    record = publish(yt, tmp_path, ep)
    assert len(yt.videos_of(ep.marker)) == 1 and record.video_id == yt.videos_of(ep.marker)[0]["id"]


def test_an_expired_session_of_an_unfinished_upload_starts_again(yt: FakeYouTube, tmp_path: Path) -> None:
    ep = episode(tmp_path / "ep01")
    yt.drops = [CHUNK + 3, CHUNK + 13]
    pub = publisher(yt, tmp_path / "publish.db", attempts=1)
    with pytest.raises(Exception):
        pub.publish_episode(ep, metadata(ep))
    pub.close()
    yt.expire_sessions()
    record = publish(yt, tmp_path, ep)
    assert len(yt.sessions) == 2 and len(yt.videos) == 1
    assert yt.videos[record.video_id]["_sha256"] == ep.sha256


def test_quota_and_upload_limit_stop_with_the_reset_time(yt: FakeYouTube, tmp_path: Path) -> None:
    yt.insert_quota = 0
    ep = episode(tmp_path / "ep01")
    with pytest.raises(QuotaExhausted, match="quota") as info:
        publish(yt, tmp_path, ep)
    assert "midnight Pacific" in str(info.value)
    yt.insert_quota, yt.upload_limit = None, True
    with pytest.raises(QuotaExhausted, match="daily upload limit"):
        publish(yt, tmp_path, ep)
    yt.upload_limit = False
    assert publish(yt, tmp_path, ep).status == "published" and len(yt.videos) == 1


def test_metadata_youtube_rejects_is_a_user_error(yt: FakeYouTube, tmp_path: Path) -> None:
    ep = episode(tmp_path / "ep01")
    with pytest.raises(UserError, match="invalidCategoryId"):
        publish(yt, tmp_path, ep, category="99")
    assert not yt.videos


def test_thumbnail_and_playlist(yt: FakeYouTube, tmp_path: Path) -> None:
    from PIL import Image

    Image.new("RGB", (64, 36), (200, 40, 40)).save(tmp_path / "thumb.png")
    yt.playlist_item_not_found = 1  # a fresh upload not found yet: retried
    eps = [episode(tmp_path / f"ep0{i}", f"ep0{i}", index=i) for i in (1, 2)]
    records = [publish(yt, tmp_path, ep, playlist="{{ series.title }} series", thumbnail={"file": "thumb.png"})
               for ep in eps]
    assert len(yt.playlists) == 1  # created once, found by the second episode
    for rec in records:
        assert yt.playlist_of(rec.video_id) == ["Tiny series"]
        assert yt.thumbnails[rec.video_id].startswith(b"\x89PNG") and rec.thumbnail == "set"
        assert rec.playlist == "Tiny series"
    playlist = next(iter(yt.playlists.values()))
    assert playlist["status"] == {"privacyStatus": "private"}


def test_forbidden_thumbnail_and_changed_privacy_are_warnings(yt: FakeYouTube, tmp_path: Path) -> None:
    from PIL import Image

    Image.new("RGB", (64, 36)).save(tmp_path / "thumb.jpg")
    yt.thumbnail_forbidden = True
    yt.force_privacy = "private"
    rec = publish(yt, tmp_path, episode(tmp_path / "ep01"), privacy="public", thumbnail={"file": "thumb.jpg"})
    assert rec.status == "published" and rec.privacy == "private"
    assert any("not public as asked" in w for w in rec.warnings)
    assert any("verified channel" in w for w in rec.warnings)


def test_a_changed_episode_needs_republish(yt: FakeYouTube, tmp_path: Path) -> None:
    first = publish(yt, tmp_path, episode(tmp_path / "ep01"))
    changed = episode(tmp_path / "ep01", seed=1)
    assert publish(yt, tmp_path, changed).status == "changed" and len(yt.videos) == 1
    pub = publisher(yt, tmp_path / "publish.db", republish=True)
    rec = pub.publish_episode(changed, metadata(changed))
    pub.close()
    assert rec.status == "published" and rec.video_id != first.video_id and rec.previous_videos == [first.video_id]
    assert yt.videos[rec.video_id]["_sha256"] == changed.sha256


def test_token_file_is_private_and_refreshed_silently(yt: FakeYouTube, tmp_path: Path) -> None:
    path = sign_in(yt, expired=True)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    before = path.read_text()
    publish(yt, tmp_path, episode(tmp_path / "ep01"))
    assert path.read_text() != before and "test-access-token" not in path.read_text()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_revoked_and_missing_tokens_name_the_fixing_command(yt: FakeYouTube, tmp_path: Path) -> None:
    sign_in(yt, expired=True, refresh_token="revoked")
    with pytest.raises(UserError, match="expired or was revoked") as info:
        publish(yt, tmp_path, episode(tmp_path / "ep01"))
    assert "7 days" in str(info.value)
    sign_in(yt, "other", playlists=False)
    with pytest.raises(UserError, match="does not allow youtube") as info:
        publisher(yt, tmp_path / "publish.db", account="other")
    with pytest.raises(UserError, match="no YouTube sign-in for account 'nobody'"):
        publisher(yt, tmp_path / "publish.db", account="nobody")
    assert not yt.sessions


def test_a_connection_that_keeps_failing_is_one_clear_error(yt: FakeYouTube, tmp_path: Path) -> None:
    from comfy_driver.publish.errors import PublishError

    ep = episode(tmp_path / "ep01")
    yt.drops = [CHUNK + i for i in range(1, 40)]  # every try of the second chunk is cut
    pub = publisher(yt, tmp_path / "publish.db", attempts=3)
    with pytest.raises(PublishError, match="no answer from YouTube after several tries"):
        pub.publish_episode(ep, metadata(ep))
    pub.close()
    yt.drops = []
    assert publish(yt, tmp_path, ep).status == "published" and len(yt.sessions) == 1


def test_a_playlist_deleted_on_youtube_is_made_again(yt: FakeYouTube, tmp_path: Path) -> None:
    first = publish(yt, tmp_path, episode(tmp_path / "ep01", "ep01"), playlist="Series")
    yt.playlists.clear()
    second = publish(yt, tmp_path, episode(tmp_path / "ep02", "ep02", index=2), playlist="Series")
    assert yt.playlist_of(second.video_id) == ["Series"] and first.playlist_id != second.playlist_id


def test_a_cadence_schedules_each_episode_private_until_its_local_time(yt: FakeYouTube, tmp_path: Path) -> None:
    cadence = {"start": "2030-03-30", "at": "17:00", "timezone": "Europe/Berlin", "every_days": 1}
    records = [publish(yt, tmp_path, episode(tmp_path / f"ep0{i}", f"ep0{i}", index=i), schedule=cadence)
               for i in (1, 2)]
    # the clocks go forward on 2030-03-31: 17:00 in Berlin is 16:00 UTC, then 15:00 UTC
    assert [r.publish_at for r in records] == ["2030-03-30T16:00:00Z", "2030-03-31T15:00:00Z"]
    for rec in records:
        assert yt.videos[rec.video_id]["status"]["privacyStatus"] == "private" and rec.privacy == "private"
