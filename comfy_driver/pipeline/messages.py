"""What moves between the supervisor and its lanes: the attempt, the messages, and a lane's shape.

Decisions:
- A lane is one render target (a native ComfyUI server, or a Comfy API v2 endpoint) with its own
  threads. The supervisor talks to every kind the same way (`LaneBase`): it hands a lane attempts,
  asks it to unqueue, interrupt, give its work up or close, and has it finish an ended prompt
  (outcome and downloads) on the supervisor's pool.
- A lane writes no state: everything it learns comes back as one of the messages below, on the
  supervisor's queue. The fields marked "the supervisor's" are read and written by the supervisor
  thread alone (what it holds on the lane, whether it is gone, which workflow it last ran).
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from comfy_driver.comfy.catalog import Catalog
from comfy_driver.comfy.errors import ServerUnreachable
from comfy_driver.comfy.target import Target
from comfy_driver.errors import DriveError, RunError
from comfy_driver.pipeline.plan import PlannedStep
from comfy_driver.pipeline.state import SUBMITTED, StepState
from comfy_driver.pipeline.steps import Rendered
from comfy_driver.units import fmt_seconds

if TYPE_CHECKING:
    from comfy_driver.pipeline.finish import Outcome


class ServerGone(RunError):
    """A server stopped answering for longer than the run waits; what it holds is re-attached next run."""


@dataclass(eq=False)
class Attempt:
    """One prompt of a step, from its submission (or re-attachment) to its end."""

    step: PlannedStep
    rendered: Rendered
    number: int
    prompt_id: str  # the native prompt id, or the API v2 idempotency key: recorded before it is sent
    server: str | None = None  # the target it is on, for a re-attachment
    attached: bool = False  # a prompt a previous run left on a server: follow it, never post it again
    made: dict[str, Any] | None = None  # its outputs, if a previous run saw it succeed
    candidates: list[tuple[int, str]] = field(default_factory=list)  # state rebuilt: earlier attempts to look up

    @classmethod
    def next(cls, step: PlannedStep, rendered: Rendered, st: StepState, *, look_up: int = 0) -> Attempt:
        """The step's next attempt: the one a previous run left submitted (same graph), followed again;
        else a new one. With `look_up` (the state was rebuilt), the ids of that many earlier attempts are
        looked up on the target before anything is sent."""
        if st.status == SUBMITTED and st.prompt_id and st.graph_hash == rendered.graph_hash:
            return cls(step, rendered, st.attempts, st.prompt_id, st.server, attached=True, made=st.server_outputs)
        number = st.attempts + 1
        attempt = cls(step, rendered, number, step.prompt_id(step.spec.series, rendered.graph_hash, number))
        if look_up and st.attempts == 0:
            attempt.candidates = [(n, step.prompt_id(step.spec.series, rendered.graph_hash, n))
                                  for n in range(1, look_up + 1)]
        return attempt

    def renumber(self, number: int) -> None:
        """Become attempt `number` (a new prompt id or key), to be recorded before it is sent."""
        self.number, self.attached, self.candidates = number, False, []
        self.prompt_id = self.step.prompt_id(self.step.spec.series, self.rendered.graph_hash, number)


class Closing(Exception):
    """Raised inside a lane's threads when the run closes it: they end quietly."""


class LaneBase(ABC):
    """One render target as the supervisor sees it, and what every kind of lane does alike."""

    def __init__(self, target: Target, capacity: int, post: Callable[[object], None], *, server_timeout: float,
                 move_after: float) -> None:
        self.target = target
        self.name = target.display
        self.capacity = capacity  # prompts kept on the target: queue-ahead (native) or concurrent jobs (v2)
        self.post = post  # to the supervisor's queue
        self.server_timeout, self.move_after = server_timeout, move_after
        self._closing = threading.Event()
        self._abandon = threading.Event()
        self.held: set[Attempt] = set()  # the supervisor's: the attempts on this lane
        self.gone = False  # the supervisor's: it went away (or was given up); its work moved
        self.refusing: DriveError | None = None  # the supervisor's: it takes no new work (no credits left)
        self.warm: str | None = None  # the supervisor's: the workflow it was last given (its models are loaded)
        self.pooled = False  # one target of several: after move_after its work moves to the others

    @property
    def inflight(self) -> int:
        return len(self.held)

    @property
    def open(self) -> bool:
        """It can be given new work."""
        return not self.gone and self.refusing is None

    @abstractmethod
    def check(self, known: Catalog | None = None) -> Catalog | None:
        """Before the run: the target answers (or raises why not); its node catalogue, which the plan's
        prompts are validated against (`known` when the caller read it already; None: it has none, and
        has said validation is skipped)."""

    def start(self) -> None:
        """Start the lane's threads (after every lane passed `check`)."""

    @abstractmethod
    def submit(self, attempt: Attempt) -> None: ...

    @abstractmethod
    def follow(self, attempt: Attempt) -> None:
        """Follow an attempt again (its outcome said it is still queued or running)."""

    @abstractmethod
    def unqueue(self) -> None:
        """Take this run's prompts that have not started off the target; answer with one `Unqueued`."""

    @abstractmethod
    def interrupt(self) -> None: ...

    def abandon(self) -> None:
        """Stop waiting for an unreachable target: answer with `LaneGone` (its work moves elsewhere)."""
        self._abandon.set()

    def _wait_until_back(self, ping: Callable[[], object], holding: str) -> None:
        """The target stopped answering: `ping` it until it answers, saying so every 5 s. After
        `move_after` (and every 5 s before, for a supervisor whose other targets are idle) the supervisor
        hears `Stalled`, and may `abandon` the lane; after `server_timeout`,
        or once abandoned, `ServerGone` ends the lane. `holding` says what is left on the target."""
        since, shown, stalled = time.monotonic(), -5.0, False
        self._abandon.clear()  # an abandon meant for an earlier outage, which ended meanwhile, does not count
        while True:
            try:
                ping()
                if time.monotonic() - since > 1:
                    self.post(Say(f"{self.name} is back after {fmt_seconds(time.monotonic() - since)}"))
                return
            except ServerUnreachable:
                down = time.monotonic() - since
            if self._abandon.is_set():
                raise ServerGone(f"{self.name} has not answered for {fmt_seconds(down)}; its work moves to the "
                                 "other targets")
            if down >= self.move_after and not stalled:
                stalled = True
                self.post(Stalled(self, down))
            if down > self.server_timeout:
                raise ServerGone(f"{self.name} has not answered for {fmt_seconds(down)}; the run stopped with "
                                 f"{holding} still there; finished scenes are kept",
                                 hint="start it again (or pass another --server) and run the same command again to "
                                      "resume: what is left there is re-attached")
            if down - shown >= 5:
                shown = down
                then = (f"its work moves to the other targets after {fmt_seconds(self.move_after)}"
                        if self.pooled and not stalled else f"giving up after {fmt_seconds(self.server_timeout)}")
                self.post(Say(f"waiting for {self.name} (unreachable for {fmt_seconds(down)}; {then})"))
                self.post(Stalled(self, down))
            if self._closing.wait(min(0.5, self.move_after / 4)):
                raise Closing

    @abstractmethod
    def finish(self, attempt: Attempt, handle: Any, retries: int, root: Path) -> Outcome:
        """Read an ended prompt's outcome and download what it made (runs on the supervisor's pool)."""

    @abstractmethod
    def close(self) -> None:
        """Stop the lane's threads and close its connections (prompts left on the target stay there)."""


# ------------------------------------------------------------------------------------------------- messages
@dataclass
class Submitted:
    lane: LaneBase
    attempt: Attempt
    found: bool = False  # found on the target (state rebuilt, or re-attached) rather than posted
    job: str | None = None  # the API v2 job id


@dataclass
class Rejected:
    lane: LaneBase
    attempt: Attempt
    error: DriveError  # the target refused the prompt itself (validation)


@dataclass
class Requeue:
    """Not submitted (the target did not answer, or the attempt needs a new id): to be given to a lane
    again; a renumbered attempt is recorded before it is sent."""

    lane: LaneBase
    attempt: Attempt


@dataclass
class Refusing:
    """The target takes no more work (402: no credits); `attempt` was not submitted."""

    lane: LaneBase
    attempt: Attempt
    error: DriveError


@dataclass
class Ended:
    lane: LaneBase
    attempt: Attempt
    handle: Any  # what the lane's `finish` reads the outcome from; owned by whoever takes this message


@dataclass
class Seen:
    lane: LaneBase
    attempt: Attempt | None
    node: str
    step: tuple[float, float] | None
    started_at: float | None


@dataclass
class Unqueued:
    lane: LaneBase
    attempts: list[Attempt]


@dataclass
class Say:
    text: str


@dataclass
class Stalled:
    """The target has not answered for `down` seconds (it keeps waiting unless abandoned)."""

    lane: LaneBase
    down: float


@dataclass
class LaneGone:
    lane: LaneBase
    error: DriveError


@dataclass
class Crashed:
    """A task raised something unexpected: the run stops cleanly and names where."""

    where: str
    error: BaseException
    lane: LaneBase | None = None  # the lane whose thread it was: it takes no more work
