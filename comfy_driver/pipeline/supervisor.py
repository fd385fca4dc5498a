"""The supervisor: the one owner of a run.

It executes a `Plan` on one or more targets (native ComfyUI servers and Comfy API v2 endpoints, mixed
freely). Every task is its own: per target a lane (`lane.Lane`: queue-ahead and following over the
websocket; `v2lane.V2Lane`: concurrent jobs), and on a pool the finishing of ended prompts (outcome,
downloads), the stitching of each complete episode and what follows it (`RunOptions.after_episode`).
Tasks report back as messages on one queue, and only the supervisor's thread acts on them: it alone
writes the state store, decides what is queued next and where (`schedule.pick`), resubmits, falls
back, moves the work of a target that went away to the others, and stops. It never polls: it blocks
on its queue (waking once a second on a terminal, to move the clock).

Any task's unexpected error stops the run cleanly: nothing more is queued, this run's pending
prompts are taken off the servers, downloads under way finish, and `RunFailed` names the scene, the
step and the task. Running prompts stay recorded as submitted, so the next run re-attaches to them.
"""

from __future__ import annotations

import queue
import uuid
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from comfy_driver.comfy.catalog import Catalog
from comfy_driver.comfy.errors import Interrupted, PromptLost, ServerUnreachable
from comfy_driver.comfy.events import Event
from comfy_driver.comfy.follow import Watch
from comfy_driver.comfy.target import Target, parse_target
from comfy_driver.confined import HALTING
from comfy_driver.errors import DriveError, RunError, UserError
from comfy_driver.pipeline import messages as msg
from comfy_driver.pipeline.control import RunControl, RunFailed, RunOptions, RunStopped, SceneRun, error_kind
from comfy_driver.pipeline.episodes import Stitched, joinable
from comfy_driver.pipeline.outlock import IDENTITY_NAME, claim_output
from comfy_driver.pipeline.finish import MANIFEST, Outcome, recognise
from comfy_driver.pipeline.messages import Attempt, LaneBase
from comfy_driver.pipeline.plan import Plan, PlannedStep
from comfy_driver.pipeline.progress import Progress
from comfy_driver.pipeline.report import RunReport, now_iso
from comfy_driver.pipeline.reporting import run_report
from comfy_driver.pipeline.schedule import pick, workflow_of
from comfy_driver.pipeline.targets import open_lanes
from comfy_driver.pipeline.state import StateStore, open_state


@dataclass
class _Stop:
    interrupt: bool


@dataclass
class _Result:
    where: str
    then: Callable[[Any], None]
    value: Any = None
    error: BaseException | None = None


class Supervisor:
    """One run of a plan on its targets (ComfyUI URLs, `v2+URL`s or `Target`s): `run()` returns the report.

    `on_event(client_id, watch, event)` sees every websocket event, on the thread of its server's lane;
    `catalogs` are node catalogues already read, by target (not asked for again). `run()` raises
    RunStopped (with the report) when `control` stopped it, RunFailed when a task failed.
    """

    def __init__(self, plan: Plan, targets: Sequence[str | Target], options: RunOptions | None = None, *,
                 progress: Progress | None = None, on_event: Callable[[str, Watch | None, Event], None] | None = None,
                 control: RunControl | None = None, catalogs: Mapping[Target, Catalog] | None = None) -> None:
        if not targets:
            raise UserError(f"{plan.source}: no server to run on",
                            hint="add server: http://host:8188 to the series (or give the servers to run on)")
        self.plan = plan
        self.targets = [parse_target(t) for t in targets]
        self.catalogs = catalogs  # node catalogues already read (the plan was built with one), by target
        self.options = options or RunOptions()
        self.force = plan.scene_keys(sorted(self.options.force))
        self.progress = progress or Progress(len(plan.scenes), enabled=False)
        self.on_event = on_event
        self.client_id = uuid.uuid4().hex
        self.scenes = {s.key: SceneRun(s) for s in plan.scenes}
        self._inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._ready: deque[Attempt] = deque()
        self._lanes: list[LaneBase] = []
        self._pool: ThreadPoolExecutor | None = None
        self._tasks = 0
        self._unqueueing: set[LaneBase] = set()  # lanes asked to unqueue that have not answered (nor gone)
        self._stopping: str | None = None
        self._user_stop = False
        self._stops = 0
        self._crash: tuple[str, BaseException] | None = None
        self._gone: list[DriveError] = []
        self._rebuilt = False
        self._state: StateStore | None = None
        self.stitched: dict[str, Stitched] = {}  # this run's joins, by episode
        self._halted: DriveError | None = None  # nothing more can be written (disk full, read-only)
        if control is not None:
            control._attach(self)

    def stop(self, *, interrupt: bool = False) -> None:
        """Ask the run to stop (safe from a signal handler): nothing more is queued and pending prompts are
        taken off the servers; running ones finish, or with `interrupt` are interrupted."""
        self._inbox.put(_Stop(interrupt))

    @property
    def state(self) -> StateStore:
        assert self._state is not None
        return self._state

    # --------------------------------------------------------------------------------------------- the run
    def run(self) -> RunReport:
        """The run starts here: the output folder is claimed (one run at a time, of one series) first."""
        claimed_before = (self.plan.layout.root / IDENTITY_NAME).exists()  # a run has worked here before
        with claim_output(self.plan.layout.root, series=self.plan.series):
            return self._run(claimed_before)

    def _run(self, claimed_before: bool) -> RunReport:
        layout = self.plan.layout
        started = now_iso()
        self._state, self._rebuilt = open_state(layout.state_db, self.progress.message, claimed_before=claimed_before)
        try:
            self.state.save_plan(self.plan.to_json())
            with self.state.batch():  # the first look at every step: one transaction, not one per step
                for scene in self.plan.scenes:
                    self._classify(self.scenes[scene.key])
            self.progress.prompts_left = sum(a.step.count - a.step.key.index for a in self._ready)
            if self._ready:
                self._lanes, self._gone = open_lanes(self.plan, self.targets, self.options, self._inbox.put,
                                                     client_id=self.client_id, say=self.progress.message,
                                                     known=self.catalogs, on_event=self.on_event)
            self._pool = ThreadPoolExecutor(max(1, self.options.finishers), thread_name_prefix="finish")
            for episode in self.plan.episodes:
                self._stitch_if_complete(episode.id)
            self._dispatch()
            while self._busy():
                try:
                    item = self._inbox.get(timeout=1.0 if self.progress.tty else None)
                except queue.Empty:
                    self.progress.tick()
                    continue
                self._handle(item)
            report = run_report(self.plan, self.state, self.scenes, self._lanes, self.stitched, started=started,
                                stopped=self._stopping)
            report.write(layout.root)
        finally:
            for lane in self._lanes:
                lane.close()
            if self._pool is not None:
                self._pool.shutdown(wait=True, cancel_futures=True)
            self.state.close()
        if self._halted is not None:
            raise self._halted
        if self._crash is not None:
            where, error = self._crash
            raise RunFailed(f"{where}: {type(error).__name__}: {error}; the run stopped, finished work is kept",
                            hint="run the same command again to resume (--debug shows the traceback)") from error
        if self._gone and not self._user_stop and not all(r.status in ("done", "skipped") for r in self.scenes.values()):
            raise self._gone[0]
        if self._user_stop:
            raise RunStopped("the run was stopped; finished scenes are kept", hint="run it again to resume",
                             report=report)
        return report

    def _busy(self) -> bool:
        if self._tasks or self._unqueueing:
            return True
        live = [lane for lane in self._lanes if not lane.gone]
        if self._crash is not None:
            return False
        if self._stopping is not None:
            return any(lane.inflight for lane in live)
        return any(lane.open for lane in live) and (bool(self._ready) or any(lane.inflight for lane in live))

    # --------------------------------------------------------------------------------------------- resume
    def _classify(self, run: SceneRun) -> None:
        """Kept (done before, files intact), or started at its first step not done."""
        scene = run.plan
        if scene.key in self.force:
            for step in scene.steps:
                self.state.ensure(step.key, step.label, step.identity)
                self.state.reset(step.key, "--force")
                (step.folder / MANIFEST).unlink(missing_ok=True)
        else:
            for i, route in enumerate(scene.routes):
                if recognise(self.state, route.steps[-1]) is not None:
                    run.status, run.route = "skipped", i
                    self.progress.scene_done(None)
                    self.progress.message(f"scene {scene.index}/{len(self.scenes)} {scene.key}: already done, kept")
                    return
        for note in scene.notes:
            self.progress.message(f"scene {scene.key}: {note}")
        self._start_route(run, 0)

    def _start_route(self, run: SceneRun, index: int) -> None:
        run.route, run.status = index, "running"
        route = run.plan.routes[index]
        if route.note:
            self.progress.message(f"scene {run.plan.key}: {route.note}")
        clip = None
        for step in route.steps:
            st = recognise(self.state, step)
            if st is None:
                self._schedule(step, clip)
                return
            clip = step.folder / st.clip if st.clip else None

    def _schedule(self, step: PlannedStep, clip: Any) -> None:
        st = self.state.ensure(step.key, step.label, step.identity)
        self._ready.append(Attempt.next(step, step.render(clip), st, look_up=self.options.max_lost_resubmits + 2
                                        if self._rebuilt else 0))

    # --------------------------------------------------------------------------------------------- dispatch
    def _dispatch(self) -> None:
        while self._ready and self._stopping is None:
            chosen = pick(self._ready, self._lanes, affinity=self.options.affinity)
            if chosen is None:
                return
            index, lane = chosen
            attempt = self._ready[index]
            del self._ready[index]
            if attempt.attached and attempt.server != lane.name:  # its target is not in this run (any more)
                self._movable(attempt, f"{attempt.server} is not among this run's targets")
            if not attempt.attached:
                self.state.submitted(attempt.step.key, attempt.prompt_id, lane.name, attempt.number,
                                     attempt.rendered.graph_hash)
            attempt.server = lane.name
            lane.held.add(attempt)
            lane.warm = workflow_of(attempt)
            lane.submit(attempt)

    def _movable(self, attempt: Attempt, why: str) -> Attempt:
        """The attempt as one to submit afresh elsewhere (a new prompt id or key, recorded when dispatched)."""
        self.state.event(attempt.step.key, "moved", why)
        attempt.renumber(attempt.number + 1)
        return attempt

    def _spawn(self, where: str, fn: Callable[..., Any], args: tuple[Any, ...], then: Callable[[Any], None]) -> None:
        """Run `fn` on the pool; its result (or its error) comes back as a message."""
        assert self._pool is not None
        self._tasks += 1
        post = self._inbox.put

        def task() -> None:
            try:
                post(_Result(where, then, fn(*args)))
            except BaseException as exc:  # noqa: BLE001 - reported to the supervisor, which stops the run
                post(_Result(where, then, error=exc))

        self._pool.submit(task)

    # --------------------------------------------------------------------------------------------- messages
    def _handle(self, item: Any) -> None:
        try:
            self._on(item)
        except HALTING as exc:  # the disk is full (or read-only) under the state file: stop, keep what is done
            self._halted = self._halted or exc
            self._begin_stop(exc.message)
        except DriveError as exc:
            if not isinstance(item, _Result):
                raise
            self._crashed(item.where, exc)
        except Exception as exc:  # noqa: BLE001 - the supervisor's own surprise stops the run the same way
            where = getattr(getattr(item, "attempt", None), "step", None)
            self._crashed(f"{where.name}: recording its progress" if where else "the supervisor", exc)

    def _on(self, item: Any) -> None:
        lane, attempt = getattr(item, "lane", None), getattr(item, "attempt", None)
        if isinstance(attempt, Attempt) and lane is not None and attempt not in lane.held:
            return  # about work this run already moved off a target that went away
        if isinstance(item, _Stop):
            self._on_stop(item)
        elif isinstance(item, msg.Seen):
            self._seen(item)
        elif isinstance(item, msg.Submitted):
            a = item.attempt
            if item.found or a.attached:
                self.state.submitted(a.step.key, a.prompt_id, item.lane.name, a.number, a.rendered.graph_hash,
                                     what="re-attached")
                self.progress.message(f"{a.step.name}: re-attached to {item.job or a.prompt_id} on {item.lane.name}")
            if item.job:
                self.state.event(a.step.key, "job", f"{item.job} on {item.lane.name} (key {a.prompt_id})")
        elif isinstance(item, msg.Rejected):
            item.lane.held.discard(item.attempt)
            self._failed(item.attempt, item.error, started_at=None)
            self._dispatch()
        elif isinstance(item, msg.Requeue):
            item.lane.held.discard(item.attempt)
            self._ready.appendleft(item.attempt)
            self._dispatch()
        elif isinstance(item, msg.Refusing):
            self._refusing(item)
        elif isinstance(item, msg.Ended):
            item.lane.held.discard(item.attempt)
            self._dispatch()  # queue the next before finishing this one
            ended = item
            self._spawn(f"{ended.attempt.step.name}: reading its outcome and downloading its outputs", ended.lane.finish,
                        (ended.attempt, ended.handle, self.options.download_retries, self.plan.layout.root),
                        lambda o: self._finished(ended.lane, o))
        elif isinstance(item, msg.Unqueued):
            item.lane.held.difference_update(item.attempts)
            self._unqueueing.discard(item.lane)
            for a in item.attempts:
                self.state.unsubmitted(a.step.key, f"the run stopped ({self._stopping}) before it started")
        elif isinstance(item, msg.Say):
            self.progress.message(item.text)
        elif isinstance(item, msg.Stalled):
            others = [lane for lane in self._lanes if lane is not item.lane and lane.open]
            idle = not self._ready and not any(lane.inflight for lane in others)
            if others and (item.down >= self.options.move_after or (idle and item.down >= 5)):
                item.lane.abandon()  # others can take its work (at once when they have nothing else to do)
        elif isinstance(item, msg.LaneGone):
            self._lane_gone(item.lane, item.error)
        elif isinstance(item, msg.Crashed):
            if item.lane is not None:
                item.lane.gone = True
                item.lane.held.clear()
                self._unqueueing.discard(item.lane)
            self._crashed(item.where, item.error)
        elif isinstance(item, _Result):
            self._tasks -= 1
            if item.error is not None:
                self._crashed(item.where, item.error)
            else:
                item.then(item.value)

    def _lane_gone(self, lane: LaneBase, error: DriveError) -> None:
        """A target went away: its work moves to the targets still open; with none left, the run stops
        (what was on it is re-attached by the next run)."""
        lane.gone = True
        self._unqueueing.discard(lane)  # it will not answer an unqueue now
        self._gone.append(error)
        self.progress.message(error.message if lane.name in error.message else f"{lane.name}: {error.message}")
        held, lane.held = list(lane.held), set()
        if self._stopping is not None:  # what it held stays recorded as submitted: the next run re-attaches
            return
        if not any(other.open for other in self._lanes):
            self._begin_stop(error.message)
            return
        for attempt in held:
            self._ready.appendleft(self._movable(attempt, f"{lane.name} went away"))
        self._dispatch()

    def _refusing(self, item: msg.Refusing) -> None:
        """A target takes no more work (no credits): nothing more goes there; the others go on."""
        lane = item.lane
        lane.held.discard(item.attempt)
        if lane.refusing is None:
            lane.refusing = item.error
            self.progress.message(f"{item.error.message}; nothing more is sent to {lane.name}")
        self._ready.appendleft(self._movable(item.attempt, f"{lane.name} refused it: {item.error.message}"))
        if not any(other.open for other in self._lanes):
            self._gone.append(item.error)
            self._begin_stop(item.error.message)
        self._dispatch()

    def _on_stop(self, stop: _Stop) -> None:
        """The first request stops queueing; a second one (or one asking for it) interrupts what runs."""
        self._stops += 1
        if self._stopping is None:
            self._user_stop = True
            self.progress.message("stopping: nothing more is queued, the running scene finishes "
                                  "(press Ctrl-C again to interrupt it)")
            self._begin_stop("stopped by the user")
        if stop.interrupt or self._stops > 1:
            self.progress.message("interrupting the running scene")
            for lane in self._lanes:
                if not lane.gone:
                    lane.interrupt()

    def _begin_stop(self, why: str) -> None:
        if self._stopping is not None:
            return
        self._stopping = why
        self._ready.clear()
        for lane in self._lanes:
            if not lane.gone:
                self._unqueueing.add(lane)
                lane.unqueue()

    def _crashed(self, where: str, error: BaseException) -> None:
        if self._crash is None:
            self._crash = (where, error)
            self.progress.message(f"{where}: unexpected {type(error).__name__}: {error}; stopping the run")
        self._begin_stop(f"{where} failed")

    def _seen(self, seen: msg.Seen) -> None:
        if seen.attempt is not None:
            step = seen.attempt.step
            self.progress.update(self.scenes[step.key.scene].plan.index, step.name, seen.node, seen.step,
                                 seen.started_at)

    # --------------------------------------------------------------------------------------------- outcomes
    def _finished(self, lane: LaneBase, outcome: Outcome) -> None:
        a, step = outcome.attempt, outcome.attempt.step
        run = self.scenes[step.key.scene]
        if outcome.running:
            if lane.gone:  # it went away meanwhile: the attempt goes elsewhere
                self._ready.appendleft(self._movable(a, f"{lane.name} went away"))
                self._dispatch()
            else:
                lane.held.add(a)
                lane.follow(a)
            return
        error = outcome.error
        if isinstance(error, PromptLost) and a.number <= self.options.max_lost_resubmits and self._stopping is None:
            self.progress.message(f"{step.name}: {error}; submitting it again")
            self.state.event(step.key, "lost", str(error))
            a.renumber(a.number + 1)
            self._ready.appendleft(a)
            self._dispatch()
            return
        if isinstance(error, Interrupted) and self._stopping is not None:
            self.state.unsubmitted(step.key, "interrupted by the user")
            run.status = "stopped"
            return
        if error is not None:
            self._failed(a, error, started_at=outcome.started_at)
            return
        result = outcome.result
        assert result is not None
        if isinstance(outcome.download_error, HALTING):  # nothing more can be written: stop, keep what is done
            self._halted = self._halted or outcome.download_error
            self._begin_stop(outcome.download_error.message)
        if isinstance(outcome.download_error, ServerUnreachable) and \
                any(other.open for other in self._lanes if other is not lane) and self._stopping is None:
            self._ready.appendleft(self._movable(a, f"{lane.name} went away before its outputs were downloaded"))
            self._dispatch()
            return
        if outcome.download_error is not None:  # the outputs are still on the server: the next run fetches them
            self.state.ended(step.key, result.outputs, outcome.started_at)
            self.state.event(step.key, "download failed", str(outcome.download_error))
            self.progress.message(f"{step.name}: {outcome.download_error} (the next run downloads it again, "
                                  "without rendering)")
            run.status, run.error, run.error_kind = "failed", str(outcome.download_error), "download"
            self.progress.scene_done(None)
            return
        server_ms = result.finished_ms - result.started_ms if result.started_ms and result.finished_ms else None
        self.progress.prompt_done(outcome.finished_at - outcome.started_at if outcome.started_at else None)
        self.state.done(step.key, started_at=outcome.started_at or outcome.finished_at,
                        finished_at=outcome.finished_at, server_ms=server_ms, cached_nodes=result.cached_nodes,
                        clip=outcome.clip, outputs=outcome.outputs, server_outputs=result.outputs)
        where = f"scene {run.plan.index}/{len(self.scenes)} {step.name}"
        route = run.plan.routes[run.route]
        if not step.last:
            following = route.steps[step.key.index + 1]
            if outcome.clip is None:
                self._fail_scene(run, f"{step.name} made no video for the next step", "execution")
            elif self._stopping is not None:
                run.status = "stopped"
            else:
                self.progress.message(f"{where} done; next: {following.name}")
                self._schedule(following, step.folder / outcome.clip)
                self._dispatch()
            return
        run.status = "done"
        first = self.state.step(route.steps[0].key)
        started = first.started_at if first and first.started_at else outcome.finished_at
        self.progress.scene_done(outcome.finished_at - started)
        clip = self.plan.layout.relative(step.folder / outcome.clip) if outcome.clip else None
        self.progress.message(f"{where} done" + (f": {clip}" if clip else ""))
        self._stitch_if_complete(step.key.scene.episode)

    def _failed(self, a: Attempt, error: DriveError, *, started_at: float | None) -> None:
        """Record a failure. A kind the route falls back on starts the scene's next route; other errors
        are not retried blindly."""
        kind = error_kind(error)
        step = a.step
        self.state.failed(step.key, str(error), kind, started_at=started_at)
        run = self.scenes[step.key.scene]
        route = run.plan.routes[run.route]
        if kind in route.fallback_on and self._stopping is None:
            if run.route + 1 < len(run.plan.routes):
                following = run.plan.routes[run.route + 1]
                what = f"{kind} on {route.backend}: trying {following.backend}"
                self.state.event(step.key.scene, "fallback", what)
                self.progress.message(f"scene {step.key.scene}: {what}")
                self._start_route(run, run.route + 1)
                self._dispatch()
                return
            if run.plan.unavailable:
                error = RunError(f"{error}; {run.plan.unavailable}")
        self._fail_scene(run, f"{step.name}: {error}" if step.name != str(step.key.scene) else str(error), kind)

    def _fail_scene(self, run: SceneRun, error: str, kind: str) -> None:
        run.status, run.error, run.error_kind = "failed", error, kind
        self.progress.message(f"scene {run.plan.index}/{len(self.scenes)} {run.plan.key} failed: {error}")
        self.progress.scene_done(None)

    # --------------------------------------------------------------------------------------------- episodes
    def _stitch_if_complete(self, episode_id: str) -> None:
        if not self.options.episodes:
            return
        episode = next(e for e in self.plan.episodes if e.id == episode_id)
        join = joinable(self.plan.layout.root, episode, self.scenes, self.state)
        if join is not None:
            self._spawn(f"episode {episode_id}: joining its clips", join, (), self._stitched)

    def _stitched(self, done: Stitched) -> None:
        episode = done.episode
        self.state.episode_done(episode.id, self.plan.layout.relative(episode.file), done.sha256, done.clips_hash)
        self.stitched[episode.id] = done
        if done.how:
            self.progress.message(f"episode {episode.id}: {episode.file} ({done.how})")
        if self.options.after_episode is not None:
            self._spawn(f"episode {episode.id}: after joining it", self.options.after_episode, (done,),
                        lambda _: None)

