"""Loading YAML files so that every error can name the file, the line and the field.

The YAML is composed into nodes (which know their line) and built into plain Python data alongside a
map from each value's path to its line. Pydantic errors are then rendered against that map, with a
did-you-mean for unknown keys: a typo is an error, never silently ignored.

It lives below every room (beside `jsontext`) because the series and backends files (config), the
workflow parameter files (workflow), models.lock (models) and the publish state (pipeline) all read
YAML this way, and the lower rooms must not import the higher ones.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from comfy_driver.errors import UserError

M = TypeVar("M", bound=BaseModel)
Loc = tuple[Any, ...]


class Located:
    """Parsed YAML data plus the line of every value, keyed by its path."""

    def __init__(self, path: Path, data: Any, lines: dict[Loc, int]) -> None:
        self.path = path
        self.data = data
        self.lines = lines

    def line(self, loc: Sequence[Any]) -> int | None:
        """The line of the deepest known path prefix of loc."""
        key = tuple(loc)
        while key:
            if key in self.lines:
                return self.lines[key]
            key = key[:-1]
        return self.lines.get(())

    def where(self, loc: Sequence[Any]) -> str:
        line = self.line(loc)
        return f"{self.path}:{line}" if line else str(self.path)


MAX_BYTES = 4 << 20  # a series file is a few KiB; megabytes mean a mistake or an attack
MAX_DEPTH = 48
MAX_VALUES = 200_000  # values built, aliases counted each time they are used (billion laughs stops here)
# libyaml's parser where PyYAML was built with it (ten times faster: models.lock and a long series load
# in milliseconds); it composes the same nodes, with the same line marks, resolved by the same rules.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_MAP_TAG, _SEQ_TAG, _MERGE_TAG = "tag:yaml.org,2002:map", "tag:yaml.org,2002:seq", "tag:yaml.org,2002:merge"


class _Builder:
    """Builds plain data from composed nodes within the limits above, recording each value's line.

    Aliases are allowed (they are handy for shared settings) but each use counts in full, so an
    alias bomb stops at MAX_VALUES instead of eating memory; an alias to a node that contains it
    is refused. `<<` merge keys work as YAML 1.1 defines them; tags other than the standard ones
    are refused, never constructed.
    """

    def __init__(self, path: Path, lines: dict[Loc, int]) -> None:
        self.path = path
        self.lines = lines
        self.count = 0
        self.open: set[int] = set()  # nodes being built: meeting one again is a recursive alias
        self.constructor = yaml.SafeLoader("")  # one for every scalar of the file (each is a node of its own)

    def fail(self, node: yaml.Node, message: str) -> UserError:
        return UserError(f"{self.path}:{node.start_mark.line + 1}: {message}")

    def build(self, node: yaml.Node, loc: Loc, depth: int = 0) -> Any:
        self.count += 1
        if self.count > MAX_VALUES:
            raise self.fail(node, f"more than {MAX_VALUES} values: aliases expanding again and again (an alias bomb?)")
        if depth > MAX_DEPTH:
            raise self.fail(node, f"nested more than {MAX_DEPTH} levels deep")
        if id(node) in self.open:
            raise self.fail(node, "an alias refers to a value that contains it (a recursive alias)")
        self.lines.setdefault(loc, node.start_mark.line + 1)
        if isinstance(node, yaml.ScalarNode):
            return self.scalar(node)
        self.open.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                return self.mapping(node, loc, depth)
            if node.tag != _SEQ_TAG:
                raise self.fail(node, f"unknown tag {node.tag!r}; tags are not supported here")
            return [self.build(item, loc + (i,), depth + 1) for i, item in enumerate(node.value)]
        finally:
            self.open.discard(id(node))

    def mapping(self, node: yaml.MappingNode, loc: Loc, depth: int) -> dict[Any, Any]:
        if node.tag != _MAP_TAG:
            raise self.fail(node, f"unknown tag {node.tag!r}; tags are not supported here")
        out: dict[Any, Any] = {}
        merged: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                merged = {**self.merge(value_node, loc, depth), **merged}
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                raise self.fail(key_node, "a key must be a plain name, not a list or a mapping")
            key = self.scalar(key_node)
            if key in out:
                raise self.fail(key_node, f"key {key!r} appears twice")
            self.lines[loc + (key,)] = key_node.start_mark.line + 1
            out[key] = self.build(value_node, loc + (key,), depth + 1)
        return {**merged, **out}

    def merge(self, node: yaml.Node, loc: Loc, depth: int) -> dict[Any, Any]:
        """The mapping(s) a `<<` key merges in; earlier ones win, as YAML defines."""
        sources = node.value if isinstance(node, yaml.SequenceNode) else [node]
        result: dict[Any, Any] = {}
        for source in reversed(sources):
            if not isinstance(source, yaml.MappingNode):
                raise self.fail(source, "'<<' merges a mapping (or a list of mappings) into this one")
            result.update(self.build(source, loc, depth + 1))
        return result

    def scalar(self, node: yaml.Node) -> Any:
        try:
            value = self.constructor.construct_object(node, deep=True)
        except yaml.constructor.ConstructorError:
            raise self.fail(node, f"unknown tag {node.tag!r}; tags are not supported here") from None
        except ValueError as exc:  # a malformed !!binary, !!timestamp ...
            raise self.fail(node, f"cannot read this value ({exc})") from None
        if isinstance(value, (datetime.date, datetime.datetime)):
            return str(node.value)  # a date is kept as the text it was written as
        if isinstance(value, float) and not math.isfinite(value):
            raise self.fail(node, f"{node.value!r} is not a finite number")
        if isinstance(value, str) and "\x00" in value:
            raise self.fail(node, "a NUL character is not allowed in text")
        if not isinstance(value, (str, int, float, bool, type(None))):
            raise self.fail(node, f"values tagged {node.tag.rsplit(':', 1)[-1]!r} are not supported here")
        return value


def load_yaml(path: Path, *, what: str = "file") -> Located:
    """Parse a YAML file within size, depth and alias limits; every error is a UserError with the line."""
    try:
        if path.stat().st_size > MAX_BYTES:
            raise UserError(f"{path}: larger than {MAX_BYTES >> 20} MiB; not a {what}")
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{path}: no such {what}") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise UserError(f"{path}: cannot read {what} ({exc})") from None
    try:
        root = yaml.compose(text, Loader=_LOADER)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UserError(f"{path}{line}: not valid YAML: {problem}") from None
    except RecursionError:
        raise UserError(f"{path}: nested too deeply to be a {what}") from None
    lines: dict[Loc, int] = {}
    data = _Builder(path, lines).build(root, ()) if root is not None else None
    return Located(path, data, lines)


def validate(model: type[M], located: Located, *, data: Any = None, context: dict[str, Any] | None = None) -> M:
    """model.model_validate with every error reported as 'file:line: field: message'."""
    try:
        return model.model_validate(located.data if data is None else data, context=context)
    except ValidationError as exc:
        raise UserError(render_errors(exc, located, model)) from None


def render_errors(exc: ValidationError, located: Located, model: type[BaseModel]) -> str:
    lines = []
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        field = ".".join(str(p) for p in loc) or "(top level)"
        if err["type"] == "extra_forbidden":
            name = str(loc[-1])
            allowed = _allowed_keys(model, loc[:-1])
            import difflib  # a suggestion for a bad name: the error path only
            guess = difflib.get_close_matches(name, allowed, n=1)
            hint = f"; did you mean {guess[0]!r}?" if guess else (
                f"; allowed: {', '.join(sorted(allowed))}" if allowed else "")
            lines.append(f"{located.where(loc)}: unknown key {field!r}{hint}")
        elif err["type"] == "missing":
            lines.append(f"{located.where(loc)}: {field}: required field is missing")
        else:
            msg = err["msg"]
            if msg.startswith("Value error, "):
                msg = msg[len("Value error, "):]
            lines.append(f"{located.where(loc)}: {field}: {msg}")
    return "\n".join(lines)


def _allowed_keys(model: type[BaseModel], loc: Loc) -> list[str]:
    """Field names (and aliases) of the model found at loc inside `model`, for did-you-mean."""
    current: Any = model
    skip_key = False  # the next part is a key of a dict field, not a field name
    for part in loc:
        if isinstance(part, int) or current is None:
            continue
        if skip_key:
            skip_key = False
            continue
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            return []
        skip_key = getattr(field.annotation, "__origin__", None) is dict
        current = _model_in(field.annotation)
    if current is None or not hasattr(current, "model_fields"):
        return []
    return [field.alias or name for name, field in current.model_fields.items()]


def _model_in(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _model_in(arg)
        if found is not None:
            return found
    return None
