"""Episodes from clips: stream copy when they match, one encode to the episode's format when not."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from comfy_driver.config.series import load_series
from comfy_driver.errors import RunError
from comfy_driver.media.ffmpeg import ffmpeg_exe, probe
from comfy_driver.media.stitch import Format, frame_shares, plan, stitch, verify
from comfy_driver.pipeline.plan import build_plan
from comfy_driver.pipeline.supervisor import Supervisor
from comfy_driver.sim.render import write_mp4


def clip(folder: Path, name: str, frames: int, width: int, height: int, fps: float) -> Path:
    path = folder / f"{name}.mp4"
    write_mp4(path, frames, width, height, fps, name)
    return path


def packet_hashes(path: Path) -> list[str]:
    """The md5 of every video packet, as stored (no decoding): equal lists mean no re-encode."""
    out = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-i", str(path),
                          "-map", "0:v", "-c", "copy", "-f", "framemd5", "-"], capture_output=True, check=True)
    return [line.rsplit(",", 1)[1].strip() for line in out.stdout.decode().splitlines() if not line.startswith("#")]


def test_matching_clips_are_stream_copied(tmp_path: Path) -> None:
    clips = [clip(tmp_path, f"c{n}", 12, 64, 48, 8) for n in range(3)]
    done = stitch(plan(clips, 8), tmp_path / "ep.mp4")
    assert done.mode == "copy" and done.converted == []
    # every packet kept as it was (a clip's first may carry its parameter sets in-band now)
    joined, original = packet_hashes(done.path), [h for c in clips for h in packet_hashes(c)]
    assert len(joined) == len(original) == 36
    assert [i for i, (a, b) in enumerate(zip(joined, original)) if a != b] in ([], [0, 12, 24])
    assert (done.info.frames, done.info.duration, done.info.fps) == (36, 4.5, 8)


def test_a_stream_copy_keeps_the_clips_sound(tmp_path: Path) -> None:
    clips = []
    for n in range(2):
        path = tmp_path / f"s{n}.mp4"
        subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i",
                        "testsrc=size=64x48:rate=8:duration=1", "-f", "lavfi", "-i", "sine=duration=1", "-c:v",
                        "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", str(path)], check=True)
        clips.append(path)
    done = stitch(plan(clips, 8), tmp_path / "ep.mp4")
    probe_out = subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", str(done.path)], capture_output=True, text=True)
    assert done.mode == "copy" and "Audio: aac" in probe_out.stderr


def test_mixed_clips_are_normalised_in_one_encode_never_shrunk(tmp_path: Path) -> None:
    small = clip(tmp_path, "small", 16, 320, 192, 8)  # 2 s, e.g. a fallback svd clip
    big = clip(tmp_path, "big", 24, 512, 320, 16)  # 1.5 s, an upscaled clip
    odd = clip(tmp_path, "odd", 10, 128, 128, 12)  # 0.833 s, another aspect
    planned = plan([small, big, odd], 16)
    assert planned.format == Format(512, 320, 16) and planned.converted == [0, 2]
    done = stitch(planned, tmp_path / "ep.mp4")
    info = probe(done.path)
    assert done.mode == "normalise"
    assert (info.width, info.height, info.fps, info.video_streams) == (512, 320, 16, 1)
    assert (info.codec, info.pix_fmt) == ("h264", "yuv420p")
    assert info.frames == round((2 + 1.5 + 10 / 12) * 16) == 69
    assert abs(info.duration - (2 + 1.5 + 10 / 12)) <= 1 / 16


def test_without_a_declared_fps_the_largest_clip_sets_it(tmp_path: Path) -> None:
    clips = [clip(tmp_path, "a", 8, 64, 64, 8), clip(tmp_path, "b", 12, 96, 64, 12)]
    planned = plan(clips)
    assert planned.format == Format(96, 64, 12) and planned.converted == [0]


def test_frame_shares_keep_the_running_total_exact() -> None:
    shares = frame_shares([1 / 3] * 7, 10)
    assert sum(shares) == round(7 / 3 * 10) and set(shares) <= {3, 4}


def test_verify_rejects_a_file_of_the_wrong_length_or_fps(tmp_path: Path) -> None:
    one = clip(tmp_path, "one", 8, 64, 64, 8)
    infos = [probe(one)]
    with pytest.raises(RunError, match=r"lasts 1.000 s, its clips 2.000 s"):
        verify(one, infos * 2, Format(64, 64, 8))
    with pytest.raises(RunError, match=r"8 fps, expected 12"):
        verify(one, infos, Format(64, 64, 12))


def test_an_episode_with_an_upscaled_and_a_plain_scene_takes_the_larger_format(sim: object, tmp_path: Path) -> None:
    path = tmp_path / "series.yaml"
    path.write_text("title: Mixed\nbackend: svd\noutput: out\n"
                    "defaults: {width: 64, height: 64, fps: 8, frames: 9, params: {steps: 2}}\n"
                    "episodes:\n  - id: ep01\n    scenes:\n"
                    "      - {id: big, prompt: a fox, backend: svd+upscale, params: {upscale.downscale_ratio: 0.5}}\n"
                    "      - {id: plain, prompt: a hare}\n"
                    "  - id: ep02\n    scenes:\n      - {id: a, prompt: a fox}\n      - {id: b, prompt: a hare}\n")
    loaded = load_series(path)
    report = Supervisor(build_plan(loaded), [sim.url]).run()  # type: ignore[attr-defined]
    ep1, ep2 = report.episodes
    assert (ep1.format, ep1.converted) == ("128x128 8 fps", ["ep01/plain"])
    assert (ep2.format, ep2.converted) == ("64x64 8 fps", [])
    info = probe(loaded.output_dir / "mixed" / str(ep1.path))
    assert (info.width, info.height, info.frames) == (128, 128, 18)
