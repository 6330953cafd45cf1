"""OpenTelemetry: configured once, on first use, only with a connection string, with the identity for Entra auth."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from shared.ops import telemetry

CONNECTION = "InstrumentationKey=00000000-0000-0000-0000-000000000000;IngestionEndpoint=https://ai.example/"


class FakeCredential:
    def __init__(self, client_id: str | None = None) -> None:
        self.client_id = client_id


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    monkeypatch.setattr(telemetry, "_configured", False)
    monkeypatch.setattr(telemetry, "_configure_azure_monitor", lambda **options: seen.append(options))
    monkeypatch.setattr("azure.identity.ManagedIdentityCredential", FakeCredential)
    for name in (
        "APPLICATIONINSIGHTS_CONNECTION_STRING",
        "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",
        "PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY",
    ):
        monkeypatch.delenv(name, raising=False)
    return seen


def test_nothing_without_a_connection_string(calls):
    assert telemetry.configure_telemetry() is False
    assert calls == []


def test_entra_auth_passes_the_user_assigned_identity(calls, monkeypatch):
    monkeypatch.setenv("APPLICATIONINSIGHTS_CONNECTION_STRING", CONNECTION)
    monkeypatch.setenv("APPLICATIONINSIGHTS_AUTHENTICATION_STRING", "ClientId=3f1c-uami;Authorization=AAD")
    assert telemetry.configure_telemetry() is True
    [options] = calls
    assert options["connection_string"] == CONNECTION
    assert isinstance(options["credential"], FakeCredential) and options["credential"].client_id == "3f1c-uami"


def test_once_per_process(calls, monkeypatch):
    monkeypatch.setenv("APPLICATIONINSIGHTS_CONNECTION_STRING", CONNECTION)
    assert telemetry.configure_telemetry() is True
    assert telemetry.configure_telemetry() is False
    assert len(calls) == 1 and "credential" not in calls[0]  # no auth string: the connection string alone


def test_system_assigned_identity_and_other_auth_strings(calls, monkeypatch):
    monkeypatch.setenv("APPLICATIONINSIGHTS_CONNECTION_STRING", CONNECTION)
    monkeypatch.setenv("APPLICATIONINSIGHTS_AUTHENTICATION_STRING", "Authorization=AAD")
    telemetry.configure_telemetry()
    assert calls[0]["credential"].client_id is None


def test_left_to_the_worker_when_it_configures_the_distro(calls, monkeypatch):
    monkeypatch.setenv("APPLICATIONINSIGHTS_CONNECTION_STRING", CONNECTION)
    monkeypatch.setenv("PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY", "true")
    assert telemetry.configure_telemetry() is False
    assert calls == []


def test_importing_the_app_configures_nothing():
    probe = (
        "import os, sys; os.environ['APPLICATIONINSIGHTS_CONNECTION_STRING'] = " + repr(CONNECTION) + "; "
        "import function_app; "
        "print(any(m.startswith(('azure.monitor', 'opentelemetry.sdk')) for m in sys.modules))"
    )
    from tests.shared.conftest import BASE_ENV

    result = subprocess.run([sys.executable, "-c", probe], env={**BASE_ENV, "PATH": ""}, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
