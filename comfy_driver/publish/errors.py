"""What can go wrong while publishing, as the user must act on it; and YouTube's error replies, read.

A refused credential (SignInNeeded) or metadata YouTube rejects is the user's to fix (UserErrors). A spent
quota or the channel's daily upload cap stops publishing until the reset (QuotaExhausted): rendering
goes on and the next run continues. Anything else is a failed publish step (a RunError), resumable.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from googleapiclient.errors import HttpError

from comfy_driver.errors import RunError, UserError

# Statuses and transport failures a resumable upload retries; every other reply is final.
TRANSIENT_STATUSES = {500, 502, 503, 504}
METADATA_REASONS = {"invalidTitle", "invalidDescription", "invalidCategoryId", "invalidTags", "invalidPublishAt",
                    "invalidVideoMetadata", "forbiddenPrivacySetting", "mediaBodyRequired", "invalidImage"}


class SignInNeeded(UserError):
    """The account's sign-in is missing, dead (revoked, expired), for another address, or lacks a scope."""


class MetadataRejected(UserError):
    """YouTube refused what was sent with a video (title, category, image, ...): `reason` says which."""

    reason = ""


class PublishError(RunError):
    """Publishing an episode failed; nothing finished is lost and the next run continues."""

    reason = ""  # YouTube's machine reason, when it gave one


class QuotaExhausted(PublishError):
    """The project's daily quota or the channel's upload cap is spent: publishing stops until it resets."""


def reason(error: HttpError) -> str:
    """The machine reason of a Google API error reply ('quotaExceeded'), or '' when it has none."""
    try:
        body = json.loads(error.content)["error"]
    except (ValueError, KeyError, TypeError):
        return ""
    for item in list(body.get("errors") or []) + list(body.get("details") or []):
        if isinstance(item, dict) and item.get("reason"):
            return str(item["reason"])
    return ""


def message(error: HttpError) -> str:
    try:
        return str(json.loads(error.content)["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return f"HTTP {error.status_code}"


def next_quota_reset(now: datetime | None = None) -> datetime:
    """YouTube quotas reset at midnight Pacific time."""
    pacific = ZoneInfo("America/Los_Angeles")
    local = (now or datetime.now(pacific)).astimezone(pacific)
    return datetime.combine(local.date() + timedelta(days=1), datetime.min.time(), tzinfo=pacific)


def classify(error: HttpError, what: str) -> Exception:
    """The error to raise for a final (non-retried) YouTube reply to `what`."""
    why = reason(error)
    text = message(error)
    if why == "quotaExceeded":
        reset = next_quota_reset()
        return QuotaExhausted(f"{what}: the YouTube API quota of this Google Cloud project is spent for today",
                              hint=f"it resets at midnight Pacific time ({reset:%Y-%m-%d %H:%M %Z}); the next "
                                   "run publishes what is left (a quota increase: Google Cloud console, YouTube "
                                   "Data API v3, Quotas)")
    if why == "uploadLimitExceeded":
        return QuotaExhausted(f"{what}: the channel reached YouTube's daily upload limit",
                              hint="it lifts within 24 hours; the next run publishes what is left")
    if why in ("authError", "insufficientPermissions") or error.status_code == 401:
        return SignInNeeded(f"{what}: YouTube refused the credentials ({text})", hint="sign in again")
    if why in METADATA_REASONS:
        rejected = MetadataRejected(f"{what}: YouTube rejected the metadata ({why}: {text})",
                                    hint="fix the publish section of the series file")
        rejected.reason = why
        return rejected
    failed = PublishError(f"{what}: YouTube answered {error.status_code} ({why or 'no reason'}: {text})")
    failed.reason = why
    return failed
