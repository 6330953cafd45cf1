"""OpenTelemetry to Application Insights, configured once per process on first use.

Never at import: the distro costs about half a second to load and configure, which a cold start
must not pay before it answers Graph's validation handshake. The Python worker could configure it
itself at start (`PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY=true`); when it does, the app leaves it
alone, so nothing is exported twice.
"""

from __future__ import annotations

import os
import threading
from typing import Any

_lock = threading.Lock()
_configured = False


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes")


def _entra_client_id(auth: str) -> str | None:
    """The client id of `ClientId=<id>;Authorization=AAD`; "" for a system-assigned identity; None if not AAD."""
    pairs = dict(part.split("=", 1) for part in auth.split(";") if "=" in part)
    by_name = {key.strip().lower(): value.strip() for key, value in pairs.items()}
    if by_name.get("authorization", "").upper() != "AAD":
        return None
    return by_name.get("clientid", "")


def azure_monitor_options() -> dict[str, Any] | None:
    """The arguments for `configure_azure_monitor`, or None when the app should not configure it."""
    connection_string = os.environ.get("APPLICATIONINSIGHTS_CONNECTION_STRING", "").strip()
    if not connection_string or _truthy(os.environ.get("PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY")):
        return None
    options: dict[str, Any] = {"connection_string": connection_string}
    client_id = _entra_client_id(os.environ.get("APPLICATIONINSIGHTS_AUTHENTICATION_STRING", ""))
    if client_id is not None:
        # Local authentication is off on the Application Insights resource: export with the identity.
        from azure.identity import ManagedIdentityCredential

        options["credential"] = ManagedIdentityCredential(client_id=client_id or None)
    return options


def _configure_azure_monitor(**options: Any) -> None:
    from azure.monitor.opentelemetry import configure_azure_monitor

    configure_azure_monitor(**options)


def configure_telemetry() -> bool:
    """Configure the exporter once per process; True if this call configured it."""
    global _configured
    if _configured:
        return False
    with _lock:
        if _configured:
            return False
        _configured = True
        options = azure_monitor_options()
        if options is None:
            return False
        _configure_azure_monitor(**options)
        return True
