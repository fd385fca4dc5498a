"""Confined writes: names that climb, absolute names, links planted inside the folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from comfy_driver import confined
from comfy_driver.confined import UnsafePath
from comfy_driver.errors import UserError


@pytest.mark.parametrize("name", ["../x", "a/../../x", "/etc/passwd", "\\\\server\\share\\x", "C:\\x", "c:x",
                                  "", "  ", ".", "./", "a\x00b", "a\nb", ".."])
def test_names_that_would_leave_or_name_nothing_are_refused(name: str) -> None:
    with pytest.raises(UnsafePath):
        confined.relative_parts(name)


def test_names_are_normalised() -> None:
    assert confined.relative_parts("a//b/./c.png") == ("a", "b", "c.png")
    assert confined.relative_parts("a\\b") == ("a", "b")


def test_a_linked_folder_inside_the_root_is_refused(tmp_path: Path) -> None:
    root, outside = tmp_path / "out", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "ep01").symlink_to(outside)
    with pytest.raises(UnsafePath, match="symbolic link"):
        confined.write_bytes(root, "ep01/s01/clip.mp4", b"x")
    with pytest.raises(UnsafePath, match="symbolic link"):
        confined.folder(root, "ep01/s01")
    assert list(outside.iterdir()) == []


def test_a_link_at_the_final_name_is_replaced_not_written_through(tmp_path: Path) -> None:
    root = tmp_path / "out"
    root.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (root / "report.json").symlink_to(victim)
    confined.write_text(root, "report.json", "{}")
    assert victim.read_text() == "precious"
    assert not (root / "report.json").is_symlink() and (root / "report.json").read_text() == "{}"


def test_the_root_itself_may_be_a_link(tmp_path: Path) -> None:
    real = tmp_path / "disk"
    real.mkdir()
    (tmp_path / "out").symlink_to(real)
    confined.write_bytes(tmp_path / "out", "a/b.bin", b"1")
    assert (real / "a" / "b.bin").read_bytes() == b"1"


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    confined.write_text(tmp_path, "f.txt", "old")
    with pytest.raises(RuntimeError):
        with confined.writer(tmp_path, "f.txt") as fh:
            fh.write(b"half")
            raise RuntimeError("cut")
    assert (tmp_path / "f.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.txt"]


def test_a_file_where_a_folder_is_needed(tmp_path: Path) -> None:
    (tmp_path / "ep01").write_text("not a folder")
    with pytest.raises(UserError, match="a file where a folder is needed"):
        confined.write_bytes(tmp_path, "ep01/clip.mp4", b"x")


def test_a_folder_where_a_file_is_needed(tmp_path: Path) -> None:
    (tmp_path / "clip.mp4").mkdir()
    with pytest.raises(UserError, match="is a folder"):
        confined.write_bytes(tmp_path, "clip.mp4", b"x")
    assert [p.name for p in tmp_path.iterdir()] == ["clip.mp4"]


def test_a_link_loop_on_the_way(tmp_path: Path) -> None:
    (tmp_path / "loop").symlink_to("loop")
    with pytest.raises(UnsafePath):
        confined.write_bytes(tmp_path, "loop/x", b"x")


def test_mode_is_applied_from_the_first_byte(tmp_path: Path) -> None:
    confined.write_text(tmp_path, "secret.json", "{}", mode=0o600)
    assert (tmp_path / "secret.json").stat().st_mode & 0o777 == 0o600


def test_tool_output_appears_only_when_complete(tmp_path: Path) -> None:
    with confined.tool_output(tmp_path, "ep/ep.mp4") as work:
        assert work.parent == tmp_path / "ep" and work.exists() and not work.is_symlink()
        work.write_bytes(b"video")
        assert not (tmp_path / "ep" / "ep.mp4").exists()
    assert (tmp_path / "ep" / "ep.mp4").read_bytes() == b"video"
    with pytest.raises(RuntimeError):
        with confined.tool_output(tmp_path, "ep/ep.mp4") as work:
            work.write_bytes(b"broken")
            raise RuntimeError("ffmpeg failed")
    assert (tmp_path / "ep" / "ep.mp4").read_bytes() == b"video"
    assert sorted(os.listdir(tmp_path / "ep")) == ["ep.mp4"]


def test_os_failures_are_one_clear_message(tmp_path: Path) -> None:
    import errno

    err = confined.os_failure(OSError(errno.ENOSPC, "No space left on device"), tmp_path / "x")
    assert "no space left" in err.message and "finished files are kept" in err.message
    err = confined.os_failure(OSError(errno.EROFS, "Read-only file system"), tmp_path / "x")
    assert isinstance(err, UserError) and "read-only" in err.message
