"""Hugging Face Hub access: file metadata through huggingface_hub's public API, and resumable,
hashing downloads.

Decision: huggingface_hub answers the questions (file URL, metadata, token, headers, its typed
errors); the bytes are fetched here with one ranged GET, so nothing of huggingface_hub's internals
(its download helper, its module-wide settings) is used or patched, and any of its versions works.
The bytes are hashed as they are written, so a 15 GB file is read once (from the network), never a
second time from disk. Redirects to the Hub's storage are followed without the token (requests drops
the Authorization header on a redirect to another host). The Hub's own errors become one clear
message naming the repo and file.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from comfy_driver.errors import DriveError, RunError, UserError

_CHUNK = 1 << 20


def endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def _hf() -> Any:
    """huggingface_hub, imported on first use (it is slow to import and only fetch needs it)."""
    import huggingface_hub

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
    """Download (or resume) into `part`; returns the sha256 of the whole file.

    Streamed in 1 MiB pieces: a smooth progress line, and an interrupted download keeps all but the
    last MiB for the resume.
    """
    from huggingface_hub.utils import build_hf_headers

    writer = HashingWriter(part, on_bytes)
    try:
        if writer.size < info.size:
            _get(info, writer, dict(build_hf_headers(token=token())), repo=repo, path=path)
        if writer.size != info.size:
            raise RunError(f"{repo}/{path}: the download ended at {writer.size} of {info.size} bytes",
                           hint="download it again: the download resumes")
    except DriveError:
        raise
    except OSError as exc:
        if exc.errno == 28:
            raise RunError(f"disk full while downloading {path}", hint="free disk space and download it again "
                           "(it resumes)") from None
        raise describe_error(exc, repo, path, "") from None
    except Exception as exc:  # noqa: BLE001
        raise describe_error(exc, repo, path, "") from None
    finally:
        writer.close()
    return writer.digest.hexdigest()


def _get(info: FileInfo, writer: HashingWriter, headers: dict[str, str], *, repo: str, path: str) -> None:
    """One GET of the rest of the file (a Range from what `writer` holds), appended to it."""
    import requests

    if writer.size:
        headers["Range"] = f"bytes={writer.size}-"
    with requests.get(info.url, headers=headers, stream=True, timeout=(10, 60)) as response:
        if response.status_code == 200 and writer.size:
            writer.truncate(0)  # the server ignored the Range: it sends the whole file again
        elif response.status_code not in (200, 206):
            status = response.status_code
            if status in (401, 403):
                raise UserError(f"{repo}/{path}: the Hub refused the download ({status})",
                                hint="set HF_TOKEN (or run: hf auth login)")
            raise RunError(f"{repo}/{path}: the Hub answered {status} to the download", hint="try again later")
        for chunk in response.iter_content(_CHUNK):
            writer.write(chunk)
