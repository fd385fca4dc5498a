"""What the simulated server does with a validated graph: order, timing, caches and output files.

Nodes are not computed; an abstract value flows along each link (type, frame count, size, fps and
the prompt text that conditions it), so output nodes can write real files with the frames, size and
fps the graph asks for. Timing follows ComfyUI's behaviour: per-node durations, samplers that emit a
`progress` per step, model loaders that pay a load time unless the previous prompt loaded the same
file, and nodes whose inputs did not change since the previous prompt served from cache.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from comfy_driver.comfy.catalog import Catalog

MODEL_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".gguf", ".sft", ".onnx")
VISUAL = ("IMAGE", "LATENT", "VIDEO", "MASK", "WANVIDIMAGE_EMBEDS")  # the wrapper's embeds carry the video's shape
SAMPLERS = {"KSampler", "KSamplerAdvanced", "SamplerCustom", "SamplerCustomAdvanced", "WanVideoSampler"}


@dataclass(frozen=True)
class Value:
    """The abstract value on one output slot."""

    type: str
    frames: int = 1
    width: int = 512
    height: int = 512
    fps: float = 0.0
    caption: str = ""
    number: float | None = None  # the value of an INT / FLOAT output, where the simulator knows it


@dataclass
class Timing:
    """Simulated durations (seconds). All zero gives a server as fast as the protocol allows."""

    node: float = 0.0
    step: float = 0.0
    model_load: float = 0.0
    per_class: dict[str, float] = field(default_factory=dict)
    history_delay: float = 0.0  # gap between execution_success and the history entry (the race)
    queue_gap: float = 0.0  # the prompt is off the queue this long before its history entry appears

    @classmethod
    def realistic(cls, scale: float = 1.0) -> Timing:
        return cls(node=0.01 * scale, step=0.05 * scale, model_load=0.5 * scale, history_delay=0.0)


class NodeFailure(Exception):
    """A node raised (execution_error)."""

    def __init__(self, exception_type: str, message: str) -> None:
        super().__init__(message)
        self.exception_type = exception_type
        self.message = message


def model_files(inputs: dict[str, Any]) -> list[str]:
    return [v for v in inputs.values() if isinstance(v, str) and v.lower().endswith(MODEL_SUFFIXES)]


def signatures(prompt: dict[str, Any]) -> dict[str, str]:
    """A content hash per node: class, widget values and the signatures of what feeds it."""
    sigs: dict[str, str] = {}

    def sig(node_id: str, stack: tuple[str, ...] = ()) -> str:
        if node_id in sigs:
            return sigs[node_id]
        node = prompt[node_id]
        parts: list[Any] = [node["class_type"]]
        for name in sorted(node.get("inputs", {})):
            value = node["inputs"][name]
            if isinstance(value, list) and len(value) == 2 and str(value[0]) in prompt and node_id not in stack:
                parts.append([name, sig(str(value[0]), stack + (node_id,)), value[1]])
            else:
                parts.append([name, value])
        digest = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()
        sigs[node_id] = digest
        return digest

    for nid in prompt:
        sig(nid)
    return sigs


def execution_order(prompt: dict[str, Any], outputs: list[str], catalog: Catalog) -> list[str]:
    """Nodes needed by `outputs`, dependencies first; among ready nodes, output nodes go first."""
    needed: set[str] = set()
    stack = list(outputs)
    while stack:
        nid = stack.pop()
        if nid in needed:
            continue
        needed.add(nid)
        for value in prompt[nid].get("inputs", {}).values():
            if isinstance(value, list) and len(value) == 2 and str(value[0]) in prompt:
                stack.append(str(value[0]))
    deps = {nid: {str(v[0]) for v in prompt[nid].get("inputs", {}).values()
                  if isinstance(v, list) and len(v) == 2 and str(v[0]) in prompt} for nid in needed}
    order: list[str] = []
    done: set[str] = set()
    rank = {nid: i for i, nid in enumerate(prompt)}
    while len(order) < len(needed):
        ready = [n for n in needed if n not in done and deps[n] <= done]
        ready.sort(key=lambda n: (not catalog.is_output_node(prompt[n]["class_type"]), rank[n]))
        order.append(ready[0])
        done.add(ready[0])
    return order


def _int(inputs: dict[str, Any], *names: str) -> int | None:
    for name in names:
        value = inputs.get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return int(value)
    return None


def _first(values: dict[str, Any], types: tuple[str, ...], prefer: tuple[str, ...] = ()) -> Value | None:
    for name in prefer:
        v = values.get(name)
        if isinstance(v, Value) and v.type in types:
            return v
    for v in values.values():
        if isinstance(v, Value) and v.type in types:
            return v
    return None


def _caption(values: dict[str, Any]) -> str:
    for name in ("positive", "conditioning", "text", "prompt", "positive_prompt"):
        v = values.get(name)
        if isinstance(v, Value) and v.caption:
            return v.caption
        if isinstance(v, str) and name in ("text", "prompt", "positive_prompt") and v:
            return v
    for v in values.values():
        if isinstance(v, Value) and v.caption:
            return v.caption
    return ""


def number(value: Any) -> float | None:
    """A widget number, or the known number a linked INT / FLOAT output carries."""
    if isinstance(value, Value):
        return value.number
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    return None


def evaluate(class_type: str, values: dict[str, Any], catalog: Catalog,
             media: Value | None = None) -> tuple[Value, ...]:
    """The abstract outputs of one node, from its inputs (links already replaced by Values).

    `media` describes the file a loader node reads (an image's size, a video's frames and fps).
    """
    out_types = [t if isinstance(t, str) else "COMBO" for t in catalog.output_types(class_type)]
    caption = _caption(values)
    src = _first(values, VISUAL, ("samples", "latent_image", "images", "image", "pixels", "video", "init_image",
                                  "start_image", "reference_image", "image1"))
    base = src or Value("IMAGE", caption=caption)
    width = _int(values, "width", "target_width")
    height = _int(values, "height", "target_height")
    frames = _int(values, "length", "video_frames", "num_frames", "frame_count", "batch_size", "frame_load_cap")
    fps = number(values.get("fps", values.get("frame_rate")))
    numbers: dict[int, float] = {}
    if media is not None:
        base, width, height, frames, fps = media, media.width, media.height, media.frames, media.fps or None
        numbers = {2: media.fps}  # GetVideoComponents-style fps output
    if class_type.startswith("Empty") and frames is None:
        frames = 1
    if class_type in ("ImageScaleBy", "LatentUpscaleBy") and isinstance(values.get("scale_by"), (int, float)):
        width, height = int(base.width * values["scale_by"]), int(base.height * values["scale_by"])
    if class_type == "ImageUpscaleWithModel":
        width, height = base.width * 4, base.height * 4
    if class_type == "ImageUpscaleWithModelBatched":
        ratio = number(values.get("downscale_ratio")) or 1.0
        width, height = round(base.width * 4 * ratio), round(base.height * 4 * ratio)
    if class_type == "GetVideoComponents":
        numbers = {2: base.fps}
    if class_type == "ImageFromBatch":  # length 4096 means "to the end"
        start = int(number(values.get("batch_index")) or 0)
        frames = max(1, min(frames or 1, base.frames - start))
    if class_type == "ImageBatch" and isinstance(values.get("image2"), Value):
        frames = base.frames + values["image2"].frames
    if class_type in ("WanAnimateToVideo", "WanAnimate2ToVideo"):  # continued frames are generated again, trimmed
        motion = values.get("continue_motion")
        most = 1 if class_type == "WanAnimate2ToVideo" else int(number(values.get("continue_motion_max_frames")) or 5)
        carried = min(most, motion.frames) if isinstance(motion, Value) else 0  # Animate 2 carries one frame, always
        offset = int(number(values.get("video_frame_offset")) or 0)
        numbers = {3: 0, 4: carried, 5: offset + (frames or 0) - carried}
    if class_type in SAMPLERS or class_type in ("VAEDecode", "VAEEncode", "VAEDecodeTiled", "TrimVideoLatent",
                                                "WanVideoDecode", "WanVideoEncode"):
        width = height = frames = None  # samplers and VAEs keep the shape of what they are given
    shaped = replace(base, width=width or base.width, height=height or base.height,
                     frames=frames if frames and frames > 0 else base.frames,
                     fps=float(fps) if fps else base.fps, caption=caption or base.caption, number=None)
    return tuple(replace(shaped, type=t) if t in VISUAL or t == "CONDITIONING"
                 else Value(t, caption=caption, number=numbers.get(i)) for i, t in enumerate(out_types))


_COUNTER = re.compile(r"_(\d{5})_?\.")


class Counters:
    """ComfyUI's counter naming (prefix_00001_.png; VHS: prefix_00001.mp4), scanning a folder only once."""

    def __init__(self) -> None:
        self._next: dict[tuple[Path, str], int] = {}

    def next_name(self, folder: Path, stem: str, suffix: str, *, trailing_underscore: bool = True) -> str:
        key = (folder, stem)
        if key not in self._next:
            highest = 0
            if folder.is_dir():
                for entry in folder.iterdir():
                    if entry.name.startswith(stem + "_"):
                        m = _COUNTER.search(entry.name[len(stem):])
                        if m:
                            highest = max(highest, int(m.group(1)))
            self._next[key] = highest + 1
        n = self._next[key]
        self._next[key] = n + 1
        return f"{stem}_{n:05d}{'_' if trailing_underscore else ''}{suffix}"


def split_prefix(prefix: str) -> tuple[str, str]:
    """filename_prefix 'video/scene' -> (subfolder 'video', stem 'scene'); never climbs out."""
    parts = [p for p in re.split(r"[\\/]+", prefix) if p and p not in (".", "..")]
    if not parts:
        return "", "ComfyUI"
    return "/".join(parts[:-1]), parts[-1]
