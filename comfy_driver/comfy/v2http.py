"""HTTP to a Comfy API v2 endpoint: one session, its errors as exceptions, keys kept to one origin.

Decisions:
- Every request goes through `V2Http.request`: 429 (`queue_full`, `deployment_not_ready`,
  `too_many_streams`) is waited out as Retry-After says, within a budget, then raised as `Busy`;
  502, 503 and 504 are `ServerUnreachable`, as a silence is (the caller waits for the endpoint);
  402 is `InsufficientCredits`, so a caller stops submitting to that target and nothing else.
- The key (`Authorization`) is sent only to the target's own origin. Redirects are never followed
  by the session: a redirect to another origin (Cloud's signed download URLs) is fetched without
  any of the target's headers.
- Comfy API v2 answers errors as `{"error": {"code", "message", "details"}}`; `code` is kept.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests

from comfy_driver.comfy.errors import AccessRefused, ServerUnreachable
from comfy_driver.comfy.settings import Settings
from comfy_driver.comfy.target import Target
from comfy_driver.errors import RunError, UserError

API = "/api/v2"
_MAX_REDIRECTS = 5


class V2Error(RunError):
    """The endpoint refused a request; `code` is its error code (`invalid_workflow`, `not_found`...)."""

    def __init__(self, message: str, *, code: str = "", status: int = 0, details: Any = None,
                 hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.code, self.status, self.details = code, status, details


class WorkflowRefused(V2Error, UserError):
    """422: the graph is not one the endpoint runs (UI format, invalid, a missing asset)."""


class InsufficientCredits(V2Error):
    """402: the account behind the key has no credits left; submit nothing more to this target."""


class Busy(V2Error):
    """429 for longer than the wait budget (the queue is full or the deployment is not ready)."""


def origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower(), port


def _error_of(response: requests.Response) -> tuple[str, str, Any]:
    try:
        body = response.json()
    except ValueError:
        return "", response.text[:200].strip(), None
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        return str(error.get("code") or ""), str(error.get("message") or ""), error.get("details")
    return "", str(error or body)[:200], None


def retry_after(response: requests.Response, default: float = 1.0) -> float:
    try:
        return max(0.0, float(response.headers.get("Retry-After", default)))
    except ValueError:
        return default


class V2Http:
    """Requests to one v2 target. `busy_budget`: seconds of 429 answers waited out before `Busy`."""

    def __init__(self, target: Target, *, settings: Settings | None = None, busy_budget: float = 60.0,
                 sleep: Any = time.sleep) -> None:
        self.target = target
        self.settings = settings or Settings()
        self.base = target.url.rstrip("/") if target.url.rstrip("/").endswith(API) else target.url.rstrip("/") + API
        self.busy_budget = busy_budget
        self._sleep = sleep
        self._auth = target.auth_headers()
        self.session = requests.Session()
        self.session.verify = self.settings.requests_verify
        self.session.trust_env = False  # no .netrc credentials or proxies from the environment
        self.plain = requests.Session()  # for other origins: never any of the target's headers
        self.plain.verify = self.settings.requests_verify
        self.plain.trust_env = False

    def url(self, path: str) -> str:
        return path if "://" in path else self.base + path

    def _timeout(self) -> tuple[float, float]:
        return self.settings.connect_timeout, self.settings.timeout

    def send(self, method: str, path: str, *, headers: dict[str, str] | None = None, **kw: Any) -> requests.Response:
        """One request, redirects followed by hand (the key stays with its origin); no status handling."""
        url = self.url(path)
        timeout = kw.pop("timeout", self._timeout())
        for _ in range(_MAX_REDIRECTS + 1):
            mine = origin(url) == origin(self.base)
            session = self.session if mine else self.plain
            sent = {**(self._auth if mine else {}), **((headers or {}) if mine else {
                k: v for k, v in (headers or {}).items() if k.lower() == "range"})}
            try:
                response = session.request(method, url, headers=sent, allow_redirects=False,
                                           timeout=timeout, **kw)
            except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
                # the outcome of a request that got no answer is unknown: submit looks for its job
                raise ServerUnreachable(f"no answer from {self.target.display} ({type(exc).__name__})",
                                        hint="check the URL and that the endpoint is up") from None
            except requests.exceptions.RequestException as exc:
                raise V2Error(f"{self.target.display}: {method} {path} failed ({type(exc).__name__})") from None
            if response.status_code in (301, 302, 303, 307, 308) and "Location" in response.headers:
                url = urljoin(url, response.headers["Location"])
                response.close()
                if response.status_code == 303:
                    method, kw = "GET", {k: v for k, v in kw.items() if k in ("stream",)}
                continue
            return response
        raise V2Error(f"{self.target.display}: too many redirects for {path}")

    def request(self, method: str, path: str, *, ok: tuple[int, ...] = (200, 201), **kw: Any) -> requests.Response:
        """A request whose answer must be one of `ok`: 429 waited out, the rest raised as errors."""
        waited = 0.0
        while True:
            response = self.send(method, path, **kw)
            if response.status_code in ok:
                return response
            code, message, details = _error_of(response)
            status = response.status_code
            response.close()
            where = f"{self.target.display}: {method} {path}"
            if status == 429:
                pause = retry_after(response)
                if waited + pause > self.busy_budget:
                    raise Busy(f"{where}: busy ({code or 'too many requests'}) for {waited:g} s: {message}",
                               code=code, status=status, hint="lower max_jobs for this target, or try later")
                self._sleep(pause)
                waited += pause
                continue
            if status in (502, 503, 504):  # a gateway or the endpoint itself, passing: wait for it like a silence
                raise ServerUnreachable(f"{where}: {status} {code or 'unavailable'}: {message}".rstrip(": "))
            if status == 402:
                raise InsufficientCredits(f"{self.target.display}: insufficient credits ({message or code})",
                                          code=code or "insufficient_credits", status=status,
                                          hint="top up the account behind this key; other targets go on")
            if status in (401, 403):
                raise AccessRefused(f"{self.target.display} refused the request ({status}: {message or code})",
                                    hint=f"export the key in {self.target.key_env or 'COMFY_API_KEY'}, or store "
                                         "it with comfy-drive login")
            error = WorkflowRefused if status == 422 and code != "idempotency_key_reuse" else V2Error
            raise error(f"{where}: {status} {code}: {message}".rstrip(": "), code=code, status=status,
                        details=details)

    def json(self, method: str, path: str, **kw: Any) -> Any:
        response = self.request(method, path, **kw)
        try:
            return response.json()
        except ValueError:
            raise V2Error(f"{self.target.display}: {method} {path} did not answer JSON") from None

    def close(self) -> None:
        self.session.close()
        self.plain.close()
