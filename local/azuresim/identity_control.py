"""Control API for the identity platform (``/_sim/apps``, ``/_sim/users``, ``/_sim/identity``): what
an admin does in the Entra admin center (redirect URIs, certificate credentials, revoking a user's
sessions, a user's password) plus the token lifetimes. See ``local/README.md``."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from aiohttp import web

from .certificates import CertificateError, register
from .consent import redirect_uri_problem
from .control import _bad, _json
from .directory import Directory
from .errors import ControlError
from .store import App, Mailbox, Store


class IdentityControl:
    def __init__(self, store: Store, directory: Directory) -> None:
        self.store = store
        self.directory = directory

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/_sim/apps/{client}", self.get_app),
            web.post("/_sim/apps/{client}/redirectUris", self.add_redirect_uris),
            web.delete("/_sim/apps/{client}/redirectUris", self.clear_redirect_uris),
            web.post("/_sim/apps/{client}/certificates", self.add_certificate),
            web.delete("/_sim/apps/{client}/certificates/{key}", self.remove_certificate),
            web.put("/_sim/users/{user}/password", self.set_password),
            web.post("/_sim/users/{user}/revokeSignInSessions", self.revoke_sessions),
            web.get("/_sim/users/{user}/consents", self.list_consents),
            web.get("/_sim/identity", self.get_settings),
            web.post("/_sim/identity", self.set_settings),
        ]

    def _app(self, request: web.Request) -> App:
        app = self.store.apps.get(request.match_info["client"])
        if app is None:
            raise ControlError(404, "NotFound", f"no app registration '{request.match_info['client']}'")
        return app

    def _user(self, request: web.Request) -> Mailbox:
        user = self.store.find_mailbox(request.match_info["user"])
        if user is None:
            raise ControlError(404, "NotFound", f"no user '{request.match_info['user']}' (users are the mailboxes)")
        return user

    def _describe(self, app: App) -> dict[str, Any]:
        registration = self.directory.registration(app.client_id)
        return {
            "clientId": app.client_id,
            "servicePrincipalId": app.service_principal_id,
            "applicationPermissions": list(app.roles),
            "delegatedPermissions": {r: list(p) for r, p in registration.delegated.items()},
            "redirectUris": list(registration.redirect_uris),
            "keyCredentials": [c.describe() for c in registration.certificates],
        }

    # -- apps ---------------------------------------------------------------------------------------
    async def get_app(self, request: web.Request) -> web.Response:
        return web.json_response(self._describe(self._app(request)))

    async def add_redirect_uris(self, request: web.Request) -> web.Response:
        app = self._app(request)
        uris = (await _json(request)).get("redirectUris")
        if not isinstance(uris, list) or not uris or not all(isinstance(u, str) for u in uris):
            raise _bad("'redirectUris' must be a non-empty list of strings")
        for uri in uris:
            problem = redirect_uri_problem(uri)
            if problem is not None:
                raise _bad(f"'{uri}': {problem}")
        registered = self.directory.registration(app.client_id).redirect_uris
        registered.extend(u for u in uris if u not in registered)
        return web.json_response(self._describe(app))

    async def clear_redirect_uris(self, request: web.Request) -> web.Response:
        self.directory.registration(self._app(request).client_id).redirect_uris.clear()
        return web.Response(status=204)

    async def add_certificate(self, request: web.Request) -> web.Response:
        app = self._app(request)
        text = (await _json(request)).get("certificate")
        if not isinstance(text, str):
            raise _bad("'certificate' (a PEM certificate or base64 DER) is required")
        try:
            credential = register(text)
        except CertificateError as exc:
            raise _bad(str(exc)) from exc
        certificates = self.directory.registration(app.client_id).certificates
        if any(c.thumbprint == credential.thumbprint for c in certificates):
            raise ControlError(409, "Conflict", f"a certificate with thumbprint {credential.thumbprint} is registered")
        certificates.append(credential)
        return web.json_response(credential.describe(), status=201)

    async def remove_certificate(self, request: web.Request) -> web.Response:
        certificates = self.directory.registration(self._app(request).client_id).certificates
        key = request.match_info["key"]
        found = next((c for c in certificates if c.key_id == key), None)
        if found is None:
            raise ControlError(404, "NotFound", f"no certificate with keyId '{key}'")
        certificates.remove(found)
        return web.Response(status=204)

    # -- users --------------------------------------------------------------------------------------
    async def set_password(self, request: web.Request) -> web.Response:
        user = self._user(request)
        password = (await _json(request)).get("password")
        if not isinstance(password, str) or not password:
            raise _bad("'password' must be a non-empty string")
        self.directory.passwords[user.id] = password
        return web.Response(status=204)

    async def revoke_sessions(self, request: web.Request) -> web.Response:
        revoked = self.directory.revoke_user(self._user(request).id)
        return web.json_response({"value": True, "revokedRefreshTokens": revoked})

    async def list_consents(self, request: web.Request) -> web.Response:
        user = self._user(request)
        rows = [
            {"clientId": client_id, "scopes": sorted(scopes)}
            for (client_id, user_id), scopes in self.directory.grants.items()
            if user_id == user.id
        ]
        return web.json_response({"value": rows})

    # -- lifetimes ----------------------------------------------------------------------------------
    def _settings(self) -> dict[str, Any]:
        settings = self.directory.settings
        return {
            "refreshTokenMaxInactiveSeconds": settings.refresh_token_max_inactive.total_seconds(),
            "authorizationCodeLifetimeSeconds": settings.authorization_code_lifetime.total_seconds(),
        }

    async def get_settings(self, request: web.Request) -> web.Response:
        return web.json_response(self._settings())

    async def set_settings(self, request: web.Request) -> web.Response:
        body = await _json(request)
        values: dict[str, timedelta] = {}
        for key in ("refreshTokenMaxInactiveSeconds", "authorizationCodeLifetimeSeconds"):
            value = body.get(key)
            if value is None:
                continue
            if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
                raise _bad(f"'{key}' must be a positive number")
            values[key] = timedelta(seconds=value)
        settings = self.directory.settings
        settings.refresh_token_max_inactive = values.get(
            "refreshTokenMaxInactiveSeconds", settings.refresh_token_max_inactive
        )
        settings.authorization_code_lifetime = values.get(
            "authorizationCodeLifetimeSeconds", settings.authorization_code_lifetime
        )
        return web.json_response(self._settings())
