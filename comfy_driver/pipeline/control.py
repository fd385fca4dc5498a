"""What a caller gives a run and gets back: its options, a way to stop it, how it can end.

`RunControl` exists so that stopping never needs polling: its requests become messages on the
supervisor's queue, from any thread or a signal handler.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from comfy_driver.comfy.errors import ExecutionFailed, Interrupted, PromptLost, PromptRejected
from comfy_driver.comfy.settings import Settings
from comfy_driver.errors import RunError
from comfy_driver.pipeline.episodes import Stitched
from comfy_driver.pipeline.plan import ScenePlan
from comfy_driver.pipeline.report import RunReport
from comfy_driver.pipeline.state import StateStore

if TYPE_CHECKING:
    from comfy_driver.pipeline.supervisor import Supervisor


@dataclass
class RunOptions:
    depth: int = 2  # prompts kept on each target without max_jobs: the running one plus those queued behind it
    finishers: int = 4  # threads finishing ended prompts (history, downloads) and stitching episodes
    max_lost_resubmits: int = 3  # a prompt lost to a server restart is submitted again this often
    server_timeout: float = 600.0  # seconds a server may be unreachable before the run stops, resumable
    move_after: float = 60.0  # seconds a target may be unreachable before its work moves to the others
    affinity: bool = True  # a target takes work of the workflow it last ran first (fewer model loads)
    download_retries: int = 4
    force: set[str] = field(default_factory=set)  # scene keys ('EPISODE/SCENE', or 'all') rendered again
    episodes: bool = True  # join each episode's clips (a comparison renders scenes only)
    settings: Settings = field(default_factory=Settings)  # timeouts, retries, keepalive, TLS of every server
    after_episode: Callable[[Stitched], None] | None = None  # a task run after each episode is joined


class RunFailed(RunError):
    """A task failed unexpectedly; the run stopped cleanly and the next run resumes."""


class RunStopped(RunError):
    """The run stopped because it was asked to (`RunControl.stop`); finished work is kept, and `report`
    says what was done."""

    def __init__(self, message: str, *, hint: str | None = None, report: RunReport | None = None) -> None:
        super().__init__(message, hint=hint)
        self.report = report


class RunControl:
    """Stops a run from any thread or a signal handler: the first `stop()` queues nothing more and lets
    running prompts finish; a second one (or `interrupt()`) interrupts them too."""

    def __init__(self) -> None:
        self._supervisor: Supervisor | None = None
        self._asked: list[bool] = []  # requests made before the run started

    def stop(self) -> None:
        self._ask(False)

    def interrupt(self) -> None:
        self._ask(True)

    def _ask(self, interrupt: bool) -> None:
        if self._supervisor is None:
            self._asked.append(interrupt)
        else:
            self._supervisor.stop(interrupt=interrupt)

    def _attach(self, supervisor: Supervisor) -> None:
        self._supervisor = supervisor
        for interrupt in self._asked:
            supervisor.stop(interrupt=interrupt)


def error_kind(error: BaseException) -> str:
    if isinstance(error, ExecutionFailed):
        return "oom" if error.is_oom else "execution"
    if isinstance(error, Interrupted):
        return "interrupted"
    if isinstance(error, PromptRejected):
        return "validation"
    from comfy_driver.comfy.v2http import WorkflowRefused  # here: a run on native servers never loads requests

    if isinstance(error, WorkflowRefused):
        return "validation"
    return "lost" if isinstance(error, PromptLost) else "server"


@dataclass
class SceneRun:
    """What this run did with one scene (the supervisor's alone)."""

    plan: ScenePlan
    route: int = 0  # index into plan.routes
    status: str = "todo"  # todo | running | done | skipped | failed | stopped
    error: str | None = None
    error_kind: str | None = None

    def clip(self, state: StateStore) -> tuple[Path, str, str] | None:
        """The scene's clip when it is done: its path, sha256 and the backend that made it."""
        if self.status not in ("done", "skipped"):
            return None
        route = self.plan.routes[self.route]
        last = route.steps[-1]
        st = state.step(last.key)
        if st is None or not st.clip:
            return None
        return last.folder / st.clip, next(o["sha256"] for o in st.outputs if o["file"] == st.clip), route.backend
