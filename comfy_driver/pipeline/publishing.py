"""Publishing a run's finished episodes to YouTube, one episode at a time.

`run --publish` publishes each episode as soon as the run has joined it (`PublishAsJoined`, a task
of the run), while the next episode renders; `publish` takes the episodes of a series rendered
earlier from its report (file, sha256, scenes with the backend that made them). All metadata is rendered and checked before the first upload; with
the sign-in checked too, a mistake in the publish section stops everything before a byte is sent.
A spent quota stops publishing (the rest waits for the next run); another failure of one episode
does not stop the next.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from comfy_driver.comfy.client import file_sha256
from comfy_driver.config.publish import PublishSettings
from comfy_driver.config.series import LoadedSeries, SceneSpec
from comfy_driver.errors import DriveError, RunError, UserError
from comfy_driver.media.ffmpeg import VideoInfo, probe
from comfy_driver.pipeline.episodes import Stitched
from comfy_driver.pipeline.report import RunReport
from comfy_driver.publish.errors import PublishError, QuotaExhausted
from comfy_driver.publish.ledger import Ledger
from comfy_driver.publish.metadata import EpisodeInfo, SceneInfo, VideoMetadata, render_metadata
from comfy_driver.publish.publisher import PublishOptions, Publisher
from comfy_driver.publish.record import PublishRecord
from comfy_driver.yamltext import load_yaml

LEDGER = "publish.db"  # in the series folder, beside state.db and report.json
SHORTS_SECONDS = 180


@dataclass
class Planned:
    episode: EpisodeInfo
    meta: VideoMetadata


def settings_of(loaded: LoadedSeries) -> PublishSettings:
    if loaded.series.publish is None:
        raise UserError(f"{loaded.path}: no publish section",
                        hint="add publish: with at least a title template; see the README's Publishing section")
    return loaded.series.publish


def _where(loaded: LoadedSeries) -> Callable[[str], str]:
    located = load_yaml(loaded.path, what="series file")
    return lambda name: located.where(("publish", name))


def _models(backends: list[str]) -> list[str]:
    from comfy_driver.models.lock import load_lock
    from comfy_driver.paths import models_lock

    lock = load_lock(models_lock())
    known = {b for m in lock.models for b in m.backends}
    used = [b for b in backends if b in known]
    return sorted({m.name for m in lock.for_backends(used)}) if used else []


def _order(loaded: LoadedSeries) -> dict[str, int]:
    return {ep.id or f"ep{i + 1:02d}": i + 1 for i, ep in enumerate(loaded.series.episodes)}


def rendered_episodes(loaded: LoadedSeries, report: RunReport, root: Path) -> list[EpisodeInfo]:
    """The report's stitched episodes, each file checked against its recorded sha256."""
    scenes = {s.key: s for s in report.scenes}
    order = _order(loaded)
    titles = {spec.episode_id: spec.episode_title for spec in loaded.scenes}
    out = []
    for record in report.episodes:
        if record.status != "done" or not record.path or not record.sha256:
            continue
        path = root / record.path
        if not path.is_file() or file_sha256(path) != record.sha256:
            raise RunError(f"episode {record.id}: {path} is missing or changed since it was rendered",
                           hint="run the series again to render it")
        infos = []
        for i, key in enumerate(record.scenes):
            scene = scenes[key]
            clip = root / scene.clip if scene.clip else path
            infos.append(SceneInfo(scene.scene, i + 1, scene.prompt, scene.backend, clip, probe(clip).duration))
        index = order[record.id]
        out.append(EpisodeInfo(loaded.series.title, record.id, index, titles.get(record.id, record.title), path,
                               record.sha256, infos, _models([s.backend for s in infos]), loaded.series.vars,
                               notes=_notes(probe(path))))
    return out


def _notes(video: VideoInfo) -> list[str]:
    """What the user may not expect of this file on YouTube."""
    if video.height >= video.width and video.duration <= SHORTS_SECONDS:
        return [f"{video.width}x{video.height}, {video.duration:.0f} s: YouTube shows a square or vertical video "
                f"of {SHORTS_SECONDS // 60} minutes or less as a Short"]
    return []


def planned_episodes(loaded: LoadedSeries, specs: list[SceneSpec]) -> list[EpisodeInfo]:
    """Episodes as they will be, before rendering: what `run --publish` checks before it starts."""
    order = _order(loaded)
    episodes: dict[str, list[SceneSpec]] = {}
    for spec in specs:
        episodes.setdefault(spec.episode_id, []).append(spec)
    out = []
    for ep_id, eps in episodes.items():
        infos = [SceneInfo(s.scene_id, s.index, s.prompt, s.backend, loaded.output_dir / "planned.mp4",
                           (s.frames or 1) / (s.fps or 24)) for s in eps]
        out.append(EpisodeInfo(loaded.series.title, ep_id, order[ep_id], eps[0].episode_title,
                               loaded.output_dir / "planned.mp4", "0" * 64, infos,
                               _models([s.backend for s in infos]), loaded.series.vars))
    return out


def plan(loaded: LoadedSeries, episodes: list[EpisodeInfo], root: Path, *, republish: bool = False,
         now: datetime | None = None) -> list[Planned]:
    """Every episode's metadata, rendered and checked; a schedule in the past only matters for an
    episode still to upload."""
    settings = settings_of(loaded)
    where = _where(loaded)
    ledger_path = root / LEDGER
    ledger = Ledger(ledger_path) if ledger_path.exists() else None
    try:
        out = []
        for ep in episodes:
            row = ledger.get(ep.id) if ledger else None
            uploaded = row is not None and row.video_id is not None and (row.sha256 == ep.sha256 or not republish)
            meta = render_metadata(settings, ep, where, loaded.path.parent, now=now or datetime.now(timezone.utc),
                                   check_schedule=not uploaded)
            out.append(Planned(ep, meta))
        return out
    finally:
        if ledger:
            ledger.close()


def open_publisher(loaded: LoadedSeries, root: Path, *, endpoint: str | None, republish: bool,
                   say: Callable[[str], None], on_progress: Callable[[str, int, int], None] | None = None,
                   chunk_size: int | None = None) -> Publisher:
    """The publisher of this series, its sign-in checked against the channel (nothing uploaded yet)."""
    settings = settings_of(loaded)
    options = PublishOptions(account=settings.account, playlists=settings.playlist is not None, endpoint=endpoint,
                             republish=republish)
    if chunk_size:
        options.chunk_size = chunk_size
    publisher = Publisher(root / LEDGER, options, say=say, on_progress=on_progress)
    try:
        publisher.check_channel()
    except BaseException:
        publisher.close()
        raise
    return publisher


def _publish_one(publisher: Publisher, item: Planned, say: Callable[[str], None],
                 stopped: QuotaExhausted | None) -> tuple[PublishRecord, QuotaExhausted | None]:
    """One episode; a spent quota (now or earlier) records it as stopped instead."""
    ep_id = item.episode.id
    for note in item.episode.notes:
        say(f"episode {ep_id}: {note}")
    if stopped is not None:
        return PublishRecord(status="stopped", error=stopped.message), stopped
    try:
        return publisher.publish_episode(item.episode, item.meta), None
    except QuotaExhausted as exc:
        say(f"episode {ep_id}: {exc}")
        return PublishRecord(status="stopped", error=exc.message), exc
    except PublishError as exc:
        say(f"episode {ep_id}: {exc}")
        return PublishRecord(status="failed", error=exc.message), None


def publish_all(publisher: Publisher, planned: list[Planned], say: Callable[[str], None]) -> dict[str, PublishRecord]:
    """Publish each episode in order; a spent quota stops the rest (recorded as stopped)."""
    records: dict[str, PublishRecord] = {}
    stopped: QuotaExhausted | None = None
    for item in planned:
        records[item.episode.id], stopped = _publish_one(publisher, item, say, stopped)
    return records


def stitched_episode(loaded: LoadedSeries, done: Stitched) -> EpisodeInfo:
    """An episode the run has just joined, as publishing sees it (the report is not written yet)."""
    specs = {f"{s.episode_id}/{s.scene_id}": s for s in loaded.scenes}
    episode = done.episode
    scenes = [SceneInfo(specs[str(key)].scene_id, i + 1, specs[str(key)].prompt, backend, clip, probe(clip).duration)
              for i, (key, clip, backend) in enumerate(zip(episode.scenes, done.clips, done.backends))]
    return EpisodeInfo(loaded.series.title, episode.id, _order(loaded)[episode.id], episode.title, episode.file,
                       done.sha256, scenes, _models(done.backends), loaded.series.vars,
                       notes=_notes(probe(episode.file)))


@dataclass
class PublishAsJoined:
    """The run's after-episode task for `run --publish`: each joined episode is published while the
    run goes on with the next. Uploads go one at a time (the first to be joined first); a failure is
    recorded, never raised, so publishing cannot stop the rendering."""

    loaded: LoadedSeries
    root: Path
    publisher: Publisher
    say: Callable[[str], None]
    records: dict[str, PublishRecord] = field(default_factory=dict)
    _stopped: QuotaExhausted | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, done: Stitched) -> None:
        with self._lock:
            try:
                planned = plan(self.loaded, [stitched_episode(self.loaded, done)], self.root,
                               republish=self.publisher.options.republish)
                self.records[done.episode.id], self._stopped = _publish_one(self.publisher, planned[0], self.say,
                                                                            self._stopped)
            except DriveError as exc:  # a sign-in gone bad, metadata refused: the rest of the run goes on
                self.say(f"episode {done.episode.id}: not published: {exc}")
                self.records[done.episode.id] = PublishRecord(status="failed", error=exc.message)


def attach(report: RunReport, records: dict[str, PublishRecord], root: Path) -> None:
    """The publish records into the report, written again."""
    for episode in report.episodes:
        if episode.id in records:
            episode.published = records[episode.id]
    report.write(root)
