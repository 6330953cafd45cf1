"""An invocation's operation id ties the host's log lines to the app's own.

The Functions host starts each invocation's trace and passes it to the Python worker as the invocation's
`traceparent`. The worker attaches it to the invocation's context only with PYTHON_ENABLE_OPENTELEMETRY=true (its
dispatcher's `configure_opentelemetry`, which needs `opentelemetry` importable from the app's own packages); without
it, and with PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY=false as infra/ keeps it, the app's lines carry no trace
and Application Insights gives them an operation id of their own. These tests replay the worker's step with the
app's logging, the logging handler configure_azure_monitor installs, and the Azure Monitor exporter's mapping to
operation_Id.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from azure.monitor.opentelemetry.exporter.export.logs._exporter import _convert_log_to_envelope
from opentelemetry import context as context_api
from opentelemetry.instrumentation.logging.handler import LoggingHandler
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from shared.logs import log_event

from .bicep_checks import INFRA, app_settings, load

# What the host sends with an invocation (W3C trace context): its trace id is the invocation's operation_Id.
HOST_TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{HOST_TRACE_ID}-00f067aa0ba902b7-01"


@pytest.fixture()
def exported() -> Iterator[tuple[logging.Logger, InMemoryLogRecordExporter]]:
    exporter = InMemoryLogRecordExporter()  # type: ignore[no-untyped-call]
    provider = LoggerProvider()
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    logger = logging.getLogger("tests.trace_context")
    handler = LoggingHandler(logger_provider=provider)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield logger, exporter
    logger.removeHandler(handler)
    provider.shutdown()


def _operation_id(exporter: InMemoryLogRecordExporter) -> str | None:
    (record,) = exporter.get_finished_logs()
    tags = _convert_log_to_envelope(record).tags or {}
    return tags.get("ai.operation.id")


def test_with_the_workers_trace_context_the_app_logs_under_the_invocations_operation_id(exported) -> None:
    logger, exporter = exported
    # The worker's configure_opentelemetry, as it runs for each invocation with PYTHON_ENABLE_OPENTELEMETRY=true.
    carrier = {"traceparent": TRACEPARENT, "tracestate": ""}
    token = context_api.attach(TraceContextTextMapPropagator().extract(carrier))
    try:
        log_event(logger, "ingest.done", mailbox="invoices@contoso.com", files=2)
    finally:
        context_api.detach(token)
    assert _operation_id(exporter) == HOST_TRACE_ID


def test_without_it_the_app_logs_under_no_operation_of_the_host(exported) -> None:
    logger, exporter = exported
    log_event(logger, "ingest.done", mailbox="invoices@contoso.com", files=2)
    assert _operation_id(exporter) != HOST_TRACE_ID


def test_infra_turns_the_workers_trace_context_on() -> None:
    settings = app_settings(load(INFRA))
    assert settings["PYTHON_ENABLE_OPENTELEMETRY"] == "true"
    # The app configures its exporter itself (shared/ops/telemetry.py); the worker's own exporter stays off.
    assert settings["PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY"] == "false"
