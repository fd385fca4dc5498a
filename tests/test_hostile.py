"""Hostile and careless input where it enters: YAML, numbers, URLs, credentials, media, paths, faults."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from comfy_driver.cli import main
from comfy_driver.comfy.address import ServerAddress, save_headers
from comfy_driver.config.series import load_series
from comfy_driver.errors import UserError
from comfy_driver.yamltext import MAX_BYTES, load_yaml
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


def test_a_link_inside_the_output_folder_never_sends_clips_outside(sim: Any, tmp_path: Path) -> None:
    """out/<series>/one -> elsewhere: episode one's scenes fail naming the link; nothing lands outside;
    episode two is rendered as usual."""
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    root = tmp_path / "out" / "run-test"
    root.mkdir(parents=True)
    (root / "one").symlink_to(outside)
    result = CliRunner().invoke(main, ["run", str(series_file(tmp_path)), "--server", sim.url])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert f"{root / 'one'} is a symbolic link; comfy-drive never writes through links" in result.output
    assert list(outside.iterdir()) == []
    assert (root / "two" / "c" / "clip.mp4").is_file() and (root / "two" / "two.mp4").is_file()


def test_a_link_planted_at_a_clip_name_is_replaced_not_written_through(sim: Any, tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    folder = tmp_path / "out" / "run-test" / "one" / "a"
    folder.mkdir(parents=True)
    (folder / "clip.mp4").symlink_to(victim)
    result = CliRunner().invoke(main, ["run", str(series_file(tmp_path)), "--server", sim.url])
    assert result.exit_code == 0, result.output
    assert victim.read_text() == "precious"
    assert not (folder / "clip.mp4").is_symlink() and (folder / "clip.mp4").stat().st_size > 1000


@pytest.mark.parametrize("url, http", [
    ("http://[::1]:8188", "http://[::1]:8188"),
    ("127.0.0.1:8188", "http://127.0.0.1:8188"),
    ("https://gpu_box.local/comfy/", "https://gpu_box.local/comfy"),
    ("  http://Host-1.example.com:443  ", "http://host-1.example.com:443"),
])
def test_strict_parsing_keeps_every_valid_address(url: str, http: str, monkeypatch: Any, tmp_path: Path) -> None:
    monkeypatch.setenv("COMFY_DRIVE_CREDENTIALS", str(tmp_path / "none.json"))
    assert ServerAddress.parse(url).http == http


def test_login_keeps_other_servers_and_refuses_a_header_before_writing(monkeypatch: Any, tmp_path: Path) -> None:
    path = tmp_path / "credentials.json"
    monkeypatch.setenv("COMFY_DRIVE_CREDENTIALS", str(path))
    save_headers("http://a.example:8188", {"X-Token": "one"})
    save_headers("http://b.example:8188", {"Authorization": "Bearer two"})
    assert path.stat().st_mode & 0o777 == 0o600
    before = path.read_bytes()
    with pytest.raises(UserError, match="line break"):
        save_headers("http://a.example:8188", {"X-Token": "x\r\nX-Evil: 1"})
    assert path.read_bytes() == before
    assert ServerAddress.parse("http://a.example:8188").headers == {"X-Token": "one"}
    assert ServerAddress.parse("http://b.example:8188/").headers == {"Authorization": "Bearer two"}
