"""Reading JSON within bounds: nesting deeper than MAX_DEPTH is refused, whatever the shape or type."""

from __future__ import annotations

import pytest

from comfy_driver import jsontext
from comfy_driver.jsontext import MAX_DEPTH


def nested(levels: int, *, kind: str) -> str:
    if kind == "list":
        return "[" * levels + "1" + "]" * levels
    return '{"a":' * levels + "1" + "}" * levels


@pytest.mark.parametrize("kind", ["list", "dict"])
@pytest.mark.parametrize("as_bytes", [False, True])
def test_depth_up_to_the_limit_is_read_and_one_more_refused(kind: str, as_bytes: bool) -> None:
    for levels, ok in ((MAX_DEPTH - 1, True), (MAX_DEPTH, True), (MAX_DEPTH + 1, False), (3 * MAX_DEPTH, False)):
        text = nested(levels, kind=kind)
        raw = text.encode() if as_bytes else text
        if ok:
            assert jsontext.loads(raw) == jsontext.json.loads(text)
        else:
            with pytest.raises(ValueError, match=f"nested more than {MAX_DEPTH} levels deep"):
                jsontext.loads(raw)


def test_many_brackets_shallow_and_brackets_in_strings_are_fine() -> None:
    wide = "[" + ",".join(['{"a":[1,{"b":[]}]}'] * 500) + "]"
    assert len(jsontext.loads(wide)) == 500
    assert jsontext.loads('["' + "[" * 500 + '"]') == ["[" * 500]
    deep_empty = "[" * MAX_DEPTH + "[]" + "]" * MAX_DEPTH  # the innermost list is empty: nothing below it
    assert jsontext.loads(deep_empty) is not None
    with pytest.raises(ValueError):
        jsontext.loads("[" * MAX_DEPTH + "[[]]" + "]" * MAX_DEPTH)


def test_scalars_and_non_finite_numbers() -> None:
    assert jsontext.loads("3") == 3 and jsontext.loads('"x"') == "x"
    with pytest.raises(ValueError, match="not a number"):
        jsontext.loads("[NaN]")
    assert jsontext.loads("[Infinity]", finite=False) == [float("inf")]


def test_clone_is_a_deep_copy_of_json_data() -> None:
    graph = {"1": {"class_type": "KSampler", "inputs": {"seed": 5, "cfg": 1.5, "model": ["2", 0], "on": True,
                                                         "note": None, "deep": [[{"x": [1]}]]}}}
    copied = jsontext.clone(graph)
    assert copied == graph
    copied["1"]["inputs"]["model"][0] = "9"
    copied["1"]["inputs"]["deep"][0][0]["x"].append(2)
    copied["1"]["_meta"] = {}
    assert graph == {"1": {"class_type": "KSampler", "inputs": {"seed": 5, "cfg": 1.5, "model": ["2", 0], "on": True,
                                                                 "note": None, "deep": [[{"x": [1]}]]}}}
    other = {"t": ([1], {2})}  # not JSON: deep-copied all the same
    cloned = jsontext.clone(other)
    assert cloned == other and cloned["t"][0] is not other["t"][0]
