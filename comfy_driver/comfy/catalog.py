"""The node catalogue (GET /object_info) and prompt validation exactly as ComfyUI's server does it.

One piece of code serves both sides: the driver validates every scene before the first submit, and the
simulator answers POST /prompt with it. It follows ComfyUI 0.3.64's `validate_prompt` /
`validate_inputs` rule for rule (error types, messages, `node_errors` layout, `dependent_outputs`, the
stop at the first broken link of a branch), and is checked against the recorded validation traces.
"""

from __future__ import annotations

import copy
import traceback
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from comfy_driver import jsontext
from comfy_driver.comfy.versions import Version, has

# Input types of node schema v3 whose values arrive flattened with dots ("format.codec", "values.a").
DYNAMIC_COMBO = "COMFY_DYNAMICCOMBO_V3"  # a combo whose chosen option brings nested inputs
AUTOGROW = "COMFY_AUTOGROW_V3"  # a growing list of inputs made from a template
MATCHTYPE = "COMFY_MATCHTYPE_V3"  # an input of whichever type is linked, among allowed_types

# The option flags by which object_info marks a combo as an upload input (the GUI adds an upload button).
UPLOAD_FLAGS = ("image_upload", "animated_image_upload", "video_upload", "audio_upload")
# Of those, the inputs whose node checks that the file exists, as the server validates, and its kind.
CHECKED_UPLOADS = {"image_upload": "image", "video_upload": "video", "audio_upload": "audio"}


# File inputs of node packs whose object_info carries no upload flag, though the node checks the file
# in the server's input folder itself (VideoHelperSuite lists videos the GUI uploads).
PACK_FILE_INPUTS = {("VHS_LoadVideo", "video"): "video", ("VHS_LoadAudioUpload", "audio"): "audio"}


def option_specs(nodes: dict[str, Any]) -> Iterator[tuple[str, list[Any]]]:
    """(class_type, spec) of every input of a node catalogue that carries an options dict."""
    for class_type, node in nodes.items():
        for inputs in node.get("input", {}).values():
            for spec in inputs.values():
                if isinstance(spec, list) and len(spec) > 1 and isinstance(spec[1], dict):
                    yield class_type, spec


def combo_choices(spec: list[Any]) -> list[Any]:
    """The choices of a combo input, in either way object_info writes them."""
    return spec[1].get("options", []) if spec[0] == "COMBO" else spec[0] if isinstance(spec[0], list) else []


def set_combo_choices(spec: list[Any], names: list[str]) -> None:
    if spec[0] == "COMBO":
        spec[1]["options"] = names
    else:
        spec[0] = names


def is_upload(spec: list[Any]) -> bool:
    return any(spec[1].get(flag) for flag in CHECKED_UPLOADS)


class Catalog:
    """A node catalogue: class name -> object_info entry.

    `version` is the ComfyUI release that served it: validation answers as that release does
    (None: the newest).
    """

    def __init__(self, object_info: dict[str, Any], *, version: Version | None = None) -> None:
        self.nodes = object_info
        self.version = version
        self._outputs: dict[str, tuple[Any, ...]] = {}

    @classmethod
    def from_file(cls, path: str | Path, *, version: Version | None = None) -> Catalog:
        return cls(jsontext.loads(Path(path).read_text(encoding="utf-8"), finite=False), version=version)

    def __contains__(self, class_type: object) -> bool:
        return class_type in self.nodes

    def packs(self) -> dict[str, int]:
        """Node classes per source: 'core', 'api nodes', or the custom node pack's folder name."""
        counts: dict[str, int] = {}
        for node in self.nodes.values():
            module = str(node.get("python_module") or "")
            if module.startswith("custom_nodes."):
                source = module.split(".")[1]
            elif module.startswith("comfy_api_nodes"):
                source = "api nodes"
            else:
                source = "core"
            counts[source] = counts.get(source, 0) + 1
        return counts

    def output_types(self, class_type: str) -> tuple[Any, ...]:
        """The type of each output; a match-type output has the allowed types of its template."""
        types = self._outputs.get(class_type)
        if types is None:
            node = self.nodes[class_type]
            matches = node.get("output_matchtypes") or []
            templates = [extra["template"] for _, _, _, extra in self.live_inputs(class_type, {})
                         if isinstance(extra.get("template"), dict) and "template_id" in extra["template"]]
            allowed = {t["template_id"]: t.get("allowed_types", "*") for t in templates}
            types = self._outputs[class_type] = tuple(
                allowed.get(matches[i], "*") if t == MATCHTYPE and i < len(matches) else t
                for i, t in enumerate(node.get("output", [])))
        return types

    def is_output_node(self, class_type: str) -> bool:
        return bool(self.nodes.get(class_type, {}).get("output_node"))

    def input_order(self, class_type: str) -> list[tuple[str, str]]:
        """(name, category) of every declared input, in the order the GUI lays them out."""
        node = self.nodes[class_type]
        order = node.get("input_order") or {k: list(v) for k, v in node.get("input", {}).items()}
        return [(name, cat) for cat in ("required", "optional", "hidden") for name in order.get(cat, [])]

    def input_info(self, class_type: str, name: str) -> tuple[Any, str | None, dict[str, Any] | None]:
        """(type, category, options) of one input, or (None, None, None) if the node has no such input."""
        inputs = self.nodes[class_type].get("input", {})
        for category in ("required", "optional", "hidden"):
            spec = inputs.get(category, {}).get(name)
            if spec is not None:
                if isinstance(spec, str):  # hidden inputs are written as a bare type name
                    return spec, category, {}
                extra = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
                return spec[0], category, extra
        return None, None, None

    def live_inputs(self, class_type: str, inputs: dict[str, Any]) -> list[tuple[str, str, Any, dict[str, Any]]]:
        """(name, category, type, options) of every input the server checks for these input values.

        Plain inputs are the declared ones. A dynamic combo is followed by the nested inputs of the
        option its value chooses, named with dots ("format.codec"), recursively; an autogrow input
        stands for its numbered copies ("values.a", "values.b"; the first `min` required).
        """
        out: list[tuple[str, str, Any, dict[str, Any]]] = []
        for name, category in self.input_order(class_type):
            if category != "hidden":
                input_type, _, extra = self.input_info(class_type, name)
                _expand(name, category, input_type, extra or {}, inputs, out)
        return out

    def upload_kind(self, class_type: str, name: str) -> str | None:
        """'image' / 'video' / 'audio' when the input names a file in the server's input folder."""
        _, _, extra = self.input_info(class_type, name)
        for flag, kind in CHECKED_UPLOADS.items():
            if extra and extra.get(flag):
                return kind
        return PACK_FILE_INPUTS.get((class_type, name))

    def input_files(self) -> set[str]:
        """The files the server's upload combos list (what its input folder holds)."""
        return {str(o) for _, spec in option_specs(self.nodes) if is_upload(spec) for o in combo_choices(spec)}

    def with_files(self, files: Iterable[str]) -> Catalog:
        """A copy whose upload combos list `files` (what the server's input folder holds).

        Only the node classes that have upload inputs are copied: the simulator makes one per upload.
        """
        names = sorted(files)
        nodes = dict(self.nodes)
        for class_type in {c for c, spec in option_specs(self.nodes) if is_upload(spec)}:
            nodes[class_type] = copy.deepcopy(self.nodes[class_type])
            for _, spec in option_specs({class_type: nodes[class_type]}):
                if is_upload(spec):
                    set_combo_choices(spec, names)
        return Catalog(nodes, version=self.version)

    # ----------------------------------------------------------------------------------------------
    def validate(self, prompt: dict[str, Any], *, partial_targets: list[str] | None = None,
                 file_exists: Callable[[str, str], bool] | None = None, stricter: bool = False) -> ValidationResult:
        """Validate an API graph as the server's POST /prompt does.

        `file_exists(kind, name)` answers the custom validation of upload inputs (LoadImage & co):
        the simulator checks its input folder, the driver's preflight the files it is about to upload.
        Without it those inputs are checked against their combo list like any other.
        `stricter` (preflight) also refuses what the server accepts but cannot run: a required dynamic
        combo that is missing or names no option of it.
        """
        return _validate_prompt(self, prompt, partial_targets, file_exists, stricter)


class ValidationResult:
    """What validate_prompt returns: ok, the top-level error, outputs that passed, node_errors."""

    __slots__ = ("ok", "error", "good_outputs", "node_errors")

    def __init__(self, ok: bool, error: dict[str, Any] | None, good_outputs: list[str],
                 node_errors: dict[str, Any]) -> None:
        self.ok, self.error, self.good_outputs, self.node_errors = ok, error, good_outputs, node_errors

    def response(self) -> dict[str, Any]:
        """The 400 body the server sends for this result."""
        return {"error": self.error, "node_errors": self.node_errors}


def _split(spec: Any) -> tuple[Any, dict[str, Any]]:
    if isinstance(spec, str):
        return spec, {}
    return spec[0], (spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {})


def _expand(name: str, category: str, input_type: Any, extra: dict[str, Any], live: dict[str, Any],
            out: list[tuple[str, str, Any, dict[str, Any]]]) -> None:
    if input_type == DYNAMIC_COMBO:
        out.append((name, category, input_type, extra))
        chosen = live.get(name)
        option = next((o for o in extra.get("options", []) if isinstance(o, dict) and o.get("key") == chosen), None)
        for cat in ("required", "optional"):
            for sub, spec in ((option or {}).get("inputs") or {}).get(cat, {}).items():
                _expand(f"{name}.{sub}", cat, *_split(spec), live, out)
    elif input_type == AUTOGROW:
        template = extra.get("template") or {}
        names = template.get("names") or [str(i) for i in range(int(template.get("max", 0) or 0))]
        specs = [(sub, spec) for cat in ("required", "optional")
                 for sub, spec in (template.get("input") or {}).get(cat, {}).items()]
        for i, suffix in enumerate(names):
            cat = "required" if i < int(template.get("min", 0) or 0) else "optional"
            for sub, spec in specs:
                _expand(f"{name}.{suffix}" if len(specs) == 1 else f"{name}.{suffix}.{sub}", cat, *_split(spec),
                        live, out)
    elif input_type == MATCHTYPE:
        out.append((name, category, (extra.get("template") or {}).get("allowed_types", "*"), extra))
    else:
        out.append((name, category, input_type, extra))


def _error(type_: str, message: str, details: str = "") -> dict[str, Any]:
    return {"type": type_, "message": message, "details": details, "extra_info": {}}


def types_compatible(received: Any, expected: Any) -> bool:
    """ComfyUI's validate_node_input: equal, '*' on either side, or overlapping comma lists."""
    if not received != expected:
        return True
    if not isinstance(received, str) or not isinstance(expected, str):
        return False
    got = {t.strip() for t in received.split(",")}
    want = {t.strip() for t in expected.split(",")}
    if "*" in got or "*" in want:
        return True
    return bool(got & want)


def _validate_prompt(catalog: Catalog, prompt: dict[str, Any], partial_targets: list[str] | None,
                     file_exists: Callable[[str, str], bool] | None, stricter: bool) -> ValidationResult:
    outputs: list[str] = []
    for node_id, node in prompt.items():
        if not isinstance(node, dict) or "class_type" not in node or node["class_type"] not in catalog:
            return ValidationResult(False, _unknown_node(catalog, node_id, node), [], {})
        class_type = node["class_type"]
        if catalog.is_output_node(class_type) and (partial_targets is None or node_id in partial_targets):
            outputs.append(node_id)
    if not outputs:
        return ValidationResult(False, _error("prompt_no_outputs", "Prompt has no outputs"), [], {})

    good: list[str] = []
    failed: list[tuple[str, list[dict[str, Any]]]] = []
    node_errors: dict[str, Any] = {}
    validated: dict[str, tuple[bool, list[dict[str, Any]], str]] = {}
    for out in outputs:
        if has(catalog.version, "dependency_cycle"):
            _mark_cycles(prompt, out, validated)
        try:
            valid, reasons, _ = _validate_inputs(catalog, prompt, out, validated, file_exists, stricter)
        except Exception as ex:  # noqa: BLE001 - mirrors the server, which reports any exception
            valid = False
            reasons = [{"type": "exception_during_validation", "message": "Exception when validating node",
                        "details": str(ex), "extra_info": {"exception_type": _type_name(ex),
                                                          "traceback": traceback.format_tb(ex.__traceback__)}}]
            validated[out] = (False, reasons, out)
        if valid:
            good.append(out)
            continue
        if reasons:
            failed.append((out, reasons))
        for node_id, (ok, node_reasons, _) in validated.items():
            if ok is not True and node_reasons:
                if node_id not in node_errors:
                    node_errors[node_id] = {"errors": node_reasons, "dependent_outputs": [],
                                            "class_type": prompt[node_id]["class_type"]}
                node_errors[node_id]["dependent_outputs"].append(out)
    if not good:
        details = "\n".join(f"{e['message']}: {e['details']}" for _, errs in failed for e in errs)
        error = _error("prompt_outputs_failed_validation", "Prompt outputs failed validation", details)
        return ValidationResult(False, error, [], node_errors)
    return ValidationResult(True, None, good, node_errors)


def _unknown_node(catalog: Catalog, node_id: str, node: Any) -> dict[str, Any]:
    """The top-level error for a node without a class_type, or of a class the server lacks."""
    has_class = isinstance(node, dict) and "class_type" in node
    if not has(catalog.version, "missing_node_type"):
        if not has_class:
            return _error("invalid_prompt", "Cannot execute because a node is missing the class_type property.",
                          f"Node ID '#{node_id}'")
        return _error("invalid_prompt", f"Cannot execute because node {node['class_type']} does not exist.",
                      f"Node ID '#{node_id}'")
    raw_meta = node.get("_meta") if isinstance(node, dict) else None
    meta: dict[str, Any] = raw_meta if isinstance(raw_meta, dict) else {}
    if not has_class:
        title = meta.get("title")
        error = _error("missing_node_type", f"Node '{title or f'ID #{node_id}'}' has no class_type. "
                       "The workflow may be corrupted or a custom node is missing.", f"Node ID '#{node_id}'")
        error["extra_info"] = {"node_id": node_id, "class_type": None, "node_title": title}
        return error
    class_type = node["class_type"]
    title = meta.get("title", class_type)
    error = _error("missing_node_type", f"Node '{title}' not found. The custom node may not be installed.",
                   f"Node ID '#{node_id}'")
    error["extra_info"] = {"node_id": node_id, "class_type": class_type, "node_title": title}
    return error


def _mark_cycles(prompt: dict[str, Any], start: str,
                 validated: dict[str, tuple[bool, list[dict[str, Any]], str]]) -> None:
    """Record a dependency_cycle error on every node of each cycle reachable from `start`."""
    path: list[str] = []
    on_path: set[str] = set()
    done: set[str] = set()

    def visit(node_id: str) -> None:
        if node_id in done or node_id not in prompt or node_id in validated:
            return
        if node_id in on_path:
            cycle = path[path.index(node_id):]
            names = [f"{n} ({prompt[n].get('class_type')})" for n in [*cycle, node_id]]
            for member in cycle:
                validated[member] = (False, [{
                    "type": "dependency_cycle", "message": "Dependency cycle detected",
                    "details": " -> ".join(names), "extra_info": {"node_id": member, "cycle_nodes": list(cycle)}}],
                    member)
            return
        path.append(node_id)
        on_path.add(node_id)
        inputs = prompt[node_id].get("inputs") if isinstance(prompt[node_id], dict) else None
        for value in (inputs or {}).values():
            if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str):
                visit(value[0])
        path.pop()
        on_path.discard(node_id)
        done.add(node_id)

    visit(start)


def _type_name(ex: BaseException) -> str:
    module = type(ex).__module__
    return type(ex).__qualname__ if module == "builtins" else f"{module}.{type(ex).__qualname__}"


_CONVERT: dict[str, Callable[[Any], Any]] = {"INT": int, "FLOAT": float, "STRING": str, "BOOLEAN": bool}


def _validate_inputs(catalog: Catalog, prompt: dict[str, Any], node_id: str,
                     validated: dict[str, tuple[bool, list[dict[str, Any]], str]],
                     file_exists: Callable[[str, str], bool] | None,
                     stricter: bool) -> tuple[bool, list[dict[str, Any]], str]:
    if node_id in validated:
        return validated[node_id]
    node = prompt[node_id]
    inputs = node.get("inputs", {})
    class_type = node["class_type"]
    errors: list[dict[str, Any]] = []
    valid = True
    custom: list[tuple[str, str]] = []  # (input, upload kind): checked after the loop, as the server does

    for name, category, input_type, extra in catalog.live_inputs(class_type, inputs):
        if input_type == DYNAMIC_COMBO:
            # The server checks only the nested inputs of a chosen option: it accepts a graph without
            # the combo, or with a value that is no option. A top-level combo is then missing from the
            # node's arguments and it fails at run time (0.33.0, checked live); a nested one gets its
            # default, so only top-level ones are refused by `stricter`.
            if not stricter or "." in name:
                continue
            if category == "required" and name not in inputs:
                errors.append({"type": "required_input_missing", "message": "Required input is missing",
                               "details": f"{name} (the server accepts the graph without it, but the node "
                                          f"then fails at run time: missing 1 required positional argument: "
                                          f"'{name}')", "extra_info": {"input_name": name}})
            elif name in inputs and not isinstance(inputs[name], list):
                keys = [o.get("key") for o in extra.get("options", []) if isinstance(o, dict)]
                if inputs[name] not in keys:
                    errors.append({"type": "value_not_in_list", "message": "Value not in list",
                                   "details": f"{name}: '{inputs[name]}' not in {keys}",
                                   "extra_info": {"input_name": name, "input_config": None,
                                                  "received_value": inputs[name]}})
            continue
        if name not in inputs:
            if category == "required":  # a nested input's details name it without its prefix
                errors.append({"type": "required_input_missing", "message": "Required input is missing",
                               "details": name.rsplit(".", 1)[-1], "extra_info": {"input_name": name}})
            continue
        val = inputs[name]
        info = [input_type, extra]
        if isinstance(val, list):
            if len(val) != 2:
                errors.append({"type": "bad_linked_input",
                               "message": "Bad linked input, must be a length-2 list of [node_id, slot_index]",
                               "details": name,
                               "extra_info": {"input_name": name, "input_config": info, "received_value": val}})
                continue
            source_id = val[0]
            source_class = prompt[source_id]["class_type"]  # KeyError for a missing node, as on the server
            received_type = catalog.output_types(source_class)[val[1]]
            if not types_compatible(received_type, input_type):
                errors.append({"type": "return_type_mismatch", "message": "Return type mismatch between linked nodes",
                               "details": f"{name}, received_type({received_type}) mismatch input_type({input_type})",
                               "extra_info": {"input_name": name, "input_config": info,
                                              "received_type": received_type, "linked_node": val}})
                continue
            try:
                if _validate_inputs(catalog, prompt, source_id, validated, file_exists, stricter)[0] is False:
                    valid = False
                    continue
            except Exception as ex:  # noqa: BLE001 - the server records any exception on the linked node
                valid = False
                validated[source_id] = (False, [{
                    "type": "exception_during_inner_validation", "message": "Exception when validating inner node",
                    "details": str(ex),
                    "extra_info": {"input_name": name, "input_config": info, "exception_message": str(ex),
                                   "exception_type": _type_name(ex),
                                   "traceback": traceback.format_tb(ex.__traceback__), "linked_node": val}}],
                    source_id)
                continue
            continue

        if isinstance(val, dict) and "__value__" in val:
            val = val["__value__"]
        convert = _CONVERT.get(input_type) if isinstance(input_type, str) else None
        if convert is not None:
            try:
                val = convert(val)
            except Exception as ex:  # noqa: BLE001
                errors.append({"type": "invalid_input_type",
                               "message": f"Failed to convert an input value to a {input_type} value",
                               "details": f"{name}, {val}, {ex}",
                               "extra_info": {"input_name": name, "input_config": info, "received_value": val,
                                              "exception_message": str(ex)}})
                continue
        kind = next((k for f, k in CHECKED_UPLOADS.items() if extra.get(f)),
                    PACK_FILE_INPUTS.get((class_type, name)))
        if kind is not None and file_exists is not None:
            custom.append((name, kind))
            continue
        if "min" in extra and _lt(val, extra["min"]):
            errors.append({"type": "value_smaller_than_min",
                           "message": f"Value {val} smaller than min of {extra['min']}", "details": name,
                           "extra_info": {"input_name": name, "input_config": info, "received_value": val}})
            continue
        if "max" in extra and _lt(extra["max"], val):
            errors.append({"type": "value_bigger_than_max",
                           "message": f"Value {val} bigger than max of {extra['max']}", "details": name,
                           "extra_info": {"input_name": name, "input_config": info, "received_value": val}})
            continue
        if isinstance(input_type, list) or input_type == "COMBO":
            options = extra.get("options", []) if input_type == "COMBO" else input_type
            if val not in options:
                config: Any = info
                listed = str(options)
                if len(options) > 20:
                    listed, config = f"(list of length {len(options)})", None
                errors.append({"type": "value_not_in_list", "message": "Value not in list",
                               "details": f"{name}: '{val}' not in {listed}",
                               "extra_info": {"input_name": name, "input_config": config, "received_value": val}})
                continue

    for name, kind in custom:
        value = inputs[name]
        if not file_exists(kind, str(value)):  # type: ignore[misc]
            errors.append({"type": "custom_validation_failed", "message": "Custom validation failed for node",
                           "details": f"{name} - Invalid {kind} file: {value}", "extra_info": {"input_name": name}})

    result = (False, errors, node_id) if errors or not valid else (True, [], node_id)
    validated[node_id] = result
    return result


def _lt(a: Any, b: Any) -> bool:
    try:
        return bool(a < b)
    except TypeError:
        return False
