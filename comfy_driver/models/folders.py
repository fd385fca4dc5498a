"""Which node input names a model file, and in which ComfyUI models folder that file lives.

ComfyUI's object_info lists a loader's choices (the files on disk) but not the folder they come from;
this table is that missing fact, for the loaders the shipped workflows use.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from comfy_driver import jsontext
from comfy_driver.comfy.catalog import combo_choices, option_specs, set_combo_choices

MODEL_INPUTS: dict[tuple[str, str], str] = {
    ("CheckpointLoaderSimple", "ckpt_name"): "checkpoints",
    ("ImageOnlyCheckpointLoader", "ckpt_name"): "checkpoints",
    ("UNETLoader", "unet_name"): "diffusion_models",
    ("VAELoader", "vae_name"): "vae",
    ("CLIPLoader", "clip_name"): "text_encoders",
    ("CLIPVisionLoader", "clip_name"): "clip_vision",
    ("LoraLoader", "lora_name"): "loras",
    ("LoraLoaderModelOnly", "lora_name"): "loras",
    ("UpscaleModelLoader", "model_name"): "upscale_models",
    ("UnetLoaderGGUF", "unet_name"): "diffusion_models",  # ComfyUI-GGUF: .gguf files in unet/ or diffusion_models/
    ("WanVideoModelLoader", "model"): "diffusion_models",  # ComfyUI-WanVideoWrapper
    ("WanVideoVAELoader", "model_name"): "vae",
    ("WanVideoTextEncodeCached", "model_name"): "text_encoders",
    ("WanVideoLoraSelect", "lora"): "loras",
}


def mark_model_inputs(object_info: dict[str, Any]) -> dict[str, Any]:
    """A copy of object_info whose model-file inputs carry `model_folder` in their options."""
    marked = jsontext.clone(object_info)
    for (class_type, name), folder in MODEL_INPUTS.items():
        spec = marked.get(class_type, {}).get("input", {}).get("required", {}).get(name)
        if spec is None:
            continue
        if len(spec) < 2:
            spec.append({})
        spec[1]["model_folder"] = folder
    return marked


def fill_model_inputs(object_info: dict[str, Any], files: Mapping[str, list[str]]) -> dict[str, Any]:
    """A copy whose marked model inputs list `files[folder]` (what a server with these files shows)."""
    filled = jsontext.clone(object_info)
    for _, spec in option_specs(filled):
        if "model_folder" in spec[1]:
            set_combo_choices(spec, sorted(files.get(spec[1]["model_folder"], [])))
    return filled


def offered_models(object_info: dict[str, Any]) -> dict[str, set[str]]:
    """folder -> the file names a catalogue's marked model inputs offer."""
    found: dict[str, set[str]] = {}
    for _, spec in option_specs(object_info):
        if spec[1].get("model_folder"):
            found.setdefault(spec[1]["model_folder"], set()).update(combo_choices(spec))
    return found
