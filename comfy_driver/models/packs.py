"""Custom node packs as models.lock pins them: a git repository at one commit, and the node classes
comfy-drive's workflows take from it.

Which packs a backend needs is not written down per backend: it follows from the node classes of
the workflows the backend (and its stages) may submit, so a workflow edited in the GUI that starts
using another pack's node needs no second edit here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from comfy_driver.workflow.files import workflow_class_types

_FOLDER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


class PackEntry(BaseModel):
    """One custom node pack: cloned into `custom_nodes/<name>` at `commit`."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    name: str = Field(description="its folder under ComfyUI's custom_nodes/")
    url: str = Field(description="git repository")
    commit: str = Field(description="the full commit id it is pinned to")
    nodes: list[str] = Field(min_length=1, description="node classes comfy-drive's workflows use from it")
    requirements: bool = True  # install its requirements.txt into ComfyUI's Python
    license: str = ""

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _FOLDER.match(v) or v in (".", ".."):
            raise ValueError(f"{v!r} is not a plain folder name (letters, digits, '.', '_', '-')")
        return v

    @field_validator("commit")
    @classmethod
    def _commit(cls, v: str) -> str:
        if not re.fullmatch(r"[0-9a-f]{40}", v):
            raise ValueError("commit must be a full 40-hex commit id")
        return v

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not re.match(r"^(https://|file://|ssh://|git@)", v) or any(c.isspace() for c in v) or v.startswith("-"):
            raise ValueError(f"{v!r} is not a git URL (https://, ssh://, git@ or file://)")
        return v


def workflow_classes(folder: Path, names: Iterable[str]) -> set[str]:
    """The node classes of the named workflows (subgraphs included)."""
    classes: set[str] = set()
    for name in names:
        path = folder / f"{name}.json"
        if path.is_file():
            classes |= workflow_class_types(json.loads(path.read_text(encoding="utf-8")))
    return classes


def packs_for(packs: list[PackEntry], classes: set[str]) -> list[PackEntry]:
    """The packs that provide any of these node classes, in models.lock order."""
    return [p for p in packs if classes & set(p.nodes)]


def pack_providing(packs: list[PackEntry], class_type: str) -> PackEntry | None:
    return next((p for p in packs if class_type in p.nodes), None)
