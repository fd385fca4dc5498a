"""Joining each episode's scene clips into one MP4, once per set of clips.

Clips that match are stream-copied; a clip of another size or fps (a fallback backend's, a
per-scene backend's) is converted to the episode's format, and the report names it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Literal

from comfy_driver import confined
from comfy_driver.comfy.client import file_sha256
from comfy_driver.comfy.outputs import safe_component
from comfy_driver.media.stitch import plan, stitch
from comfy_driver.pipeline.jobs import SceneJob
from comfy_driver.pipeline.progress import Progress
from comfy_driver.pipeline.report import EpisodeRecord
from comfy_driver.pipeline.state import DONE, FAILED, StateStore


def stitch_episodes(root: Path, jobs: list[SceneJob], state: StateStore, progress: Progress) -> list[EpisodeRecord]:
    """An episode whose scenes all have clips is joined; an unchanged one is not joined again."""
    episodes: dict[str, list[SceneJob]] = {}
    for job in jobs:
        episodes.setdefault(job.spec.episode_id, []).append(job)
    records = []
    for ep_id, ep_jobs in episodes.items():
        states = [state.scene(j.spec.key) for j in ep_jobs]
        keys = [j.spec.key for j in ep_jobs]
        title = ep_jobs[0].spec.episode_title
        if any(s is None or s.status != DONE or not s.clip for s in states):
            failed = all(s is not None and s.status == FAILED for s in states)
            status: Literal["failed", "incomplete"] = "failed" if failed else "incomplete"
            records.append(EpisodeRecord(id=ep_id, title=title, status=status, scenes=keys))
            continue
        clips, digests = [], []
        for job, st in zip(ep_jobs, states):
            assert st is not None and st.clip
            clips.append(root / safe_component(job.spec.episode_id) / safe_component(job.spec.scene_id) / st.clip)
            digests.append(next(o["sha256"] for o in st.outputs if o["file"] == st.clip))
        fps = {j.spec.fps for j in ep_jobs}
        declared = fps.pop() if len(fps) == 1 else None  # scenes that disagree: the largest clip's
        planned = plan(clips, declared)
        fmt, converted = planned.format, planned.converted
        clips_hash = hashlib.sha256("\n".join([*digests, str(fmt)]).encode()).hexdigest()
        target = confined.folder(root, safe_component(ep_id)) / f"{safe_component(ep_id)}.mp4"
        _, known_sha, known_clips = state.episode(ep_id)
        if not (known_clips == clips_hash and target.is_file() and file_sha256(target) == known_sha):
            done = stitch(planned, target)
            state.episode_done(ep_id, target.relative_to(root).as_posix(), file_sha256(target), clips_hash)
            how = "joined without re-encoding" if done.mode == "copy" else f"encoded to {fmt}"
            progress.message(f"episode {ep_id}: {target} ({how}"
                             + (f"; converted {', '.join(keys[n] for n in converted)})" if converted else ")"))
        _, sha, _ = state.episode(ep_id)
        records.append(EpisodeRecord(id=ep_id, title=title, status="done", path=target.relative_to(root).as_posix(),
                                     sha256=sha, scenes=keys, format=str(fmt),
                                     converted=[keys[n] for n in converted]))
    return records
