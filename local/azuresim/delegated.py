"""The token endpoint's delegated grants (v2-oauth2-auth-code-flow, refresh-tokens).

``authorization_code``: a code from :mod:`consent` is redeemed once, within its lifetime, by the
client it was issued to, with the same ``redirect_uri`` and the PKCE ``code_verifier``; ``scope``
(optional) names one resource. ``refresh_token``: bound to user and client, valid for every
permission the user consented to, on any resource; each use returns a new refresh token and, as the
docs say, does not revoke the old one. A refresh token expires after 90 days (configurable) without
use, or when the user's sessions are revoked.

Responses carry ``access_token`` (``scp``: all consented permissions on the resource), ``scope``,
``expires_in``, ``ext_expires_in``, ``refresh_token`` (with ``offline_access``), ``id_token`` (with
``openid``) and ``client_info`` (when the request says ``client_info=1``, as MSAL does).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from datetime import datetime, timedelta
from typing import Any

from aiohttp import web

from . import jose
from .clock import Clock
from .directory import AuthorizationCode, Directory, RefreshToken
from .errors import IdentityError
from .identity import TOKEN_LIFETIME_SECONDS, Authority, Client, TokenForm, origin
from .scopes import GRAPH, ScopeError, ScopeRequest, parse_scopes, permission_of, render, resource_of
from .store import Mailbox

# RFC 7636 4.1: 43 to 128 characters of [A-Z] / [a-z] / [0-9] / "-" / "." / "_" / "~".
PKCE_VALUE = re.compile(r"^[A-Za-z0-9\-._~]{43,128}$")


def pkce_s256(verifier: str) -> str:
    return jose.b64url(hashlib.sha256(verifier.encode("ascii")).digest())


def _entra_time(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%S.0000000Z")


def _timespan(value: timedelta) -> str:
    """.NET TimeSpan text (``90.00:00:00``), as AADSTS700082 prints the inactivity."""
    seconds = int(value.total_seconds())
    days, rest = divmod(seconds, 86400)
    return f"{days}.{rest // 3600:02d}:{rest % 3600 // 60:02d}:{rest % 60:02d}"


def _invalid_grant(aadsts: int, message: str) -> IdentityError:
    return IdentityError(400, "invalid_grant", aadsts, message)


def _required(form: TokenForm, name: str) -> str:
    value = form.get(name, "")
    if not value:
        raise IdentityError(
            400, "invalid_request", 900144, f"The request body must contain the following parameter: '{name}'."
        )
    return value


class UserGrants:
    def __init__(self, authority: Authority, directory: Directory, clock: Clock) -> None:
        self.authority = authority
        self.directory = directory
        self.clock = clock
        authority.grants["authorization_code"] = self.authorization_code
        authority.grants["refresh_token"] = self.refresh_token

    def _scopes(self, form: TokenForm, client: Client) -> ScopeRequest | None:
        text = form.get("scope", "").strip()
        if not text:
            return None
        try:
            return parse_scopes(text, self.directory.registration(client.app.client_id).configured)
        except ScopeError as exc:
            raise IdentityError(400, exc.oauth, exc.aadsts, exc.message) from exc

    def _consented(self, client: Client, user: Mailbox, permissions: list[str], error: str) -> set[str]:
        granted = self.directory.granted(client.app.client_id, user.id)
        missing = [p for p in permissions if p not in granted]
        if missing:
            raise IdentityError(
                400,
                error,
                65001,
                f"The user or administrator has not consented to use the application with ID "
                f"'{client.app.client_id}'. Send an interactive authorization request for this user and resource. "
                f"Missing: {' '.join(missing)}.",
            )
        return granted

    def _respond(
        self,
        request: web.Request,
        form: TokenForm,
        client: Client,
        user: Mailbox,
        resource: str,
        qualified: frozenset[str],
        oidc: tuple[str, ...],
        *,
        nonce: str | None,
        auth_time: datetime,
        refresh: bool,
    ) -> dict[str, Any]:
        granted = self.directory.granted(client.app.client_id, user.id)
        permissions = sorted(s for s in granted if resource_of(s) == resource)
        scp = [permission_of(s) for s in permissions] or list(oidc)
        issuer = origin(request)
        body: dict[str, Any] = {
            "token_type": "Bearer",
            "scope": render(permissions, qualified, oidc),
            "expires_in": TOKEN_LIFETIME_SECONDS,
            "ext_expires_in": TOKEN_LIFETIME_SECONDS,
            "access_token": self.authority.issue_for_user(issuer, resource, client, user, scp, auth_time),
        }
        if refresh:
            now = self.clock.now()
            body["refresh_token"] = self.directory.issue_refresh_token(
                RefreshToken(client.app.client_id, user.id, resource, qualified, oidc, now, now, auth_time)
            )
        if "openid" in oidc:
            body["id_token"] = self.authority.issue_id_token(issuer, client.app.client_id, user, oidc, nonce, auth_time)
        if form.get("client_info") == "1":
            info = {"uid": user.id, "utid": self.authority.store.tenant_id}
            body["client_info"] = jose.b64url(json.dumps(info).encode())
        return body

    # -- authorization_code -----------------------------------------------------------------------
    def _check_pkce(self, code: AuthorizationCode, verifier: str | None) -> None:
        if code.challenge is None:
            return
        if verifier is None or not PKCE_VALUE.match(verifier):
            raise _invalid_grant(
                501481, "The Code_Verifier does not match the code_challenge supplied in the authorization request."
            )
        expected = pkce_s256(verifier) if code.challenge_method == "S256" else verifier
        if not hmac.compare_digest(expected.encode(), code.challenge.encode()):
            raise _invalid_grant(
                501481, "The Code_Verifier does not match the code_challenge supplied in the authorization request."
            )

    async def authorization_code(self, request: web.Request, form: TokenForm, client: Client) -> dict[str, Any]:
        value = _required(form, "code")
        redirect_uri = _required(form, "redirect_uri")
        code = self.directory.codes.get(value)
        if code is None or code.client_id != client.app.client_id:
            raise _invalid_grant(70000, "The provided value for the 'code' parameter is not valid.")
        if code.redeemed:
            raise _invalid_grant(
                54005,
                "OAuth2 Authorization code was already redeemed, please retry with a new valid code or use an "
                "existing refresh token.",
            )
        if self.clock.now() - code.issued > self.directory.settings.authorization_code_lifetime:
            raise _invalid_grant(
                70008,
                "The provided authorization code or refresh token has expired due to inactivity. Send a new "
                "interactive authorization request for this user and resource.",
            )
        if redirect_uri != code.redirect_uri:
            raise _invalid_grant(
                50011,
                f"The redirect URI '{redirect_uri}' specified in the request does not match the redirect URI "
                "used to acquire the authorization code.",
            )
        self._check_pkce(code, form.get("code_verifier"))
        user = self.directory.user(code.user_id)
        if user is None:
            raise _invalid_grant(50034, "The user account does not exist in the directory.")
        requested = self._scopes(form, client) or code.scopes
        if len(requested.resources) > 1:
            raise IdentityError(
                400,
                "invalid_scope",
                700022,
                "The provided value for the input parameter scope is not valid because it contains more than one "
                "resource.",
            )
        granted = self._consented(client, user, list(requested.permissions), "consent_required")
        code.redeemed = True
        if requested.resources:
            resource, qualified = requested.resources[0], requested.qualified
        else:
            resource = code.scopes.resources[0] if code.scopes.resources else GRAPH
            qualified = code.scopes.qualified
        oidc = tuple(o for o in requested.oidc if o in granted)
        return self._respond(
            request,
            form,
            client,
            user,
            resource,
            qualified,
            oidc,
            nonce=code.nonce,
            auth_time=code.auth_time,
            refresh="offline_access" in oidc,
        )

    # -- refresh_token ----------------------------------------------------------------------------
    async def refresh_token(self, request: web.Request, form: TokenForm, client: Client) -> dict[str, Any]:
        token = self.directory.refresh_tokens.get(_required(form, "refresh_token"))
        if token is None or token.client_id != client.app.client_id:
            raise _invalid_grant(70000, "The refresh token is not valid for this client.")
        if token.revoked:
            raise _invalid_grant(
                50173,
                "The provided grant has expired due to it being revoked, a fresh auth token is needed. Either an "
                "admin or a user revoked the tokens for this user. The grant was issued on "
                f"'{_entra_time(token.issued)}'.",
            )
        limit = self.directory.settings.refresh_token_max_inactive
        if self.directory.inactive_for(token) > limit:
            raise _invalid_grant(
                700082,
                "The refresh token has expired due to inactivity. The token was issued on "
                f"{_entra_time(token.issued)} and was inactive for {_timespan(limit)}.",
            )
        user = self.directory.user(token.user_id)
        if user is None:
            raise _invalid_grant(50034, "The user account does not exist in the directory.")
        requested = self._scopes(form, client)
        if requested is not None and requested.resources:
            # "If the scopes ... span multiple resource server, ... a token for the resource specified in the
            # first scope."
            resource, qualified = requested.resources[0], requested.qualified
            wanted = [p for p in requested.permissions if resource_of(p) == resource]
        else:
            resource, qualified, wanted = token.resource, token.qualified, []
        granted = self._consented(client, user, wanted, "invalid_grant")
        oidc = token.oidc if requested is None else tuple(o for o in requested.oidc if o in granted)
        token.last_used = self.clock.now()
        return self._respond(
            request, form, client, user, resource, qualified, oidc, nonce=None, auth_time=token.auth_time, refresh=True
        )


def code_challenge_ok(challenge: str) -> bool:
    return bool(PKCE_VALUE.match(challenge))
