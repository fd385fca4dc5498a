"""The `publish:` section of series.yaml: what each finished episode becomes on YouTube.

Every string is a jinja2 template over `series`, `episode`, `scenes` and `report` (rendered per episode
by comfy_driver.publish.metadata, where the limits YouTube enforces are checked after rendering). Here
only what can be checked without an episode: types, choices, time zones, a schedule's shape, and
combinations YouTube refuses (a schedule on a video that is not private).
"""

from __future__ import annotations

import re
from datetime import date, time
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

Privacy = Literal["private", "unlisted", "public"]

# videoCategories.list(regionCode=US): the assignable ones, by name; an id may be given directly.
CATEGORIES = {
    "film & animation": "1", "autos & vehicles": "2", "music": "10", "pets & animals": "15", "sports": "17",
    "travel & events": "19", "gaming": "20", "people & blogs": "22", "comedy": "23", "entertainment": "24",
    "news & politics": "25", "howto & style": "26", "education": "27", "science & technology": "28",
    "nonprofits & activism": "29",
}
_LANGUAGE = re.compile(r"^[a-zA-Z]{2,3}(-[A-Za-z0-9]{2,8})*$")
_CLOCK = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")


def _zone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r}; use an IANA name such as Europe/Berlin or "
                         "America/New_York") from None
    return name


Zone = Annotated[str, AfterValidator(_zone)]  # an IANA time zone name


class Schedule(BaseModel):
    """A cadence: the n-th episode of the series goes public `every_days` * (n-1) days after `start`."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    start: date
    at: str = Field(description="local time of day, HH:MM")
    timezone: Zone
    every_days: int = Field(default=1, ge=1, le=366)

    @field_validator("at", mode="before")
    @classmethod
    def _at(cls, v: object) -> str:
        if isinstance(v, int) and 0 <= v < 24 * 60:  # YAML 1.1 reads 17:00 as the sexagesimal 1020
            v = f"{v // 60}:{v % 60:02d}"
        if not isinstance(v, str) or not _CLOCK.match(v):
            raise ValueError(f"{v!r} is not a time of day; write it as \"17:00\" (quoted)")
        return v

    def clock(self) -> time:
        hours, minutes = self.at.split(":")
        return time(int(hours), int(minutes))


class Thumbnail(BaseModel):
    """A frame of the episode (`at` seconds into `scene`, or into the episode) or an image file."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    file: str | None = None
    scene: str | None = None
    at: float | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _one(self) -> Thumbnail:
        if self.file is not None and (self.scene is not None or self.at is not None):
            raise ValueError("give either file, or scene and/or at (a frame of the episode), not both")
        if self.file is None and self.scene is None and self.at is None:
            raise ValueError("give file (an image) or scene and/or at (a frame of the episode)")
        return self


class PublishSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)

    account: str = Field(default="default", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    title: str = "{{ episode.title }}"
    description: str = ""
    chapters: bool = False  # append one chapter per scene with its start time
    credits: bool = True  # append the backends and models the episode was made with
    tags: list[str] = []
    category: str = "1"
    language: str | None = None
    privacy: Privacy | None = None  # default: private (and required to be private with a schedule)
    publish_at: str | None = None  # one moment (template), RFC 3339 or "YYYY-MM-DD HH:MM" in `timezone`
    timezone: Zone = "UTC"  # for a publish_at without an offset
    schedule: Schedule | None = None
    made_for_kids: bool = False
    contains_synthetic_media: bool = True
    notify_subscribers: bool = True
    playlist: str | None = None
    playlist_privacy: Privacy | None = None  # default: the videos' privacy
    thumbnail: Thumbnail | None = None

    @field_validator("category", mode="before")
    @classmethod
    def _category(cls, v: object) -> str:
        if isinstance(v, int) and not isinstance(v, bool):
            v = str(v)
        if not isinstance(v, str):
            raise ValueError("category is a YouTube category id (e.g. 1) or name (e.g. Film & Animation)")
        if v.isdigit():
            return v
        found = CATEGORIES.get(v.strip().lower())
        if found is None:
            raise ValueError(f"unknown category {v!r}; one of: {', '.join(n.title() for n in CATEGORIES)} "
                             "(or a category id)")
        return found

    @field_validator("language")
    @classmethod
    def _language(cls, v: str | None) -> str | None:
        if v is not None and not _LANGUAGE.match(v):
            raise ValueError(f"{v!r} is not a language code; use a BCP-47 code such as en or pt-BR")
        return v

    @model_validator(mode="after")
    def _combinations(self) -> PublishSettings:
        if self.publish_at is not None and self.schedule is not None:
            raise ValueError("give publish_at or schedule, not both")
        if (self.publish_at is not None or self.schedule is not None) and self.privacy not in (None, "private"):
            raise ValueError(f"a scheduled video stays private until its time; privacy must be private (or left "
                             f"out), not {self.privacy!r}")
        return self

    @property
    def video_privacy(self) -> Privacy:
        return self.privacy or "private"

    @property
    def scheduled(self) -> bool:
        return self.publish_at is not None or self.schedule is not None
