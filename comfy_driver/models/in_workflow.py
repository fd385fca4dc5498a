"""The model files a GUI workflow loads, read from its loader widgets, and their names on a server.

Shared workflows rarely carry `properties.models`; what they do carry is the file name in each
loader's widget, often with the author's Windows sub-folders (`WanVideo\\2_2\\x.safetensors`). The
folder a loader reads from is a fact of the node class (`LOADER_FOLDERS`). A name is matched to what a
server lists in that folder: the same path with '/' separators, else the one listed file with that base
name; a name that matches nothing is kept with '/' separators.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from comfy_driver.comfy.catalog import Catalog, combo_choices

MODEL_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".gguf", ".sft", ".onnx")

# Loader node class -> the ComfyUI models folder its file widgets name. None: the node pack
# downloads its own files on first use (nothing to fetch).
LOADER_FOLDERS: dict[str, str | None] = {
    "CheckpointLoaderSimple": "checkpoints", "ImageOnlyCheckpointLoader": "checkpoints",
    "UNETLoader": "diffusion_models", "DiffusionModelLoaderKJ": "diffusion_models",
    "WanVideoModelLoader": "diffusion_models", "VAELoader": "vae", "WanVideoVAELoader": "vae",
    "CLIPLoader": "text_encoders", "DualCLIPLoader": "text_encoders", "WanVideoTextEncodeCached": "text_encoders",
    "LoadWanVideoT5TextEncoder": "text_encoders", "CLIPVisionLoader": "clip_vision",
    "LoraLoader": "loras", "LoraLoaderModelOnly": "loras", "WanVideoLoraSelect": "loras",
    "WanVideoLoraSelectMulti": "loras", "UpscaleModelLoader": "upscale_models",
    "OnnxDetectionModelLoader": "detection", "DownloadAndLoadSAM2Model": None, "DWPreprocessor": None,
}
_SKIPPED_MODES = (2, 4)  # muted, bypassed: never run


@dataclass(frozen=True)
class WorkflowModel:
    node_id: str
    class_type: str
    title: str
    saved: str  # the name as the workflow holds it
    folder: str | None  # None: the node pack downloads it itself
    name: str  # the name to use: the server's, or the saved one with '/' separators

    @property
    def who(self) -> str:
        return f'node {self.node_id} "{self.title}" ({self.class_type})'


def is_model_name(value: object) -> bool:
    return isinstance(value, str) and value.lower().endswith(MODEL_SUFFIXES)


def server_name(saved: str, listed: list[str]) -> str | None:
    """The listed name a saved model name stands for, or None."""
    wanted = saved.replace("\\", "/")
    if wanted in listed:
        return wanted
    by_base = [n for n in listed if n.replace("\\", "/").rsplit("/", 1)[-1] == wanted.rsplit("/", 1)[-1]]
    return by_base[0] if len(by_base) == 1 else None


def _nodes(workflow: dict[str, Any]) -> list[dict[str, Any]]:
    nodes = list(workflow.get("nodes") or [])
    for sg in (workflow.get("definitions") or {}).get("subgraphs") or []:
        nodes += sg.get("nodes") or []
    return nodes


def loader_models(workflow: dict[str, Any], listed: dict[str, list[str]] | None = None) -> list[WorkflowModel]:
    """Every model file the workflow's active loaders name, with its folder and its name on the server
    (`listed`: folder -> names the server lists there)."""
    found: dict[tuple[str | None, str], WorkflowModel] = {}
    for node in _nodes(workflow):
        class_type = str(node.get("type", ""))
        if class_type not in LOADER_FOLDERS or node.get("mode") in _SKIPPED_MODES:
            continue
        folder = LOADER_FOLDERS[class_type]
        values = node.get("widgets_values")
        values = list(values.values()) if isinstance(values, dict) else list(values or [])
        for value in values:
            if not is_model_name(value):
                continue
            name = value.replace("\\", "/")
            if folder is not None and listed is not None:
                name = server_name(value, listed.get(folder, [])) or name
            found.setdefault((folder, name), WorkflowModel(str(node.get("id")), class_type,
                                                           str(node.get("title") or class_type), value, folder, name))
    return list(found.values())


def rewrite_model_names(graph: dict[str, Any], catalog: Catalog) -> list[str]:
    """Model names of an API graph that the server lists under another spelling (Windows sub-folders,
    another sub-folder), rewritten to the listed name in place; returns one line per change."""
    changes = []
    for node_id, node in graph.items():
        class_type = node.get("class_type")
        if class_type not in catalog:
            continue
        for name, value in list((node.get("inputs") or {}).items()):
            if not is_model_name(value):
                continue
            spec_type, _, extra = catalog.input_info(class_type, name)
            if spec_type is None:
                continue
            choices = [str(c) for c in combo_choices([spec_type, extra or {}])]
            if not choices or value in choices:
                continue
            listed = server_name(value, choices)
            if listed is not None:
                node["inputs"][name] = listed
                title = (node.get("_meta") or {}).get("title") or class_type
                changes.append(f'node {node_id} "{title}" ({class_type}) {name}: {value!r} -> {listed!r}')
    return changes
