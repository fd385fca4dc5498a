"""Regenerate comfy_driver/data/catalog.json, the trimmed node catalogue comfy-drive ships.

Usage: python scripts/make_catalog.py OBJECT_INFO.json [COMFYUI_VERSION] [--packs OBJECT_INFO.json...]
Without a version it writes catalog.json (the ComfyUI 0.3.64 catalogue); with one, catalog-<version>.json,
the catalogue the simulator serves in that version mode (`comfy-drive sim --comfyui VERSION`).
--packs: recordings of servers with the node packs models.lock pins; their custom nodes replace the
release's own (see `merge_object_info`). A core node the release lacks (Animate 2 on 0.3.64) is left
out of its catalogue, so the simulator answers as that release does.
Keeps the node classes the shipped workflows (and the simulator's test graphs) use, with types,
defaults, ranges and options only (no tooltips or descriptions), and marks model-file inputs with
their ComfyUI folder so their choices come from models.lock at load time.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from comfy_driver.models.catalog import merge_object_info  # noqa: E402
from comfy_driver.models.folders import mark_model_inputs  # noqa: E402
from comfy_driver.workflow.files import workflow_class_types  # noqa: E402

# Node classes the test graphs and benchmarks use beside the shipped workflows.
EXTRA = ["EmptyImage", "ImageInvert", "ImageBlur", "ImageScale", "SaveImage", "PreviewImage", "LoadImage",
         "LoadVideo", "CreateVideo", "SaveVideo", "SaveAnimatedWEBP", "VHS_VideoCombine", "EmptyLatentImage",
         "KSampler", "VAEDecode", "CLIPTextEncode", "CheckpointLoaderSimple"]
# Only in newer catalogues: the nodes of the 0.33 traces the simulator replays.
EXTRA_IF_PRESENT = ["RepeatImageBatch", "PrimitiveInt", "ComfyMathExpression", "GetImageSize"]
KEEP_NODE = ("input", "input_order", "output", "output_is_list", "output_name", "name", "display_name",
             "python_module", "category", "output_node")
DROP_OPTION = ("tooltip", "description", "placeholder")


def trim_options(spec: object) -> object:
    if isinstance(spec, list) and len(spec) > 1 and isinstance(spec[1], dict):
        return [spec[0], {k: v for k, v in spec[1].items() if k not in DROP_OPTION}, *spec[2:]]
    return spec


def main(object_info_path: str, version: str | None, packs: list[str]) -> None:
    base = json.loads(Path(object_info_path).read_text(encoding="utf-8"))
    extra = [json.loads(Path(p).read_text(encoding="utf-8")) for p in packs]
    merged = merge_object_info(base, *extra)
    core_elsewhere = {c for e in extra for c, n in e.items()
                      if not str(n.get("python_module", "")).startswith("custom_nodes.")}
    info = mark_model_inputs({c: n for c, n in merged.items() if c in base or c not in core_elsewhere})
    wanted = set(EXTRA) | {c for c in EXTRA_IF_PRESENT if c in info}
    for wf in sorted((ROOT / "workflows").glob("*.json")):
        wanted |= workflow_class_types(json.loads(wf.read_text(encoding="utf-8")))
    newer = sorted(c for c in wanted if c not in info and c in core_elsewhere)
    if newer:
        print(f"left out (this release lacks them): {', '.join(newer)}")
    missing = sorted(c for c in wanted if c not in info and c not in core_elsewhere)
    if missing:
        sys.exit(f"not in {object_info_path} or the packs' recordings: {', '.join(missing)}")
    wanted -= set(newer)
    out = {}
    for name in sorted(wanted):
        node = {k: info[name][k] for k in KEEP_NODE if k in info[name]}
        node["input"] = {cat: {k: trim_options(v) for k, v in inputs.items()}
                         for cat, inputs in node["input"].items()}
        out[name] = node
    target = ROOT / "comfy_driver" / "data" / (f"catalog-{version}.json" if version else "catalog.json")
    target.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print(f"wrote {target.relative_to(ROOT)}: {len(out)} node classes")


if __name__ == "__main__":
    args = sys.argv[1:]
    packs = args[args.index("--packs") + 1:] if "--packs" in args else []
    args = args[:args.index("--packs")] if "--packs" in args else args
    if len(args) not in (1, 2):
        sys.exit(__doc__)
    main(args[0], args[1] if len(args) == 2 else None, packs)
