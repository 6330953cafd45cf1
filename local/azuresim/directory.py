"""Sign-in state of the simulated tenant: the parts of each app registration the delegated flows use
(redirect URIs, certificate credentials, configured delegated permissions), user passwords, consent
grants, browser sign-in sessions, authorization codes and refresh tokens.

The users are the mailboxes in :class:`Store`. Codes and refresh tokens live on the simulated clock
(it only moves forward), so tests can age a refresh token by 90 days in an instant; access tokens and
client assertions keep real time, because clients check those against their own clock.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from .certificates import RegisteredCertificate
from .clock import Clock
from .scopes import GRAPH, ScopeRequest
from .store import Mailbox, Store

# Refresh-tokens doc: "90 days for all other scenarios"; auth-code doc: codes "expire after about 10 minutes".
REFRESH_TOKEN_MAX_INACTIVE = timedelta(days=90)
AUTHORIZATION_CODE_LIFETIME = timedelta(minutes=10)
# What ``{resource}/.default`` grants when the registration says nothing else.
DEFAULT_DELEGATED = {GRAPH: ("User.Read", "Mail.Read", "Mail.ReadWrite")}


def opaque(prefix: str, size: int) -> str:
    """Opaque to clients, as codes and refresh tokens are (only the identity platform reads them)."""
    return prefix + secrets.token_urlsafe(size)


@dataclass
class Registration:
    """App registration settings beyond :class:`store.App` (client id, secret, application roles)."""

    redirect_uris: list[str] = field(default_factory=list)
    certificates: list[RegisteredCertificate] = field(default_factory=list)
    delegated: dict[str, tuple[str, ...]] = field(default_factory=lambda: dict(DEFAULT_DELEGATED))

    def configured(self, resource: str) -> tuple[str, ...]:
        return self.delegated.get(resource, ())


@dataclass
class Session:
    """A browser's signed-in user (the ``azuresim-session`` cookie)."""

    id: str
    user_id: str
    auth_time: datetime


@dataclass
class AuthorizationCode:
    client_id: str
    user_id: str
    redirect_uri: str
    scopes: ScopeRequest
    nonce: str | None
    challenge: str | None
    challenge_method: str | None
    issued: datetime
    auth_time: datetime
    redeemed: bool = False


@dataclass
class RefreshToken:
    client_id: str
    user_id: str
    resource: str  # what a refresh without ``scope`` is for
    qualified: frozenset[str]
    oidc: tuple[str, ...]
    issued: datetime
    last_used: datetime
    auth_time: datetime
    revoked: bool = False


@dataclass
class Settings:
    refresh_token_max_inactive: timedelta = REFRESH_TOKEN_MAX_INACTIVE
    authorization_code_lifetime: timedelta = AUTHORIZATION_CODE_LIFETIME


class Directory:
    def __init__(self, store: Store, clock: Clock) -> None:
        self.store = store
        self.clock = clock
        self.settings = Settings()
        self.registrations: dict[str, Registration] = {}
        self.passwords: dict[str, str] = {}  # user id -> password; absent: any non-empty password
        self.grants: dict[tuple[str, str], set[str]] = {}  # (client id, user id) -> consented scopes
        self.sessions: dict[str, Session] = {}
        self.codes: dict[str, AuthorizationCode] = {}
        self.refresh_tokens: dict[str, RefreshToken] = {}

    # -- apps and users ---------------------------------------------------------------------------
    def registration(self, client_id: str) -> Registration:
        return self.registrations.setdefault(client_id, Registration())

    def user(self, user_id: str) -> Mailbox | None:
        return self.store.mailboxes.get(user_id)

    def password_ok(self, user: Mailbox, password: str) -> bool:
        expected = self.passwords.get(user.id)
        return bool(password) and (expected is None or secrets.compare_digest(password, expected))

    # -- consent ----------------------------------------------------------------------------------
    def granted(self, client_id: str, user_id: str) -> set[str]:
        return self.grants.get((client_id, user_id), set())

    def grant(self, client_id: str, user_id: str, scopes: frozenset[str]) -> None:
        self.grants.setdefault((client_id, user_id), set()).update(scopes)

    # -- sessions, codes, refresh tokens ------------------------------------------------------------
    def new_session(self, user_id: str) -> Session:
        session = Session(opaque("", 32), user_id, self.clock.now())
        self.sessions[session.id] = session
        return session

    def issue_code(self, code: AuthorizationCode) -> str:
        # Expired codes are kept a day longer, so that redeeming one says "expired", not "unknown".
        cutoff = self.clock.now() - self.settings.authorization_code_lifetime - timedelta(days=1)
        for key in [k for k, c in self.codes.items() if c.issued < cutoff]:
            del self.codes[key]
        value = opaque("0.A", 96)
        self.codes[value] = code
        return value

    def issue_refresh_token(self, token: RefreshToken) -> str:
        value = opaque("1.A", 160)
        self.refresh_tokens[value] = token
        return value

    def inactive_for(self, token: RefreshToken) -> timedelta:
        return self.clock.now() - max(token.issued, token.last_used)

    def revoke_user(self, user_id: str) -> int:
        """Like Graph's revokeSignInSessions: every refresh token and browser session of the user."""
        revoked = 0
        for token in self.refresh_tokens.values():
            if token.user_id == user_id and not token.revoked:
                token.revoked = True
                revoked += 1
        for session_id in [s.id for s in self.sessions.values() if s.user_id == user_id]:
            del self.sessions[session_id]
        return revoked
