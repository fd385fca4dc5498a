"""Workflow templates: a graph plus a declared parameter set, rendered into an API graph.

Parameters address node inputs by node title ("Video Sampler.seed"), not by node id, so a template
survives being opened, edited and saved in the ComfyUI GUI as long as the titles stay.
"""

from __future__ import annotations

from collections.abc import Callable
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from comfy_driver import jsontext
from comfy_driver.errors import UserError
from comfy_driver.comfy.catalog import Catalog
from comfy_driver.workflow.files import load_workflow
from comfy_driver.yamltext import load_yaml, validate

ParamType = Literal["int", "float", "string", "bool", "image", "video"]
FILE_TYPES = ("image", "video")


class Param(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)

    type: ParamType
    targets: list[str] = Field(min_length=1)
    default: Any = None
    required: bool | None = None  # default: required when there is no default (files: optional)
    min: int | float | None = None  # an int stays exact (a seed's maximum is 2**64 - 1)
    max: int | float | None = None
    multiple_of: int | None = None
    choices: list[Any] | None = None
    format: str | None = None  # the value written into the graph: format.format(value) ("Model-{}.gguf")
    doc: str = ""

    @model_validator(mode="after")
    def _targets(self) -> Param:
        for t in self.targets:
            if "." not in t:
                raise ValueError(f"target {t!r} must be 'Node Title.input'")
        return self

    @property
    def needed(self) -> bool:
        if self.required is not None:
            return self.required
        return self.default is None and self.type not in FILE_TYPES


class ParamFile(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)

    description: str = ""
    clip: str | None = None  # title of the output node whose file is the scene's clip
    ignores: list[str] = []  # scene fields this workflow has no use for (SVD from an image: the prompt)
    params: dict[str, Param] = {}


class Template:
    """A loaded template: where each parameter lands, checked against the graph once."""

    def __init__(self, name: str, graph: dict[str, Any], spec: ParamFile, source: Path,
                 workflow: dict[str, Any] | None = None) -> None:
        self.name = name
        self.graph = graph
        self.workflow = workflow  # the GUI workflow it came from, if it was saved by the GUI
        self.spec = spec
        self.source = source
        self.targets: dict[str, list[tuple[str, str]]] = {}
        titles = self._titles()
        for pname, param in spec.params.items():
            resolved = []
            for target in param.targets:
                title, _, input_name = target.rpartition(".")
                ids = titles.get(title, [])
                if not ids:
                    import difflib  # a suggestion for a bad name: the error path only
                    guess = difflib.get_close_matches(title, list(titles), n=1)
                    raise UserError(f"{source}: parameter {pname!r} targets node title {title!r}, "
                                    f"which no node of the workflow has"
                                    + (f"; did you mean {guess[0]!r}?" if guess else ""))
                if len(ids) > 1:
                    raise UserError(f"{source}: parameter {pname!r}: {len(ids)} nodes are titled {title!r} "
                                    f"(nodes {', '.join(ids)}); give each a unique title in the GUI")
                if input_name not in graph[ids[0]].get("inputs", {}):
                    raise UserError(f"{source}: parameter {pname!r}: node {title!r} "
                                    f"({graph[ids[0]]['class_type']}) has no input {input_name!r}")
                resolved.append((ids[0], input_name))
            self.targets[pname] = resolved
        self.clip_node: str | None = None
        if spec.clip is not None:
            ids = titles.get(spec.clip, [])
            if len(ids) != 1:
                raise UserError(f"{source}: clip: no single node is titled {spec.clip!r}")
            self.clip_node = ids[0]

    def _titles(self) -> dict[str, list[str]]:
        titles: dict[str, list[str]] = {}
        for nid, node in self.graph.items():
            title = (node.get("_meta") or {}).get("title")
            if title:
                titles.setdefault(title, []).append(nid)
        return titles

    @property
    def params(self) -> dict[str, Param]:
        return self.spec.params

    def defaults(self) -> dict[str, Any]:
        return {k: p.default for k, p in self.params.items() if p.default is not None}

    def render(self, values: dict[str, Any], *, where: str = "",
               where_of: Callable[[str], str] | None = None) -> dict[str, Any]:
        """The API graph with `values` applied; file parameters must already be server names.

        Every problem (unknown, missing, mistyped, out of range) is reported at once, each prefixed with
        `where_of(name)` when given (the line that set that parameter), else `where`.
        """
        errors: list[str] = []

        def at(name: str) -> str:
            return where_of(name) if where_of is not None else where

        for name in values:
            if name not in self.params:
                import difflib  # a suggestion for a bad name: the error path only
                guess = difflib.get_close_matches(name, list(self.params), n=1)
                errors.append(f"{at(name)}unknown parameter {name!r} for workflow {self.name!r}"
                              + (f"; did you mean {guess[0]!r}?" if guess else
                                 f" (it takes: {', '.join(sorted(self.params))})"))
        graph = jsontext.clone(self.graph)  # (the template's own graph is never changed)
        for name, param in self.params.items():
            value = values.get(name, param.default)
            if value is None:
                if param.needed:
                    errors.append(f"{where}parameter {name!r} is required by workflow {self.name!r}")
                continue
            try:
                value = coerce(param, value)
            except ValueError as exc:
                errors.append(f"{at(name)}parameter {name!r}: {exc}")
                continue
            if param.format is not None:
                value = param.format.format(value)
            for node_id, input_name in self.targets[name]:
                current = graph[node_id]["inputs"].get(input_name)
                if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
                    graph[node_id]["inputs"][input_name] = float(value)
                else:
                    graph[node_id]["inputs"][input_name] = value
        if errors:
            raise UserError("\n".join(errors))
        return graph


def _number(bound: int | float) -> str:
    """A bound as written: whole numbers in full (a seed's maximum is 16777215, not 1.67772e+07)."""
    return str(int(bound)) if isinstance(bound, int) or bound.is_integer() else repr(bound)


def coerce(param: Param, value: Any) -> Any:
    """Check and convert one value to the parameter's type and range."""
    t = param.type
    if t == "int":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
            raise ValueError(f"expected a whole number, got {value!r}")
        value = int(value)
    elif t == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"expected a number, got {value!r}")
        value = float(value)
    elif t == "bool":
        if not isinstance(value, bool):
            raise ValueError(f"expected true or false, got {value!r}")
    elif not isinstance(value, str):
        raise ValueError(f"expected text, got {value!r}")
    if param.min is not None and value < param.min:
        raise ValueError(f"{value} is below the minimum {_number(param.min)}")
    if param.max is not None and value > param.max:
        raise ValueError(f"{value} is above the maximum {_number(param.max)}")
    if param.multiple_of and value % param.multiple_of:
        raise ValueError(f"{value} is not a multiple of {param.multiple_of}")
    if param.choices is not None and value not in param.choices:
        raise ValueError(f"{value!r} is not one of {param.choices}")
    return value


_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


def load_template(name_or_path: str, workflows_dir: Path, catalog: Catalog) -> Template:
    """A template by name (workflows/<name>.json + <name>.params.yaml) or by path to its JSON.

    The JSON may be a GUI-saved workflow (converted with `catalog`) or an API graph.
    """
    path = Path(name_or_path)
    if path.suffix != ".json":
        if not _NAME.match(name_or_path):
            raise UserError(f"{name_or_path!r} is not a workflow name")
        path = workflows_dir / f"{name_or_path}.json"
    if not path.is_file():
        known = sorted(p.stem for p in workflows_dir.glob("*.json"))
        raise UserError(f"no workflow {name_or_path!r} in {workflows_dir}",
                        hint=f"known workflows: {', '.join(known) or 'none'}")
    graph, workflow = load_workflow(path, catalog)
    params_path = path.with_name(path.stem + ".params.yaml")
    spec = validate(ParamFile, load_yaml(params_path, what="parameter file")) if params_path.exists() \
        else ParamFile()
    return Template(path.stem, graph, spec, params_path, workflow)
