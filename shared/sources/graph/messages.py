"""The queue messages between the webhooks and the workers (JSON, versioned)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any, Literal

from ...errors import QueueMessageError

LifecycleEvent = Literal["reauthorizationRequired", "subscriptionRemoved", "missed"]
LIFECYCLE_EVENTS: frozenset[str] = frozenset({"reauthorizationRequired", "subscriptionRemoved", "missed"})
# Where a change came from: Graph's notification (the webhook), or a delta resync. Only the first
# tells when Graph last notified, for the folder's activity record.
NOTIFICATION = "notification"
RESYNC = "resync"
ORIGINS: frozenset[str] = frozenset({NOTIFICATION, RESYNC})


def _dump(message: ChangeMessage | LifecycleMessage) -> str:
    return json.dumps(asdict(message), separators=(",", ":"))


@dataclass(frozen=True)
class ChangeMessage:
    """One mail change to ingest."""

    folder_key: str
    subscription_id: str
    change_type: str
    message_id: str
    resource: str
    notified_at: str  # when the webhook (or the resync) queued it
    origin: str = NOTIFICATION
    type: Literal["change"] = "change"
    v: int = 1

    def to_json(self) -> str:
        return _dump(self)


@dataclass(frozen=True)
class LifecycleMessage:
    """One lifecycle event for a subscription."""

    folder_key: str
    subscription_id: str
    event: str
    notified_at: str
    type: Literal["lifecycle"] = "lifecycle"
    v: int = 1

    def to_json(self) -> str:
        return _dump(self)


def _load(body: str | bytes, kind: str) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise QueueMessageError(f"queue message is not JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("type") != kind or data.get("v") != 1:
        raise QueueMessageError(f"queue message is not a v1 {kind} message")
    return data


def _fields(data: dict[str, Any], names: tuple[str, ...], kind: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for name in names:
        value = data.get(name)
        if not isinstance(value, str) or not value:
            raise QueueMessageError(f"{kind} message lacks {name}")
        out[name] = value
    return out


def parse_change(body: str | bytes) -> ChangeMessage:
    data = _load(body, "change")
    names = ("folder_key", "subscription_id", "change_type", "message_id", "resource", "notified_at")
    f = _fields(data, names, "change")
    # Optional: messages queued before the field existed came from the webhook or a resync alike;
    # counting them as notifications only errs towards a fresher "last notification".
    origin = data.get("origin", NOTIFICATION)
    if origin not in ORIGINS:
        raise QueueMessageError(f"unknown change origin {origin!r}")
    return ChangeMessage(
        f["folder_key"],
        f["subscription_id"],
        f["change_type"],
        f["message_id"],
        f["resource"],
        f["notified_at"],
        origin,
    )


def parse_lifecycle(body: str | bytes) -> LifecycleMessage:
    data = _load(body, "lifecycle")
    fields = _fields(data, ("folder_key", "subscription_id", "event", "notified_at"), "lifecycle")
    if fields["event"] not in LIFECYCLE_EVENTS:
        raise QueueMessageError(f"unknown lifecycle event {fields['event']!r}")
    return LifecycleMessage(fields["folder_key"], fields["subscription_id"], fields["event"], fields["notified_at"])
