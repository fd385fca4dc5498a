"""Which ready attempt goes to which target next: the supervisor's one scheduling decision.

Decisions:
- A target is given work while it holds fewer attempts than its capacity (queue-ahead on a native
  server, concurrent jobs on an API v2 target), so every GPU has its next prompt waiting; whichever
  target frees first takes the next attempt.
- Model affinity: loading a video model is seconds to minutes of multi-GB reads, so a target with
  room first takes a ready attempt of the workflow it last ran (its models are still loaded); when
  none is ready, the attempt goes to the free target whose loaded workflow the fewest ready attempts
  want. Ready attempts are looked at a window ahead, so no scene waits behind the whole series.
- Without affinity (`RunOptions.affinity = False`) the first ready attempt goes to the least loaded
  target: round-robin, the baseline the benchmark compares with.
- An attempt re-attached to a prompt that is on a target waits for that target.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from itertools import islice

from comfy_driver.pipeline.messages import Attempt, LaneBase

LOOKAHEAD = 64  # ready attempts considered for affinity


def workflow_of(attempt: Attempt) -> str:
    """What a target has loaded after running an attempt (its workflow's models)."""
    return attempt.step.step.workflow


def pick(ready: Sequence[Attempt], lanes: Sequence[LaneBase], *, affinity: bool) -> tuple[int, LaneBase] | None:
    """(index into `ready`, lane) of the next dispatch, or None when no target has room for any."""
    open_lanes = {lane.name: lane for lane in lanes if lane.open}
    free = [lane for lane in open_lanes.values() if lane.inflight < lane.capacity]
    if not free:
        return None
    window = list(islice(ready, LOOKAHEAD))

    def own(attempt: Attempt) -> LaneBase | None:
        return open_lanes.get(attempt.server or "") if attempt.attached else None

    if affinity:
        for i, attempt in enumerate(window):
            home = own(attempt)
            if home is not None:
                if home in free:
                    return i, home
                continue
            warm = [lane for lane in free if lane.warm == workflow_of(attempt)]
            if warm:
                return i, min(warm, key=_load)
        wanted = Counter(workflow_of(a) for a in window)
        for i, attempt in enumerate(window):
            if own(attempt) is None:
                return i, min(free, key=lambda lane: (wanted[lane.warm or ""], _load(lane)))
        return None
    for i, attempt in enumerate(ready):
        home = own(attempt)
        if home is None:
            return i, min(free, key=_load)
        if home in free:
            return i, home
    return None


def _load(lane: LaneBase) -> float:
    return lane.inflight / lane.capacity
