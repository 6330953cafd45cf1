"""Error responses in each service's own shape.

Graph: ``{"error": {"code", "message", "innerError": {"date", "request-id", "client-request-id"}}}``.
Key Vault: ``{"error": {"code", "message"}}``. Identity platform (OAuth 2.0): ``{"error",
"error_description", "error_codes", ...}``. Handlers raise these exceptions and the middleware in
``app.py`` renders them, so no handler builds an error body itself.
"""

from __future__ import annotations

import uuid
from abc import ABC, abstractmethod
from datetime import UTC, datetime
from typing import Any

from aiohttp import web


class ServiceError(Exception, ABC):
    """An error answer; subclasses decide the body shape."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}

    @abstractmethod
    def body(self, request: web.Request) -> dict[str, Any]:
        """The JSON body in the service's own error shape."""

    def response(self, request: web.Request) -> web.Response:
        return web.json_response(self.body(request), status=self.status, headers=self.headers)


class GraphError(ServiceError):
    def body(self, request: web.Request) -> dict[str, Any]:
        request_id = str(uuid.uuid4())
        return {
            "error": {
                "code": self.code,
                "message": self.message,
                "innerError": {
                    "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S"),
                    "request-id": request_id,
                    "client-request-id": request.headers.get("client-request-id", request_id),
                },
            }
        }


class KeyVaultError(ServiceError):
    def body(self, request: web.Request) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message}}


class IdentityError(ServiceError):
    """``code`` is the OAuth error (``invalid_client``); ``aadsts`` the numeric AADSTS code."""

    def __init__(self, status: int, code: str, aadsts: int, message: str) -> None:
        super().__init__(status, code, f"AADSTS{aadsts}: {message}")
        self.aadsts = aadsts

    def body(self, request: web.Request) -> dict[str, Any]:
        now = datetime.now(UTC)
        trace = str(uuid.uuid4())
        correlation = request.headers.get("client-request-id", str(uuid.uuid4()))
        return {
            "error": self.code,
            "error_description": f"{self.message} Trace ID: {trace} Correlation ID: {correlation} "
            f"Timestamp: {now.strftime('%Y-%m-%d %H:%M:%SZ')}",
            "error_codes": [self.aadsts],
            "timestamp": now.strftime("%Y-%m-%d %H:%M:%SZ"),
            "trace_id": trace,
            "correlation_id": correlation,
            "error_uri": f"https://login.microsoftonline.com/error?code={self.aadsts}",
        }


class ControlError(ServiceError):
    """Errors of the simulator's own control API: plain and explicit."""

    def body(self, request: web.Request) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message}}


# Codes Graph uses for statuses a fault may inject (Graph docs, "Microsoft Graph error responses").
GRAPH_STATUS_CODES: dict[int, tuple[str, str]] = {
    400: ("BadRequest", "Cannot process the request because it is malformed or incorrect."),
    401: ("InvalidAuthenticationToken", "Access token validation failure."),
    403: ("ErrorAccessDenied", "Access is denied. Check credentials and try again."),
    404: ("ErrorItemNotFound", "The specified object was not found in the store."),
    409: ("Conflict", "The current state conflicts with what the request expects."),
    429: ("TooManyRequests", "Please retry again later."),
    500: ("InternalServerError", "There is an internal server error while processing the request."),
    502: ("BadGateway", "Bad gateway."),
    503: ("ServiceUnavailable", "The service is temporarily unavailable. Please retry later."),
    504: ("GatewayTimeout", "The server didn't receive a timely response from the upstream server."),
}

# OAuth error and AADSTS code the identity platform uses for the same statuses.
IDENTITY_STATUS_CODES: dict[int, tuple[str, int]] = {
    400: ("invalid_request", 900144),
    401: ("invalid_client", 7000215),
    429: ("temporarily_unavailable", 50196),
    500: ("server_error", 90033),
    503: ("temporarily_unavailable", 90033),
    504: ("temporarily_unavailable", 90033),
}
