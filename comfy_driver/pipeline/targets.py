"""Opening the run's lanes: one per target, of its kind, each checked before any work is given out."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

from comfy_driver.comfy.catalog import Catalog
from comfy_driver.comfy.errors import ServerUnreachable
from comfy_driver.comfy.events import Event
from comfy_driver.comfy.follow import Watch
from comfy_driver.comfy.target import Target
from comfy_driver.errors import DriveError
from comfy_driver.pipeline.control import RunOptions
from comfy_driver.pipeline.lane import Lane
from comfy_driver.pipeline.messages import LaneBase
from comfy_driver.pipeline.plan import Plan
from comfy_driver.pipeline.preflight import preflight


def open_lanes(plan: Plan, targets: Sequence[Target], options: RunOptions, post: Callable[[object], None], *,
               client_id: str, say: Callable[[str], None], known: Mapping[Target, Catalog] | None = None,
               on_event: Callable[[str, Watch | None, Event], None] | None = None) -> tuple[list[LaneBase],
                                                                                            list[DriveError]]:
    """A started lane per target that answers and can run every prompt of the plan, and the errors of
    those left out. A target's capacity is its `max_jobs`, else the run's queue depth.

    The targets are asked at once (a catalogue `known` by target is not asked for again); the plan is
    validated against each catalogue (once for targets that serve the same one). In a pool, a target that does not answer is left out with a message and the
    run goes on with the others; alone (or when none answers) it is the run's error. A prompt invalid on
    a target is always the run's error: the series has to be fixed, not worked around.
    """
    o = options
    made: list[LaneBase] = []
    for target in targets:
        capacity = target.max_jobs or o.depth
        if target.is_v2:
            from comfy_driver.pipeline.v2lane import V2Lane  # here: a run on native servers never loads requests
        made.append(V2Lane(target, post, capacity=capacity, server_timeout=o.server_timeout, move_after=o.move_after,
                           settings=o.settings) if target.is_v2 else
                    Lane(target, client_id, post, capacity=capacity, server_timeout=o.server_timeout,
                         move_after=o.move_after, settings=o.settings, on_event=on_event))
    with ThreadPoolExecutor(len(made), thread_name_prefix="check") as pool:  # each target asked at once
        answers = [pool.submit(lane.check, (known or {}).get(lane.target)) for lane in made]
    lanes: list[LaneBase] = []
    gone: list[DriveError] = []
    valid: list[Catalog] = []  # catalogues the plan passed on: an identical one (a pool of alike boxes) is not redone
    try:
        for lane, answer in zip(made, answers):
            try:
                catalog = answer.result()
            except ServerUnreachable as exc:
                if len(targets) == 1:
                    raise
                say(f"{lane.name}: {exc.message}; the run goes on without it")
                gone.append(exc)
                continue
            if catalog is not None and not any(_alike(catalog, seen) for seen in valid):
                preflight(plan, catalog, server=lane.name)
                valid.append(catalog)
            lanes.append(lane)
        if not lanes:
            raise gone[0]
    except BaseException:
        for lane in made:
            lane.close()
        raise
    for lane in made:
        if lane not in lanes:
            lane.close()
    for lane in lanes:
        lane.pooled = len(lanes) > 1
        lane.start()
    return lanes, gone


def _alike(a: Catalog, b: Catalog) -> bool:
    return a.version == b.version and (a.nodes is b.nodes or a.nodes == b.nodes)
