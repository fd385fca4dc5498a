"""What the ComfyUI frontend does differently from one version to the next, as one table of facts.

`ui_to_api` reproduces the frontend's graphToPrompt; the frontend that matters is the one the target
server ships (`required_frontend_version` in its system_stats), because that is the GUI a person
opens the workflow in. Every behaviour that changed between the versions checked against a real GUI
(1.27.10 on ComfyUI 0.3.64, 1.49.6 on ComfyUI 0.33.0) is one row below with the first version known
to have it; a version in between gets every row whose `since` it has reached. Rows whose change came
with a release not checked against a real GUI carry the version where it was first observed.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from comfy_driver.comfy.catalog import Catalog
from comfy_driver.comfy.versions import frontend_for
from comfy_driver.errors import UserError
from comfy_driver.paths import DATA

Version = tuple[int, int, int]

OLDEST = (1, 27, 10)  # the GUI of ComfyUI 0.3.64, the oldest release this project was checked against
NEWEST = (1, 49, 6)   # the GUI of ComfyUI 0.33.0

# (name, sent to the server, value before anything is loaded, where the extension puts it)
ExtraWidget = tuple[str, bool, Any, str]


@dataclass(frozen=True)
class Fact:
    name: str
    since: Version
    what: str


FACTS: tuple[Fact, ...] = (
    Fact("subgraph_id_dedup", (1, 40, 0),
         "node ids inside subgraph definitions that collide with ids already used (the root graph, "
         "earlier definitions) are renumbered above the graph's last node id when the workflow is loaded"),
    Fact("dynamic_combos", (1, 49, 0),
         "COMFY_DYNAMICCOMBO_V3 inputs are combo widgets whose chosen option adds nested widgets named "
         "'<input>.<sub input>' right after them; older GUIs have no widget for them"),
    Fact("typed_widgets", (1, 49, 0),
         "an input whose options name a widgetType (Preview3D.model_file) is a widget of that type"),
    Fact("numbered_placeholders", (1, 49, 0),
         "a node of a type the server lacks sends its saved values as UNKNOWN, UNKNOWN_1, ...; before, "
         "each value overwrote the single key UNKNOWN"),
    Fact("no_preview_any_widget", (1, 49, 0),
         "PreviewAny lost its frontend-only 'preview' text widget (it was sent as '')"),
    Fact("keeps_empty_file_names", (1, 49, 0),
         "a file-upload combo (LoadImage, LoadVideo) saved as '' keeps it; older GUIs put the first file of "
         "the server's list in it when they open the workflow (the text 'undefined' when the list is empty)"),
    Fact("proxy_widget_migration", (1, 49, 0),
         "a PrimitiveNode promoted by a subgraph instance (properties.proxyWidgets) becomes a subgraph input "
         "when the workflow is opened, reconnected by its saved slot numbers (workflow/migrate.py)"),
    Fact("load3d_buttons_sent", (1, 49, 0),
         "Load3D's buttons ('upload 3d model', 'upload extra resources', 'clear') are sent with their "
         "saved values"),
)
_FACTS = {fact.name: fact for fact in FACTS}


def parse_version(text: str) -> Version:
    """'1.49.6' (or 'v1.49', '1.28.6-rc1') -> (1, 49, 6)."""
    match = re.match(r"^v?(\d+)\.(\d+)(?:\.(\d+))?", str(text).strip())
    if not match:
        raise UserError(f"frontend version {text!r}: expected a version such as 1.49.6")
    return int(match[1]), int(match[2]), int(match[3] or 0)


@dataclass(frozen=True)
class Frontend:
    """The conversion behaviour of one frontend version."""

    version: Version

    def has(self, fact: str) -> bool:
        return self.version >= _FACTS[fact].since

    @property
    def label(self) -> str:
        return ".".join(str(p) for p in self.version)

    def widget_types(self) -> dict[str, Any]:
        """Input types the GUI makes a widget for (the rest are sockets), with a fresh widget's value."""
        types: dict[str, Any] = dict(_WIDGET_TYPES)
        if self.has("dynamic_combos"):
            types.update(_NEW_WIDGET_TYPES)
        return types

    def display_widget_types(self) -> frozenset[str]:
        """Widget types that show a result (an image comparison) and send their empty value whatever
        the file saved in them."""
        return frozenset({"IMAGECOMPARE"}) if self.has("dynamic_combos") else frozenset()

    def title(self, class_type: str, display_name: str | None) -> str:
        """The title a node without a saved one shows: the GUI's bundled English name comes first."""
        known = [v for v in _titles() if v <= self.version] or [min(_titles())]
        return _titles()[max(known)].get(class_type) or display_name or class_type

    def extra_widgets(self, class_type: str) -> tuple[ExtraWidget, ...]:
        """Widgets frontend extensions add to a node type (they are not in object_info)."""
        extras = list(_EXTENSION_WIDGETS.get(class_type, ()))
        if not self.has("no_preview_any_widget"):
            extras += _OLD_EXTENSION_WIDGETS.get(class_type, ())
        if self.has("load3d_buttons_sent"):
            extras += _LOAD3D_BUTTONS.get(class_type, ())
        return tuple(extras)


_WIDGET_TYPES: dict[str, Any] = {"INT": 0, "FLOAT": 0, "BOOLEAN": False, "STRING": "", "COMBO": None}
# Widget types of the newer GUIs (types the older ones draw as sockets), with their empty values.
_NEW_WIDGET_TYPES: dict[str, Any] = {"COMFY_DYNAMICCOMBO_V3": None, "LOAD_3D": "", "COLOR": "#000000",
                                     "IMAGECOMPARE": ["", ""], "BOUNDING_BOXES": [], "COLORS": [],
                                     "AUDIO_RECORD": "", "PAINTER": ""}


@lru_cache(maxsize=1)
def _titles() -> dict[Version, dict[str, str]]:
    text = (DATA / "frontend_titles.json").read_text("utf-8")
    return {parse_version(v): titles for v, titles in json.loads(text)["versions"].items()}


# Widgets added by the frontend's own extensions and by packs' web extensions, in every version checked.
_EXTENSION_WIDGETS: dict[str, tuple[ExtraWidget, ...]] = {
    "SaveGLB": (("image", True, "", "end"),),
    "Preview3D": (("image", True, "", "end"),),
    "Preview3DAnimation": (("image", True, "", "end"),),
    "ImageConcatMulti": (("Update inputs", True, None, "end"),),  # KJNodes' button, sent as saved
    "CustomCombo": (("index", True, 0, "end"), ("option{n}", True, "", "repeat")),
}
_OLD_EXTENSION_WIDGETS: dict[str, tuple[ExtraWidget, ...]] = {
    "PreviewAny": (("preview", True, "", "end"),),
}
_LOAD3D_BUTTONS: dict[str, tuple[ExtraWidget, ...]] = {
    "Load3D": (("upload 3d model", True, "upload3dmodel", "after:model_file"),
               ("upload extra resources", True, "uploadExtraResources", "after:model_file"),
               ("clear", True, "clear", "after:model_file")),
}


def for_catalog(catalog: Catalog) -> Frontend:
    """The GUI of the ComfyUI release a catalogue came from (the newest checked one if unknown)."""
    return frontend(frontend_for(catalog.version))


def frontend(version: str | Version | None = None) -> Frontend:
    """The rules of a frontend version (the newest checked one when none is given)."""
    if version is None:
        return Frontend(NEWEST)
    return Frontend(parse_version(version) if isinstance(version, str) else tuple(version))  # type: ignore[arg-type]
