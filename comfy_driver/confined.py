"""Writing files inside a folder that they can never leave, whatever names they are given.

Every file comfy-drive writes (downloads, clips, episodes, reports, credentials) goes through here.
A name is first checked as text (`relative_parts`: relative, no `..`, no drive letter, no NUL), then
each folder on the way is opened relative to the one before with O_NOFOLLOW, so a symbolic link
planted inside the folder (`out/ep01 -> /elsewhere`) is refused instead of followed. The root folder
itself is the user's choice and may be a link. Files appear under their final name only once
complete: they are written to a fresh temporary file (O_EXCL | O_NOFOLLOW) and renamed, and a rename
replaces a link at the final name instead of writing through it.

Where the OS cannot open files relative to a folder (Windows), each folder on the way is checked
with lstat instead.

OS errors become one clear message (`os_failure`): a full disk or a read-only folder says so and
what to do, and never surfaces as a traceback.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from comfy_driver.errors import DriveError, RunError, UserError

_DIR_FD = os.open in os.supports_dir_fd and os.mkdir in os.supports_dir_fd
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_BINARY = getattr(os, "O_BINARY", 0)
_DRIVE = re.compile(r"^[A-Za-z]:")
_CONTROL = re.compile(r"[\x00-\x1f]")
_SEPARATORS = re.compile(r"[\\/]+")


class UnsafePath(UserError):
    """A name that would leave its folder, or a link on the way there."""


class NoSpace(RunError):
    """The disk (or the quota, or the file size limit) is full: nothing more can be written."""


class ReadOnly(UserError):
    """The folder cannot be written (a read-only file system, no permission)."""


HALTING = (NoSpace, ReadOnly)  # failures every later write would repeat: a run stops at the first


def relative_parts(name: str, *, what: str = "path") -> tuple[str, ...]:
    """The parts of a relative name that stays inside its folder, or UnsafePath.

    Both slash kinds separate parts; empty and '.' parts are dropped; '..', absolute names, drive
    letters and control characters are refused rather than repaired, so a hostile name never lands
    somewhere unexpected.
    """
    if not isinstance(name, str) or not name.strip():
        raise UnsafePath(f"{what} {name!r}: an empty name")
    if _CONTROL.search(name):
        raise UnsafePath(f"{what} {name!r}: control characters (NUL, newline, ...) are not allowed in a file name")
    if name.startswith(("/", "\\")) or _DRIVE.match(name):
        raise UnsafePath(f"{what} {name!r}: must be relative to its folder, not an absolute path")
    parts = tuple(p for p in _SEPARATORS.split(name) if p not in ("", "."))
    if ".." in parts:
        raise UnsafePath(f"{what} {name!r}: '..' would leave its folder")
    if not parts:
        raise UnsafePath(f"{what} {name!r}: names no file")
    return parts


def os_failure(exc: OSError, path: Path | str, doing: str = "writing") -> DriveError:
    """One clear error for an OS failure while reading or writing a file (never a traceback)."""
    code = exc.errno
    if code in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return NoSpace(f"no space left while {doing} {path} (disk full or over quota); finished files are kept",
                        hint="free disk space and run the same command again to resume")
    if code in (errno.EROFS, errno.EACCES, errno.EPERM):
        why = "the file system is read-only" if code == errno.EROFS else "permission denied"
        return ReadOnly(f"cannot write {path}: {why}",
                         hint="choose a folder you can write to (output: in the series file), or fix its permissions")
    if code == errno.ELOOP:
        return UserError(f"{path}: a symbolic link loop")
    if code in (errno.ENOTDIR, errno.EEXIST):
        return UserError(f"{path}: a part of this path is a file, not a folder")
    if code == errno.EISDIR:
        return UserError(f"{path} is a folder; a file is needed there")
    return RunError(f"{doing} {path} failed: {exc.strerror or exc}")


def _refuse_link(root: Path, parts: tuple[str, ...], upto: int) -> UnsafePath:
    where = root.joinpath(*parts[:upto + 1])
    return UnsafePath(f"{where} is a symbolic link; comfy-drive never writes through links inside {root}",
                      hint="remove the link (or replace it by a real folder) and rerun")


def _open_dir(root: Path, parts: tuple[str, ...], *, create: bool) -> int:
    """A descriptor of root/parts..., each part opened without following links (made if missing)."""
    try:
        fd = os.open(root, os.O_RDONLY | _DIRECTORY | _CLOEXEC)
    except FileNotFoundError:
        if not create:
            raise
        root.mkdir(parents=True, exist_ok=True)  # (only when missing: a mkdir that finds it costs more)
        fd = os.open(root, os.O_RDONLY | _DIRECTORY | _CLOEXEC)
    try:
        for i, part in enumerate(parts):
            flags = os.O_RDONLY | _DIRECTORY | _NOFOLLOW | _CLOEXEC
            try:
                nfd = os.open(part, flags, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, 0o777, dir_fd=fd)
                nfd = os.open(part, flags, dir_fd=fd)
            except OSError as exc:
                if exc.errno not in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
                    raise
                if os.path.islink(root.joinpath(*parts[:i + 1])):
                    raise _refuse_link(root, parts, i) from None
                raise UnsafePath(f"{root.joinpath(*parts[:i + 1])} is a file where a folder is needed") from None
            os.close(fd)
            fd = nfd
    except BaseException:
        os.close(fd)
        raise
    return fd


def _checked_dir(root: Path, parts: tuple[str, ...], *, create: bool) -> Path:
    """The lstat fallback of _open_dir, for systems without openat."""
    if create:
        root.mkdir(parents=True, exist_ok=True)
    here = root
    for i, part in enumerate(parts):
        here = here / part
        if here.is_symlink():
            raise _refuse_link(root, parts, i)
        if create and not here.exists():
            here.mkdir(exist_ok=True)
        if here.exists() and not here.is_dir():
            raise UnsafePath(f"{here} is a file where a folder is needed")
    return here


def folder(root: Path, name: str = "", *, create: bool = True) -> Path:
    """root/name as a folder reached without links (made if missing); '' is root itself."""
    parts = relative_parts(name, what="folder") if name else ()
    try:
        if _DIR_FD:
            os.close(_open_dir(root, parts, create=create))
        else:
            _checked_dir(root, parts, create=create)
    except OSError as exc:
        raise os_failure(exc, root.joinpath(*parts), "creating") from None
    return root.joinpath(*parts)


@contextlib.contextmanager
def writer(root: Path, name: str, *, mode: int = 0o644) -> Iterator[BinaryIO]:
    """Write root/name atomically, never through a link: yields a binary file; on success the file
    replaces root/name, on any error it is removed and root/name is left as it was."""
    with _writer(root, relative_parts(name, what="file"), mode) as fh:
        yield fh


@contextlib.contextmanager
def _writer(root: Path, parts: tuple[str, ...], mode: int) -> Iterator[BinaryIO]:
    tmp_name = f".{parts[-1][:80]}.{secrets.token_hex(4)}.part"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC | _BINARY
    dir_fd: int | None = None
    try:
        if _DIR_FD:
            dir_fd = _open_dir(root, parts[:-1], create=True)
            fd = os.open(tmp_name, flags, mode, dir_fd=dir_fd)
        else:
            fd = os.open(_checked_dir(root, parts[:-1], create=True) / tmp_name, flags, mode)
    except OSError as exc:
        if dir_fd is not None:
            os.close(dir_fd)
        raise os_failure(exc, root.joinpath(*parts)) from None
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
        if _DIR_FD:  # (names are enough: no path is built)
            os.replace(tmp_name, parts[-1], src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        else:
            target = root.joinpath(*parts)
            os.replace(target.with_name(tmp_name), target)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            if _DIR_FD:
                os.unlink(tmp_name, dir_fd=dir_fd)
            else:
                root.joinpath(*parts).with_name(tmp_name).unlink()
        if not isinstance(exc, OSError) or exc.errno is None:  # not the file's (e.g. a broken download)
            raise
        if exc.errno == errno.EISDIR:
            raise UnsafePath(f"{root.joinpath(*parts)} is a folder; a file is needed there") from None
        raise os_failure(exc, root.joinpath(*parts)) from None
    finally:
        if dir_fd is not None:
            os.close(dir_fd)


def write_bytes(root: Path, name: str, data: bytes, *, mode: int = 0o644) -> Path:
    """root/name holds data (atomically, never through a link); the path written."""
    parts = relative_parts(name, what="file")
    with _writer(root, parts, mode) as fh:
        fh.write(data)
    return root.joinpath(*parts)


def write_text(root: Path, name: str, text: str, *, mode: int = 0o644) -> Path:
    return write_bytes(root, name, text.encode("utf-8"), mode=mode)


@contextlib.contextmanager
def tool_output(root: Path, name: str) -> Iterator[Path]:
    """A fresh path for another program (ffmpeg) to write root/name through; renamed into place when
    the block ends without error, removed otherwise. The folders on the way are checked as for
    writer, and the file is created here (exclusively, no link followed) before the program opens
    it, so a link planted under the temporary name cannot redirect the program's output."""
    parts = relative_parts(name, what="file")
    target = root.joinpath(*parts)
    parent = folder(root, "/".join(parts[:-1])) if len(parts) > 1 else folder(root)
    work = parent / f".{parts[-1][:80]}.{secrets.token_hex(4)}.part{PurePosixPath(parts[-1]).suffix}"
    try:
        os.close(os.open(work, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC, 0o644))
    except OSError as exc:
        raise os_failure(exc, target) from None
    try:
        yield work
        os.replace(work, target)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            work.unlink()
        if isinstance(exc, OSError) and exc.errno is not None:
            raise os_failure(exc, target) from None
        raise
