"""Write the shipped workflows (workflows/*.json) as GUI workflows, from the graphs defined here.

Usage: python scripts/make_workflows.py OBJECT_INFO.json
OBJECT_INFO.json is the catalogue of the newest supported ComfyUI with the custom node packs the
workflows use (its widget layout decides the saved form); the files are written as that ComfyUI's
GUI saves them. The graphs are comfy-drive's own; a person may then open, edit and save any of them in the ComfyUI
GUI, and comfy-drive uses the saved file as it is (parameters are addressed by node title, so keep
the titles). Rerunning this script overwrites such edits.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from comfy_driver.comfy.catalog import Catalog  # noqa: E402
from comfy_driver.workflow.layout import api_to_ui  # noqa: E402

NEGATIVE = "blurry, low quality, static, deformed, watermark, subtitles"


class G:
    """A tiny graph builder: add(class, title, **inputs) returns the node id; links are (id, slot)."""

    def __init__(self) -> None:
        self.nodes: dict[str, Any] = {}

    def add(self, class_type: str, title: str, **inputs: Any) -> str:
        node_id = str(len(self.nodes) + 1)
        self.nodes[node_id] = {"class_type": class_type, "_meta": {"title": title},
                               "inputs": {k: list(v) if isinstance(v, tuple) else v for k, v in inputs.items()}}
        return node_id


def placeholder(title: str, extension: str) -> str:
    """The file name an input-file widget holds until a run sets it ('reference-image.png').

    A GUI keeps a name it does not know, where it would replace an empty value with the first file of
    its server's input folder; every run uploads the scene's file and sets the widget to it.
    """
    return f"{title.lower().replace(' ', '-')}.{extension}"


def wan_text(g: G, prompt_title: str = "Prompt") -> tuple[str, str]:
    te = g.add("CLIPLoader", "Text Encoder", clip_name="umt5_xxl_fp8_e4m3fn_scaled.safetensors", type="wan",
               device="default")
    pos = g.add("CLIPTextEncode", prompt_title, text="", clip=(te, 0))
    neg = g.add("CLIPTextEncode", "Negative Prompt", text=NEGATIVE, clip=(te, 0))
    return pos, neg


def save(g: G, images: tuple[str, int], fps: Any, prefix: str) -> None:
    video = g.add("CreateVideo", "Create Video", images=images, fps=fps)
    # MP4/H.264 in both GUIs: 0.33's nested 'format.codec', and the older top-level 'codec' at the same
    # position of widgets_values (0.33 keeps that one as a hidden input, left at auto).
    g.add("SaveVideo", "Save Video", video=(video, 0), filename_prefix=f"comfy-drive/{prefix}", format="mp4",
          **{"format.codec": "h264", "codec": "auto"})


def animate_model(g: G) -> str:
    unet = g.add("UNETLoader", "Animate Model", unet_name="Wan2_2-Animate-14B_fp8_e4m3fn_scaled_KJ.safetensors",
                 weight_dtype="default")
    distill = g.add("LoraLoaderModelOnly", "Distill LoRA",
                    lora_name="lightx2v_I2V_14B_480p_cfg_step_distill_rank64_bf16.safetensors", strength_model=1.0,
                    model=(unet, 0))
    relight = g.add("LoraLoaderModelOnly", "Relight LoRA", lora_name="WanAnimate_relight_lora_fp16.safetensors",
                    strength_model=1.0, model=(distill, 0))
    return g.add("ModelSamplingSD3", "Shift", shift=8.0, model=(relight, 0))


def driving(g: G) -> dict[str, tuple[str, int]]:
    """Poses, face and character mask from the driving video (DWPose, SAM2), as the official graph does."""
    video = g.add("LoadVideo", "Driving Video", file=placeholder("Driving Video", "mp4"))
    frames = g.add("GetVideoComponents", "Driving Frames", video=(video, 0))
    fitted = g.add("ImageScale", "Fit Driving Video", image=(frames, 0), upscale_method="lanczos", width=832,
                   height=480, crop="center")
    face = g.add("DWPreprocessor", "Face Pose", image=(fitted, 0), detect_hand="disable", detect_body="disable",
                 detect_face="enable", resolution=512, bbox_detector="yolox_l.onnx",
                 pose_estimator="dw-ll_ucoco_384_bs5.torchscript.pt", scale_stick_for_xinsr_cn="disable")
    body = g.add("DWPreprocessor", "Body Pose", image=(fitted, 0), detect_hand="enable", detect_body="enable",
                 detect_face="disable", resolution=512, bbox_detector="yolox_l.onnx",
                 pose_estimator="dw-ll_ucoco_384_bs5.torchscript.pt", scale_stick_for_xinsr_cn="disable")
    sam = g.add("DownloadAndLoadSAM2Model", "SAM2", model="sam2_hiera_base_plus.safetensors", segmentor="video",
                device="cuda", precision="fp16")
    point = g.add("PrimitiveString", "Character Point", value='[{"x": 416, "y": 240}]')
    mask = g.add("Sam2Segmentation", "Character Mask", sam2_model=(sam, 0), image=(fitted, 0), keep_model_loaded=True,
                 coordinates_positive=(point, 0), individual_objects=False)
    grown = g.add("GrowMask", "Grow Mask", mask=(mask, 0), expand=10, tapered_corners=True)
    blocks = g.add("BlockifyMask", "Blockify Mask", masks=(grown, 0), block_size=32, device="cpu")
    background = g.add("DrawMaskOnImage", "Background", image=(fitted, 0), mask=(blocks, 0), color="0, 0, 0",
                       device="cpu")
    return {"face_video": (face, 0), "pose_video": (body, 0), "background_video": (background, 0),
            "character_mask": (blocks, 0)}


def wan22_animate(with_driving: bool, extend: bool = False) -> dict[str, Any]:
    g = G()
    model = animate_model(g)
    pos, neg = wan_text(g)
    vae = g.add("VAELoader", "VAE", vae_name="wan_2.1_vae.safetensors")
    vision = g.add("CLIPVisionLoader", "CLIP Vision", clip_name="clip_vision_h.safetensors")
    ref = g.add("LoadImage", "Reference Image", image=placeholder("Reference Image", "png"))
    encoded = g.add("CLIPVisionEncode", "Encode Reference", clip_vision=(vision, 0), image=(ref, 0), crop="none")
    extra: dict[str, Any] = driving(g) if with_driving else {}
    previous = None
    if extend:  # the next window: continue the motion of everything rendered so far
        clip = g.add("LoadVideo", "Previous Clip", file=placeholder("Previous Clip", "mp4"))
        previous = g.add("GetVideoComponents", "Previous Frames", video=(clip, 0))
        extra["continue_motion"] = (previous, 0)
    anim = g.add("WanAnimateToVideo", "Animate", positive=(pos, 0), negative=(neg, 0), vae=(vae, 0), width=832,
                 height=480, length=77, batch_size=1, continue_motion_max_frames=5, video_frame_offset=0,
                 clip_vision_output=(encoded, 0), reference_image=(ref, 0), **extra)
    sampled = g.add("KSampler", "Sampler", model=(model, 0), positive=(anim, 0), negative=(anim, 1),
                    latent_image=(anim, 2), seed=0, steps=6, cfg=1.0, sampler_name="euler", scheduler="simple",
                    denoise=1.0)
    trimmed = g.add("TrimVideoLatent", "Trim Latent", samples=(sampled, 0), trim_amount=(anim, 3))
    decoded = g.add("VAEDecode", "Decode", samples=(trimmed, 0), vae=(vae, 0))
    new = g.add("ImageFromBatch", "New Frames", image=(decoded, 0), batch_index=(anim, 4), length=4096)
    frames: tuple[str, int] = (new, 0)
    if previous is not None:
        frames = (g.add("ImageBatch", "Join Windows", image1=(previous, 0), image2=(new, 0)), 0)
    save(g, frames, 16.0, "wan22_animate")
    return g.nodes


def wan22_5b() -> dict[str, Any]:
    g = G()
    unet = g.add("UNETLoader", "TI2V Model", unet_name="wan2.2_ti2v_5B_fp16.safetensors", weight_dtype="default")
    model = g.add("ModelSamplingSD3", "Shift", shift=8.0, model=(unet, 0))
    pos, neg = wan_text(g)
    vae = g.add("VAELoader", "VAE", vae_name="wan2.2_vae.safetensors")
    ref = g.add("LoadImage", "Reference Image", image=placeholder("Reference Image", "png"))
    latent = g.add("Wan22ImageToVideoLatent", "Video Latent", vae=(vae, 0), width=1280, height=704, length=49,
                   batch_size=1, start_image=(ref, 0))
    sampled = g.add("KSampler", "Sampler", model=(model, 0), positive=(pos, 0), negative=(neg, 0),
                    latent_image=(latent, 0), seed=0, steps=20, cfg=5.0, sampler_name="uni_pc", scheduler="simple",
                    denoise=1.0)
    decoded = g.add("VAEDecode", "Decode", samples=(sampled, 0), vae=(vae, 0))
    save(g, (decoded, 0), 24.0, "wan22_5b")
    return g.nodes


def svd_animate(g: G, image: tuple[str, int]) -> dict[str, Any]:
    """Stable Video Diffusion XT animating one image, saved as the clip."""
    ckpt = g.add("ImageOnlyCheckpointLoader", "SVD Checkpoint", ckpt_name="svd_xt.safetensors")
    cond = g.add("SVD_img2vid_Conditioning", "SVD Conditioning", clip_vision=(ckpt, 1), init_image=image,
                 vae=(ckpt, 2), width=1024, height=576, video_frames=25, motion_bucket_id=127, fps=8,
                 augmentation_level=0.0)
    guided = g.add("VideoLinearCFGGuidance", "SVD Guidance", model=(ckpt, 0), min_cfg=1.0)
    sampled = g.add("KSampler", "Video Sampler", model=(guided, 0), positive=(cond, 0), negative=(cond, 1),
                    latent_image=(cond, 2), seed=0, steps=20, cfg=2.5, sampler_name="euler", scheduler="karras",
                    denoise=1.0)
    decoded = g.add("VAEDecode", "Video Decode", samples=(sampled, 0), vae=(ckpt, 2))
    save(g, (decoded, 0), 8.0, "svd")
    return g.nodes


def svd() -> dict[str, Any]:
    """SDXL-Turbo makes the keyframe from the prompt (one step), SVD animates it."""
    g = G()
    ckpt = g.add("CheckpointLoaderSimple", "Keyframe Checkpoint", ckpt_name="sd_xl_turbo_1.0_fp16.safetensors")
    pos = g.add("CLIPTextEncode", "Keyframe Prompt", text="", clip=(ckpt, 1))
    neg = g.add("CLIPTextEncode", "Keyframe Negative", text="", clip=(ckpt, 1))
    size = g.add("EmptyLatentImage", "Keyframe Size", width=1024, height=576, batch_size=1)
    key = g.add("KSampler", "Keyframe Sampler", model=(ckpt, 0), positive=(pos, 0), negative=(neg, 0),
                latent_image=(size, 0), seed=0, steps=1, cfg=1.0, sampler_name="euler_ancestral", scheduler="normal",
                denoise=1.0)
    image = g.add("VAEDecode", "Keyframe Decode", samples=(key, 0), vae=(ckpt, 2))
    return svd_animate(g, (image, 0))


def svd_from_image() -> dict[str, Any]:
    """SVD animates the scene's reference image, fitted to the video size."""
    g = G()
    ref = g.add("LoadImage", "Reference Image", image=placeholder("Reference Image", "png"))
    fitted = g.add("ImageScale", "Fit Reference", image=(ref, 0), upscale_method="lanczos", width=1024, height=576,
                   crop="center")
    return svd_animate(g, (fitted, 0))


def clip_in(g: G) -> str:
    clip = g.add("LoadVideo", "Input Clip", file=placeholder("Input Clip", "mp4"))
    return g.add("GetVideoComponents", "Clip Frames", video=(clip, 0))


def denoise() -> dict[str, Any]:
    g = G()
    frames = clip_in(g)
    unet = g.add("UNETLoader", "Low Noise Model", unet_name="wan2.2_t2v_low_noise_14B_fp8_scaled.safetensors",
                 weight_dtype="default")
    lora = g.add("LoraLoaderModelOnly", "4-Step LoRA",
                 lora_name="wan2.2_t2v_lightx2v_4steps_lora_v1.1_low_noise.safetensors", strength_model=1.0,
                 model=(unet, 0))
    model = g.add("ModelSamplingSD3", "Shift", shift=5.0, model=(lora, 0))
    pos, neg = wan_text(g)
    vae = g.add("VAELoader", "VAE", vae_name="wan_2.1_vae.safetensors")
    latent = g.add("VAEEncode", "Encode Clip", pixels=(frames, 0), vae=(vae, 0))
    sampled = g.add("KSampler", "Denoise", model=(model, 0), positive=(pos, 0), negative=(neg, 0),
                    latent_image=(latent, 0), seed=0, steps=4, cfg=1.0, sampler_name="euler", scheduler="simple",
                    denoise=0.3)
    decoded = g.add("VAEDecode", "Decode", samples=(sampled, 0), vae=(vae, 0))
    save(g, (decoded, 0), (frames, 2), "denoise")
    return g.nodes


def upscale() -> dict[str, Any]:
    g = G()
    frames = clip_in(g)
    model = g.add("UpscaleModelLoader", "Upscale Model", model_name="RealESRGAN_x4plus.safetensors")
    big = g.add("ImageUpscaleWithModelBatched", "Upscale", upscale_model=(model, 0), images=(frames, 0), per_batch=8,
                downscale_ratio=0.5, downscale_method="lanczos", precision="float16")
    save(g, (big, 0), (frames, 2), "upscale")
    return g.nodes


WORKFLOWS = {
    "wan22_animate": lambda: wan22_animate(True),
    "wan22_animate_prompt": lambda: wan22_animate(False),
    "wan22_animate_extend": lambda: wan22_animate(True, extend=True),
    "wan22_animate_prompt_extend": lambda: wan22_animate(False, extend=True),
    "wan22_5b": wan22_5b,
    "svd": svd,
    "svd_from_image": svd_from_image,
    "denoise": denoise,
    "upscale": upscale,
}


def main(object_info: str) -> None:
    catalog = Catalog.from_file(object_info)
    for name, build in WORKFLOWS.items():
        graph = build()
        result = catalog.validate(graph, file_exists=lambda kind, value: True)
        problems = [e for n in result.node_errors.values() for e in n["errors"]
                    if e["type"] != "value_not_in_list" or "_name" not in str(e["extra_info"].get("input_name"))]
        if not result.ok and result.error and result.error["type"] != "prompt_outputs_failed_validation":
            sys.exit(f"{name}: {result.error}")
        if problems:
            sys.exit(f"{name}: {json.dumps(problems, indent=1)[:2000]}")
        path = ROOT / "workflows" / f"{name}.json"
        path.write_text(json.dumps(api_to_ui(graph, catalog, name=name), indent=2, ensure_ascii=False) + "\n",
                        encoding="utf-8")
        print(f"wrote {path.relative_to(ROOT)} ({len(graph)} nodes)")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
