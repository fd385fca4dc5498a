"""How patiently and how safely comfy-drive talks to a server: every timeout, retry and TLS choice.

One frozen object is handed to the HTTP client, the websocket and the follower, so each setting is
written once and reachable from the command line (`--timeout`, `--ca-bundle`, `--insecure`, ...),
from `RunOptions` and from the Python API.

TLS: `verify=True` checks certificates against the system's bundle, or the file named by
`REQUESTS_CA_BUNDLE` / `SSL_CERT_FILE` when set; a path uses that bundle (a self-signed server's
certificate, a company CA); `False` checks nothing (`--insecure`: only for a server you trust on a
network you trust).
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass
from typing import Any

CA_ENV = ("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE")


@dataclass(frozen=True)
class Settings:
    timeout: float = 60.0  # seconds an HTTP answer may take (object_info gets at least 120)
    connect_timeout: float = 5.0  # seconds to open a connection (HTTP and websocket)
    retries: int = 4  # tries of an idempotent request after a refused connection or a 502/503/504
    keepalive: float = 20.0  # a quiet websocket is pinged this often (reverse proxies drop idle ones)
    dead_after: float = 90.0  # a websocket that answers nothing this long is dropped and reconnected
    poll_after: float = 30.0  # a prompt with no event for this long is looked up in /history
    history_wait: float = 10.0  # how long an ended prompt's history entry is waited for
    verify: bool | str = True  # TLS certificate check: True, False (insecure) or a CA bundle file

    def __post_init__(self) -> None:
        for name in ("timeout", "connect_timeout", "keepalive", "dead_after", "poll_after", "history_wait"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be above 0 seconds, not {getattr(self, name)!r}")
        if self.retries < 1:
            raise ValueError(f"retries must be at least 1, not {self.retries!r}")

    @property
    def ca_bundle(self) -> str | None:
        """The CA bundle file to trust: the one chosen, else the environment's, else None (the default)."""
        if isinstance(self.verify, str):
            return self.verify
        if self.verify:
            return next((os.environ[name] for name in CA_ENV if os.environ.get(name)), None)
        return None

    @property
    def requests_verify(self) -> bool | str:
        """The `verify` argument of requests."""
        return self.ca_bundle or bool(self.verify)

    def websocket_sslopt(self) -> dict[str, Any]:
        """The `sslopt` argument of websocket-client, with the same trust as HTTP."""
        if not self.verify:
            return {"cert_reqs": ssl.CERT_NONE, "check_hostname": False}
        bundle = self.ca_bundle
        return {"ca_certs": bundle} if bundle else {}
