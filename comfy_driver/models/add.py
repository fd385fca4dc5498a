"""Adding entries to models.lock: from a Hub URL or repo path, or from a workflow's `properties.models`."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from comfy_driver.errors import UserError
from comfy_driver.models import hub
from comfy_driver.models.lock import FOLDERS, ModelEntry, append_entry, read_lock, relative_name, write_pins


@dataclass(frozen=True)
class HubRef:
    repo: str
    path: str
    revision: str | None


def parse_ref(ref: str) -> HubRef:
    """https://huggingface.co/OWNER/REPO/resolve|blob/REV/PATH, or OWNER/REPO/PATH."""
    text = ref.strip()
    if "://" in text:
        parts = [unquote(p) for p in urlsplit(text).path.strip("/").split("/")]
        if len(parts) >= 5 and parts[2] in ("resolve", "blob"):
            rev = parts[3] if re.fullmatch(r"[0-9a-f]{40}", parts[3]) else None
            return HubRef(f"{parts[0]}/{parts[1]}", "/".join(parts[4:]), rev)
        raise UserError(f"{ref!r}: not a Hub file URL (…/OWNER/REPO/resolve/REVISION/PATH)")
    parts = text.strip("/").split("/")
    if len(parts) < 3:
        raise UserError(f"{ref!r}: write OWNER/REPO/PATH/IN/REPO or paste the file's Hub URL")
    return HubRef(f"{parts[0]}/{parts[1]}", "/".join(parts[2:]), None)


def guess_folder(path: str) -> str | None:
    """ComfyUI's folder when the repo path names one (split_files/vae/x.safetensors -> vae)."""
    for part in reversed(path.split("/")[:-1]):
        if part in FOLDERS:
            return part
    return None


def add_to_lock(lock_path: Path, ref: HubRef, *, folder: str | None, name: str | None = None,
                backends: list[str] | None = None, allow_pickle: bool = False) -> tuple[ModelEntry, str]:
    """Add or update one entry with revision, size and sha256 read from the Hub; ('added'|'updated'|'same')."""
    folder = folder or guess_folder(ref.path)
    if folder is None:
        raise UserError(f"{ref.repo}/{ref.path}: which ComfyUI folder does it go into?",
                        hint=f"pass --folder (one of: {', '.join(FOLDERS)})")
    if folder not in FOLDERS:
        raise UserError(f"unknown ComfyUI models folder {folder!r}", hint=f"one of: {', '.join(FOLDERS)}")
    file_name = name or ref.path.rsplit("/", 1)[-1]
    try:
        relative_name(file_name)
        relative_name(ref.path, "path in the repo")
    except ValueError as exc:
        raise UserError(f"{ref.repo}/{ref.path}: {exc}",
                        hint="a model name is a file name (or sub/folder/name) inside its ComfyUI folder") from None
    info = hub.file_info(ref.repo, ref.path, ref.revision)
    if info.sha256 is None:
        raise UserError(f"{ref.repo}/{ref.path}: the Hub gives no sha256 for it (not an LFS file)")
    lockfile = read_lock(lock_path)
    for index, entry in enumerate(lockfile.lock.models):
        if entry.name == file_name and entry.folder == folder:
            fields: dict[str, object] = {k: v for k, v in (("repo", ref.repo), ("path", ref.path),
                                                         ("revision", info.revision), ("size", info.size),
                                                         ("sha256", info.sha256)) if getattr(entry, k) != v}
            merged = sorted(set(entry.backends) | set(backends or []))
            if merged != entry.backends:
                fields["backends"] = merged
            if fields:
                write_pins(lockfile, {index: fields})
            return entry.model_copy(update=fields), "updated" if fields else "same"
    entry = ModelEntry(name=file_name, repo=ref.repo, path=ref.path, folder=folder, revision=info.revision,
                       size=info.size, sha256=info.sha256, backends=sorted(backends or []),
                       allow_pickle=allow_pickle)
    append_entry(lock_path, entry)
    return entry, "added"


def workflow_models(workflow: dict[str, Any]) -> list[dict[str, str]]:
    """`properties.models` of every node (subgraphs included): [{name, url, directory}]."""
    nodes = list(workflow.get("nodes") or [])
    for sg in (workflow.get("definitions") or {}).get("subgraphs") or []:
        nodes += sg.get("nodes") or []
    found: dict[str, dict[str, str]] = {}
    for node in nodes:
        for model in (node.get("properties") or {}).get("models") or []:
            if isinstance(model, dict) and model.get("url") and model.get("name"):
                found.setdefault(str(model["name"]), {k: str(v) for k, v in model.items()})
    return list(found.values())
