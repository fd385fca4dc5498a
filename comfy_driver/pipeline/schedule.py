"""Which ready attempt goes to which target next: the supervisor's one scheduling decision.

Decisions:
- A target is given work while it holds fewer attempts than its capacity (queue-ahead on a native
  server, concurrent jobs on an API v2 target), so every GPU has its next prompt waiting; whichever
  target frees first takes the next attempt.
- Model affinity: loading a video model is seconds to minutes of multi-GB reads, so of the targets
  with the most room, one takes a ready attempt of the workflow it last ran (its models are still
  loaded) first; when none is ready, the first attempt goes to the one whose loaded workflow the
  fewest ready attempts want (a fresh one first). Room comes first: an idle GPU loading a model is
  better than a scene waiting in another's queue. Ready attempts are looked at a window ahead, so no scene waits
  behind the whole series.
- Without affinity (`RunOptions.affinity = False`) the first ready attempt goes to the least loaded
  target: round-robin, the baseline the benchmark compares with.
- An attempt re-attached to a prompt that is on a target goes to that target first, and waits for it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from itertools import islice
from operator import attrgetter

from comfy_driver.pipeline.messages import Attempt, LaneBase

LOOKAHEAD = 64  # ready attempts considered for affinity
_attached = attrgetter("attached")


def workflow_of(attempt: Attempt) -> str:
    """What a target has loaded after running an attempt (its workflow's models)."""
    return attempt.step.step.workflow


def pick(ready: Sequence[Attempt], lanes: Sequence[LaneBase], *, affinity: bool) -> tuple[int, LaneBase] | None:
    """(index into `ready`, lane) of the next dispatch, or None when no target has room for any.

    An attempt re-attached to a target still in the run waits for that one (a target refusing new
    work still follows what it has); one whose target is not is placed like new work.
    """
    homes = {lane.name: lane for lane in lanes if not lane.gone}
    free = [lane for lane in lanes if lane.open and lane.inflight < lane.capacity]

    def home(attempt: Attempt) -> LaneBase | None:
        return homes.get(attempt.server or "") if attempt.attached else None

    head = list(islice(ready, LOOKAHEAD))
    waiting = [i for i, attempt in enumerate(head) if home(attempt) is not None] \
        if any(map(_attached, head)) else []  # (re-attachments are rare: a rebuilt run's)
    for i in waiting:  # re-attachments first: their prompts are running
        own = home(head[i])
        if own is not None and own.inflight < own.capacity:
            return i, own
    if not free:
        return None
    window = [(i, a) for i, a in enumerate(head) if i not in waiting] if waiting else list(enumerate(head))
    if affinity:
        least = min(_load(lane) for lane in free)
        free = [lane for lane in free if _load(lane) == least]  # an idle target before a busy one's queue
        for i, attempt in window:
            warm = [lane for lane in free if lane.warm == workflow_of(attempt)]
            if warm:
                return i, warm[0]
        wanted = Counter(workflow_of(a) for _, a in window)
        if window:
            return window[0][0], min(free, key=lambda lane: (wanted[lane.warm or ""], lane.warm is not None))
        return None
    for i, attempt in enumerate(ready):
        if home(attempt) is None:
            return i, min(free, key=_load)
    return None


def _load(lane: LaneBase) -> float:
    return lane.inflight / lane.capacity
