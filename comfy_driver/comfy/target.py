"""A render target: a native ComfyUI server, or a Comfy API v2 endpoint (Comfy Cloud, a serverless
deployment, or a self-hosted ComfyUI behind comfy-api-proxy).

Decisions:
- One small model for both kinds, written the same way in series.yaml and on the command line:
  `http://gpu1:8188` (native), `v2+https://cloud.comfy.org` (v2), or a mapping
  `{url: ..., api: v2, key_env: COMFY_API_KEY, max_jobs: 3, native: http://127.0.0.1:8188}`.
- A key is never written in series.yaml (a field that looks like one is refused with the way to
  give it): it comes from the environment variable `key_env` names, else from the credentials store
  (`comfy-drive login`), and it is only ever sent to the target's own origin.
- `native` names the ComfyUI behind a self-hosted proxy: the v2 transport reads its /history to
  recover outputs the proxy reports as "expired", and preflight reads its node catalogue.
"""

from __future__ import annotations

import os
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from comfy_driver.comfy.address import ServerAddress, check_header, redact, stored_headers
from comfy_driver.errors import UserError

DEFAULT_KEY_ENV = "COMFY_API_KEY"
V2_PREFIX = "v2+"
_KEY_FIELDS = {"key", "api_key", "apikey", "token", "password", "secret", "authorization", "headers"}


class Target(BaseModel):
    """Where scenes render. `url` has no credentials; `max_jobs` is how many prompts it is given at once
    (queue-ahead on a native server, concurrent jobs on a v2 target)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(min_length=1)
    api: Literal["native", "v2"] = "native"
    key_env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    max_jobs: int | None = Field(default=None, ge=1, le=64)  # None: the run's queue depth (--depth)
    native: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _no_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            leaked = sorted(k for k in data if isinstance(k, str) and k.lower() in _KEY_FIELDS)
            if leaked:
                raise ValueError(f"{leaked[0]!r}: keys never go in series.yaml; set key_env: NAME and export "
                                 "the key in that environment variable, or store it with comfy-drive login")
        return data

    @field_validator("url", "native")
    @classmethod
    def _plain_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            parts = urlsplit(value if "://" in value else "http://" + value)
        except ValueError:  # a malformed address: ServerAddress.parse below says what is wrong with it
            parts = None
        if parts is not None and (parts.username is not None or parts.password is not None):
            raise ValueError(f"{redact(value)!r}: no user:password in a target URL; keys come from key_env or "
                             "comfy-drive login")
        try:
            return ServerAddress.parse(value).http  # the same strict parsing as every server URL
        except UserError as exc:
            raise ValueError(exc.message) from None

    @model_validator(mode="after")
    def _kind_fields(self) -> Target:
        if self.api == "native" and (self.key_env or self.native):
            raise ValueError("key_env and native belong to an api: v2 target")
        return self

    # --------------------------------------------------------------------------------------------
    @property
    def display(self) -> str:
        return V2_PREFIX + self.url if self.api == "v2" else self.url

    @property
    def is_v2(self) -> bool:
        return self.api == "v2"

    @property
    def key_source(self) -> str:
        """Where this target's key comes from (never the key itself)."""
        name = self.key_env or DEFAULT_KEY_ENV
        if os.environ.get(name, "").strip():
            return f"the environment variable {name}"
        if self.is_v2 and stored_headers(self.url).get("Authorization"):
            return "the credentials store"
        return f"none (export {name}; a self-hosted proxy without --token needs none)"

    def auth_headers(self) -> dict[str, str]:
        """The headers that authenticate to this target (never logged; sent only to its origin).

        v2: `Authorization: Bearer $KEY` from `key_env` (COMFY_API_KEY by default), else what the
        credentials store holds for the URL; nothing when neither has one (a proxy without --token).
        """
        if not self.is_v2:
            return {}
        name = self.key_env or DEFAULT_KEY_ENV
        key = os.environ.get(name, "").strip()
        if key:
            check_header("Authorization", f"Bearer {key}", name)
            return {"Authorization": f"Bearer {key}"}
        return stored_headers(self.url)


def parse_target(entry: str | dict[str, Any] | Target, *, where: str = "server") -> Target:
    """A target from a command-line string (`v2+https://...` or a ComfyUI URL) or a series entry."""
    if isinstance(entry, Target):
        return entry
    try:
        if isinstance(entry, str):
            text = entry.strip()
            if text.lower().startswith(V2_PREFIX):
                return Target(url=text[len(V2_PREFIX):], api="v2")
            return Target(url=text)
        return Target.model_validate(entry)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        message = str(first["msg"]).removeprefix("Value error, ")
        raise UserError(f"{where}: {field + ': ' if field else ''}{message}",
                        hint="write http://HOST:8188, v2+https://HOST, or {url: ..., api: v2, key_env: NAME}") from None


def native_only(entries: list[str | Target]) -> list[str]:
    """The URLs of native servers, for `compare` (it samples their memory); an API v2 target is a clear
    error."""
    for entry in entries:
        target = entry if isinstance(entry, Target) else None
        if target is None and isinstance(entry, str) and entry.strip().lower().startswith(V2_PREFIX):
            target = parse_target(entry)
        if target is not None and target.is_v2:
            raise UserError(f"server {target.display}: compare measures time and memory on native ComfyUI servers "
                            "only (an API v2 endpoint reports neither)",
                            hint="compare on a native server (--server http://HOST:8188 or --simulate)")
    return [e.url if isinstance(e, Target) else e for e in entries]
