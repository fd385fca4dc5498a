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


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_bad_input(case: dict[str, Any], monkeypatch: Any, tmp_path: Path, tmp_path_factory: Any) -> None:
    # A copy of the case's folder (git keeps no file modes; credentials files must be 0600)
    folder = tmp_path_factory.mktemp("case") / case["name"]
    if (HERE / case["name"]).is_dir():
        shutil.copytree(HERE / case["name"], folder, symlinks=True)
        if (folder / "credentials.json").exists():
            (folder / "credentials.json").chmod(0o600)
    monkeypatch.setenv("COMFY_DRIVE_CREDENTIALS", str(folder / "credentials.json"))
    for name, value in case.get("env", {}).items():
        monkeypatch.setenv(name, value.replace("{dir}", str(folder)))
    monkeypatch.chdir(tmp_path)
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
    assert not list(tmp_path.iterdir()) or case["args"][0] != "run" or "--dry-run" in case["args"]


def test_the_corpus_is_big_enough() -> None:
    assert len(CASES) >= 40
