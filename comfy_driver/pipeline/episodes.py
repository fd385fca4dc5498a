"""Joining an episode's scene clips into one MP4, once per set of clips (a task of the supervisor)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from comfy_driver.comfy.client import file_sha256
from comfy_driver.media.ffmpeg import concat
from comfy_driver.pipeline.plan import EpisodePlan


@dataclass
class Stitched:
    episode: EpisodePlan
    sha256: str
    clips_hash: str
    joined: bool  # False: the file on disk already was these clips joined


def clips_hash(digests: list[str]) -> str:
    return hashlib.sha256("\n".join(digests).encode()).hexdigest()


def stitch(episode: EpisodePlan, clips: list[Path], digests: list[str], known: tuple[str | None, str | None]) -> Stitched:
    """Join the clips unless the episode file on disk is exactly the join recorded for these clips."""
    wanted = clips_hash(digests)
    known_sha, known_clips = known
    target = episode.file
    if known_clips == wanted and target.is_file() and file_sha256(target) == known_sha:
        return Stitched(episode, known_sha, wanted, False)
    concat(clips, target)
    return Stitched(episode, file_sha256(target), wanted, True)
