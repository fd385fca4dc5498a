"""Parameters scoped by backend or stage: one series renders with any backend that gets the inputs it needs."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from click.testing import CliRunner

from comfy_driver.cli import main
from comfy_driver.config.series import load_series
from comfy_driver.errors import UserError
from comfy_driver.paths import EXAMPLES
from comfy_driver.pipeline.plan import build_plan

ASSETS = EXAMPLES / "assets"


def build_jobs(loaded: Any, backend: str | None = None) -> list[Any]:
    """Each scene's first prompt as planned, with what its route skipped."""
    return [SimpleNamespace(skipped=scene.routes[0].skipped, template=scene.routes[0].steps[0].first.template,
                            graph=scene.routes[0].steps[0].first.graph) for scene in build_plan(loaded, backend).scenes]


def svd_series(tmp_path: Path, params: str, extra: str = "") -> Path:
    path = tmp_path / "series.yaml"
    path.write_text("title: Scoped\nbackend: svd\noutput: out\n"
                    f"defaults: {{width: 64, height: 64, fps: 8, frames: 9, params: {{{params}}}}}\n"
                    f"episodes:\n  - scenes:\n      - {{id: one, prompt: a fox, seed: 3{extra}}}\n")
    return path


def test_backend_parameter_applies_only_when_that_backend_runs(tmp_path: Path) -> None:
    path = svd_series(tmp_path, "svd.motion_bucket_id: 77, steps: 3", f", reference_image: {ASSETS / 'mira.png'}")
    (svd,) = build_jobs(load_series(path))
    assert svd.skipped == ()
    assert 77 in [n["inputs"].get("motion_bucket_id") for n in svd.graph.values()]
    (wan,) = build_jobs(load_series(path), "wan22_animate")
    assert wan.template.name == "wan22_animate_prompt"
    assert wan.skipped == ("svd.motion_bucket_id (svd is not in this pipeline)",)
    assert all("motion_bucket_id" not in n["inputs"] for n in wan.graph.values())


def test_unscoped_parameter_of_another_backend_is_skipped_not_an_error(tmp_path: Path) -> None:
    path = svd_series(tmp_path, "motion_bucket_id: 90, keyframe_steps: 2", f", reference_image: {ASSETS / 'mira.png'}")
    (job,) = build_jobs(load_series(path))  # svd with a reference image: the keyframe is the image
    assert job.template.name == "svd_from_image"
    assert job.skipped == ("keyframe_steps (svd_from_image does not take it)",)
    (wan,) = build_jobs(load_series(path), "wan22_5b")
    assert set(wan.skipped) == {"motion_bucket_id (wan22_5b does not take it)",
                                "keyframe_steps (wan22_5b does not take it)"}


def test_names_no_workflow_takes_are_still_errors_with_a_suggestion(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="unknown parameter 'motion_bucket' for workflow 'svd'; did you mean "
                                        "'motion_bucket_id'"):
        build_jobs(load_series(svd_series(tmp_path, "motion_bucket: 3")))
    with pytest.raises(UserError, match="parameter 'sdv.motion_bucket_id': no backend or stage 'sdv'; did you "
                                        "mean 'svd'"):
        build_jobs(load_series(svd_series(tmp_path, "sdv.motion_bucket_id: 3")))
    with pytest.raises(UserError, match="unknown parameter 'wan22_5b.motion_bucket_id' for 'wan22_5b'"):
        build_jobs(load_series(svd_series(tmp_path, "wan22_5b.motion_bucket_id: 3")))


def test_a_plain_name_only_a_stage_takes_is_skipped_saying_how_to_reach_the_stage(tmp_path: Path) -> None:
    (job,) = build_jobs(load_series(svd_series(tmp_path, "strength: 0.3")), "svd+denoise")
    assert job.skipped == ("strength (svd does not take it; 'denoise.strength' sets the stage's)",)


def test_backend_override_on_the_wan_example_skips_what_svd_cannot_use(tmp_path: Path) -> None:
    jobs = build_jobs(load_series(EXAMPLES / "wan_animate.yaml"), "svd")
    assert [j.template.name for j in jobs] == ["svd_from_image", "svd_from_image"]
    assert jobs[0].skipped[0] == "driving_video (svd takes none)"
    assert "denoise.strength (denoise is not in this pipeline)" in jobs[1].skipped
    # the series' own choice of a backend that takes no driving video is still a mistake
    text = (EXAMPLES / "wan_animate.yaml").read_text().replace("backend: wan22_animate+denoise+upscale", "backend: svd")
    (tmp_path / "wan.yaml").write_text(text.replace("assets/", f"{ASSETS}/"))
    with pytest.raises(UserError, match="backend 'svd' cannot follow a driving video"):
        build_jobs(load_series(tmp_path / "wan.yaml"))


def test_dry_run_lists_the_skipped_parameters() -> None:
    result = CliRunner().invoke(main, ["run", str(EXAMPLES / "wan_animate.yaml"), "--backend", "svd", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "skipped (not for this backend): driving_video (svd takes none), denoise.strength" in result.output
    result = CliRunner().invoke(main, ["run", str(EXAMPLES / "series.yaml"), "--backend", "wan22_5b", "--dry-run"])
    assert result.exit_code == 2 and "parameter 'reference_image' is required by workflow 'wan22_5b'" in result.output
