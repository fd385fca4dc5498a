"""A node's widgets as the frontend builds them, and its saved values mapped onto them.

The GUI makes one widget per widget-typed input of the node definition, in the definition's order,
each followed by the controls it adds (control_after_generate, upload buttons), then the widgets
frontend extensions add. Saved `widgets_values` are assigned by position, not by name. A dynamic
combo (frontend 1.49) inserts the widgets of its chosen option right after itself when its value is
set, so the position of every later value depends on the values before it; the layout is therefore
computed by replaying the assignment, exactly as the GUI's configure step does.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Any

from comfy_driver.comfy.catalog import UPLOAD_FLAGS, Catalog
from comfy_driver.workflow.frontend import Frontend

DYNAMIC_COMBO = "COMFY_DYNAMICCOMBO_V3"


@dataclass(frozen=True)
class WidgetDef:
    """One widget of a node type: its input name, whether graphToPrompt sends it, its fresh value."""

    name: str
    sent: bool
    default: Any
    type: Any = None
    options: dict[str, Any] = field(default_factory=dict, compare=False)
    # dynamic combos: option key -> the widgets that option adds (names already prefixed)
    choices: dict[str, tuple[WidgetDef, ...]] | None = field(default=None, compare=False)
    repeat: bool = False  # an extension's widget repeated for every remaining saved value ('option{n}')
    display: bool = False  # shows a result; a saved value does not change what it sends
    optional: bool = False  # an optional input (the GUI draws its socket hollow: shape 7)


def widget_default(input_type: Any, options: dict[str, Any], empty: dict[str, Any] | None = None) -> Any:
    """The value a freshly made widget holds, as the frontend sets it."""
    if "default" in options:
        return options["default"]
    if isinstance(input_type, list):
        return input_type[0] if input_type else None
    if input_type == "COMBO":
        choices = options.get("options") or []
        return choices[0] if choices else None
    if input_type == DYNAMIC_COMBO:
        choices = options.get("options") or []
        return choices[0].get("key") if choices and isinstance(choices[0], dict) else None
    empty = empty if empty is not None else {"INT": 0, "FLOAT": 0, "BOOLEAN": False, "STRING": ""}
    value = empty.get(input_type)
    return list(value) if isinstance(value, list) else value


def _input_widgets(name: str, spec: Any, fe: Frontend, types: dict[str, Any], optional: bool) -> list[WidgetDef]:
    """The widgets one input makes: none (a socket), the widget, or the widget and its controls."""
    if isinstance(spec, str):
        spec = [spec]
    if not isinstance(spec, list) or not spec:
        return []
    input_type = spec[0]
    options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    widget_type = options.get("widgetType") if fe.has("typed_widgets") else None
    is_widget = isinstance(input_type, list) or input_type in types or widget_type in types
    if not is_widget or options.get("forceInput"):
        return []
    choices = None
    if input_type == DYNAMIC_COMBO:
        choices = {}
        for option in options.get("options") or []:
            nested: list[WidgetDef] = []
            inputs = option.get("inputs") or {}
            for category in ("required", "optional"):
                for sub_name, sub_spec in (inputs.get(category) or {}).items():
                    nested += _input_widgets(f"{name}.{sub_name}", sub_spec, fe, types, category == "optional")
            choices[str(option.get("key"))] = tuple(nested)
    kind = widget_type if widget_type in types else input_type
    widgets = [WidgetDef(name, True, widget_default(kind, options, types), kind, options, choices,
                         display=isinstance(kind, str) and kind in fe.display_widget_types(), optional=optional)]
    control = options.get("control_after_generate")
    if control is None:  # the GUI's legacy convention: INT seed inputs get a control too
        control = input_type == "INT" and name in ("seed", "noise_seed")  # the full name: not nested ones
    if control:
        widgets.append(WidgetDef("control_after_generate", False, "fixed"))
    if is_file_upload(widgets[0]):
        widgets.append(WidgetDef("upload", False, "image", "AUDIOUPLOAD" if options.get("audio_upload") else "IMAGEUPLOAD"))
    return widgets


_DEFS: weakref.WeakKeyDictionary[Catalog, dict[tuple[str, Frontend], tuple[WidgetDef, ...]]] = (
    weakref.WeakKeyDictionary())


def widget_defs(catalog: Catalog, class_type: str, fe: Frontend) -> tuple[WidgetDef, ...]:
    """Every widget the frontend makes for a node type before any value is loaded, in order."""
    cache = _DEFS.setdefault(catalog, {})
    defs = cache.get((class_type, fe))
    if defs is None:
        defs = cache[(class_type, fe)] = _widget_defs(catalog, class_type, fe)
    return defs


def _widget_defs(catalog: Catalog, class_type: str, fe: Frontend) -> tuple[WidgetDef, ...]:
    types = fe.widget_types()
    node = catalog.nodes[class_type]
    inputs = node.get("input", {})
    widgets: list[WidgetDef] = []
    for name, category in catalog.input_order(class_type):
        if category == "hidden":
            continue
        widgets += _input_widgets(name, inputs.get(category, {}).get(name), fe, types, category == "optional")
    for name, sent, default, where in fe.extra_widgets(class_type):
        extra = WidgetDef(name, sent, default, repeat=where == "repeat")
        if where.startswith("after:"):
            anchor = where.split(":", 1)[1]
            index = next((i + 1 for i, w in enumerate(widgets) if w.name == anchor), len(widgets))
            while index < len(widgets) and not widgets[index].sent:
                index += 1  # past the anchor's own controls
            widgets.insert(index, extra)
        else:
            widgets.append(extra)
    # Buttons inserted after one anchor keep their listed order.
    return tuple(_ordered_buttons(widgets, fe, class_type))


def _ordered_buttons(widgets: list[WidgetDef], fe: Frontend, class_type: str) -> list[WidgetDef]:
    after = [name for name, _, _, where in fe.extra_widgets(class_type) if where.startswith("after:")]
    if len(after) < 2:
        return widgets
    positions = [i for i, w in enumerate(widgets) if w.name in after]
    ordered = sorted((widgets[i] for i in positions), key=lambda w: after.index(w.name))
    for i, widget in zip(sorted(positions), ordered):
        widgets[i] = widget
    return widgets


def _expand(widget: WidgetDef, value: Any) -> list[tuple[WidgetDef, Any]]:
    """A widget holding `value` and, for a dynamic combo, the nested widgets its option adds."""
    out = [(widget, value)]
    if widget.choices is not None:
        for child in widget.choices.get(str(value), ()):
            out += _expand(child, child.default)
    return out


def fresh(defs: tuple[WidgetDef, ...], count: int = 0) -> list[tuple[WidgetDef, Any]]:
    """A new node's widgets with their default values (a repeated widget made for `count` values)."""
    widgets: list[tuple[WidgetDef, Any]] = []
    for widget in defs:
        if not widget.repeat:
            widgets += _expand(widget, widget.default)
    repeat = next((w for w in defs if w.repeat), None)
    if repeat is not None:  # one repeated widget per saved value left over (at least one)
        widgets += [(WidgetDef(repeat.name.format(n=n), repeat.sent, repeat.default), repeat.default)
                    for n in range(1, max(1, count - len(widgets)) + 1)]
    return widgets


def set_value(widgets: list[tuple[WidgetDef, Any]], index: int, value: Any) -> None:
    """Set one widget's value as the GUI does: a dynamic combo replaces its nested widgets."""
    widget = widgets[index][0]
    if widget.display:
        return
    if widget.choices is None:
        widgets[index] = (widget, value)
        return
    end = index + 1
    while end < len(widgets) and widgets[end][0].name.startswith(widget.name + "."):
        end += 1
    widgets[index:end] = _expand(widget, value)


def assign(defs: tuple[WidgetDef, ...], values: list[Any]) -> list[tuple[WidgetDef, Any]]:
    """The node's widgets after the GUI assigns saved values to them by position."""
    widgets = fresh(defs, len(values))
    for index, value in enumerate(values):
        if index >= len(widgets):
            break
        set_value(widgets, index, value)
    return widgets


def from_inputs(defs: tuple[WidgetDef, ...], inputs: dict[str, Any], keep: Any = None) -> list[tuple[WidgetDef, Any]]:
    """The widgets of a node whose values are an API node's inputs (`keep(value)` false: default)."""
    widgets = fresh(defs)
    index = 0
    while index < len(widgets):
        widget = widgets[index][0]
        if widget.sent and widget.name in inputs and (keep is None or keep(inputs[widget.name])):
            set_value(widgets, index, inputs[widget.name])
        index += 1
    return widgets


def named_values(catalog: Catalog, class_type: str, fe: Frontend, raw: Any) -> dict[str, Any]:
    """The values graphToPrompt sends for a node's widgets, by input name (saved values applied)."""
    defs = widget_defs(catalog, class_type, fe)
    if isinstance(raw, dict):  # VideoHelperSuite saves its widgets by name
        values: dict[str, Any] = {}
        for widget in defs:
            if widget.sent:
                values[widget.name] = raw.get(widget.name, widget.default)
                for extra, extra_default in format_widgets(catalog, class_type, widget.name, values[widget.name]):
                    values[extra] = raw.get(extra, extra_default)
        return values
    values = {w.name: v for w, v in assign(defs, list(raw or [])) if w.sent}
    if not fe.has("keeps_empty_file_names"):
        for widget in defs:
            if widget.name in values and values[widget.name] in ("", None) and is_file_upload(widget):
                choices = widget.type if isinstance(widget.type, list) else widget.options.get("options") or []
                values[widget.name] = choices[0] if choices else "undefined"
    return values


def is_file_upload(widget: WidgetDef) -> bool:
    """A combo listing the server's input files, with an upload button."""
    return (isinstance(widget.type, list) or widget.type == "COMBO") and any(
        widget.options.get(flag) for flag in UPLOAD_FLAGS)


def format_widgets(catalog: Catalog, class_type: str, name: str, value: Any) -> list[tuple[str, Any]]:
    """Widgets a VideoHelperSuite format combo adds for the chosen format, with their defaults."""
    _, _, options = catalog.input_info(class_type, name)
    formats = (options or {}).get("formats")
    if not isinstance(formats, dict):
        return []
    chosen = formats.get(value)
    if not isinstance(chosen, list):  # some packs use 'formats' for other settings
        return []
    extras = []
    for spec in chosen:
        extra_options = spec[2] if len(spec) > 2 and isinstance(spec[2], dict) else {}
        extras.append((spec[0], widget_default(spec[1], extra_options)))
    return extras


def placeholder_inputs(raw: Any, fe: Frontend) -> dict[str, Any]:
    """What the frontend's placeholder for a missing node type sends for its saved values."""
    if isinstance(raw, dict):
        raw = list(raw.values())
    values = ["null" if v is None else v for v in raw or []]
    if not fe.has("numbered_placeholders"):
        return {"UNKNOWN": values[-1]} if values else {}
    return {("UNKNOWN" if i == 0 else f"UNKNOWN_{i}"): v for i, v in enumerate(values)}
