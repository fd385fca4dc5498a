"""How durations and sizes are written for people (progress lines, reports, fetch)."""

from __future__ import annotations


def fmt_seconds(seconds: float) -> str:
    """1:05, 12:00, 1:02:03."""
    seconds = max(0, int(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
