"""One run per output folder at a time, and one series per output folder.

A run holds an OS file lock on `<folder>/.lock` for its whole length (flock; msvcrt.locking on Windows).
The OS releases it when the process ends, however it ends (SIGKILL, a crash), so a lock is never
left stale and never has to be broken by hand. The lock file also says who holds it (pid, host,
start time, command): a second run prints that and exits 2 instead of rendering the same scenes
twice. Locks on network folders are only as good as the network file system's.

The folder also records the series it belongs to (`series.json`, its title): two titles that make
the same folder name (`Fox Story!` and `fox-story`) are told apart there, instead of the second
series overwriting the first one's clips.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

from comfy_driver import confined
from comfy_driver.comfy.address import redact
from comfy_driver.errors import UserError

LOCK_NAME = ".lock"
IDENTITY_NAME = "series.json"
LINKS_REFUSED = ("state.db", "state.db-wal", "state.db-shm", "state.db-journal")
_LOCK_OFFSET = 1 << 20  # Windows locks bytes: lock one far past the holder's note so it stays readable


class FolderBusy(UserError):
    """Another run holds the output folder."""


def _try_lock(fd: int) -> bool:
    if sys.platform == "win32":
        import msvcrt

        os.lseek(fd, _LOCK_OFFSET, os.SEEK_SET)
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _unlock(fd: int) -> None:
    if sys.platform == "win32":
        import msvcrt

        os.lseek(fd, _LOCK_OFFSET, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
    else:
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_UN)


def _note(fd: int, text: str) -> None:
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, text.encode("utf-8"))


def _holder(fd: int) -> str:
    """Who holds the lock, as its note says (it may be caught half-written: then say less)."""
    os.lseek(fd, 0, os.SEEK_SET)
    try:
        note = json.loads(os.read(fd, 4096).decode("utf-8"))
        return (f"pid {int(note['pid'])} on {note['host']}, started {note['started']}"
                f" ({str(note.get('command', ''))[:200]})")
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        return "a run that has just started or is just ending"


def _command() -> str:
    """This process's command line for the note, with any user:password of a URL taken out."""
    return " ".join(["comfy-drive", *(redact(a) if "://" in a else a for a in sys.argv[1:])])


def check_folder(folder: Path) -> Path:
    """A path that is, or can be made, an output folder (nothing is made): else a clear UserError.

    Cheap, so a command checks its output folder before it starts rendering."""
    hint = "give a folder there (output: of a series, -o of replay)"
    if folder.is_symlink() and not folder.exists():
        raise UserError(f"output folder {folder} is a broken symbolic link or a link loop", hint=hint)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"output folder {folder} exists and is not a folder", hint=f"{hint}, or move that file away")
    above = folder.absolute().parent
    while not above.exists() and above != above.parent:
        above = above.parent
    if not above.is_dir():
        raise UserError(f"output folder {folder}: a part of this path is a file, not a folder", hint=hint)
    return folder


def prepare_folder(folder: Path) -> Path:
    """The output folder, made if missing; a path that cannot be one is a clear error (exit 2)."""
    check_folder(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise UserError(f"output folder {folder}: a part of this path is a file, not a folder",
                        hint="give a folder there (output: of a series, -o of replay)") from None
    except OSError as exc:
        raise confined.os_failure(exc, folder, "creating") from None
    return folder


@contextlib.contextmanager
def claim_output(folder: Path, *, series: str | None = None) -> Iterator[Path]:
    """Hold `folder` for this run (made if missing) and check it belongs to `series` (a title).

    Raises FolderBusy naming the holder when another run has it, UserError when it belongs to
    another series or cannot be an output folder.
    """
    prepare_folder(folder)
    # Checked before the lock file is made, so that a folder refused is left untouched:
    if series is not None:
        _check_identity(folder, series, record=False)
    for name in LINKS_REFUSED:  # files written in place (SQLite), not by rename
        if (folder / name).is_symlink():
            raise UserError(f"{folder / name} is a symbolic link; the run state is never written through a link",
                            hint="remove the link (move the real file here if it is this series') and rerun")
    lock_path = folder / LOCK_NAME
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0),
                     0o644)
    except OSError as exc:
        if os.path.islink(lock_path):
            raise UserError(f"{lock_path} is a symbolic link", hint="remove it and rerun") from None
        raise confined.os_failure(exc, lock_path) from None
    try:
        try:
            locked = _try_lock(fd)
        except OSError as exc:  # ENOLCK: a network file system without locks
            raise UserError(f"{lock_path}: this file system cannot lock files ({exc.strerror or exc})",
                            hint="use an output folder on a local disk") from None
        if not locked:
            raise FolderBusy(f"{folder} is in use by another run: {_holder(fd)}",
                             hint="wait for that run to end (or stop it); one run per output folder at a time")
        try:
            _note(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                  "started": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
                                  "command": _command()}))
            if series is not None:
                _check_identity(folder, series)
            yield folder
        finally:
            with contextlib.suppress(OSError):
                _note(fd, "")
            _unlock(fd)
    finally:
        os.close(fd)


def _check_identity(folder: Path, title: str, *, record: bool = True) -> None:
    """The folder's series is `title`; a folder without a record (new, or from before) takes it
    (when `record`)."""
    path = folder / IDENTITY_NAME
    if path.is_symlink():
        raise UserError(f"{path} is a symbolic link", hint="remove it and rerun")
    if path.is_file():
        try:
            recorded = json.loads(path.read_text(encoding="utf-8"))["title"]
        except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError):
            raise UserError(f"{path}: not a series record (it should hold the series' title)",
                            hint="if this folder is this series' output, delete the file and rerun") from None
        if recorded == title:
            return
        raise UserError(f"{folder} holds the output of another series, {recorded!r}; {title!r} makes the same "
                        "folder name and would overwrite its clips",
                        hint="give this series another title or its own output: folder (if it is the same "
                             f"series renamed, delete {path})")
    if record:
        confined.write_text(folder, IDENTITY_NAME, json.dumps({"title": title}, ensure_ascii=False) + "\n")
