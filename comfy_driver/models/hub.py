"""Hugging Face Hub access through huggingface_hub: file metadata, and resumable, hashing downloads.

The bytes are hashed as they are written, so a 15 GB file is read once (from the network), never a
second time from disk. The Hub's own errors become one clear message naming the repo and file.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from comfy_driver.errors import RunError, UserError

_CHUNK = 1 << 20


def endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def _hf() -> Any:
    """huggingface_hub, imported on first use with its own progress bars off (comfy-drive draws one)."""
    import huggingface_hub
    from huggingface_hub import constants
    from huggingface_hub.utils import disable_progress_bars

    disable_progress_bars()
    # Stream in 1 MiB pieces (not 10 MiB): a smoother progress line, and an interrupted download
    # keeps all but the last MiB for the resume.
    constants.DOWNLOAD_CHUNK_SIZE = _CHUNK
    return huggingface_hub


def token() -> str | None:
    """HF_TOKEN, or the token `hf auth login` saved."""
    return os.environ.get("HF_TOKEN") or _hf().get_token()


@dataclass(frozen=True)
class FileInfo:
    revision: str
    size: int
    sha256: str | None  # None for a file not stored with LFS (small text files)
    url: str


def file_url(repo: str, path: str, revision: str | None) -> str:
    return _hf().hf_hub_url(repo, path, revision=revision or "main", endpoint=endpoint())


def describe_error(exc: BaseException, repo: str, path: str, where: str) -> UserError | RunError:
    """A Hub error as one message: what is wrong with which file, and what to do."""
    from huggingface_hub import errors

    target = f"{repo}/{path}"
    if isinstance(exc, errors.GatedRepoError):
        return UserError(f"{where}{target}: the repo is gated and this account has no access yet",
                         hint=f"accept its licence at {endpoint()}/{repo}, then set HF_TOKEN (or run: hf auth login)")
    if isinstance(exc, errors.RevisionNotFoundError):
        return UserError(f"{where}{target}: revision not found on the Hub", hint="fix revision in models.lock")
    if isinstance(exc, errors.RemoteEntryNotFoundError):
        return UserError(f"{where}{target}: no such file in the repo", hint="fix path in models.lock")
    if isinstance(exc, errors.RepositoryNotFoundError):
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status == 401:
            return UserError(f"{where}{target}: the Hub refused access (401): the repo is private or the token is wrong",
                             hint="set HF_TOKEN to a token that can read it (or run: hf auth login)")
        return UserError(f"{where}{target}: repo not found on the Hub (or private)",
                         hint="check repo in models.lock; for a private repo set HF_TOKEN")
    if isinstance(exc, errors.HfHubHTTPError):
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status in (401, 403):
            return UserError(f"{where}{target}: the Hub refused access ({status})",
                             hint="set HF_TOKEN (or run: hf auth login)")
        return RunError(f"{where}{target}: the Hub answered {status or 'an error'}", hint="try again later")
    return RunError(f"{where}{target}: cannot reach the Hub ({type(exc).__name__}: {exc})",
                    hint="check the network, or set HF_HUB_OFFLINE=1 to see what is missing")


def file_info(repo: str, path: str, revision: str | None, *, where: str = "") -> FileInfo:
    """Revision (commit), size and sha256 of one file, from the Hub's metadata (a HEAD request)."""
    hf = _hf()
    url = file_url(repo, path, revision)
    try:
        meta = hf.get_hf_file_metadata(url, token=token(), endpoint=endpoint())
    except Exception as exc:  # noqa: BLE001 - every Hub or network failure is turned into a message
        raise describe_error(exc, repo, path, where) from None
    if meta.commit_hash is None or meta.size is None:
        raise RunError(f"{where}{repo}/{path}: the Hub gave no commit or size for the file")
    etag = (meta.etag or "").strip('"').lower()
    sha = etag if len(etag) == 64 and all(c in "0123456789abcdef" for c in etag) else None
    return FileInfo(meta.commit_hash, int(meta.size), sha, file_url(repo, path, meta.commit_hash))


class HashingWriter:
    """A file opened for appending that hashes every byte written to it, in order.

    Resuming a partial file hashes its existing bytes once first. huggingface_hub may rewind the
    file (when a server ignores a Range request); the hash is then rebuilt from what is kept.
    """

    def __init__(self, path: Path, on_bytes: Callable[[int], None]) -> None:
        self.path = path
        self.on_bytes = on_bytes
        self.digest = hashlib.sha256()
        self.file: BinaryIO = open(path, "a+b")  # noqa: SIM115 - closed in close()
        self.file.seek(0)
        while chunk := self.file.read(_CHUNK):
            self.digest.update(chunk)
        self.size = self.file.tell()

    def write(self, data: bytes) -> int:
        written = self.file.write(data)
        self.digest.update(data)
        self.size += len(data)
        self.on_bytes(len(data))
        return written

    def tell(self) -> int:
        return self.size

    def seek(self, offset: int, whence: int = 0) -> int:
        if whence != 0 or offset > self.size:
            raise OSError("HashingWriter only rewinds")
        self.truncate(offset)
        return offset

    def truncate(self, size: int | None = None) -> int:
        size = self.size if size is None else size
        self.file.truncate(size)
        self.file.seek(0)
        self.digest = hashlib.sha256()
        left = size
        while left > 0 and (chunk := self.file.read(min(_CHUNK, left))):
            self.digest.update(chunk)
            left -= len(chunk)
        self.on_bytes(size - self.size)
        self.size = size
        self.file.seek(size)
        return size

    def flush(self) -> None:
        self.file.flush()

    def close(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()


def download(info: FileInfo, part: Path, on_bytes: Callable[[int], None], *, repo: str, path: str) -> str:
    """Download (or resume) into `part`; returns the sha256 of the whole file."""
    _hf()
    from huggingface_hub.file_download import http_get
    from huggingface_hub.utils import build_hf_headers

    writer = HashingWriter(part, on_bytes)
    try:
        http_get(info.url, writer, resume_size=writer.size, expected_size=info.size,  # type: ignore[arg-type]
                 headers=build_hf_headers(token=token()), displayed_filename=part.name)
    except OSError as exc:
        if exc.errno == 28:
            raise RunError(f"disk full while downloading {path}", hint="free disk space and run fetch again "
                           "(it resumes)") from None
        raise describe_error(exc, repo, path, "") from None
    except Exception as exc:  # noqa: BLE001
        raise describe_error(exc, repo, path, "") from None
    finally:
        writer.close()
    return writer.digest.hexdigest()
