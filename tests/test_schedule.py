"""The scheduling decision (`schedule.pick`): capacity per target, model affinity, re-attachments."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from comfy_driver.comfy.settings import Settings
from comfy_driver.comfy.target import Target
from comfy_driver.pipeline.lane import Lane
from comfy_driver.pipeline.messages import Attempt
from comfy_driver.pipeline.schedule import pick


def attempt(workflow: str, *, on: str | None = None) -> Attempt:
    step: Any = SimpleNamespace(step=SimpleNamespace(workflow=workflow))
    return Attempt(step, rendered=None, number=1, prompt_id=workflow, server=on, attached=on is not None)  # type: ignore[arg-type]


@pytest.fixture
def lanes() -> Iterator[list[Lane]]:
    made = [Lane(Target(url=f"http://gpu{i}:8188"), "client", lambda item: None, capacity=1, server_timeout=1,
                 move_after=1, settings=Settings()) for i in range(2)]
    yield made
    for lane in made:
        lane.close()


def dispatch_all(ready: list[Attempt], lanes: list[Lane], *, affinity: bool) -> list[tuple[str, str]]:
    """Run pick until nothing fits; each lane 'runs' what it was given (held), as the supervisor does."""
    given = []
    while (chosen := pick(ready, lanes, affinity=affinity)) is not None:
        index, lane = chosen
        a = ready.pop(index)
        lane.held.add(a)
        lane.warm = a.step.step.workflow
        given.append((lane.name, a.prompt_id))
    return given


def test_a_target_with_room_takes_the_workflow_it_has_loaded(lanes: list[Lane]) -> None:
    lanes[0].warm, lanes[1].warm = "svd", "wan"
    ready = [attempt("wan"), attempt("svd")]
    assert dispatch_all(ready, lanes, affinity=True) == [("http://gpu1:8188", "wan"), ("http://gpu0:8188", "svd")]
    lanes[0].warm, lanes[1].warm = "svd", "wan"
    for lane in lanes:
        lane.held.clear()
    ready = [attempt("wan"), attempt("svd")]
    assert dispatch_all(ready, lanes, affinity=False) == [("http://gpu0:8188", "wan"), ("http://gpu1:8188", "svd")]


def test_affinity_loads_each_model_about_once_where_round_robin_reloads_every_prompt(lanes: list[Lane]) -> None:
    def loads(affinity: bool) -> int:
        for lane in lanes:
            lane.held.clear()
            lane.warm = lane.__dict__["last"] = None
        ready = [attempt(("wan", "svd", "ltx")[i % 3]) for i in range(12)]
        count = 0
        while ready:
            for name, workflow in dispatch_all(ready, lanes, affinity=affinity):
                lane = next(lane for lane in lanes if lane.name == name)
                count += lane.__dict__.setdefault("last", None) != workflow
                lane.__dict__["last"] = workflow
            for lane in lanes:
                lane.held.clear()  # both finish
        return count

    with_affinity, round_robin = loads(affinity=True), loads(affinity=False)
    assert with_affinity <= 4 and round_robin == 12, (with_affinity, round_robin)  # 3 models, 2 targets


def test_an_idle_target_takes_new_work_before_one_warm_for_other_work(lanes: list[Lane]) -> None:
    lanes[0].warm = "svd"
    assert dispatch_all([attempt("wan")], lanes, affinity=True) == [("http://gpu1:8188", "wan")]


def test_capacity_refusal_and_reattachment(lanes: list[Lane]) -> None:
    lanes[0].capacity = 2
    lanes[1].refusing = RuntimeError("no credits")  # type: ignore[assignment]
    ready = [attempt("a", on="http://gpu1:8188"), attempt("b"), attempt("c"), attempt("d")]
    given = dispatch_all(ready, lanes, affinity=True)
    # gpu1 takes no new work (no credits) but follows the job it has; gpu0 takes two, its capacity
    assert given == [("http://gpu1:8188", "a"), ("http://gpu0:8188", "b"), ("http://gpu0:8188", "c")]
    assert [a.prompt_id for a in ready] == ["d"]
    lanes[1].gone, lanes[0].held = True, set()
    ready = [attempt("e", on="http://gpu1:8188")]  # its target went away: placed like new work
    assert dispatch_all(ready, lanes, affinity=False) == [("http://gpu0:8188", "e")]
