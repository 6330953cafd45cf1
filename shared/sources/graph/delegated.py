"""Delegated mode: each mailbox is its owner's, read with the owner's consented token.

Per mailbox, MSAL's SerializableTokenCache (refresh token, access token, account) lives in a Key Vault
secret; a process reads it once, and writes it back whenever MSAL changed it (a refresh rotates the
refresh token). Refresh tokens lapse after 90 days unused (AADSTS700082); the maintain timer
refreshes each one well before that. The identity platform does not revoke a refresh token when it
is used (refresh-tokens doc, graph_facts §11), so two instances refreshing at once both succeed and
whichever cache is written last is valid.

`invalid_grant` (inactivity, revocation, a password change) means the owner must consent again:
the mailbox's status turns to `needs_consent`, an error names the consent page, and NeedsConsent
stops work on that mailbox only.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from ... import clock
from ...errors import AuthError, GraphError, IngestError, NeedsConsent
from ...logs import log_event
from ...pipeline.layout import graph_time, parse_graph_time
from ...pipeline.storage import BlobStore
from ...settings import Settings
from ...vault import Vault
from . import authstatus
from .auth import ClientCredential, msal_app, result_error

logger = logging.getLogger(__name__)

CACHE_SECRET_PREFIX = "graph-token-cache-"  # noqa: S105 (a secret's name, not a secret)
# A mailbox refused once is looked up again in Key Vault at most this often (a consent given through
# another instance lands there).
RELOAD_SECONDS = 60.0


# What the token endpoint answers when only the user can fix it: a lapsed, revoked or unconsented grant.
CONSENT_ERRORS = frozenset({"invalid_grant", "interaction_required", "consent_required"})


def cache_secret_name(mailbox: str) -> str:
    """Key Vault names allow letters, digits and dashes: a hash of the address, not the address."""
    return CACHE_SECRET_PREFIX + hashlib.sha256(mailbox.lower().encode()).hexdigest()[:32]


@dataclass
class _Mailbox:
    mailbox: str
    app: Any = None  # ConfidentialClientApplication with this mailbox's cache
    stored: str | None = None  # the cache as last read from or written to Key Vault
    read_at: float = 0.0  # monotonic time of that read
    refused: bool = False  # the identity platform refused `refused_cache` (None: there was none), and why
    refused_cache: str | None = None
    refused_reason: str = ""
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class DelegatedTokens:
    def __init__(self, settings: Settings, credential: ClientCredential, vault: Vault, state: BlobStore) -> None:
        self._settings = settings
        self._credential = credential
        self._vault = vault
        self._state = state
        self._boxes: dict[str, _Mailbox] = {}

    def _box(self, mailbox: str) -> _Mailbox:
        key = mailbox.lower()
        box = self._boxes.get(key)
        if box is None:
            box = self._boxes[key] = _Mailbox(key)
        return box

    # -- Key Vault ---------------------------------------------------------------------------------
    async def _read(self, box: _Mailbox) -> bool:
        """Load the mailbox's cache from Key Vault; True if it differs from what this process had."""
        import msal

        state = await self._vault.get(cache_secret_name(box.mailbox))
        box.read_at = time.monotonic()
        if box.app is not None and state == box.stored:
            return False
        cache = msal.SerializableTokenCache()
        if state:
            cache.deserialize(state)
        credential = await self._credential.get()
        box.app = await asyncio.to_thread(msal_app, self._settings, credential, cache)
        box.stored = state
        return True

    async def _write(self, box: _Mailbox) -> None:
        cache = box.app.token_cache
        if cache.has_state_changed:
            state = cache.serialize()  # resets has_state_changed
            await self._vault.set(cache_secret_name(box.mailbox), state)
            box.stored = state

    async def store_consent(self, mailbox: str, state: str) -> None:
        """A freshly consented cache (the consent callback): stored, and used by this process from now on."""
        await self._vault.set(cache_secret_name(mailbox), state)
        box = self._box(mailbox)
        async with box.lock:
            box.app, box.refused = None, False
            await self._read(box)

    async def new_app(self) -> Any:
        """An MSAL application with an empty cache of its own, for one consent flow."""
        import msal

        credential = await self._credential.get()
        return await asyncio.to_thread(msal_app, self._settings, credential, msal.SerializableTokenCache())

    # -- tokens ------------------------------------------------------------------------------------
    def _silent(self, box: _Mailbox, force: bool) -> dict[str, Any] | None:
        app = box.app
        accounts = app.get_accounts()
        mine = [a for a in accounts if str(a.get("username", "")).lower() == box.mailbox] or accounts
        if not mine:
            return None
        result: dict[str, Any] | None = app.acquire_token_silent_with_error(
            list(self._settings.delegated_scopes), mine[0], force_refresh=force
        )
        return result

    async def _acquire(self, mailbox: str, *, force: bool) -> dict[str, Any]:
        box = self._box(mailbox)
        async with box.lock:
            stale = time.monotonic() - box.read_at > RELOAD_SECONDS
            if box.app is None or force or (box.refused and stale):
                await self._read(box)
            if not force and box.refused and box.refused_cache == box.stored:
                # Nothing new since the refusal; the keep-alive (force) asks again and reports it again.
                raise NeedsConsent(box.mailbox, box.refused_reason)
            try:
                result = await asyncio.to_thread(self._silent, box, force)
                if not (result and "access_token" in result) and await self._read(box):
                    # Another instance stored a newer cache (a consent, a refresh): try that one.
                    result = await asyncio.to_thread(self._silent, box, force)
            except IngestError:
                raise
            except Exception as exc:  # msal raises requests' and its own errors: one typed error out
                raise AuthError(f"token request for {mailbox} failed: {type(exc).__name__}: {exc}") from exc
            if result and "access_token" in result:
                box.refused = False
                await self._write(box)
                return result
            error, detail = result_error(result)
            if result is None or error in CONSENT_ERRORS:
                box.refused, box.refused_cache = True, box.stored
                box.refused_reason = detail or f"no refresh token for {mailbox} yet"
                await self._needs_consent(box.mailbox, box.refused_reason)
                raise NeedsConsent(box.mailbox, box.refused_reason)
            raise AuthError(f"token request for {mailbox} failed: {error}: {detail}")

    async def token(self, mailbox: str | None) -> str:
        if mailbox is None:
            raise AuthError("delegated mode: a Graph call must name its mailbox, whose owner's token it uses")
        return str((await self._acquire(mailbox, force=False))["access_token"])

    async def refresh(self, mailbox: str) -> None:
        """Redeem the refresh token now, so it never sits unused for 90 days; the rotated cache is stored."""
        await self._acquire(mailbox, force=True)
        await authstatus.update(
            self._state,
            mailbox,
            status="ok",
            reason=None,
            refreshed_at=graph_time(clock.now()),
            consent_url=self._settings.consent_url(mailbox),
        )
        log_event(logger, "token.refreshed", mailbox=mailbox.lower())

    async def _needs_consent(self, mailbox: str, why: str) -> None:
        url = self._settings.consent_url(mailbox)
        await authstatus.update(self._state, mailbox, status="needs_consent", reason=why, consent_url=url)
        log_event(
            logger,
            "auth.needs_consent",
            logging.ERROR,
            mailbox=mailbox,
            reason=f"{why}. The mailbox's owner must open {url}, sign in and accept",
        )

    async def denied(self, mailbox: str, error: GraphError) -> None:
        """Graph refused the owner's token (e.g. Mail.ReadWrite never consented): consent again, with prompt=consent."""
        await self._needs_consent(
            mailbox.lower(),
            f"Graph refused the consented token ({error.status} {error.code}); the scopes now needed are "
            f"{' '.join(self._settings.delegated_scopes)}",
        )


async def keep_alive(settings: Settings, tokens: DelegatedTokens, state: BlobStore) -> dict[str, str]:
    """Refresh each mailbox whose last refresh is older than TOKEN_REFRESH_HOURS; one mailbox's
    failure does not stop the others."""
    due = clock.now() - timedelta(hours=settings.token_refresh_hours)

    async def one(mailbox: str) -> str:
        try:
            status = await authstatus.load(state, mailbox)
            last = status and status.status == "ok" and (status.refreshed_at or status.consented_at)
            if last and parse_graph_time(last) > due:
                return "fresh"
            await tokens.refresh(mailbox)
            return "refreshed"
        except NeedsConsent:
            return "needs consent"  # logged, and in the status record, where it was found
        except IngestError as exc:
            log_event(logger, "token.refresh_failed", logging.ERROR, mailbox=mailbox, reason=str(exc))
            return f"failed: {exc}"

    mailboxes = settings.delegated_mailboxes
    results = await asyncio.gather(*(one(m) for m in mailboxes))
    return dict(zip(mailboxes, results, strict=True))
