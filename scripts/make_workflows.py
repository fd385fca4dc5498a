"""Write the shipped workflows (workflows/*.json) as GUI workflows, from the graphs defined here.

Usage: python scripts/make_workflows.py OBJECT_INFO.json [PACKS_OBJECT_INFO.json...] [--only NAME...]
OBJECT_INFO.json is the catalogue of the newest supported ComfyUI with the custom node packs the
workflows use (its widget layout decides the saved form); the files are written as that ComfyUI's
GUI saves them. Further files add the node classes it lacks (a pack recorded elsewhere, as in
scripts/make_catalog.py); --only writes just the named workflows. The graphs are comfy-drive's own;
a person may then open, edit and save any of them in the ComfyUI
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
from comfy_driver.models.catalog import merge_object_info  # noqa: E402
from comfy_driver.models.folders import MODEL_INPUTS  # noqa: E402
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


def animate_model(g: G, gguf: bool = False) -> str:
    if gguf:  # ComfyUI-GGUF: the same 14B model quantized (QuantStack), for 12-16 GB cards
        unet = g.add("UnetLoaderGGUF", "Animate Model", unet_name="Wan2.2-Animate-14B-Q3_K_M.gguf")
    else:
        unet = g.add("UNETLoader", "Animate Model", unet_name="Wan2_2-Animate-14B_fp8_e4m3fn_scaled_KJ.safetensors",
                     weight_dtype="default")
    distill = g.add("LoraLoaderModelOnly", "Distill LoRA",
                    lora_name="lightx2v_I2V_14B_480p_cfg_step_distill_rank64_bf16.safetensors", strength_model=1.0,
                    model=(unet, 0))
    relight = g.add("LoraLoaderModelOnly", "Relight LoRA", lora_name="WanAnimate_relight_lora_fp16.safetensors",
                    strength_model=1.0, model=(distill, 0))
    return g.add("ModelSamplingSD3", "Shift", shift=8.0, model=(relight, 0))


def driving_frames(g: G, method: str = "lanczos") -> str:
    """The driving video's frames, fitted to the video size."""
    video = g.add("LoadVideo", "Driving Video", file=placeholder("Driving Video", "mp4"))
    frames = g.add("GetVideoComponents", "Driving Frames", video=(video, 0))
    return g.add("ImageScale", "Fit Driving Video", image=(frames, 0), upscale_method=method, width=832,
                 height=480, crop="center")


def character_mask(g: G, fitted: str, keep_model_loaded: bool) -> tuple[str, str]:
    """(mask, background): SAM2 finds the character from a point (a parameter, not hand-placed per
    scene), the mask grown and made blocky, the background is the video with the character blacked out."""
    sam = g.add("DownloadAndLoadSAM2Model", "SAM2", model="sam2_hiera_base_plus.safetensors", segmentor="video",
                device="cuda", precision="fp16")
    point = g.add("PrimitiveString", "Character Point", value='[{"x": 416, "y": 240}]')
    mask = g.add("Sam2Segmentation", "Character Mask", sam2_model=(sam, 0), image=(fitted, 0),
                 keep_model_loaded=keep_model_loaded, coordinates_positive=(point, 0), individual_objects=False)
    grown = g.add("GrowMask", "Grow Mask", mask=(mask, 0), expand=10, tapered_corners=True)
    blocks = g.add("BlockifyMask", "Blockify Mask", masks=(grown, 0), block_size=32, device="cpu")
    background = g.add("DrawMaskOnImage", "Background", image=(fitted, 0), mask=(blocks, 0), color="0, 0, 0",
                       device="cpu")
    return blocks, background


def driving(g: G) -> dict[str, tuple[str, int]]:
    """Poses, face and character mask from the driving video (DWPose, SAM2), as the official graph does."""
    fitted = driving_frames(g)
    face = g.add("DWPreprocessor", "Face Pose", image=(fitted, 0), detect_hand="disable", detect_body="disable",
                 detect_face="enable", resolution=512, bbox_detector="yolox_l.onnx",
                 pose_estimator="dw-ll_ucoco_384_bs5.torchscript.pt", scale_stick_for_xinsr_cn="disable")
    body = g.add("DWPreprocessor", "Body Pose", image=(fitted, 0), detect_hand="enable", detect_body="enable",
                 detect_face="disable", resolution=512, bbox_detector="yolox_l.onnx",
                 pose_estimator="dw-ll_ucoco_384_bs5.torchscript.pt", scale_stick_for_xinsr_cn="disable")
    blocks, background = character_mask(g, fitted, keep_model_loaded=True)
    return {"face_video": (face, 0), "pose_video": (body, 0), "background_video": (background, 0),
            "character_mask": (blocks, 0)}


def wan22_animate(with_driving: bool, extend: bool = False, gguf: bool = False) -> dict[str, Any]:
    g = G()
    model = animate_model(g, gguf)
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
    save_window(g, sampled, anim, vae, previous, "wan22_animate_gguf" if gguf else "wan22_animate")
    return g.nodes


def save_window(g: G, sampled: str, anim: str, vae: str, previous: str | None, prefix: str) -> None:
    """An Animate window's frames: the repeated motion frames trimmed off, appended to the previous
    windows' frames (when this is a further window), saved as the clip."""
    trimmed = g.add("TrimVideoLatent", "Trim Latent", samples=(sampled, 0), trim_amount=(anim, 3))
    decoded = g.add("VAEDecode", "Decode", samples=(trimmed, 0), vae=(vae, 0))
    new = g.add("ImageFromBatch", "New Frames", image=(decoded, 0), batch_index=(anim, 4), length=4096)
    frames: tuple[str, int] = (new, 0)
    if previous is not None:
        frames = (g.add("ImageBatch", "Join Windows", image1=(previous, 0), image2=(new, 0)), 0)
    save(g, frames, 16.0, prefix)


def kj_model(g: G, model: str, loras: list[tuple[str, str, float]]) -> str:
    """ComfyUI-WanVideoWrapper's model with its memory settings: precision, load device, attention,
    block swap (blocks kept in RAM and moved to the GPU in turn: 25 of the 14B model's 40 fit 16 GB)."""
    lora = None
    for title, name, strength in loras:
        lora = g.add("WanVideoLoraSelect", title, lora=name, strength=strength, low_mem_load=False, merge_loras=True,
                     **({"prev_lora": (lora, 0)} if lora else {}))
    loader = g.add("WanVideoModelLoader", "Model Loader", model=model, base_precision="fp16_fast",
                   quantization="disabled", load_device="offload_device", attention_mode="sdpa",
                   rms_norm_function="default")
    swap = g.add("WanVideoBlockSwap", "Block Swap", blocks_to_swap=25, offload_img_emb=False, offload_txt_emb=False,
                 use_non_blocking=True, vace_blocks_to_swap=0, prefetch_blocks=1, block_swap_debug=False)
    with_loras = g.add("WanVideoSetLoRAs", "Set LoRAs", model=(loader, 0), lora=(lora, 0)) if lora else loader
    return g.add("WanVideoSetBlockSwap", "Set Block Swap", model=(with_loras, 0), block_swap_args=(swap, 0))


def kj_text(g: G) -> str:
    return g.add("WanVideoTextEncodeCached", "Prompt", model_name="umt5-xxl-enc-bf16.safetensors", precision="bf16",
                 positive_prompt="", negative_prompt=NEGATIVE, quantization="disabled", use_disk_cache=False,
                 device="gpu")


def kj_save(g: G, images: tuple[str, int], fps: Any, prefix: str) -> None:
    """VideoHelperSuite's combine, fed the decoded frames and saved to the output folder."""
    g.add("VHS_VideoCombine", "Save Video", images=images, frame_rate=fps, loop_count=0,
          filename_prefix=f"comfy-drive/{prefix}", format="video/h264-mp4", pingpong=False, save_output=True,
          pix_fmt="yuv420p", crf=19, save_metadata=True, trim_to_audio=False)


def wan22_animate_kj(with_driving: bool) -> dict[str, Any]:
    """Kijai's WanVideoWrapper Animate example, headless: the decoded frames are the result, the
    character point is a parameter (no hand-placed points), windows run inside the sampler."""
    g = G()
    model = kj_model(g, "Wan2_2-Animate-14B_fp8_e4m3fn_scaled_KJ.safetensors", [
        ("Relight LoRA", "WanAnimate_relight_lora_fp16.safetensors", 1.0),
        ("Distill LoRA", "lightx2v_I2V_14B_480p_cfg_step_distill_rank64_bf16.safetensors", 1.2)])
    text = kj_text(g)
    vae = g.add("WanVideoVAELoader", "VAE", model_name="wan_2.1_vae.safetensors", precision="bf16",
                use_cpu_cache=False, verbose=False)
    ref = g.add("LoadImage", "Reference Image", image=placeholder("Reference Image", "png"))
    fitted_ref = g.add("ImageResizeKJv2", "Fit Reference", image=(ref, 0), width=832, height=480,
                       upscale_method="lanczos", keep_proportion="pad_edge_pixel", pad_color="0, 0, 0",
                       crop_position="top", divisible_by=16, device="cpu")
    vision = g.add("CLIPVisionLoader", "CLIP Vision", clip_name="clip_vision_h.safetensors")
    clip_embeds = g.add("WanVideoClipVisionEncode", "Encode Reference", clip_vision=(vision, 0),
                        image_1=(fitted_ref, 0), strength_1=1.0, strength_2=1.0, crop="center",
                        combine_embeds="average", force_offload=True, tiles=0, ratio=0.5)
    extra: dict[str, Any] = {}
    if with_driving:
        fitted = driving_frames(g)
        pose = g.add("DWPreprocessor", "Body Pose", image=(fitted, 0), detect_hand="disable", detect_body="enable",
                     detect_face="disable", resolution=512, bbox_detector="yolox_l.torchscript.pt",
                     pose_estimator="dw-ll_ucoco_384_bs5.torchscript.pt", scale_stick_for_xinsr_cn="disable")
        face_mask = g.add("FaceMaskFromPoseKeypoints", "Face Mask", pose_kps=(pose, 1), person_index=0)
        face = g.add("ImageCropByMaskAndResize", "Face Crops", image=(fitted, 0), mask=(face_mask, 0),
                     base_resolution=512, padding=0, min_crop_resolution=128, max_crop_resolution=512)
        blocks, background = character_mask(g, fitted, keep_model_loaded=False)
        extra = {"pose_images": (pose, 0), "face_images": (face, 0), "bg_images": (background, 0),
                 "mask": (blocks, 0)}
    embeds = g.add("WanVideoAnimateEmbeds", "Animate Embeds", vae=(vae, 0), clip_embeds=(clip_embeds, 0),
                   ref_images=(fitted_ref, 0), width=832, height=480, num_frames=77, force_offload=False,
                   frame_window_size=77, colormatch="disabled", pose_strength=1.0, face_strength=1.0,
                   tiled_vae=False, **extra)
    sampled = g.add("WanVideoSampler", "Sampler", model=(model, 0), image_embeds=(embeds, 0), text_embeds=(text, 0),
                    steps=6, cfg=1.0, shift=5.0, seed=0, force_offload=True, scheduler="dpm++_sde",
                    riflex_freq_index=0, denoise_strength=1.0, batched_cfg=False, rope_function="comfy",
                    start_step=0, end_step=-1, add_noise_to_samples=False)
    decoded = g.add("WanVideoDecode", "Decode", vae=(vae, 0), samples=(sampled, 0), enable_vae_tiling=False,
                    tile_x=272, tile_y=272, tile_stride_x=144, tile_stride_y=128, normalization="default")
    kj_save(g, (decoded, 0), 16.0, "wan22_animate_kj")
    return g.nodes


def denoise_kj() -> dict[str, Any]:
    """The quality pass with the wrapper: Kijai's T2V A14B LOW fp8 model re-noises the clip a little
    (denoise_strength) and samples it back (the wrapper's vid2vid pattern)."""
    g = G()
    frames = clip_in(g)
    model = kj_model(g, "Wan2_2-T2V-A14B-LOW_fp8_e4m3fn_scaled_KJ.safetensors", [])
    text = kj_text(g)
    vae = g.add("WanVideoVAELoader", "VAE", model_name="wan_2.1_vae.safetensors", precision="bf16",
                use_cpu_cache=False, verbose=False)
    size = g.add("GetImageSizeAndCount", "Clip Size", image=(frames, 0))
    encoded = g.add("WanVideoEncode", "Encode Clip", vae=(vae, 0), image=(size, 0), enable_vae_tiling=False,
                    tile_x=272, tile_y=272, tile_stride_x=144, tile_stride_y=128, noise_aug_strength=0.0,
                    latent_strength=1.0)
    embeds = g.add("WanVideoEmptyEmbeds", "Video Size", width=(size, 1), height=(size, 2), num_frames=(size, 3))
    sampled = g.add("WanVideoSampler", "Denoise", model=(model, 0), image_embeds=(embeds, 0), text_embeds=(text, 0),
                    samples=(encoded, 0), steps=8, cfg=1.0, shift=5.0, seed=0, force_offload=True, scheduler="unipc",
                    riflex_freq_index=0, denoise_strength=0.3, batched_cfg=False, rope_function="comfy",
                    start_step=0, end_step=-1, add_noise_to_samples=False)
    decoded = g.add("WanVideoDecode", "Decode", vae=(vae, 0), samples=(sampled, 0), enable_vae_tiling=False,
                    tile_x=272, tile_y=272, tile_stride_x=144, tile_stride_y=128, normalization="default")
    kj_save(g, (decoded, 0), (frames, 2), "denoise_kj")
    return g.nodes


def wan_animate2(with_driving: bool, extend: bool = False, distilled: bool = False) -> dict[str, Any]:
    """The official Wan Animate 2 workflow (core nodes of ComfyUI 0.33): the driving video goes in as
    it is (the model reads the poses itself), WanAnimate2Cache keeps its activations (int8) between
    steps, lcm sampling; the distilled model runs without the step-distill LoRA."""
    g = G()
    model_file = "wan_animate_2_distill_int8_convrot.safetensors" if distilled else \
        "wan_animate_2_int8_convrot.safetensors"
    unet = g.add("UNETLoader", "Animate Model", unet_name=model_file, weight_dtype="default")
    if not distilled:
        unet = g.add("LoraLoaderModelOnly", "Distill LoRA",
                     lora_name="lightx2v_I2V_14B_480p_cfg_step_distill_rank64_bf16.safetensors", strength_model=1.0,
                     model=(unet, 0))
    cached = g.add("WanAnimate2Cache", "Animate Cache", model=(unet, 0), device="gpu", dtype="int8")
    model = g.add("ModelSamplingSD3", "Shift", shift=5.0, model=(cached, 0))
    pos, neg = wan_text(g)
    vae = g.add("VAELoader", "VAE", vae_name="wan_2.1_vae.safetensors")
    vision = g.add("CLIPVisionLoader", "CLIP Vision", clip_name="clip_vision_h.safetensors")
    ref = g.add("LoadImage", "Reference Image", image=placeholder("Reference Image", "png"))
    fitted_ref = g.add("ImageScale", "Fit Reference", image=(ref, 0), upscale_method="area", width=832, height=480,
                       crop="center")
    encoded = g.add("CLIPVisionEncode", "Encode Reference", clip_vision=(vision, 0), image=(fitted_ref, 0),
                    crop="none")
    extra: dict[str, Any] = {}
    if with_driving:
        fitted = driving_frames(g, "area")
        first = g.add("ImageFromBatch", "First Pose Frame", image=(fitted, 0), batch_index=0, length=1)
        pose_vision = g.add("CLIPVisionEncode", "Encode Pose", clip_vision=(vision, 0), image=(first, 0), crop="none")
        pose_text = g.add("CLIPTextEncode", "Pose Prompt", text="a reference video of a person moving",
                          clip=tuple(g.nodes[pos]["inputs"]["clip"]))
        extra = {"pose_video": (fitted, 0), "clip_vision_output_pose": (pose_vision, 0),
                 "positive_pose": (pose_text, 0)}
    previous = None
    if extend:
        clip = g.add("LoadVideo", "Previous Clip", file=placeholder("Previous Clip", "mp4"))
        previous = g.add("GetVideoComponents", "Previous Frames", video=(clip, 0))
        extra["continue_motion"] = (previous, 0)
    anim = g.add("WanAnimate2ToVideo", "Animate", positive=(pos, 0), negative=(neg, 0), vae=(vae, 0), width=832,
                 height=480, length=77, batch_size=1, video_frame_offset=0, pose_strength=1.0, pose_start_percent=0.0,
                 pose_end_percent=1.0, reference_image_strength=1.0, clip_vision_output=(encoded, 0),
                 reference_image=(fitted_ref, 0), **extra)
    sampler = g.add("KSamplerSelect", "Sampler Type", sampler_name="lcm")
    sigmas = g.add("BasicScheduler", "Scheduler", model=(model, 0), scheduler="simple", steps=10 if distilled else 6,
                   denoise=1.0)
    sampled = g.add("SamplerCustom", "Sampler", model=(model, 0), add_noise=True, noise_seed=0,
                    cfg=2.0 if distilled else 1.0, positive=(anim, 0), negative=(anim, 1), sampler=(sampler, 0),
                    sigmas=(sigmas, 0), latent_image=(anim, 2))
    save_window(g, sampled, anim, vae, previous, "wan_animate2_distilled" if distilled else "wan_animate2")
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
    "wan22_animate_gguf": lambda: wan22_animate(True, gguf=True),
    "wan22_animate_gguf_prompt": lambda: wan22_animate(False, gguf=True),
    "wan22_animate_gguf_extend": lambda: wan22_animate(True, extend=True, gguf=True),
    "wan22_animate_gguf_prompt_extend": lambda: wan22_animate(False, extend=True, gguf=True),
    "wan22_animate_kj": lambda: wan22_animate_kj(True),
    "wan22_animate_kj_prompt": lambda: wan22_animate_kj(False),
    **{f"wan_animate2{d}{p}{e}": (lambda p=p, e=e, d=d: wan_animate2(not p, bool(e), bool(d)))
       for d in ("", "_distilled") for p in ("", "_prompt") for e in ("", "_extend")},
    "wan22_5b": wan22_5b,
    "svd": svd,
    "svd_from_image": svd_from_image,
    "denoise": denoise,
    "upscale": upscale,
    "denoise_kj": denoise_kj,
}


def main(object_infos: list[str], only: list[str]) -> None:
    infos = [json.loads(Path(p).read_text(encoding="utf-8")) for p in object_infos]
    catalog = Catalog(merge_object_info(infos[0], *infos[1:]))
    unknown = [n for n in only if n not in WORKFLOWS]
    if unknown:
        sys.exit(f"unknown workflow(s): {', '.join(unknown)}")
    for name, build in WORKFLOWS.items():
        if only and name not in only:
            continue
        graph = build()
        result = catalog.validate(graph, file_exists=lambda kind, value: True)
        problems = [e for nid, n in result.node_errors.items() for e in n["errors"]
                    if e["type"] != "value_not_in_list" or "_name" not in str(e["extra_info"].get("input_name"))
                    and (graph[nid]["class_type"], e["extra_info"].get("input_name")) not in MODEL_INPUTS]
        if not result.ok and result.error and result.error["type"] != "prompt_outputs_failed_validation":
            sys.exit(f"{name}: {result.error}")
        if problems:
            sys.exit(f"{name}: {json.dumps(problems, indent=1)[:2000]}")
        path = ROOT / "workflows" / f"{name}.json"
        path.write_text(json.dumps(api_to_ui(graph, catalog, name=name), indent=2, ensure_ascii=False) + "\n",
                        encoding="utf-8")
        print(f"wrote {path.relative_to(ROOT)} ({len(graph)} nodes)")


if __name__ == "__main__":
    args = sys.argv[1:]
    files, only = (args[:args.index("--only")], args[args.index("--only") + 1:]) if "--only" in args else (args, [])
    if not files:
        sys.exit(__doc__)
    main(files, only)
