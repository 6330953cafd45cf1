from __future__ import annotations

import pytest

from shared.errors import QueueMessageError
from shared.sources.graph.messages import ChangeMessage, LifecycleMessage, parse_change, parse_lifecycle


def test_round_trips():
    change = ChangeMessage("k" * 16, "sub", "created", "msg", "Users/u/Messages/msg", "2026-11-22T08:00:00Z")
    assert parse_change(change.to_json()) == change
    event = LifecycleMessage("k" * 16, "sub", "missed", "2026-11-22T08:00:00Z")
    assert parse_lifecycle(event.to_json().encode()) == event


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b'{"type":"change","v":2}',
        b'{"type":"change","v":1,"folder_key":"k"}',
        b"\xff\xfe",
    ],
)
def test_unreadable_change_messages(body):
    with pytest.raises(QueueMessageError):
        parse_change(body)


def test_unknown_lifecycle_event():
    body = LifecycleMessage("k", "s", "exploded", "t").to_json()
    with pytest.raises(QueueMessageError, match="unknown lifecycle event"):
        parse_lifecycle(body)


def test_a_change_says_whether_graph_notified_it_or_a_resync_found_it():
    notified = ChangeMessage("k", "sub", "created", "msg", "r", "2026-11-22T08:00:00Z")
    assert notified.origin == "notification"
    found = ChangeMessage("k", "sub", "created", "msg", "r", "2026-11-22T08:00:00Z", "resync")
    assert parse_change(found.to_json()).origin == "resync"
    # Messages queued before the field existed read as notifications.
    legacy = found.to_json().replace(',"origin":"resync"', "")
    assert parse_change(legacy).origin == "notification"
    with pytest.raises(QueueMessageError, match="unknown change origin"):
        parse_change(found.to_json().replace('"resync"', '"elsewhere"'))
