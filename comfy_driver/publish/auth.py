"""Signing in to YouTube: the OAuth installed-app flow once, then a stored token refreshed silently.

One token file per named account (a channel), `<user config folder>/youtube/<account>.json`,
written 0600 from its first byte: it holds the refresh token and the OAuth client's secret. It also
records the API origin it was made for, and is never sent to another (the test endpoint included).
Scopes are the least the publish settings need: upload and read, plus manage for playlists.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from comfy_driver import confined
from comfy_driver.errors import UserError
from comfy_driver.paths import config_dir
from comfy_driver.publish.errors import SignInNeeded

UPLOAD = "https://www.googleapis.com/auth/youtube.upload"
READONLY = "https://www.googleapis.com/auth/youtube.readonly"
MANAGE = "https://www.googleapis.com/auth/youtube"  # playlists.insert, playlistItems.insert
GOOGLE = "https://youtube.googleapis.com/"


def scopes_for(playlists: bool) -> list[str]:
    return [UPLOAD, READONLY] + ([MANAGE] if playlists else [])


def youtube_dir() -> Path:
    return config_dir() / "youtube"


def token_path(account: str) -> Path:
    return youtube_dir() / f"{account}.json"


def save_token(account: str, creds: Any, endpoint: str | None = None) -> Path:
    """Write the account's token atomically, mode 0600 from creation, never through a link."""
    data = {"account": account, "endpoint": endpoint or GOOGLE, "token": creds.token,
            "refresh_token": creds.refresh_token, "token_uri": creds.token_uri, "client_id": creds.client_id,
            "client_secret": creds.client_secret, "scopes": sorted(creds.scopes or []),
            "expiry": creds.expiry.replace(tzinfo=timezone.utc).isoformat() if creds.expiry else None}
    folder = youtube_dir()
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    return confined.write_text(folder, f"{account}.json", json.dumps(data, indent=2) + "\n", mode=0o600)


def sign_in(account: str, client_secrets: Path, *, playlists: bool, open_browser: bool, port: int,
            say: Callable[[str], None]) -> Path:
    """The installed-app flow in the browser (or a printed URL with --no-browser); stores the token."""
    from google_auth_oauthlib.flow import InstalledAppFlow

    if not client_secrets.is_file():
        raise UserError(f"{client_secrets}: no such client secrets file",
                        hint="download it from Google Cloud console > APIs & Services > Credentials > your "
                             "OAuth client (type Desktop app) > Download JSON; see the README's Publishing section")
    try:
        flow = InstalledAppFlow.from_client_secrets_file(str(client_secrets), scopes_for(playlists))
    except (ValueError, KeyError) as exc:
        raise UserError(f"{client_secrets}: not an OAuth client secrets file of a Desktop app ({exc})",
                        hint="create an OAuth client of type Desktop app and download its JSON") from None
    if not open_browser:
        say(f"On a machine without a browser: run  ssh -L {port}:localhost:{port} THIS-HOST  on your computer, "
            "then open the URL below there.")
    try:
        creds = flow.run_local_server(port=port, open_browser=open_browser, timeout_seconds=600, prompt="consent",
                                      authorization_prompt_message="Open this URL to allow comfy-drive to upload "
                                                                   "to your channel:\n{url}")
    except OSError as exc:
        raise UserError(f"cannot listen on localhost:{port} for Google's answer ({exc.strerror})",
                        hint="choose another --port") from None
    except Exception as exc:  # noqa: BLE001 - oauthlib raises many kinds; all mean the sign-in failed
        raise UserError(f"the sign-in did not complete ({type(exc).__name__}: {exc})",
                        hint="sign in again") from None
    if not creds.refresh_token:
        raise UserError("Google returned no refresh token", hint="sign in again")
    return save_token(account, creds)


def load_credentials(account: str, *, scopes: list[str], endpoint: str | None = None) -> Any:
    """The account's credentials, refreshed if expired; UserError with the one fixing command otherwise."""
    from google.auth.exceptions import RefreshError
    from google.auth.transport.requests import Request
    from google.oauth2.credentials import Credentials

    path = token_path(account)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        expiry = datetime.fromisoformat(data["expiry"]).astimezone(timezone.utc).replace(tzinfo=None) \
            if data.get("expiry") else None
        creds = Credentials(token=data.get("token"), refresh_token=data["refresh_token"], token_uri=data["token_uri"],
                            client_id=data["client_id"], client_secret=data["client_secret"],
                            scopes=data.get("scopes"), expiry=expiry)
    except FileNotFoundError:
        raise SignInNeeded(f"no YouTube sign-in for account {account!r} ({path} is missing)") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SignInNeeded(f"{path}: not a usable token file ({type(exc).__name__})") from None
    made_for = data.get("endpoint") or GOOGLE
    if made_for.rstrip("/") != (endpoint or GOOGLE).rstrip("/"):
        raise SignInNeeded(f"the sign-in of account {account!r} is for {made_for}, not {endpoint or GOOGLE}; a "
                           "token is never sent to another address")
    missing = [s.rsplit("/", 1)[1] for s in scopes if s not in (data.get("scopes") or [])]
    if missing:
        raise SignInNeeded(f"the sign-in of account {account!r} does not allow {', '.join(missing)} "
                           f"(needed for {'playlists' if 'youtube' in missing else 'publishing'})")
    if not creds.valid:
        try:
            creds.refresh(Request())
        except RefreshError as exc:
            raise dead_token(account, exc) from None
        save_token(account, creds, made_for)
    return creds


def dead_token(account: str, exc: Exception) -> SignInNeeded:
    detail = str(exc.args[0]) if exc.args else type(exc).__name__
    return SignInNeeded(f"the YouTube sign-in of account {account!r} has expired or was revoked ({detail}); apps "
                        "whose OAuth consent screen is in Testing get refresh tokens that die after 7 days",
                        hint="sign in again, and publish the consent screen to Production to stop the weekly "
                             "sign-in")
