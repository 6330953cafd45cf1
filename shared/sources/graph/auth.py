"""Tokens for Graph from MSAL: the app's credential (a client secret, or a certificate held in Key Vault),
the MSAL application built from it, and application mode's token source.

MSAL is synchronous (requests); it runs in a worker thread. Since MSAL 1.23,
acquire_token_for_client serves from its cache and only calls the identity platform when the
cached token is missing or near expiry, so calling it per request is cheap.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any, Protocol

from ...certificates import key_and_certificate
from ...errors import AuthError, GraphError, SettingsError
from ...logs import log_event
from ...settings import Settings
from ...vault import Vault

logger = logging.getLogger(__name__)


class Tokens(Protocol):
    """What GraphClient needs: a token for a call on `mailbox`, and word when Graph refused one."""

    async def token(self, mailbox: str | None) -> str: ...

    async def denied(self, mailbox: str, error: GraphError) -> None: ...


def _msal_version() -> tuple[int, ...]:
    import msal

    return tuple(int(p) for p in str(msal.__version__).split(".")[:2] if p.isdigit())


def credential_from_secret(value: str, content_type: str | None) -> dict[str, str]:
    """MSAL's certificate credential from a Key Vault certificate's backing secret (PEM or base64 PKCS#12)."""
    from cryptography.hazmat.primitives import hashes, serialization

    key, cert = key_and_certificate(value, content_type)
    credential = {
        "private_key": key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode(),
        # Sent as x5c; from it MSAL 1.35+ computes the SHA-256 thumbprint (x5t#S256, PS256).
        "public_certificate": cert.public_bytes(serialization.Encoding.PEM).decode(),
    }
    if _msal_version() < (1, 35):
        # Older MSAL needs the thumbprint given, and takes it as SHA-1 (x5t, RS256).
        credential["thumbprint"] = cert.fingerprint(hashes.SHA1()).hex().upper()  # noqa: S303 (x5t is SHA-1)
    return credential


class ClientCredential:
    """The app's credential, read once: the certificate (it wins when both are set) or the secret."""

    def __init__(self, settings: Settings, vault: Vault) -> None:
        self._settings = settings
        self._vault = vault
        self._value: str | dict[str, str] | None = None
        self._lock = asyncio.Lock()

    async def get(self) -> str | dict[str, str]:
        if self._value is None:
            async with self._lock:
                if self._value is None:
                    self._value = await self._read()
        return self._value

    async def _read(self) -> str | dict[str, str]:
        name = self._settings.client_certificate
        if not name:
            assert self._settings.client_secret is not None  # settings require one of the two
            return self._settings.client_secret
        found = await self._vault.get_typed(name)
        if found is None:
            raise AuthError(f"Key Vault has no certificate {name} (GRAPH_CLIENT_CERTIFICATE)")
        try:
            return credential_from_secret(*found)
        except AuthError as exc:
            raise AuthError(f"certificate {name} (GRAPH_CLIENT_CERTIFICATE): {exc}") from None


def msal_app(settings: Settings, credential: str | dict[str, str], cache: Any = None) -> Any:
    """A ConfidentialClientApplication for this tenant (it fetches the authority's metadata: call it off the loop)."""
    import msal  # heavy: only when a token is first needed

    for name, value in (("GRAPH_TENANT_ID", settings.tenant_id), ("GRAPH_CLIENT_ID", settings.client_id)):
        if not value:  # optional in a deployment that does not use the app registration (settings.uses_app)
            raise SettingsError(name, "required to sign in as the app, but not set")
    return msal.ConfidentialClientApplication(
        settings.client_id,
        client_credential=credential,
        authority=settings.authority,
        # Discovery asks Microsoft's cloud about the authority; skip it for any other host.
        instance_discovery=settings.instance_discovery,
        token_cache=cache,
    )


def result_error(result: Any) -> tuple[str, str]:
    """An MSAL result's error code and the first line of its description."""
    if not isinstance(result, dict):
        return "no_token", ""
    detail = str(result.get("error_description", "")).splitlines()
    return str(result.get("error", "no_token")), (detail[0] if detail else "")


class AppTokens:
    """Application mode: one ConfidentialClientApplication per runtime, its cache in memory."""

    def __init__(self, settings: Settings, credential: ClientCredential) -> None:
        self._settings = settings
        self._credential = credential
        self._app: Any = None
        self._lock = threading.Lock()

    def _client(self, credential: str | dict[str, str]) -> Any:
        with self._lock:
            if self._app is None:
                self._app = msal_app(self._settings, credential)
            return self._app

    def _acquire(self, credential: str | dict[str, str]) -> str:
        result = self._client(credential).acquire_token_for_client(scopes=[self._settings.graph_scope])
        token = result.get("access_token") if isinstance(result, dict) else None
        if not token:
            error, detail = result_error(result)
            raise AuthError(f"token request failed: {error}: {detail}")
        if result.get("token_source") == "identity_provider":
            log_event(
                logger,
                "token.acquired",
                scope=self._settings.graph_scope,
                expires_in=result.get("expires_in"),
            )
        return str(token)

    async def token(self, mailbox: str | None = None) -> str:
        """The app's token; the mailbox does not matter in application mode."""
        credential = await self._credential.get()
        try:
            return await asyncio.to_thread(self._acquire, credential)
        except AuthError:
            raise
        except Exception as exc:  # msal raises requests' and its own errors: one typed error out
            raise AuthError(f"token request failed: {type(exc).__name__}: {exc}") from exc

    async def denied(self, mailbox: str, error: GraphError) -> None:
        log_event(
            logger,
            "auth.needs_consent",
            logging.ERROR,
            mailbox=mailbox,
            reason=(
                f"Graph refused the app this mailbox ({error.status} {error.code}): grant admin consent for "
                f"{' and '.join(self._settings.delegated_scopes)} (application permission), or fix the Exchange "
                "application role assignment (RBAC for Applications) whose scope should include this mailbox"
            ),
        )
