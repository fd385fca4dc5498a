"""The jinja2 sandbox that renders a series file's templates; rendering one must never run code.

Series files and their workflows are shared between people, so a template is treated as hostile input:
- it renders in jinja2's immutable sandbox (no attribute starting with `_`, no Python internals, no
  mutation of the values it is given), with only the builtins a prompt needs (`range`, `dict`);
- there are no loaders: `include`, `extends`, `import`, macros, call blocks and recursive loops are
  refused when the template is parsed, before anything runs;
- every operation that can grow a value is checked *before* it runs: `*`, `**` and `%` on strings,
  lists and numbers, concatenation (`~`), and the filters that pad, repeat or join (`center`,
  `indent`, `format`, `join`, `replace`, `batch`, `slice`, ...); strings stay under
  `MAX_CHARS`, sequences under `MAX_ITEMS`, numbers under `MAX_INT_BITS` bits;
- loops share one budget of `MAX_ITERATIONS` iterations and the whole render one of `MAX_SECONDS`;
- the optimiser that folds constant expressions at compile time is off, so nothing is evaluated
  before these checks are in place.

A refused or broken template is a `UserError` naming file:line and field, like every other bad input.
"""

from __future__ import annotations

import contextvars
import difflib
import functools
import math
import re
import string
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, cast

import jinja2
from jinja2 import nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.visitor import NodeTransformer

from comfy_driver.config.templates import MAX_SOURCE
from comfy_driver.errors import UserError

MAX_CHARS = 100_000  # the longest string a template may make (a prompt is a few hundred)
MAX_ITEMS = 10_000  # the longest list or range
MAX_INT_BITS = 4096  # the largest number
MAX_ITERATIONS = 100_000  # loop iterations in one render, all loops together
MAX_SECONDS = 2.0  # one render

_REFUSED_NODES: dict[type[nodes.Node], str] = {
    nodes.Extends: "extends", nodes.Include: "include", nodes.Import: "import",
    nodes.FromImport: "from ... import", nodes.Macro: "macro", nodes.CallBlock: "call",
    nodes.Block: "block",
}
# String methods a template may call: none of them can make a string longer than it and its arguments.
_STR_METHODS = frozenset({
    "capitalize", "casefold", "count", "endswith", "find", "index", "isalnum", "isalpha", "isdecimal",
    "isdigit", "islower", "isnumeric", "isspace", "istitle", "isupper", "lower", "lstrip", "partition",
    "removeprefix", "removesuffix", "replace", "rfind", "rindex", "rpartition", "rsplit", "rstrip",
    "split", "splitlines", "startswith", "strip", "swapcase", "title", "upper", "join",
})
_WIDTH = re.compile(r"%[-+ #0]*(\d+)?(?:\.(\d+))?")


class TemplateRefused(Exception):
    """A template asked for something the sandbox does not allow, or went over a limit."""


class _Budget:
    """The limits of one render: a deadline and the loop iterations left."""

    def __init__(self) -> None:
        self.deadline = time.monotonic() + MAX_SECONDS
        self.iterations = MAX_ITERATIONS

    def tick(self, n: int = 1) -> None:
        self.iterations -= n
        if self.iterations < 0:
            raise TemplateRefused(f"loops ran more than {MAX_ITERATIONS} times")
        if time.monotonic() > self.deadline:
            raise TemplateRefused(f"took longer than {MAX_SECONDS:g} s to render")


_budget: contextvars.ContextVar[_Budget | None] = contextvars.ContextVar("template_budget", default=None)


def _tick(n: int = 1) -> None:
    budget = _budget.get()
    if budget is not None:
        budget.tick(n)


def _check(value: Any) -> Any:
    """Refuse a value over the size limits (after an operation whose result size was bounded anyway)."""
    if isinstance(value, str) and len(value) > MAX_CHARS:
        raise TemplateRefused(f"a string longer than {MAX_CHARS} characters")
    if isinstance(value, (list, tuple, dict, set, frozenset)) and len(value) > MAX_ITEMS:
        raise TemplateRefused(f"a list longer than {MAX_ITEMS} items")
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > MAX_INT_BITS:
        raise TemplateRefused(f"a number larger than 2^{MAX_INT_BITS}")
    return value


def _size(value: Any) -> int:
    return len(value) if isinstance(value, (str, list, tuple)) else 1


def _check_format(fmt: Any) -> None:
    """printf-style widths and precisions pad a string: keep them under the string limit."""
    if isinstance(fmt, str):
        for width, precision in _WIDTH.findall(fmt):
            if int(width or 0) > MAX_CHARS or int(precision or 0) > MAX_CHARS:
                raise TemplateRefused(f"a format width over {MAX_CHARS}")


def _int_arg(value: Any, limit: int, what: str) -> None:
    if isinstance(value, int) and abs(value) > limit:
        raise TemplateRefused(f"{what} {value} is over the limit of {limit}")


def _safe_range(*args: int) -> range:
    rng = range(*args)
    if len(rng) > MAX_ITEMS:
        raise TemplateRefused(f"range() of more than {MAX_ITEMS} numbers")
    return rng


def _concat(*parts: Any) -> str:
    """The `~` operator: each part is bounded, so the sum is checked before joining."""
    texts = [str(p) for p in parts]
    if sum(map(len, texts)) > MAX_CHARS:
        raise TemplateRefused(f"a string longer than {MAX_CHARS} characters")
    return "".join(texts)


def _bounded_iter(iterable: Any) -> Iterator[Any]:
    """Every `for` loop iterates through this: one shared iteration budget and the deadline."""
    for item in iterable:
        _tick()
        yield item


def _join(value: Iterable[Any], d: str = "", attribute: Any = None) -> str:
    total = 0
    texts: list[str] = []
    for item in value:
        _tick()
        if attribute is not None:
            item = item.get(attribute) if isinstance(item, Mapping) else getattr(item, str(attribute), "")
        text = str(item)
        total += len(text) + len(d)
        if total > MAX_CHARS:
            raise TemplateRefused(f"a string longer than {MAX_CHARS} characters")
        texts.append(text)
    return d.join(texts)


def _pre_replace(s: Any, old: Any = "", new: Any = "", count: Any = None) -> None:
    s, old, new = str(s), str(old), str(new)
    hits = len(s) + 1 if old == "" else s.count(old)
    if count is not None and isinstance(count, int) and count >= 0:
        hits = min(hits, count)
    if len(s) + hits * max(0, len(new) - len(old)) > MAX_CHARS:
        raise TemplateRefused(f"a string longer than {MAX_CHARS} characters")


def _pre_indent(s: Any, width: Any = 4, *_: Any, **__: Any) -> None:
    pad = len(width) if isinstance(width, str) else width if isinstance(width, int) else 0
    if (str(s).count("\n") + 1) * pad + len(str(s)) > MAX_CHARS:
        raise TemplateRefused(f"a string longer than {MAX_CHARS} characters")


# Checks that run before a filter whose output can be much larger than its input.
_PRECHECKS: dict[str, Callable[..., None]] = {
    "replace": _pre_replace,
    "indent": _pre_indent,
    "center": lambda s, width=80, *a, **k: _int_arg(width, MAX_CHARS, "width"),
    "format": lambda fmt, *a, **k: _check_format(fmt),
    "batch": lambda v, linecount, *a, **k: _int_arg(linecount, MAX_ITEMS, "batch size"),
    "slice": lambda v, slices, *a, **k: _int_arg(slices, MAX_ITEMS, "slice count"),
    "wordwrap": lambda s, width=79, *a, **k: _int_arg(width, MAX_CHARS, "width"),
    "truncate": lambda s, length=255, *a, **k: _int_arg(length, MAX_CHARS, "length"),
    "tojson": lambda v, indent=None, *a, **k: _int_arg(indent, 100, "indent"),
    "pprint": lambda *a, **k: None,
}


def _guarded_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    pre = _PRECHECKS.get(name)
    pass_ctx = getattr(func, "jinja_pass_arg", None)

    @functools.wraps(func)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        _tick(0)
        if pre is not None:
            pre(*(args[1:] if pass_ctx else args), **kwargs)
        return _check(func(*args, **kwargs))

    return guarded


class _Sandbox(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**", "%"})

    def __init__(self) -> None:
        super().__init__(undefined=jinja2.StrictUndefined, autoescape=False, optimized=False,
                         keep_trailing_newline=False)
        self.globals = {"range": _safe_range, "dict": dict, "_cd_concat": _concat, "_cd_iter": _bounded_iter}
        self.filters = {name: _guarded_filter(name, func) for name, func in self.filters.items()}
        self.filters["join"] = _guarded_filter("join", _join)

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        if isinstance(obj, str) and callable(value):
            return attr in _STR_METHODS
        return bool(super().is_safe_attribute(obj, attr, value))

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        """`'{:>9}'.format(x)` is allowed with the widths it asks for under the string limit."""
        owner = getattr(value, "__self__", None)
        if isinstance(owner, str) and getattr(value, "__name__", None) in ("format", "format_map"):
            try:
                specs = [spec for _, _, spec, _ in string.Formatter().parse(owner) if spec]
            except ValueError as exc:
                raise TemplateRefused(f"bad format string: {exc}") from None
            for spec in specs:
                if "{" in spec or any(int(n) > MAX_CHARS for n in re.findall(r"\d+", spec)):
                    raise TemplateRefused(f"a format width over {MAX_CHARS}")
        return cast("Callable[..., str] | None", super().wrap_str_format(value))

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        _tick(0)
        if operator == "*":
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and isinstance(n, int):
                    limit = MAX_CHARS if isinstance(seq, str) else MAX_ITEMS
                    if len(seq) * n > limit:
                        raise TemplateRefused(f"repeating a value {n} times goes over the limit of {limit}")
            if isinstance(left, int) and isinstance(right, int) and \
                    left.bit_length() + right.bit_length() > MAX_INT_BITS:
                raise TemplateRefused(f"a number larger than 2^{MAX_INT_BITS}")
        elif operator == "**":
            if isinstance(left, int) and isinstance(right, int) and abs(left) > 1 and right > 0 and \
                    right * math.log2(abs(left)) > MAX_INT_BITS:
                raise TemplateRefused(f"a number larger than 2^{MAX_INT_BITS}")
        elif operator == "%" and isinstance(left, str):
            _check_format(left)
        return _check(super().call_binop(context, operator, left, right))

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        _tick(0)
        if getattr(__obj, "__name__", None) == "replace" and isinstance(getattr(__obj, "__self__", None), str):
            _pre_replace(__obj.__self__, *args, **kwargs)
        if getattr(__obj, "__name__", None) == "join" and isinstance(getattr(__obj, "__self__", None), str):
            return _join(args[0] if args else (), __obj.__self__)
        return _check(super().call(__context, __obj, *args, **kwargs))


class _Guard(NodeTransformer):
    """Refuses what a template may not do and routes loops and `~` through the checks above."""

    def visit(self, node: nodes.Node, *args: Any, **kwargs: Any) -> Any:
        refused = _REFUSED_NODES.get(type(node))
        if refused is not None:
            raise TemplateRefused(f"line {node.lineno}: '{refused}' is not allowed in a series template")
        return super().visit(node, *args, **kwargs)

    def visit_For(self, node: nodes.For) -> nodes.Node:
        if node.recursive:
            raise TemplateRefused(f"line {node.lineno}: recursive loops are not allowed in a series template")
        self.generic_visit(node)
        node.iter = nodes.Call(nodes.Name("_cd_iter", "load"), [node.iter], [], None, None, lineno=node.lineno)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        return nodes.Call(nodes.Name("_cd_concat", "load"), list(node.nodes), [], None, None, lineno=node.lineno)


_ENV = _Sandbox()


@functools.lru_cache(maxsize=1024)
def _compile(text: str) -> tuple[jinja2.Template, nodes.Template]:
    if len(text) > MAX_SOURCE:
        raise TemplateRefused(f"the template is longer than {MAX_SOURCE} characters")
    tree = _Guard().visit(_ENV.parse(text))  # its Getattr nodes also name undefined variables in messages
    return _ENV.from_string(tree), tree


def render(text: str, context: Mapping[str, Any], *, where: str, field: str) -> str:
    """Render one template string; any refusal or template error is a UserError at `where: field`."""
    token = _budget.set(_Budget())
    tree = None
    try:
        template, tree = _compile(text)
        out: list[str] = []
        total = 0
        for chunk in template.generate(dict(context)):
            total += len(chunk)
            if total > MAX_CHARS:
                raise TemplateRefused(f"the result is longer than {MAX_CHARS} characters")
            _tick(0)
            out.append(chunk)
        return "".join(out)
    except jinja2.UndefinedError as exc:
        raise UserError(f"{where}: {field}: {_undefined_message(exc, tree, context)}",
                        hint=f"known names: {', '.join(sorted(context))}") from None
    except TemplateRefused as exc:
        raise UserError(f"{where}: {field}: template refused: {exc}",
                        hint="series templates may use variables, filters, if and for, within limits") from None
    except jinja2.exceptions.SecurityError as exc:
        raise UserError(f"{where}: {field}: template refused: {exc}",
                        hint="templates cannot reach Python internals (names starting with '_')") from None
    except jinja2.TemplateSyntaxError as exc:
        raise UserError(f"{where}: {field}: bad template: {exc.message} (line {exc.lineno} of the template)") \
            from None
    except (jinja2.TemplateError, ArithmeticError, TypeError, ValueError, LookupError) as exc:
        raise UserError(f"{where}: {field}: bad template: {exc}") from None
    except RecursionError:
        raise UserError(f"{where}: {field}: template refused: nested too deeply") from None
    finally:
        _budget.reset(token)


def _undefined_message(exc: jinja2.UndefinedError, tree: Any, context: Mapping[str, Any]) -> str:
    """'undefined template variable vars.styl (did you mean vars.style?)' rather than jinja's wording."""
    message = exc.message or ""
    m = re.match(r"'(\w+)' is undefined", message)
    if m:
        name = m.group(1)
        return f"undefined template variable {name!r}" + _did_you_mean(name, context, "")
    m = re.match(r".* has no attribute '([^']*)'", message)
    if m and tree is not None:
        attr = m.group(1)
        for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
            key = node.attr if isinstance(node, nodes.Getattr) else getattr(node.arg, "value", None)
            if key != attr:
                continue
            path = _dotted(node.node)
            if path is None:
                break
            owner: Any = context
            for part in path.split("."):
                owner = owner.get(part) if isinstance(owner, Mapping) else None
            known = owner if isinstance(owner, Mapping) else {}
            return f"undefined template variable {path}.{attr}" + _did_you_mean(attr, known, path + ".")
    return f"undefined template variable ({message})"


def _dotted(node: nodes.Node) -> str | None:
    if isinstance(node, nodes.Name):
        return node.name
    if isinstance(node, nodes.Getattr):
        head = _dotted(node.node)
        return f"{head}.{node.attr}" if head else None
    return None


def _did_you_mean(name: str, known: Mapping[str, Any], prefix: str) -> str:
    close = difflib.get_close_matches(name, [str(k) for k in known], n=1)
    return f" (did you mean {prefix}{close[0]}?)" if close else ""
