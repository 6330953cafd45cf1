"""Structured events: flat attributes as the OpenTelemetry handler exports them, nothing secret in them."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.instrumentation.logging.handler import LoggingHandler
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor

from shared.logs import event_fields, log_event, redact_text, redact_url
from shared.settings import parse_settings

KEY = "Zm9vYmFyK2tleS9zZWNyZXQ9PQ=="  # a function key: base64, with characters that need quoting


@pytest.fixture
def exported() -> Iterator[tuple[logging.Logger, InMemoryLogRecordExporter]]:
    """A logger wired to the OpenTelemetry logging handler azure-monitor-opentelemetry puts on the root."""
    exporter = InMemoryLogRecordExporter()  # type: ignore[no-untyped-call]
    provider = LoggerProvider()
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    handler = LoggingHandler(logger_provider=provider)
    logger = logging.getLogger("tests.logs.otel")
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        yield logger, exporter
    finally:
        logger.removeHandler(handler)
        provider.shutdown()


def attributes(exporter: InMemoryLogRecordExporter) -> list[dict[str, Any]]:
    return [dict(item.log_record.attributes or {}) for item in exporter.get_finished_logs()]


def test_fields_arrive_as_flat_attributes(exported):
    logger, exporter = exported
    log_event(logger, "ingest.done", mailbox="a@contoso.com", folder="Inbox", message_key="k1", files=2, bytes=10)
    [attrs] = attributes(exporter)
    assert attrs["event"] == "ingest.done"
    assert attrs["mailbox"] == "a@contoso.com"  # customDimensions.mailbox, as the alerts read it
    assert (attrs["files"], attrs["bytes"]) == (2, 10)
    assert "custom_dimensions" not in attrs


def test_message_line_reads_for_a_person(caplog):
    with caplog.at_level(logging.INFO, logger="tests.logs.text"):
        log_event(logging.getLogger("tests.logs.text"), "subscription.created", mailbox="a@x", folder="Inbox/Sub x")
    assert caplog.records[0].getMessage() == 'subscription.created mailbox=a@x folder="Inbox/Sub x"'


def test_reserved_record_names_are_renamed_and_none_is_left_out():
    fields = event_fields("x.y", {"message": "id-1", "name": "n", "args": 1, "reason": None, "ok": True})
    assert fields == {"event": "x.y", "message_": "id-1", "name_": "n", "args_": 1, "ok": True}
    logging.getLogger("tests.logs.reserved").error("%s", "x", extra=fields)  # makeRecord accepts them


def test_values_other_than_scalars_are_sent_as_text(exported):
    logger, exporter = exported
    log_event(logger, "x.y", things=["a", "b"], nested={"k": 1})
    [attrs] = attributes(exporter)
    assert attrs["things"] == "['a', 'b']" and attrs["nested"] == "{'k': 1}"


def test_urls_lose_their_query_wherever_they_appear():
    assert redact_url(f"https://app.example.net/api/notifications?code={KEY}") == (
        "https://app.example.net/api/notifications?redacted"
    )
    text = f"400 InvalidRequest: The notificationUrl 'https://h.example/api/notifications?code={KEY}' is bad"
    assert KEY not in redact_text(text)
    assert "https://h.example/api/notifications?redacted" in redact_text(text)


def test_the_consent_pages_plain_parameters_stay_readable():
    # An error tells the mailbox's owner which page to open: mailbox and prompt carry no secret.
    consent = "https://app.example.net/api/consent?mailbox=a%40contoso.com&prompt=consent"
    assert redact_url(consent) == consent
    assert redact_url(f"{consent}&code={KEY}") == f"{consent}&redacted"
    assert redact_url(f"https://h.example/cb?code={KEY}&state=s") == "https://h.example/cb?redacted"
    assert redact_url("https://h.example/x?opaque") == "https://h.example/x?redacted"


def test_the_function_key_is_in_the_urls_graph_gets_and_never_in_a_log(exported, caplog):
    from tests.shared.conftest import BASE_ENV

    settings = parse_settings({**BASE_ENV, "WEBHOOK_FUNCTION_KEY": KEY})
    assert KEY not in repr(settings)
    logger, exporter = exported
    with caplog.at_level(logging.INFO, logger=logger.name):
        log_event(
            logger,
            "subscription.failed",
            logging.ERROR,
            reason=f"Graph POST /subscriptions failed: 400 x: bad notificationUrl {settings.notification_url}",
            url=settings.lifecycle_url,
        )
    assert KEY not in caplog.text
    assert all(KEY not in str(value) for attrs in attributes(exporter) for value in attrs.values())


def test_an_error_line_stored_or_logged_carries_no_key():
    # Graph quotes the notificationUrl it could not validate; the line lands in state, manifests and poison.
    from shared.errors import GraphError, one_line

    exc = GraphError(
        400,
        "InvalidRequest",
        f"validation of https://h.example/api/notifications?code={KEY} failed",
        "POST subscriptions",
    )
    line = one_line(exc)
    assert (
        KEY not in line and "https://h.example/api/notifications?redacted" in line and line.startswith("GraphError: ")
    )


def test_a_field_cannot_split_the_line():
    """Found by fuzzing the webhooks: a forged field with a newline faked a second event in the log."""
    fields = event_fields("x", {"subscription": "a\nnotification.accepted b\u2028c\ud800", "count": 3})
    assert fields["subscription"] == "a\\nnotification.accepted b\\u2028c\\ud800" and fields["count"] == 3
