"""The installed package: its shipped files are read from the package's data folder and never written."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from comfy_driver.cli import main
from comfy_driver.models.lock import load_lock, read_lock, write_pins
from comfy_driver.paths import BACKENDS, EXAMPLES, MODELS_LOCK, WORKFLOWS, is_shipped, models_lock


def test_shipped_files_are_package_data() -> None:
    for path in (MODELS_LOCK, BACKENDS, WORKFLOWS / "svd.json", EXAMPLES / "series.yaml"):
        assert path.is_file() and is_shipped(path)
        assert "comfy_driver" in path.parts  # found inside the package, checkout or wheel alike


def test_pins_go_to_the_users_own_lock_never_into_the_package(own_config_folder: Path) -> None:
    shipped = MODELS_LOCK.read_bytes()
    lockfile = read_lock(models_lock())
    assert lockfile.path == MODELS_LOCK
    write_pins(lockfile, {0: {"size": 123}})
    assert MODELS_LOCK.read_bytes() == shipped
    assert lockfile.path == own_config_folder / "models.lock"
    assert models_lock() == lockfile.path  # from now on the user's own is the one in force
    assert load_lock(models_lock()).models[0].size == 123


def test_example_command_writes_the_bundled_examples(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["example", str(tmp_path / "here")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "here" / "examples" / "series.yaml").read_bytes() == (EXAMPLES / "series.yaml").read_bytes()
    assert (tmp_path / "here" / "examples" / "assets" / "mira.png").is_file()
    assert "comfy-drive run examples/series.yaml --simulate" in result.output
    again = CliRunner().invoke(main, ["example", str(tmp_path / "here")])
    assert again.exit_code == 2 and "already exists" in again.output  # never overwritten


def test_no_tracked_file_is_ignored() -> None:
    import shutil
    import subprocess

    import pytest

    root = Path(__file__).resolve().parent.parent
    if shutil.which("git") is None or not (root / ".git").exists():
        pytest.skip("not a git checkout")
    ignored = subprocess.run(["git", "ls-files", "-ci", "--exclude-standard"], cwd=root, capture_output=True,
                             text=True, check=True).stdout.split()
    assert ignored == []
