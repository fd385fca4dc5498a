"""One episode's YouTube metadata: the publish section rendered for it and checked against YouTube's limits.

Everything YouTube would refuse is refused here first, before any byte is sent, with the file:line of
the field: title (1-100 characters, no < or >), description (at most 5000 UTF-8 bytes, no < or >),
tags (500 characters in all, counting commas and the quotes a tag with a space gets), a schedule that
is not in the past. Privacy is always sent: left out, an upload is public.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from comfy_driver.config.publish import Privacy, PublishSettings
from comfy_driver.config.templates import render
from comfy_driver.errors import UserError

TITLE_MAX = 100
DESCRIPTION_MAX_BYTES = 5000
TAGS_MAX = 500
THUMBNAIL_MAX_BYTES = 50 * 1024 * 1024
THUMBNAIL_TYPES = {b"\xff\xd8\xff": "image/jpeg", b"\x89PNG\r\n\x1a\n": "image/png"}


@dataclass
class SceneInfo:
    id: str
    index: int  # 1-based within the episode
    prompt: str | None
    backend: str
    clip: Path
    duration: float  # seconds


@dataclass
class EpisodeInfo:
    """A stitched episode as publishing sees it."""

    series: str
    id: str
    index: int  # 1-based within the series: the n-th slot of a schedule
    title: str
    path: Path
    sha256: str
    scenes: list[SceneInfo]
    models: list[str] = field(default_factory=list)  # model files the backends used
    vars: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # what the user may not expect (a Short)

    @property
    def marker(self) -> str:
        """A tag unique to this series, episode and file: how an earlier upload is recognised."""
        digest = hashlib.sha256(f"{self.series}\0{self.id}\0{self.sha256}".encode()).hexdigest()
        return f"cd-{digest[:16]}"


@dataclass
class Frame:
    """A thumbnail taken from the episode: `at` seconds into `clip` (scene `scene`)."""

    clip: Path
    at: float
    scene: str


@dataclass
class VideoMetadata:
    title: str
    description: str
    tags: list[str]
    category_id: str
    language: str | None
    privacy: Privacy
    publish_at: datetime | None  # UTC
    made_for_kids: bool
    contains_synthetic_media: bool
    notify_subscribers: bool
    playlist: str | None
    playlist_privacy: Privacy
    thumbnail: Path | Frame | None

    def body(self) -> dict[str, Any]:
        """The videos.insert resource."""
        snippet: dict[str, Any] = {"title": self.title, "description": self.description, "tags": self.tags,
                                   "categoryId": self.category_id}
        if self.language:
            snippet["defaultLanguage"] = self.language
            snippet["defaultAudioLanguage"] = self.language
        status: dict[str, Any] = {"privacyStatus": self.privacy, "selfDeclaredMadeForKids": self.made_for_kids,
                                  "containsSyntheticMedia": self.contains_synthetic_media}
        if self.publish_at is not None:
            status["publishAt"] = rfc3339(self.publish_at)
        return {"snippet": snippet, "status": status}


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def clock(seconds: float) -> str:
    """A chapter time as YouTube reads it: M:SS or H:MM:SS."""
    s = int(seconds)
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def tags_length(tags: list[str]) -> int:
    """YouTube's count: the commas between tags, and a tag with a space counted with its quotes."""
    return sum(len(t) + (2 if " " in t else 0) for t in tags) + max(0, len(tags) - 1)


def context(episode: EpisodeInfo) -> dict[str, Any]:
    starts, at = [], 0.0
    for scene in episode.scenes:
        starts.append(at)
        at += scene.duration
    scenes = [{"id": s.id, "index": s.index, "prompt": s.prompt, "backend": s.backend, "start": start,
               "start_text": clock(start), "duration": s.duration} for s, start in zip(episode.scenes, starts)]
    backends = sorted({s.backend for s in episode.scenes})
    return {"series": {"title": episode.series}, "vars": episode.vars,
            "episode": {"id": episode.id, "index": episode.index, "title": episode.title, "duration": at,
                        "scenes": len(episode.scenes)},
            "scenes": scenes, "report": {"backends": backends, "models": episode.models}}


def render_metadata(settings: PublishSettings, episode: EpisodeInfo, where: Callable[[str], str], base: Path, *,
                    now: datetime | None = None, check_schedule: bool = True) -> VideoMetadata:
    """The episode's metadata, every limit checked; UserError naming file:line otherwise."""
    ctx = context(episode)

    def rendered(template: str, name: str) -> str:
        return render(template, ctx, where=where(name), field=name).strip()

    title = rendered(settings.title, "title")
    if not title:
        raise UserError(f"{where('title')}: title: empty for episode {episode.id}", hint="YouTube needs a title")
    if len(title) > TITLE_MAX:
        raise UserError(f"{where('title')}: title: {len(title)} characters for episode {episode.id}, YouTube "
                        f"allows {TITLE_MAX}: {title[:60]!r}...", hint="shorten the title template")
    description = rendered(settings.description, "description")
    extra = []
    if settings.chapters:
        extra.append("\n".join(f"{s['start_text']} {_chapter_name(s['id'])}" for s in ctx["scenes"]))
    if settings.credits:
        made = f"Made with comfy-drive: {', '.join(ctx['report']['backends'])}"
        if episode.models:
            made += f" (models: {', '.join(episode.models)})"
        extra.append(made + ". AI-generated video.")
    description = "\n\n".join(p for p in [description, *extra] if p)
    size = len(description.encode("utf-8"))
    if size > DESCRIPTION_MAX_BYTES:
        raise UserError(f"{where('description')}: description: {size} bytes for episode {episode.id} (with the "
                        f"chapters and credits), YouTube allows {DESCRIPTION_MAX_BYTES}",
                        hint="shorten it, or set chapters: false / credits: false")
    for name, text in (("title", title), ("description", description)):
        if "<" in text or ">" in text:
            raise UserError(f"{where(name)}: {name}: YouTube refuses '<' and '>' (episode {episode.id})")
    tags = []
    for i, raw in enumerate(settings.tags):
        tag = rendered(raw, "tags")
        if "<" in tag or ">" in tag or "," in tag:
            raise UserError(f"{where('tags')}: tags[{i}]: {tag!r}: a tag may not contain ',', '<' or '>'")
        if tag and tag not in tags:
            tags.append(tag)
    tags.append(episode.marker)
    if tags_length(tags) > TAGS_MAX:
        raise UserError(f"{where('tags')}: tags: {tags_length(tags)} characters for episode {episode.id} "
                        f"(commas, quotes and the {len(episode.marker)}-character tag that marks the upload "
                        f"included), YouTube allows {TAGS_MAX}", hint="use fewer or shorter tags")
    privacy = settings.video_privacy
    return VideoMetadata(
        title=title, description=description, tags=tags, category_id=settings.category, language=settings.language,
        privacy=privacy, publish_at=_publish_at(settings, episode, ctx, where, now, check_schedule),
        made_for_kids=settings.made_for_kids, contains_synthetic_media=settings.contains_synthetic_media,
        notify_subscribers=settings.notify_subscribers,
        playlist=rendered(settings.playlist, "playlist") or None if settings.playlist is not None else None,
        playlist_privacy=settings.playlist_privacy or privacy, thumbnail=_thumbnail(settings, episode, where, base))


def _chapter_name(scene_id: str) -> str:
    name = scene_id.replace("_", " ").replace("-", " ").strip()
    return name[:1].upper() + name[1:]


def _publish_at(settings: PublishSettings, episode: EpisodeInfo, ctx: dict[str, Any], where: Callable[[str], str],
                now: datetime | None, check: bool) -> datetime | None:
    if settings.schedule is not None:
        sched = settings.schedule
        day = sched.start + timedelta(days=sched.every_days * (episode.index - 1))
        moment = datetime.combine(day, sched.clock(), tzinfo=ZoneInfo(sched.timezone))
        field_name = "schedule"
    elif settings.publish_at is not None:
        field_name = "publish_at"
        when = render(settings.publish_at, ctx, where=where(field_name), field=field_name).strip()
        try:
            moment = datetime.fromisoformat(when.replace("Z", "+00:00"))
        except ValueError:
            raise UserError(f"{where(field_name)}: publish_at: {when!r} is not a date and time",
                            hint="write it like 2026-12-01 17:00 (in `timezone`) or 2026-12-01T16:00:00Z") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=ZoneInfo(settings.timezone))
    else:
        return None
    moment = moment.astimezone(timezone.utc)
    if check and moment <= (now or datetime.now(timezone.utc)):
        raise UserError(f"{where(field_name)}: {field_name}: episode {episode.id} would go public at "
                        f"{rfc3339(moment)}, which is in the past (YouTube would publish it at once)",
                        hint="move the schedule to the future, or remove it to publish with `privacy`")
    return moment


def _thumbnail(settings: PublishSettings, episode: EpisodeInfo, where: Callable[[str], str],
               base: Path) -> Path | Frame | None:
    thumb = settings.thumbnail
    if thumb is None:
        return None
    loc = where("thumbnail")
    if thumb.file is not None:
        path = base / thumb.file
        check_thumbnail_file(path, loc)
        return path
    if thumb.scene is not None:
        scene = next((s for s in episode.scenes if s.id == thumb.scene), None)
        if scene is None:
            raise UserError(f"{loc}: thumbnail.scene: episode {episode.id} has no scene {thumb.scene!r}",
                            hint=f"scenes: {', '.join(s.id for s in episode.scenes)}")
        at = thumb.at if thumb.at is not None else scene.duration / 2
        if at > scene.duration:
            raise UserError(f"{loc}: thumbnail.at: {at:g} s is past the end of scene {scene.id} "
                            f"({scene.duration:.2f} s)")
        return Frame(scene.clip, at, scene.id)
    at = thumb.at or 0.0
    for scene in episode.scenes:
        if at <= scene.duration:
            return Frame(scene.clip, at, scene.id)
        at -= scene.duration
    raise UserError(f"{loc}: thumbnail.at: {thumb.at:g} s is past the end of episode {episode.id}")


def check_thumbnail_file(path: Path, where: str) -> str:
    """The image's MIME type; a JPEG or PNG of at most 50 MB, else UserError."""
    try:
        size = path.stat().st_size
        with path.open("rb") as fh:
            head = fh.read(8)
    except OSError:
        raise UserError(f"{where}: thumbnail: no such image file {path}") from None
    mime = next((m for magic, m in THUMBNAIL_TYPES.items() if head.startswith(magic)), None)
    if mime is None:
        raise UserError(f"{where}: thumbnail: {path.name} is not a JPEG or PNG image")
    if size > THUMBNAIL_MAX_BYTES:
        raise UserError(f"{where}: thumbnail: {path.name} is {size >> 20} MB; YouTube takes at most 50 MB")
    return mime
