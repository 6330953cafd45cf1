"""The app's notion of "now", in one place, so tests can move it alongside a simulated clock."""

from __future__ import annotations

from datetime import UTC, datetime


def now() -> datetime:
    return datetime.now(UTC)
