"""Reading JSON that may be hostile or careless: nesting is bounded, and NaN / Infinity are refused
where numbers must be real (the user's files and arguments). And copying what was read (`clone`).

Errors are ValueError, as the json module's are, so callers keep one except clause; a document
nested deeper than MAX_DEPTH is refused before any recursive code walks it.
"""

from __future__ import annotations

import copy
import json
from typing import Any

MAX_DEPTH = 100  # workflows, object_info and histories nest about ten levels


def _not_a_number(name: str) -> Any:
    raise ValueError(f"{name} is not a number a workflow can use")


def loads(text: str | bytes, *, finite: bool = True) -> Any:
    """json.loads within the limits above; finite=False accepts NaN/Infinity (a server may send them)."""
    try:
        data = json.loads(text, parse_constant=_not_a_number if finite else None)
    except RecursionError:
        raise ValueError(f"nested more than {MAX_DEPTH} levels deep") from None
    opening = ("{", "[") if isinstance(text, str) else (b"{", b"[")
    if text.count(opening[0]) + text.count(opening[1]) <= MAX_DEPTH:  # type: ignore[arg-type]
        return data  # each level opens a bracket: too few brackets to be too deep (most messages)
    stack = [(data, 0)] if isinstance(data, (dict, list)) else []
    while stack:
        value, depth = stack.pop()
        if depth >= MAX_DEPTH and value:  # its items are deeper than MAX_DEPTH
            raise ValueError(f"nested more than {MAX_DEPTH} levels deep")
        children = value.values() if isinstance(value, dict) else value
        stack.extend((v, depth + 1) for v in children if isinstance(v, (dict, list)))
    return data


def clone(value: Any) -> Any:
    """A deep copy of JSON data (dicts, lists, strings, numbers, booleans, None), several times faster
    than copy.deepcopy, which keeps a memo and dispatches on every value; anything else in it is
    deep-copied by copy.deepcopy. Each container is copied where it appears (data read from JSON
    shares none)."""
    kind = type(value)
    if kind is dict:
        return {key: item if type(item) in _ATOMS else clone(item) for key, item in value.items()}
    if kind is list:
        return [item if type(item) in _ATOMS else clone(item) for item in value]
    if kind in _ATOMS:
        return value
    return copy.deepcopy(value)


_ATOMS = frozenset({str, int, float, bool, type(None)})
