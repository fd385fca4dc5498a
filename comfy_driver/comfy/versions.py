"""What differs between ComfyUI (and frontend) versions: one table of facts, read from the server.

comfy-drive supports every ComfyUI release from 0.3.60 to the newest 0.33.x. Each behaviour that
changed between those releases is one `Fact` below, with the oldest release known to behave the new
way. The facts come from two recordings of real servers (0.3.64 with frontend 1.27.10, and 0.33.0 with
frontend 1.49.6); a release between the two is taken to behave as the newer recording wherever the
client cannot simply ask the server (the jobs routes, for one, are probed, not assumed). Code asks
`server.has("jobs_api")`, never compares version numbers itself.

0.3.60 to 0.3.64 speak the same protocol (their server code differs only in two extra system_stats
fields, the template versions, which 0.3.62 added).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, NamedTuple


class Version(NamedTuple):
    major: int
    minor: int
    patch: int

    @classmethod
    def parse(cls, text: object) -> Version | None:
        """'0.3.64', 'v0.33.0', '1.49.6', '0.33' -> Version; anything else -> None."""
        match = re.match(r"^\s*v?(\d+)\.(\d+)(?:\.(\d+))?", str(text or ""))
        if not match:
            return None
        return cls(int(match[1]), int(match[2]), int(match[3] or 0))

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"


OLDEST = Version(0, 3, 60)
NEWEST_LINE = (0, 33)  # every 0.33.x is supported; a newer line gets a warning, not a refusal
RECORDED = (Version(0, 3, 64), Version(0, 33, 0))  # the releases the facts were taken from


@dataclass(frozen=True)
class Fact:
    name: str
    since: Version  # the oldest release known to behave this way
    what: str


# The table. Server behaviours only; what depends on the catalogue (dynamic combos, an input a node
# gained) is read from that server's object_info, not from its version.
FACTS: tuple[Fact, ...] = (
    Fact("uuid_prompt_ids", Version(0, 33, 0),
         "a client-chosen prompt_id must be a canonical lower-case UUID, else 400 invalid_prompt_id"),
    Fact("missing_node_type", Version(0, 33, 0),
         "an unknown (or missing) class_type answers error type missing_node_type with extra_info "
         "{node_id, class_type, node_title}, not invalid_prompt"),
    Fact("dependency_cycle", Version(0, 33, 0),
         "validation reports a cycle as dependency_cycle on every node of it"),
    Fact("jobs_api", Version(0, 33, 0),
         "/api/jobs: list, one job, cancel by id (pending or running), batch cancel"),
    Fact("dynamic_inputs", Version(0, 33, 0),
         "object_info has COMFY_DYNAMICCOMBO_V3 / COMFY_AUTOGROW_V3 inputs, sent flattened with dots "
         "(SaveVideo 'format', 'format.codec'); the server checks the nested inputs of the chosen option "
         "only, and accepts a graph without the combo at all (which then fails at run time)"),
    Fact("rich_feature_flags", Version(0, 33, 0),
         "/features and the websocket feature_flags reply also carry supports_model_type_tags, "
         "node_replacements, extension and assets"),
    Fact("node_replacements", Version(0, 33, 0),
         "the server rewrites replaced node types of a posted graph before validating it"),
    Fact("templates_version", Version(0, 3, 62),
         "system_stats reports installed_templates_version and required_templates_version"),
)
_BY_NAME = {fact.name: fact for fact in FACTS}


# Frontend package each recorded server release requires (its requirements.txt); used when a server
# does not report required_frontend_version.
FRONTEND_OF: dict[Version, Version] = {
    Version(0, 3, 60): Version(1, 26, 13),
    Version(0, 3, 63): Version(1, 27, 7),
    Version(0, 3, 64): Version(1, 27, 10),
    Version(0, 33, 0): Version(1, 49, 6),
}


def has(version: Version | None, name: str) -> bool:
    """Whether a release behaves as `name` says. An unknown version is taken to be the newest."""
    return version is None or version >= _BY_NAME[name].since


def frontend_for(comfyui: Version | None) -> Version | None:
    """The frontend a release requires: the newest recorded release at or before it."""
    if comfyui is None:
        return None
    known = [v for v in FRONTEND_OF if v <= comfyui]
    return FRONTEND_OF[max(known)] if known else None


@dataclass(frozen=True)
class ServerVersions:
    """What a server told about itself (GET /system_stats), and the facts that follow."""

    comfyui: Version | None
    frontend: Version | None  # the frontend package the server requires (what its GUI runs)
    templates: Version | None = None
    comfyui_text: str = ""
    frontend_reported: bool = True

    @classmethod
    def from_system_stats(cls, stats: dict[str, Any]) -> ServerVersions:
        system = stats.get("system") or {}
        comfyui = Version.parse(system.get("comfyui_version"))
        frontend = Version.parse(system.get("required_frontend_version"))
        reported = frontend is not None
        return cls(comfyui=comfyui, frontend=frontend or frontend_for(comfyui),
                   templates=Version.parse(system.get("installed_templates_version")),
                   comfyui_text=str(system.get("comfyui_version") or ""), frontend_reported=reported)

    @classmethod
    def of(cls, comfyui: str) -> ServerVersions:
        """The versions of a release by number (the simulator's --comfyui)."""
        version = Version.parse(comfyui)
        if version is None:
            raise ValueError(f"not a ComfyUI version: {comfyui!r}")
        return cls(comfyui=version, frontend=frontend_for(version), comfyui_text=str(version))

    def has(self, name: str) -> bool:
        return has(self.comfyui, name)

    @property
    def facts(self) -> list[Fact]:
        """The version-dependent behaviours this server shows."""
        return [f for f in FACTS if self.has(f.name)]

    def support_note(self) -> str | None:
        """None when the release is supported; otherwise one line saying what to expect."""
        if self.comfyui is None:
            return "the server does not report its ComfyUI version; taken to be the newest"
        if self.comfyui < OLDEST:
            return (f"ComfyUI {self.comfyui} is older than the oldest supported release ({OLDEST}): "
                    "update ComfyUI")
        if (self.comfyui.major, self.comfyui.minor) > NEWEST_LINE:
            return (f"ComfyUI {self.comfyui} is newer than the newest supported line "
                    f"({NEWEST_LINE[0]}.{NEWEST_LINE[1]}.x); it is driven as {NEWEST_LINE[0]}.{NEWEST_LINE[1]}")
        return None

    def describe(self) -> str:
        frontend = str(self.frontend) if self.frontend else "?"
        if self.frontend and not self.frontend_reported:
            frontend += " (not reported; the one this release requires)"
        return f"ComfyUI {self.comfyui_text or '?'}, frontend {frontend}"
