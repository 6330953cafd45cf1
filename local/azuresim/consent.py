"""The authorize endpoint (v2-oauth2-auth-code-flow, "Request an authorization code"): plain HTML
sign-in and consent pages a person, httpx or a headless browser can drive without JavaScript.

``GET`` (or ``POST``, as OpenID Connect allows) ``/{tenant}/oauth2/v2.0/authorize`` with ``client_id``,
``response_type=code``, ``redirect_uri``, ``scope``, ``state``, ``nonce``, ``code_challenge`` +
``code_challenge_method`` (``S256`` or ``plain``), ``prompt`` (``login``, ``none``, ``consent``,
``select_account``), ``login_hint``, ``max_age``, ``response_mode`` (``query``, ``fragment``, ``form_post``).

A problem with the tenant, the client or the redirect URI is shown on an error page (400): the
response must not go to an unverified address. Every later problem goes back to the redirect URI as
``error``, ``error_description`` and ``state``. The sign-in form names the user (a mailbox of the
simulated tenant) and a password; when the user has not yet consented to every requested scope for
this app, or ``prompt=consent``, a consent form follows. A successful sign-in sets the
``azuresim-session`` cookie, which later requests use for single sign-on and ``prompt=none``.

Page contract (stable ids): ``#signin-form`` with ``#username``, ``#password``, ``#signin``;
``#consent-form`` listing ``#scopes li[data-scope]`` with ``#accept`` and ``#decline``; ``#error``
on a form page; ``#error-code`` and ``#error-description`` on the error page; ``#response-form``
with ``#continue`` for ``response_mode=form_post``. Every form carries a hidden ``flow`` field.
"""

from __future__ import annotations

import html
import secrets
import time
from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import urlencode, urlsplit, urlunsplit

from aiohttp import web

from .clock import Clock
from .delegated import code_challenge_ok
from .directory import AuthorizationCode, Directory, Session
from .scopes import OIDC_SCOPES, ScopeError, ScopeRequest, parse_scopes, permission_of, resource_of
from .store import App, Mailbox, Store

SESSION_COOKIE = "azuresim-session"
RESPONSE_MODES = ("query", "fragment", "form_post")
PROMPTS = ("login", "none", "consent", "select_account")
LOOPBACK_HOSTS = ("localhost", "127.0.0.1")
PENDING_SECONDS = 3600  # how long a rendered sign-in page stays usable
OIDC_LABELS = {
    "openid": "Sign you in",
    "profile": "View your basic profile",
    "email": "View your email address",
    "offline_access": "Maintain access to data you have given it access to",
}
RESOURCE_NAMES = {"https://graph.microsoft.com": "Microsoft Graph", "https://vault.azure.net": "Azure Key Vault"}


# -- redirect URIs (reply-url: "Redirect URI (reply URL) restrictions") -----------------------------
def redirect_uri_problem(uri: str) -> str | None:
    """Why ``uri`` cannot be registered, or None."""
    parts = urlsplit(uri)
    if len(uri) > 256:
        return "a redirect URI has at most 256 characters"
    if not parts.scheme or not parts.netloc:
        return "a redirect URI must be an absolute URI"
    if parts.fragment:
        return "a redirect URI must not have a fragment"
    if "*" in uri:
        return "wildcard redirect URIs are not supported"
    if any(c in uri for c in "!$'(),;"):
        return "redirect URIs do not support the characters ! $ ' ( ) , ;"
    host = (parts.hostname or "").lower()
    if host == "::1":
        return "the IPv6 loopback address [::1] is not supported"
    if parts.scheme.lower() == "https" or (parts.scheme.lower() == "http" and host in LOOPBACK_HOSTS):
        return None
    return "a redirect URI must use https (http only for localhost or 127.0.0.1)"


def _match_key(uri: str) -> tuple[str, str, int | None, str, str]:
    parts = urlsplit(uri)
    host = (parts.hostname or "").lower()
    # Loopback: "the port component ... is ignored for the purposes of matching a redirect URI".
    port = None if host in LOOPBACK_HOSTS else parts.port
    return parts.scheme.lower(), host, port, parts.path or "/", parts.query


def redirect_uri_registered(registered: list[str], uri: str) -> bool:
    try:
        wanted = _match_key(uri)
        return any(_match_key(r) == wanted for r in registered)
    except ValueError:  # a malformed port
        return False


# -- requests and replies ---------------------------------------------------------------------------
class AuthorizeError(Exception):
    def __init__(self, error: str, aadsts: int, message: str) -> None:
        super().__init__(message)
        self.error = error
        self.aadsts = aadsts
        self.message = message


@dataclass(frozen=True)
class Reply:
    """Where and how the response goes: "not configured with a path segment are returned with a trailing slash"."""

    redirect_uri: str
    mode: str
    state: str | None

    def target(self) -> str:
        parts = urlsplit(self.redirect_uri)
        return urlunsplit(parts._replace(path=parts.path or "/"))


@dataclass(frozen=True)
class AuthorizeRequest:
    app: App
    reply: Reply
    scopes: ScopeRequest
    nonce: str | None
    prompt: frozenset[str]
    login_hint: str | None
    challenge: str | None
    challenge_method: str | None
    max_age: int | None


@dataclass
class Pending:
    """A rendered sign-in or consent page, waiting for its form."""

    request: AuthorizeRequest
    created: float = field(default_factory=time.monotonic)
    user_id: str | None = None
    auth_time: datetime | None = None


def _page(title: str, body: str, status: int = 200) -> web.Response:
    text = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title></head>\n<body>\n{body}\n</body></html>\n"
    )
    return web.Response(
        status=status,
        text=text,
        content_type="text/html",
        headers={"Cache-Control": "no-store, no-cache", "Pragma": "no-cache"},
    )


def error_page(error: str, aadsts: int, message: str) -> web.Response:
    description = f"AADSTS{aadsts}: {message}"
    return _page(
        "Sign in to your account",
        '<h1 id="error-title">Sorry, but we\'re having trouble signing you in.</h1>\n'
        f'<p id="error-code" data-error="{html.escape(error)}">AADSTS{aadsts}</p>\n'
        f'<p id="error-description">{html.escape(description)}</p>',
        status=400,
    )


def _hidden(name: str, value: str) -> str:
    return f'<input type="hidden" name="{html.escape(name)}" value="{html.escape(value)}">'


def _scope_label(scope: str) -> str:
    if scope in OIDC_SCOPES:
        return OIDC_LABELS[scope]
    resource = resource_of(scope)
    return f"{permission_of(scope)} ({RESOURCE_NAMES.get(resource, resource)})"


class Authorize:
    def __init__(self, store: Store, clock: Clock, directory: Directory) -> None:
        self.store = store
        self.clock = clock
        self.directory = directory
        self.pending: dict[str, Pending] = {}

    def routes(self) -> list[web.RouteDef]:
        path = "/{tenant}/oauth2/v2.0/authorize"
        return [web.get(path, self.authorize), web.post(path, self.authorize)]

    async def authorize(self, request: web.Request) -> web.Response:
        if request.method == "POST":
            params = {k: str(v) for k, v in (await request.post()).items()}
            if "flow" in params:
                return self._continue(request, params)
        else:
            params = dict(request.query)
        return self._start(request, params)

    # -- the authorization request ----------------------------------------------------------------
    def _start(self, request: web.Request, params: dict[str, str]) -> web.Response:
        tenant = request.match_info["tenant"]
        if tenant.lower() != self.store.tenant_id.lower():
            return error_page("invalid_request", 90002, f"Tenant '{tenant}' not found.")
        client_id = params.get("client_id", "")
        if not client_id:
            return error_page(
                "invalid_request", 900144, "The request body must contain the following parameter: 'client_id'."
            )
        app = self.store.apps.get(client_id)
        if app is None:
            return error_page(
                "unauthorized_client",
                700016,
                f"Application with identifier '{client_id}' was not found in the directory '{self.store.tenant_id}'.",
            )
        redirect_uri = params.get("redirect_uri", "")
        if not redirect_uri:
            return error_page("invalid_request", 900971, "No reply address provided.")
        if not redirect_uri_registered(self.directory.registration(client_id).redirect_uris, redirect_uri):
            return error_page(
                "invalid_request",
                50011,
                f"The redirect URI '{redirect_uri}' specified in the request does not match the redirect URIs "
                f"configured for the application '{client_id}'.",
            )
        mode = params.get("response_mode") or "query"
        reply = Reply(redirect_uri, mode if mode in RESPONSE_MODES else "query", params.get("state"))
        try:
            if mode not in RESPONSE_MODES:
                raise AuthorizeError("invalid_request", 70007, f"The response_mode '{mode}' is not supported.")
            auth = self._parse(params, app, reply)
        except AuthorizeError as exc:
            return self._error(reply, exc)
        return self._decide(request, auth)

    def _parse(self, params: dict[str, str], app: App, reply: Reply) -> AuthorizeRequest:
        def missing(name: str) -> AuthorizeError:
            return AuthorizeError(
                "invalid_request", 900144, f"The request body must contain the following parameter: '{name}'."
            )

        response_type = params.get("response_type", "")
        if not response_type:
            raise missing("response_type")
        if response_type.split() != ["code"]:
            raise AuthorizeError(
                "unsupported_response_type",
                70005,
                f"The response type '{response_type}' is not enabled for the application; only 'code' is.",
            )
        if not params.get("scope", "").strip():
            raise missing("scope")
        try:
            scopes = parse_scopes(params["scope"], self.directory.registration(app.client_id).configured)
        except ScopeError as exc:
            raise AuthorizeError(exc.oauth, exc.aadsts, exc.message) from exc
        challenge, method = params.get("code_challenge"), params.get("code_challenge_method")
        if method is not None and challenge is None:
            raise missing("code_challenge")
        if challenge is not None:
            method = method or "plain"  # "If excluded, code_challenge is assumed to be plaintext"
            if method not in ("S256", "plain"):
                raise AuthorizeError("invalid_request", 9002313, f"Invalid code_challenge_method '{method}'.")
            if not code_challenge_ok(challenge):
                raise AuthorizeError("invalid_request", 501491, "Invalid size of Code_Challenge parameter.")
        prompt = frozenset(params.get("prompt", "").split())
        if not prompt <= set(PROMPTS) or ("none" in prompt and len(prompt) > 1):
            raise AuthorizeError("invalid_request", 9002313, f"Invalid prompt value '{params.get('prompt')}'.")
        max_age = params.get("max_age")
        if max_age is not None and not max_age.isdigit():
            raise AuthorizeError("invalid_request", 9002313, "max_age must be a non-negative integer.")
        return AuthorizeRequest(
            app=app,
            reply=reply,
            scopes=scopes,
            nonce=params.get("nonce"),
            prompt=prompt,
            login_hint=params.get("login_hint") or None,
            challenge=challenge,
            challenge_method=method if challenge is not None else None,
            max_age=int(max_age) if max_age is not None else None,
        )

    def _session(self, request: web.Request) -> tuple[Session, Mailbox] | None:
        session = self.directory.sessions.get(request.cookies.get(SESSION_COOKIE, ""))
        user = self.directory.user(session.user_id) if session is not None else None
        return (session, user) if session is not None and user is not None else None

    def _needs_consent(self, auth: AuthorizeRequest, user: Mailbox) -> bool:
        granted = self.directory.granted(auth.app.client_id, user.id)
        return "consent" in auth.prompt or not auth.scopes.consent_scopes <= granted

    def _decide(self, request: web.Request, auth: AuthorizeRequest) -> web.Response:
        signed_in = self._session(request)
        if signed_in is not None:
            session, user = signed_in
            hinted = self.store.find_mailbox(auth.login_hint) if auth.login_hint else user
            too_old = auth.max_age is not None and (self.clock.now() - session.auth_time).total_seconds() > auth.max_age
            if hinted is not user or too_old:
                signed_in = None
        if "none" in auth.prompt:
            if signed_in is None:
                return self._error(
                    auth.reply,
                    AuthorizeError(
                        "login_required", 50058, "A silent sign-in request was sent but no user is signed in."
                    ),
                )
            session, user = signed_in
            if self._needs_consent(auth, user):
                return self._error(
                    auth.reply,
                    AuthorizeError(
                        "consent_required",
                        65001,
                        f"The user or administrator has not consented to use the application with ID "
                        f"'{auth.app.client_id}'. Send an interactive authorization request for this user and "
                        "resource.",
                    ),
                )
            return self._issue(auth, user, session.auth_time)
        if signed_in is not None and not auth.prompt & {"login", "select_account"}:
            session, user = signed_in
            if not self._needs_consent(auth, user):
                return self._issue(auth, user, session.auth_time)
            flow = self._pend(Pending(auth, user_id=user.id, auth_time=session.auth_time))
            return self._consent_page(flow, auth, user)
        flow = self._pend(Pending(auth))
        return self._signin_page(flow, auth.login_hint or "")

    def _pend(self, pending: Pending) -> str:
        cutoff = time.monotonic() - PENDING_SECONDS
        for key in [k for k, p in self.pending.items() if p.created < cutoff]:
            del self.pending[key]
        flow = secrets.token_urlsafe(24)
        self.pending[flow] = pending
        return flow

    # -- the forms ------------------------------------------------------------------------------------
    def _continue(self, request: web.Request, params: dict[str, str]) -> web.Response:
        flow = params["flow"]
        pending = self.pending.get(flow)
        if pending is None:
            return error_page(
                "invalid_request", 50089, "Authentication failed due to flow token expired. Start the sign-in again."
            )
        auth = pending.request
        step = params.get("step")
        if step == "signin":
            return self._sign_in(flow, pending, params)
        if step == "consent" and pending.user_id is not None and pending.auth_time is not None:
            del self.pending[flow]
            user = self.directory.user(pending.user_id)
            if user is None or params.get("consent") != "accept":
                return self._error(
                    auth.reply, AuthorizeError("access_denied", 65004, "User declined to consent to access the app.")
                )
            self.directory.grant(auth.app.client_id, user.id, auth.scopes.consent_scopes)
            return self._issue(auth, user, pending.auth_time)
        return error_page("invalid_request", 9002313, "Invalid request. The form is not part of this sign-in.")

    def _sign_in(self, flow: str, pending: Pending, params: dict[str, str]) -> web.Response:
        username, password = params.get("username", "").strip(), params.get("password", "")
        user = self.store.find_mailbox(username) if username else None
        if not username:
            return self._signin_page(flow, username, (90100, "Enter a valid email address."))
        if user is None:
            return self._signin_page(
                flow, username, (50034, "This username may be incorrect. Make sure you typed it correctly.")
            )
        if not self.directory.password_ok(user, password):
            return self._signin_page(flow, username, (50126, "Your account or password is incorrect."))
        session = self.directory.new_session(user.id)
        pending.user_id, pending.auth_time = user.id, session.auth_time
        auth = pending.request
        if self._needs_consent(auth, user):
            response = self._consent_page(flow, auth, user)
        else:
            del self.pending[flow]
            response = self._issue(auth, user, session.auth_time)
        response.set_cookie(SESSION_COOKIE, session.id, path="/", secure=True, httponly=True, samesite="Lax")
        return response

    def _signin_page(self, flow: str, username: str, problem: tuple[int, str] | None = None) -> web.Response:
        error = ""
        if problem is not None:
            error = f'<p id="error" role="alert" data-code="AADSTS{problem[0]}">{html.escape(problem[1])}</p>\n'
        return _page(
            "Sign in to your account",
            "<h1>Sign in</h1>\n"
            f"{error}"
            '<form id="signin-form" method="post">\n'
            f"{_hidden('flow', flow)}{_hidden('step', 'signin')}\n"
            '<label for="username">Email</label>\n'
            '<input id="username" name="username" type="email" autocomplete="username" '
            f'value="{html.escape(username)}">\n'
            '<label for="password">Password</label>\n'
            '<input id="password" name="password" type="password" autocomplete="current-password">\n'
            '<button id="signin" type="submit">Sign in</button>\n'
            "</form>",
        )

    def _consent_page(self, flow: str, auth: AuthorizeRequest, user: Mailbox) -> web.Response:
        items = "\n".join(
            f'<li data-scope="{html.escape(s)}">{html.escape(_scope_label(s))}</li>'
            for s in (*auth.scopes.permissions, *auth.scopes.oidc)
        )
        return _page(
            "Permissions requested",
            "<h1>Permissions requested</h1>\n"
            f'<p id="consent-user">{html.escape(user.address)}</p>\n'
            f'<p id="consent-app">App {html.escape(auth.app.client_id)} would like to:</p>\n'
            f'<ul id="scopes">\n{items}\n</ul>\n'
            '<form id="consent-form" method="post">\n'
            f"{_hidden('flow', flow)}{_hidden('step', 'consent')}\n"
            '<button id="accept" name="consent" value="accept" type="submit">Accept</button>\n'
            '<button id="decline" name="consent" value="decline" type="submit">Cancel</button>\n'
            "</form>",
        )

    # -- responses --------------------------------------------------------------------------------
    def _issue(self, auth: AuthorizeRequest, user: Mailbox, auth_time: datetime) -> web.Response:
        code = self.directory.issue_code(
            AuthorizationCode(
                client_id=auth.app.client_id,
                user_id=user.id,
                redirect_uri=auth.reply.redirect_uri,
                scopes=auth.scopes,
                nonce=auth.nonce,
                challenge=auth.challenge,
                challenge_method=auth.challenge_method,
                issued=self.clock.now(),
                auth_time=auth_time,
            )
        )
        return self._respond(auth.reply, {"code": code})

    def _error(self, reply: Reply, error: AuthorizeError) -> web.Response:
        return self._respond(
            reply, {"error": error.error, "error_description": f"AADSTS{error.aadsts}: {error.message}"}
        )

    def _respond(self, reply: Reply, values: dict[str, str]) -> web.Response:
        if reply.state is not None:
            values = {**values, "state": reply.state}
        target = reply.target()
        if reply.mode == "form_post":
            fields = "".join(_hidden(k, v) for k, v in values.items())
            return _page(
                "Continue",
                f'<form id="response-form" method="post" action="{html.escape(target)}">\n{fields}\n'
                '<button id="continue" type="submit">Continue</button>\n</form>',
            )
        parts = urlsplit(target)
        if reply.mode == "fragment":
            location = urlunsplit(parts._replace(fragment=urlencode(values)))
        else:
            query = f"{parts.query}&{urlencode(values)}" if parts.query else urlencode(values)
            location = urlunsplit(parts._replace(query=query))
        return web.Response(status=302, headers={"Location": location, "Cache-Control": "no-store, no-cache"})
