"""The corpus of bad inputs in tests/bad_inputs/: each one exit status 2, one clear message, no traceback."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from comfy_driver.cli import main

HERE = Path(__file__).parent / "bad_inputs"
CASES = yaml.safe_load((HERE / "cases.yaml").read_text())


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else b"<dir>" for p in folder.rglob("*")}


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_bad_input(case: dict[str, Any], monkeypatch: Any, tmp_path: Path) -> None:
    # The case's files are copied (git keeps no file modes: a credentials file gets its 0600 back), so
    # that anything the command writes beside them (outputs go beside the series file) or in the
    # working folder is seen.
    folder = tmp_path / "case"
    if (HERE / case["name"]).is_dir():
        shutil.copytree(HERE / case["name"], folder, symlinks=True)
        if (folder / "credentials.json").exists():
            (folder / "credentials.json").chmod(0o600)
    else:
        folder.mkdir()
    monkeypatch.setenv("COMFY_DRIVE_CREDENTIALS", str(folder / "credentials.json"))
    for name, value in case.get("env", {}).items():
        monkeypatch.setenv(name, value.replace("{dir}", str(folder)))
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    before = snapshot(folder)
    monkeypatch.chdir(cwd)
    args = [a.replace("{dir}", str(folder)) for a in case["args"]]
    result = CliRunner().invoke(main, args)
    output = result.output
    assert result.exit_code == 2, output
    assert case["expect"] in output, output
    assert "Traceback" not in output
    lines = [line for line in output.splitlines() if line.strip()]
    if not case.get("usage"):  # click's usage messages are its own
        assert lines[0].startswith("error: "), output
        assert len(lines) <= 3, output  # the message, where it is, and what to do
    assert snapshot(folder) == before, "bad input changed or wrote files beside it"
    assert snapshot(cwd) == {}, "bad input wrote files in the working folder"


def test_the_corpus_is_big_enough() -> None:
    """At least 120 cases and 100 distinct bad files (not only argument mistakes), each folder used by a case."""
    names = [c["name"] for c in CASES]
    assert len(names) == len(set(names)) >= 120
    folders = {p.name for p in HERE.iterdir() if p.is_dir()}
    assert folders <= set(names), f"folders without a case: {sorted(folders - set(names))}"
    with_files = [n for n in folders if any(p.is_file() for p in (HERE / n).rglob("*"))]
    assert len(with_files) >= 100
    assert len({c["expect"] for c in CASES}) == len(CASES), "two cases expect the same message"
