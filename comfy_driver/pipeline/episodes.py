"""Joining an episode's scene clips into one MP4, once per set of clips (a task of the supervisor).

Clips that match are stream-copied; a clip of another size or fps (a fallback backend's, a
per-scene backend's) is converted to the episode's format, and the report names it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from comfy_driver import confined
from comfy_driver.comfy.client import file_sha256
from comfy_driver.pipeline.plan import EpisodePlan, SceneKey

if TYPE_CHECKING:
    from comfy_driver.pipeline.control import SceneRun
    from comfy_driver.pipeline.state import StateStore


@dataclass
class Stitched:
    episode: EpisodePlan
    sha256: str
    clips_hash: str
    format: str
    converted: list[str] = field(default_factory=list)  # scenes whose clip was scaled or resampled
    how: str | None = None  # None: the file on disk already was these clips joined
    clips: list[Path] = field(default_factory=list)  # the scenes' clips, in order
    backends: list[str] = field(default_factory=list)  # the backend that rendered each scene


def stitch(root: Path, episode: EpisodePlan, clips: list[Path], digests: list[str], fps: float | None,
           known: tuple[str | None, str | None], backends: list[str]) -> Stitched:
    """Join the clips unless the episode file on disk is exactly the join recorded for these clips."""
    from comfy_driver.media import stitch as media  # ffmpeg's side: loaded by the first episode of clips
    planned = media.plan(clips, fps)
    fmt, converted = planned.format, [str(episode.scenes[n]) for n in planned.converted]
    wanted = hashlib.sha256("\n".join([*digests, str(fmt)]).encode()).hexdigest()
    target = confined.folder(root, episode.file.parent.relative_to(root).as_posix()) / episode.file.name
    known_sha, known_clips = known
    if known_sha and known_clips == wanted and target.is_file() and file_sha256(target) == known_sha:
        return Stitched(episode, known_sha, wanted, str(fmt), converted, clips=clips, backends=backends)
    done = media.stitch(planned, target)
    how = "joined without re-encoding" if done.mode == "copy" else f"encoded to {fmt}"
    return Stitched(episode, file_sha256(target), wanted, str(fmt), converted,
                    how + (f"; converted {', '.join(converted)}" if converted else ""), clips, backends)


def joinable(root: Path, episode: EpisodePlan, scenes: Mapping[SceneKey, SceneRun],
             state: StateStore) -> Callable[[], Stitched] | None:
    """The join of an episode whose every scene is done (`scenes`: the run of each scene), or None."""
    # Before reading any state, or even gathering the episode's runs (a long episode is not read over
    # at each scene's end); from its last scene, as scenes mostly end in order.
    if any(scenes[key].status not in ("done", "skipped") for key in reversed(episode.scenes)):
        return None
    runs = [scenes[key] for key in episode.scenes]
    found = [run.clip(state) for run in runs]
    if any(f is None for f in found):
        return None
    clips, digests, backends = (list(column) for column in zip(*found))
    _, sha, known = state.episode(episode.id)
    declared = {run.plan.spec.fps for run in runs}  # when the scenes disagree, the largest clip's decides
    fps = declared.pop() if len(declared) == 1 else None
    return partial(stitch, root, episode, clips, digests, fps, (sha, known), backends)

