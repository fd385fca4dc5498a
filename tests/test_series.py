"""series.yaml and workflow parameters: every error names the file, the line and the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from comfy_driver.config.series import load_series
from comfy_driver.errors import UserError
from comfy_driver.paths import EXAMPLES, WORKFLOWS
from comfy_driver.pipeline.plan import build_plan
from comfy_driver.models.catalog import bundled_catalog
from comfy_driver.models.lock import load_lock
from comfy_driver.paths import MODELS_LOCK
from comfy_driver.workflow.template import load_template

CATALOG = bundled_catalog(load_lock(MODELS_LOCK))

GOOD = """\
title: Test Series
backend: svd
defaults:
  width: 320
  height: 192
  fps: 8
  frames: 8
characters:
  - name: Mira
    description: a fox
episodes:
  - scenes:
      - prompt: "{{ character.name }} is {{ character.description }} in {{ series.title }}"
        character: Mira
        seed: 5
"""



def firsts(loaded: Any) -> list[Any]:
    """Each scene's first prompt as planned."""
    return [scene.routes[0].steps[0].first for scene in build_plan(loaded).scenes]

def write(tmp_path: Path, text: str, name: str = "series.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def error_of(path: Path) -> str:
    with pytest.raises(UserError) as info:
        build_plan(load_series(path))
    return str(info.value)


def test_example_series_loads() -> None:
    loaded = load_series(EXAMPLES / "series.yaml")
    assert [s.key for s in loaded.scenes] == ["ep01/arrival", "ep01/stall", "ep02/rain"]
    rain = loaded.scenes[2]
    assert rain.frames == 12 and rain.prompt.startswith("Mira walks home")
    assert loaded.scenes[1].seed == 42 and loaded.scenes[1].params["svd.motion_bucket_id"] == 60


def test_templates_render(tmp_path: Path) -> None:
    loaded = load_series(write(tmp_path, GOOD))
    (scene,) = loaded.scenes
    assert scene.prompt == "Mira is a fox in Test Series" and scene.key == "ep01/s01"
    (job,) = firsts(loaded)
    assert job.graph["2"]["inputs"]["text"] == scene.prompt
    assert job.graph["10"]["inputs"]["seed"] == 5 and job.graph["8"]["inputs"]["video_frames"] == 8
    assert job.graph["12"]["inputs"]["fps"] == 8.0 and isinstance(job.graph["8"]["inputs"]["fps"], int)


def test_random_seed_is_stable(tmp_path: Path) -> None:
    text = GOOD.replace("seed: 5", "seed: random")
    text += text[text.index("      - prompt"):].replace("character: Mira", "character: Mira\n        id: second")
    path = write(tmp_path, text)
    first, second = load_series(path).scenes
    assert [s.seed for s in load_series(path).scenes] == [first.seed, second.seed]  # a rerun matches
    other = write(tmp_path, text.replace("title: Test Series", "title: Other Series"), "other.yaml")
    seeds = {first.seed, second.seed, *(s.seed for s in load_series(other).scenes)}
    assert len(seeds) == 4  # each scene of each series its own seed
    assert all(isinstance(s, int) and 0 <= s < 2**64 for s in seeds)


@pytest.mark.parametrize("edit,expected", [
    (("title: Test Series", "titel: Test Series"), "series.yaml:1: unknown key 'titel'; did you mean 'title'?"),
    (("        seed: 5", "        sede: 5"), "series.yaml:15: unknown key 'episodes.0.scenes.0.sede'; did you mean 'seed'?"),
    (("  width: 320", "  width: wide"), "series.yaml:4: defaults.width: Input should be a valid integer"),
    (("{{ character.name }}", "{{ charcter.name }}"), "series.yaml:13: prompt: undefined template variable"),
    (("        character: Mira", "        character: Bob"), "series.yaml:14: unknown character 'Bob'"),
    (("        seed: 5", "        seed: lucky"),
     "series.yaml:15: episodes.0.scenes.0.seed: seed must be a whole number from 0 to 2^64-1 or 'random'"),
    (("  fps: 8", "  fps: [8"), "series.yaml:7: not valid YAML"),
])
def test_series_errors_name_file_line_and_field(tmp_path: Path, edit: tuple[str, str], expected: str) -> None:
    text = GOOD.replace(*edit)
    assert text != GOOD
    assert expected in error_of(write(tmp_path, text))


def test_empty_episode_is_an_error(tmp_path: Path) -> None:
    text = GOOD[:GOOD.index("  - scenes:")] + "  - scenes: []\n"
    assert "series.yaml:12: episodes.0.scenes: List should have at least 1 item" in error_of(write(tmp_path, text))


def test_missing_reference_image_is_named(tmp_path: Path) -> None:
    text = GOOD.replace("    description: a fox", "    description: a fox\n    reference_image: nope.png")
    assert "series.yaml:11: file 'nope.png' not found" in error_of(write(tmp_path, text))


def test_reference_image_makes_svd_animate_it(tmp_path: Path) -> None:
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "ref.png")
    text = GOOD.replace("        seed: 5", "        seed: 5\n        reference_image: ref.png")
    (job,) = firsts(load_series(write(tmp_path, text)))
    assert job.template.name == "svd_from_image"
    (name,) = job.uploads
    assert job.graph["1"]["inputs"]["image"] == name and name.startswith("comfy_drive/")


def test_workflow_without_reference_image_says_so(tmp_path: Path) -> None:
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "ref.png")
    text = GOOD.replace("backend: svd", f"backend: tiny\nworkflows: {Path(__file__).parent / 'workflows'}")
    text = text.replace("        seed: 5", "        seed: 5\n        reference_image: ref.png")
    assert "workflow 'tiny' takes no reference image" in error_of(write(tmp_path, text))


def test_unknown_parameter_suggests(tmp_path: Path) -> None:
    text = GOOD.replace("        seed: 5", "        seed: 5\n        params: {motion_bucket: 3}")
    message = error_of(write(tmp_path, text))
    assert "series.yaml:16: unknown parameter 'motion_bucket' for workflow 'svd'; did you mean 'motion_bucket_id'?" \
        in message  # the parameter's own line


def test_mistyped_and_out_of_range_parameters_all_reported(tmp_path: Path) -> None:
    text = GOOD.replace("        seed: 5", "        seed: 5\n        params: {steps: many, cfg: 99}")
    message = error_of(write(tmp_path, text))
    assert "parameter 'steps': expected a whole number, got 'many'" in message
    assert "parameter 'cfg': 99.0 is above the maximum 30" in message


def test_every_scene_error_at_once(tmp_path: Path) -> None:
    text = GOOD + "      - prompt: x\n        params: {bogus: 1}\n      - prompt: y\n        params: {other: 2}\n"
    message = error_of(write(tmp_path, text))
    assert "'bogus'" in message and "'other'" in message


def test_unknown_backend_lists_known(tmp_path: Path) -> None:
    message = error_of(write(tmp_path, GOOD.replace("backend: svd", "backend: nope")))
    assert "series.yaml:2: unknown backend 'nope'" in message and "backends: svd, wan22_5b, wan22_animate" in message


def test_template_target_errors(tmp_path: Path) -> None:
    (tmp_path / "w.json").write_text((WORKFLOWS / "svd.json").read_text())
    (tmp_path / "w.params.yaml").write_text("params:\n  x:\n    type: int\n    default: 1\n"
                                            "    targets: [Video Sampelr.seed]\n")
    with pytest.raises(UserError, match="did you mean 'Video Sampler'"):
        load_template("w", tmp_path, CATALOG)
    (tmp_path / "w.params.yaml").write_text("params:\n  x:\n    type: int\n    default: 1\n"
                                            "    targets: [Video Sampler.sead]\n")
    with pytest.raises(UserError, match="has no input 'sead'"):
        load_template("w", tmp_path, CATALOG)
    (tmp_path / "w.params.yaml").write_text("params:\n  x:\n    tipe: int\n")
    with pytest.raises(UserError, match=r"w.params.yaml:3: unknown key 'params.x.tipe'; did you mean 'type'\?"):
        load_template("w", tmp_path, CATALOG)


def test_a_file_that_is_no_workflow_is_refused_clearly(tmp_path: Path) -> None:
    (tmp_path / "odd.json").write_text('{"hello": "world"}')
    with pytest.raises(UserError, match="odd.json: not a ComfyUI workflow"):
        load_template("odd", tmp_path, CATALOG)


def test_shipped_svd_is_a_gui_workflow_and_renders(tmp_path: Path) -> None:
    template = load_template("svd", WORKFLOWS, CATALOG)
    assert template.workflow is not None and template.workflow["version"] == 0.4
    assert template.graph["10"]["_meta"]["title"] == "Video Sampler"


def test_embedded_workflow_carries_the_scene_values(tmp_path: Path) -> None:
    (job,) = firsts(load_series(write(tmp_path, GOOD)))
    sampler = next(n for n in job.workflow["nodes"] if n.get("title") == "Video Sampler")
    assert sampler["widgets_values"][0] == 5  # the scene's seed, not the template's



def test_a_bound_is_named_in_full(tmp_path: Path) -> None:
    """The tiny test workflow's seed (its colour) goes up to 16777215: said so, not "1.67772e+07"."""
    tiny = Path(__file__).parent / "workflows"
    text = (f"title: t\nbackend: tiny\nworkflows: {tiny}\nepisodes:\n  - scenes:\n"
            "      - {id: a, seed: 36744455}\n")
    message = error_of(write(tmp_path, text))
    assert "series.yaml:6: parameter 'seed': 36744455 is above the maximum 16777215" in message
