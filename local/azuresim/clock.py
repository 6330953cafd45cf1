"""Simulated clock: real UTC time plus an offset that the control API can advance.

Subscription expiry, message timestamps and delivery give-up use this clock; token lifetimes use
real time, because MSAL caches tokens by the real clock and would otherwise send expired tokens.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


class Clock:
    def __init__(self) -> None:
        self._offset = timedelta()

    def now(self) -> datetime:
        return datetime.now(UTC) + self._offset

    def advance(self, seconds: float) -> datetime:
        if seconds < 0:
            raise ValueError("the simulated clock only moves forward")
        self._offset += timedelta(seconds=seconds)
        return self.now()

    @property
    def offset_seconds(self) -> float:
        return self._offset.total_seconds()


def graph_datetime(value: datetime) -> str:
    """Second precision, as Graph returns message timestamps (``2024-05-01T10:00:00Z``)."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def graph_datetime_7(value: datetime) -> str:
    """Seven fractional digits, as Graph returns subscription expiry (``...45.9356913Z``)."""
    value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond:06d}0Z"


def parse_datetime(text: str) -> datetime:
    """ISO 8601 with any fraction length; a value without an offset is taken as UTC."""
    parsed = datetime.fromisoformat(text.strip())
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)
