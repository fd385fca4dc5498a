"""A server address: one URL gives the HTTP base, the websocket URL and the credentials to send.

Credentials never come from series.yaml: they come from the URL's user:password, the environment
(COMFY_DRIVE_TOKEN, COMFY_DRIVE_HEADERS) or a 0600 credentials file, and are never printed:
`display` is the URL with them removed.
"""

from __future__ import annotations

import base64
import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

from comfy_driver.errors import UserError

CREDENTIALS_ENV = "COMFY_DRIVE_CREDENTIALS"
CREDENTIALS_HINT = "set COMFY_DRIVE_TOKEN or COMFY_DRIVE_HEADERS, or store the server's headers in the credentials file"


def credentials_path() -> Path:
    """Where `comfy-drive login` stores per-server headers."""
    if os.environ.get(CREDENTIALS_ENV):
        return Path(os.environ[CREDENTIALS_ENV])
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "comfy-drive" / "credentials.json"


@dataclass(frozen=True)
class ServerAddress:
    http: str  # e.g. https://gpu.example.com/comfy (no trailing slash, no credentials)
    ws: str  # e.g. wss://gpu.example.com/comfy/ws
    headers: dict[str, str] = field(default_factory=dict, repr=False, compare=False)

    @property
    def display(self) -> str:
        return self.http

    @classmethod
    def parse(cls, url: str, *, extra_headers: dict[str, str] | None = None) -> ServerAddress:
        text = url.strip()
        if "://" not in text:
            text = "http://" + text
        parts = urlsplit(text)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UserError(f"server URL {redact(url)!r} is not an http(s) address",
                            hint="write it like http://127.0.0.1:8188 or https://user:pass@host/path")
        netloc = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
        if parts.port:
            netloc += f":{parts.port}"
        path = parts.path.rstrip("/")
        http = urlunsplit((parts.scheme, netloc, path, "", ""))
        ws = urlunsplit(("wss" if parts.scheme == "https" else "ws", netloc, path + "/ws", "", ""))
        headers: dict[str, str] = {}
        headers.update(stored_headers(http))
        headers.update(env_headers())
        if parts.username is not None:
            token = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(token).decode()
        headers.update(extra_headers or {})
        return cls(http=http, ws=ws, headers=headers)


def redact(url: str) -> str:
    """The URL without user:password, for messages and logs."""
    parts = urlsplit(url if "://" in url else "http://" + url)
    if parts.username is None:
        return url
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


def env_headers() -> dict[str, str]:
    """COMFY_DRIVE_TOKEN (a bearer token) and COMFY_DRIVE_HEADERS ('Name: value' lines)."""
    headers: dict[str, str] = {}
    token = os.environ.get("COMFY_DRIVE_TOKEN")
    if token:
        headers["Authorization"] = f"Bearer {token}"
    for line in os.environ.get("COMFY_DRIVE_HEADERS", "").splitlines():
        name, sep, value = line.partition(":")
        if sep and name.strip():
            headers[name.strip()] = value.strip()
    return headers


def stored_headers(http: str) -> dict[str, str]:
    """Headers saved by `comfy-drive login` for this server (longest matching URL prefix wins)."""
    path = credentials_path()
    if not path.exists():
        return {}
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise UserError(f"{path}: credentials file is readable by others (mode {mode:o})",
                        hint=f"run: chmod 600 {path}")
    try:
        servers = json.loads(path.read_text(encoding="utf-8")).get("servers", {})
    except (ValueError, AttributeError) as exc:
        raise UserError(f"{path}: not a valid credentials file ({exc})",
                        hint="delete it and store the credentials again") from None
    best = ""
    for prefix in servers:
        if http.startswith(prefix.rstrip("/")) and len(prefix) > len(best):
            best = prefix
    return dict(servers[best].get("headers", {})) if best else {}


def save_headers(url: str, headers: dict[str, str]) -> Path:
    """Store headers for a server in the credentials file, created 0600 from the first byte."""
    address = ServerAddress.parse(url)
    path = credentials_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    data: dict[str, dict[str, dict[str, dict[str, str]]]] = {"servers": {}}
    if path.exists():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            pass
    data.setdefault("servers", {})[address.http] = {"headers": headers}
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return path
