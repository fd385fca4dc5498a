"""A server address: one URL gives the HTTP base, the websocket URL and the credentials to send.

Credentials never come from series.yaml: they come from the URL's user:password, the environment
(COMFY_DRIVE_TOKEN, COMFY_DRIVE_HEADERS) or a 0600 credentials file, and are never printed:
`display` is the URL with them removed.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from comfy_driver import confined, jsontext
from comfy_driver.errors import UserError
from comfy_driver.paths import config_dir

CREDENTIALS_ENV = "COMFY_DRIVE_CREDENTIALS"
CREDENTIALS_HINT = "set COMFY_DRIVE_TOKEN or COMFY_DRIVE_HEADERS, or store the server's headers in the credentials file"


def credentials_path() -> Path:
    """Where `comfy-drive login` stores per-server headers."""
    if os.environ.get(CREDENTIALS_ENV):
        return Path(os.environ[CREDENTIALS_ENV])
    return config_dir() / "credentials.json"


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
        """Parse strictly: a bad port, bracket, host or stray character is a clear error, not a guess."""
        text = url.strip()
        shown = redact(url)
        hint = "write it like http://127.0.0.1:8188 or https://user:pass@host/path"
        if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in text):
            raise UserError(f"server URL {shown!r} contains spaces or control characters", hint=hint)
        if "://" not in text:
            text = "http://" + text
        try:
            parts = urlsplit(text)
            port = parts.port
        except ValueError as exc:  # "Invalid IPv6 URL", "Port out of range 0-65535", ...
            raise UserError(f"server URL {shown!r} is not a valid address ({exc})", hint=hint) from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UserError(f"server URL {shown!r} is not an http(s) address", hint=hint)
        if port == 0:
            raise UserError(f"server URL {shown!r}: port 0 is not a port a server listens on", hint=hint)
        if parts.query or parts.fragment or text.rstrip("/").endswith(("?", "#")):
            raise UserError(f"server URL {shown!r}: a server address has no ?query or #fragment", hint=hint)
        if not _host_ok(parts.hostname):
            raise UserError(f"server URL {shown!r}: {parts.hostname!r} is not a host name or IP address", hint=hint)
        netloc = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
        if port:
            netloc += f":{port}"
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


_HOST = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,62})(?:\.[A-Za-z0-9_-]{1,63})*\.?$")
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # an HTTP header name (RFC 9110 token)


def _host_ok(host: str) -> bool:
    if ":" in host:
        try:
            ipaddress.IPv6Address(host.split("%", 1)[0])
        except ValueError:
            return False
        return True
    return bool(_HOST.match(host))


def check_header(name: Any, value: Any, where: str) -> None:
    """A header that can be sent as it is: a token name, a value without line breaks or controls."""
    if not isinstance(name, str) or not _TOKEN.match(name):
        raise UserError(f"{where}: {name!r} is not a valid header name (letters, digits and -)")
    if not isinstance(value, str):
        raise UserError(f"{where}: the value of header {name!r} is not text")
    if any((ord(c) < 32 and c != "\t") or ord(c) == 127 for c in value):
        raise UserError(f"{where}: the value of header {name!r} has a line break or control character",
                        hint="a header value is one line of text")
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        raise UserError(f"{where}: the value of header {name!r} has characters HTTP headers cannot carry") from None


def redact(url: str) -> str:
    """The URL without user:password, for messages and logs (even when it does not parse)."""
    try:
        parts = urlsplit(url if "://" in url else "http://" + url)
        if parts.username is None:
            return url
    except ValueError:
        scheme, sep, rest = url.rpartition("://")
        return f"{scheme}{sep}{rest.rsplit('@', 1)[-1]}"
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


def env_headers() -> dict[str, str]:
    """COMFY_DRIVE_TOKEN (a bearer token) and COMFY_DRIVE_HEADERS ('Name: value' lines)."""
    headers: dict[str, str] = {}
    token = os.environ.get("COMFY_DRIVE_TOKEN")
    if token:
        check_header("Authorization", f"Bearer {token}", "COMFY_DRIVE_TOKEN")
        headers["Authorization"] = f"Bearer {token}"
    for line in os.environ.get("COMFY_DRIVE_HEADERS", "").splitlines():
        name, sep, value = line.partition(":")
        if sep and name.strip():
            check_header(name.strip(), value.strip(), "COMFY_DRIVE_HEADERS")
            headers[name.strip()] = value.strip()
    return headers


def _read_credentials(path: Path) -> dict[str, dict[str, str]]:
    """server URL -> headers, from the credentials file; anything malformed is a clear error."""
    again = "delete it and store the credentials again"
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise UserError(f"{path}: credentials file is readable by others (mode {mode:o})",
                        hint=f"run: chmod 600 {path}")
    try:
        data = jsontext.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as exc:
        raise UserError(f"{path}: not a valid credentials file ({exc})", hint=again) from None
    servers = data.get("servers") if isinstance(data, dict) else None
    if not isinstance(servers, dict):
        raise UserError(f"{path}: not a valid credentials file (expected {{\"servers\": {{URL: {{\"headers\": "
                        "{...}}}}})", hint=again)
    for url, entry in servers.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("headers"), dict):
            raise UserError(f"{path}: {url}: expected {{\"headers\": {{NAME: VALUE, ...}}}}", hint=again)
    result = {}
    for url, entry in servers.items():
        for name, value in entry["headers"].items():
            try:
                check_header(name, value, f"{path}: {url}")
            except UserError as exc:
                raise UserError(exc.message, hint=again) from None
        result[url] = dict(entry["headers"])
    return result


def stored_headers(http: str) -> dict[str, str]:
    """Headers saved by `comfy-drive login` for this server (longest matching URL prefix wins)."""
    path = credentials_path()
    if not path.exists():
        return {}
    servers = _read_credentials(path)
    best = ""
    for prefix in servers:
        if http.startswith(prefix.rstrip("/")) and len(prefix) > len(best):
            best = prefix
    return servers[best] if best else {}


def save_headers(url: str, headers: dict[str, str]) -> Path:
    """Store headers for a server in the credentials file (0600 from the first byte), each checked
    first, so that a stored header can always be sent."""
    for name, value in headers.items():
        check_header(name, value, f"--header {name}")
    address = ServerAddress.parse(url)
    path = credentials_path()
    servers = _read_credentials(path) if path.exists() else {}
    servers[address.http] = headers
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    data = {"servers": {u: {"headers": h} for u, h in servers.items()}}
    return confined.write_text(path.parent, path.name, json.dumps(data, indent=2) + "\n", mode=0o600)
