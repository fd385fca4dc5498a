"""Loading YAML files so that every error can name the file, the line and the field.

The YAML is composed into nodes (which know their line) and built into plain Python data alongside a
map from each value's path to its line. Pydantic errors are then rendered against that map, with a
did-you-mean for unknown keys: a typo is an error, never silently ignored.
"""

from __future__ import annotations

import difflib
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


def _build(node: yaml.Node, loc: Loc, lines: dict[Loc, int], path: Path) -> Any:
    lines[loc] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = _scalar(key_node)
            if key in out:
                raise UserError(f"{path}:{key_node.start_mark.line + 1}: key {key!r} appears twice")
            out[key] = _build(value_node, loc + (key,), lines, path)
            lines[loc + (key,)] = key_node.start_mark.line + 1
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_build(item, loc + (i,), lines, path) for i, item in enumerate(node.value)]
    return _scalar(node)


def _scalar(node: yaml.Node) -> Any:
    return yaml.SafeLoader("").construct_object(node, deep=True)


def load_yaml(path: Path, *, what: str = "file") -> Located:
    """Parse a YAML file; syntax errors become UserError with the line."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{path}: no such {what}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read {what} ({exc})") from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UserError(f"{path}{line}: not valid YAML: {problem}") from None
    lines: dict[Loc, int] = {}
    data = _build(root, (), lines, path) if root is not None else None
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
