"""Hostile and careless input where it enters: YAML, numbers, URLs, credentials, media, paths, faults."""

from __future__ import annotations

from pathlib import Path

import pytest

from comfy_driver.config.series import load_series
from comfy_driver.config.source import MAX_BYTES, load_yaml
from comfy_driver.errors import UserError
from tests.test_run import SERIES, series_file


def test_merge_keys_and_aliases_work_as_yaml_defines(tmp_path: Path) -> None:
    text = SERIES.replace("defaults:\n  width: 64\n  height: 64\n",
                          "vars: &size {width: 64, height: 64}\ndefaults:\n  <<: *size\n")
    loaded = load_series(series_file(tmp_path, text))
    assert {(s.width, s.height) for s in loaded.scenes} == {(64, 64)}
    located = load_yaml(series_file(tmp_path, "a: &a {x: 1, y: 2}\nb: &b {y: 9, z: 3}\n"
                                              "m:\n  <<: [*a, *b]\n  x: 0\n"))
    assert located.data["m"] == {"x": 0, "y": 2, "z": 3}


def test_dates_stay_the_text_they_were_written_as(tmp_path: Path) -> None:
    assert load_yaml(series_file(tmp_path, "release: 2024-05-01\n")).data == {"release": "2024-05-01"}


def test_a_huge_file_is_refused_before_it_is_read(tmp_path: Path) -> None:
    path = tmp_path / "series.yaml"
    with open(path, "wb") as fh:
        fh.truncate(MAX_BYTES + 1)
    with pytest.raises(UserError, match="larger than 4 MiB"):
        load_yaml(path)
