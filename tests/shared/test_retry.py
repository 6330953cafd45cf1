from __future__ import annotations

from datetime import UTC, datetime

from shared.retry import RetryPolicy, parse_retry_after


def test_parse_retry_after_forms():
    now = datetime(2026, 11, 22, 8, 0, 0, tzinfo=UTC)
    assert parse_retry_after("10") == 10.0
    assert parse_retry_after("Sun, 22 Nov 2026 08:00:30 GMT", now) == 30.0
    assert parse_retry_after("Sun, 22 Nov 2026 07:00:00 GMT", now) == 0.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None


def test_policy_bounds():
    policy = RetryPolicy(max_retries=3, backoff_base=1.0, backoff_max=4.0, max_retry_after=60)
    assert policy.delay(1, "7") == 7.0
    assert policy.delay(4, "1") is None
    assert policy.delay(1, "600") is None  # too long to hold a worker: fail the message instead
    for attempt in (1, 2, 3):
        for _ in range(50):
            delay = policy.delay(attempt, None)
            assert delay is not None
            assert 0 <= delay <= min(4.0, 2 ** (attempt - 1))
