"""App-only tokens from MSAL: one ConfidentialClientApplication per process, its cache in memory.

MSAL is synchronous (requests); it runs in a worker thread. Since MSAL 1.23,
acquire_token_for_client serves from its cache and only calls the identity platform when the
cached token is missing or near expiry, so calling it per request is cheap.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

from .errors import AuthError
from .logs import log_event
from .settings import Settings

logger = logging.getLogger(__name__)


class TokenProvider:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._app: Any = None
        self._lock = threading.Lock()

    def _client(self) -> Any:
        with self._lock:
            if self._app is None:
                import msal  # heavy: only when a token is first needed

                s = self._settings
                self._app = msal.ConfidentialClientApplication(
                    s.client_id,
                    client_credential=s.client_secret,
                    authority=s.authority,
                    # Discovery asks Microsoft's cloud about the authority; skip it for any other host.
                    instance_discovery=s.instance_discovery,
                )
            return self._app

    def _acquire(self) -> str:
        result = self._client().acquire_token_for_client(scopes=[self._settings.graph_scope])
        token = result.get("access_token") if isinstance(result, dict) else None
        if not token:
            error = result.get("error", "no_token") if isinstance(result, dict) else "no_token"
            detail = str(result.get("error_description", "")).splitlines()[0] if isinstance(result, dict) else ""
            raise AuthError(f"token request failed: {error}: {detail}")
        if result.get("token_source") == "identity_provider":
            log_event(
                logger,
                "token.acquired",
                scope=self._settings.graph_scope,
                expires_in=result.get("expires_in"),
            )
        return str(token)

    async def token(self) -> str:
        try:
            return await asyncio.to_thread(self._acquire)
        except AuthError:
            raise
        except Exception as exc:  # msal raises requests' and its own errors: one typed error out
            raise AuthError(f"token request failed: {type(exc).__name__}: {exc}") from exc
