"""When subscriptions fall due for renewal: spread over many timer passes, not all in one."""

from __future__ import annotations

import hashlib
from collections import Counter
from datetime import UTC, datetime, timedelta

from shared.subscriptions import RENEWAL_SPREAD, renewal_due, renewal_share

WEEK = 10_080
PASS = timedelta(minutes=15)  # the timer's default schedule


def keys(count: int) -> list[str]:
    return [hashlib.sha256(f"mailbox{i}@contoso.com/Inbox".encode()).hexdigest()[:16] for i in range(count)]


def test_a_thousand_folders_subscribed_in_one_pass_fall_due_over_many():
    created = datetime(2026, 11, 29, 12, tzinfo=UTC)
    expiry = created + timedelta(minutes=WEEK)
    dues = [renewal_due(expiry, WEEK, key) for key in keys(1000)]
    # Each between a quarter and half of the lifetime after creation (so never later than at half-life).
    assert all(timedelta(minutes=WEEK / 4) - PASS <= due - created <= timedelta(minutes=WEEK / 2) for due in dues)
    per_pass = Counter((due - created) // PASS for due in dues)
    # 42 hours of passes: about 6 renewals each; the busiest well under Graph's 500 writes per 20 s.
    assert len(per_pass) > 150 and max(per_pass.values()) <= 20


def test_a_folder_keeps_its_point_from_one_renewal_to_the_next():
    key = keys(1)[0]
    created = datetime(2026, 11, 29, 12, tzinfo=UTC)
    first = renewal_due(created + timedelta(minutes=WEEK), WEEK, key)
    second = renewal_due(first + timedelta(minutes=WEEK), WEEK, key)  # renewed when it fell due
    assert second - first == first - created
    assert 0 <= renewal_share(key) < 1 and RENEWAL_SPREAD == 0.25
