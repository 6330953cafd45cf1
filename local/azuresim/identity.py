"""Microsoft identity platform v2.0: OpenID discovery, signing keys and the token endpoint.

Grants: client credentials (app-only), and for delegated access the authorization code and refresh
token grants (in :mod:`delegated`). Clients authenticate with their secret (form or HTTP Basic) or a
certificate-signed client assertion (:mod:`certificates`). Tokens are RS256 JWTs signed with a key made
at start-up; Graph and Key Vault check them with :meth:`Authority.verify`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa

from . import jose
from .certificates import ClientAssertionError, verify_assertion
from .directory import Directory
from .errors import IdentityError
from .scopes import EXCHANGE, GRAPH, MANAGEMENT, RESOURCES, VAULT
from .store import App, Mailbox, Store

GRAPH_RESOURCE = GRAPH
VAULT_RESOURCE = VAULT
# Exchange Online, for IMAP and POP with OAuth (client credentials: IMAP.AccessAsApp, POP.AccessAsApp).
EXCHANGE_RESOURCE = EXCHANGE
EXCHANGE_ROLES = frozenset({"IMAP.AccessAsApp", "POP.AccessAsApp", "SMTP.SendAsApp"})
TOKEN_LIFETIME_SECONDS = 3599
CLOCK_SKEW_SECONDS = 300
# MSAL may add these OpenID scopes; they carry no resource and a client-credentials grant ignores them.
RESERVED_SCOPES = {"openid", "profile", "offline_access", "email"}
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def origin(request: web.Request) -> str:
    """The simulator's base URL as this caller reached it (``127.0.0.1`` or ``localhost``)."""
    return f"https://{request.host}"


class TokenError(Exception):
    """Why a bearer token was refused; the message is safe to show (it never holds the token)."""


@dataclass(frozen=True)
class Client:
    """An authenticated client; ``azpacr`` says how (``1`` secret, ``2`` certificate)."""

    app: App
    azpacr: str


TokenForm = dict[str, str]
Grant = Callable[[web.Request, TokenForm, Client], Awaitable[dict[str, Any]]]


class Authority:
    def __init__(self, store: Store, directory: Directory) -> None:
        self.store = store
        self.directory = directory
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = uuid.uuid4().hex
        # The delegated grants register themselves here (see delegated.UserGrants).
        self.grants: dict[str, Grant] = {"client_credentials": self._client_credentials}

    # -- tokens ---------------------------------------------------------------------------------
    def _sign(self, claims: dict[str, Any]) -> str:
        return jose.sign_rs256(self._key, {"typ": "JWT", "alg": "RS256", "kid": self.kid}, claims)

    def _base_claims(self, issuer_origin: str, audience: str, lifetime: int) -> dict[str, Any]:
        now = int(time.time())
        return {
            "aud": audience,
            "iss": f"{issuer_origin}/{self.store.tenant_id}/v2.0",
            "iat": now,
            "nbf": now,
            "exp": now + lifetime,
            "tid": self.store.tenant_id,
            "ver": "2.0",
        }

    def issue(self, issuer_origin: str, audience: str, app: App, roles: list[str], azpacr: str = "1") -> str:
        claims = {
            **self._base_claims(issuer_origin, audience, TOKEN_LIFETIME_SECONDS),
            "azp": app.client_id,
            "azpacr": azpacr,
            "appid": app.client_id,
            "idtyp": "app",
            "oid": app.service_principal_id,
            "sub": app.service_principal_id,
            "uti": jose.b64url(uuid.uuid4().bytes),
        }
        if roles:
            claims["roles"] = roles
        return self._sign(claims)

    def pairwise_sub(self, user: Mailbox, client_id: str) -> str:
        """Access and ID tokens' ``sub``: unique per user and application (access-token-claims-reference)."""
        return jose.b64url(hashlib.sha256(f"{user.id}:{client_id}".encode()).digest())

    def issue_for_user(
        self, issuer_origin: str, audience: str, client: Client, user: Mailbox, scp: list[str], auth_time: datetime
    ) -> str:
        """A delegated access token: ``scp`` holds the consented permissions on ``audience``."""
        return self._sign(
            {
                **self._base_claims(issuer_origin, audience, TOKEN_LIFETIME_SECONDS),
                "azp": client.app.client_id,
                "azpacr": client.azpacr,
                "appid": client.app.client_id,
                "idtyp": "user",
                "amr": ["pwd"],
                "auth_time": int(auth_time.timestamp()),
                "name": user.display_name,
                "oid": user.id,
                "preferred_username": user.address,
                "upn": user.address,
                "scp": " ".join(scp),
                "sub": self.pairwise_sub(user, client.app.client_id),
                "uti": jose.b64url(uuid.uuid4().bytes),
            }
        )

    def issue_id_token(
        self,
        issuer_origin: str,
        client_id: str,
        user: Mailbox,
        oidc: tuple[str, ...],
        nonce: str | None,
        auth_time: datetime | None,
    ) -> str:
        """ID token (id-token-claims-reference): ``name``/``preferred_username`` need ``profile``,
        ``email`` needs ``email``; ``nonce`` as the authorize request sent it."""
        claims: dict[str, Any] = {
            **self._base_claims(issuer_origin, client_id, TOKEN_LIFETIME_SECONDS),
            "oid": user.id,
            "sub": self.pairwise_sub(user, client_id),
        }
        if "profile" in oidc:
            claims.update(name=user.display_name, preferred_username=user.address)
        if "email" in oidc:
            claims["email"] = user.address
        if nonce is not None:
            claims["nonce"] = nonce
        if auth_time is not None:
            claims["auth_time"] = int(auth_time.timestamp())
        return self._sign(claims)

    def verify(self, token: str, audiences: set[str]) -> dict[str, Any]:
        try:
            jws = jose.parse(token)
        except ValueError as exc:
            raise TokenError("IDX14100: JWT is not well formed.") from exc
        if jws.header.get("alg") != "RS256" or jws.header.get("kid") != self.kid:
            raise TokenError("Access token validation failure.")
        if not jose.verify(jws, self._key.public_key()):
            raise TokenError("Access token validation failure.")
        claims = jws.claims
        now = time.time()
        if float(claims.get("exp", 0)) + CLOCK_SKEW_SECONDS < now:
            raise TokenError("Lifetime validation failed, the token is expired.")
        if float(claims.get("nbf", 0)) - CLOCK_SKEW_SECONDS > now:
            raise TokenError("Lifetime validation failed, the token is not yet valid.")
        if claims.get("tid") != self.store.tenant_id:
            raise TokenError("Access token validation failure. Invalid tenant.")
        if claims.get("aud") not in audiences:
            raise TokenError("Access token validation failure. Invalid audience.")
        return claims

    def jwks(self) -> dict[str, Any]:
        numbers = self._key.public_key().public_numbers()
        n = numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")
        e = numbers.e.to_bytes((numbers.e.bit_length() + 7) // 8, "big")
        return {"keys": [{"kty": "RSA", "use": "sig", "kid": self.kid, "n": jose.b64url(n), "e": jose.b64url(e)}]}

    # -- HTTP -----------------------------------------------------------------------------------
    def _tenant(self, request: web.Request) -> str:
        tenant = request.match_info["tenant"]
        if tenant.lower() != self.store.tenant_id.lower():
            raise IdentityError(
                400,
                "invalid_request",
                90002,
                f"Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are "
                "signing into the correct cloud.",
            )
        return self.store.tenant_id

    async def openid_configuration(self, request: web.Request) -> web.Response:
        tenant = self._tenant(request)
        base = f"{origin(request)}/{tenant}"
        return web.json_response(
            {
                "issuer": f"{base}/v2.0",
                "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                "token_endpoint": f"{base}/oauth2/v2.0/token",
                "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
                "end_session_endpoint": f"{base}/oauth2/v2.0/logout",
                "jwks_uri": f"{base}/discovery/v2.0/keys",
                "userinfo_endpoint": f"{origin(request)}/oidc/userinfo",
                "token_endpoint_auth_methods_supported": [
                    "client_secret_post",
                    "private_key_jwt",
                    "client_secret_basic",
                ],
                "response_modes_supported": ["query", "fragment", "form_post"],
                "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
                "subject_types_supported": ["pairwise"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "scopes_supported": ["openid", "profile", "email", "offline_access"],
                "claims_supported": ["sub", "iss", "aud", "exp", "iat", "nbf", "tid", "oid", "ver"],
                "request_uri_parameter_supported": False,
                "http_logout_supported": True,
                "frontchannel_logout_supported": True,
                "tenant_region_scope": None,
                "cloud_instance_name": request.host,
                "cloud_graph_host_name": request.host,
                "msgraph_host": request.host,
            }
        )

    async def keys(self, request: web.Request) -> web.Response:
        self._tenant(request)
        return web.json_response(self.jwks())

    def _client(self, form: TokenForm, request: web.Request) -> Client:
        client_id, secret = form.get("client_id", ""), form.get("client_secret")
        basic = request.headers.get("Authorization", "")
        if basic.lower().startswith("basic "):
            try:
                client_id, _, secret = base64.b64decode(basic[6:]).decode().partition(":")
            except (ValueError, binascii.Error):
                client_id = ""
        if not client_id:
            raise IdentityError(
                400,
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'client_id'.",
            )
        app = self.store.apps.get(client_id)
        if app is None:
            raise IdentityError(
                400,
                "unauthorized_client",
                700016,
                f"Application with identifier '{client_id}' was not found in the directory '{self.store.tenant_id}'.",
            )
        assertion = form.get("client_assertion")
        if assertion is not None:
            if secret is not None:
                raise IdentityError(
                    400,
                    "invalid_request",
                    9002313,
                    "Invalid request. Send either 'client_assertion' or 'client_secret', not both.",
                )
            return self._assertion_client(app, assertion, form.get("client_assertion_type", ""), request)
        if secret is None:
            raise IdentityError(
                401,
                "invalid_client",
                7000218,
                "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
            )
        if not hmac.compare_digest(secret.encode(), app.secret.encode()):
            raise IdentityError(
                401,
                "invalid_client",
                7000215,
                "Invalid client secret provided. Ensure the secret being sent in the request is the client "
                f"secret value, not the client secret ID, for a secret added to app '{client_id}'.",
            )
        return Client(app, "1")

    def _assertion_client(self, app: App, assertion: str, assertion_type: str, request: web.Request) -> Client:
        if assertion_type != JWT_BEARER:
            raise IdentityError(
                400,
                "invalid_request",
                9002313,
                f"Invalid request. 'client_assertion_type' must be '{JWT_BEARER}'.",
            )
        # The docs' aud is the token endpoint the assertion is sent to.
        tenants = {request.match_info["tenant"], self.store.tenant_id}
        audiences = {f"{origin(request)}/{tenant}/oauth2/v2.0/token" for tenant in tenants}
        certificates = self.directory.registration(app.client_id).certificates
        try:
            verify_assertion(assertion, app.client_id, audiences, certificates, time.time())
        except ClientAssertionError as exc:
            raise IdentityError(401, "invalid_client", exc.aadsts, exc.message) from exc
        return Client(app, "2")

    def _resource(self, scope: str, request: web.Request) -> str:
        scopes = [s for s in scope.split() if s.lower() not in RESERVED_SCOPES]
        if len(scopes) != 1 or not scopes[0].endswith("/.default"):
            raise IdentityError(
                400,
                "invalid_scope",
                1002012,
                f"The provided value for scope {scope} is not valid. Client credential flows must have a "
                "scope value with /.default suffixed to the resource identifier (application ID URI).",
            )
        resource = scopes[0][: -len("/.default")].rstrip("/")
        known = RESOURCES.get(resource.lower())
        if known is not None:
            return known
        # Entra ID's answer for a resource it does not know (a gateway's or an emulator's host, say).
        raise IdentityError(
            400,
            "invalid_resource",
            500011,
            f"The resource principal named {resource} was not found in the tenant named {self.store.tenant_id}.",
        )

    async def _client_credentials(self, request: web.Request, form: TokenForm, client: Client) -> dict[str, Any]:
        resource = self._resource(form.get("scope", ""), request)
        # Each resource's token carries the application permissions of that resource only.
        if resource in (VAULT_RESOURCE, MANAGEMENT):
            roles: list[str] = []  # Azure RBAC, not app roles, decides there
        elif resource == EXCHANGE_RESOURCE:
            roles = [r for r in client.app.roles if r in EXCHANGE_ROLES]
        else:
            roles = [r for r in client.app.roles if r not in EXCHANGE_ROLES]
        return {
            "token_type": "Bearer",
            "expires_in": TOKEN_LIFETIME_SECONDS,
            "ext_expires_in": TOKEN_LIFETIME_SECONDS,
            "access_token": self.issue(origin(request), resource, client.app, roles, client.azpacr),
        }

    async def token(self, request: web.Request) -> web.Response:
        self._tenant(request)
        form = {k: str(v) for k, v in (await request.post()).items()}
        client = self._client(form, request)
        grant = form.get("grant_type", "")
        handler = self.grants.get(grant)
        if handler is None:
            raise IdentityError(
                400,
                "unsupported_grant_type",
                70003,
                f"The app requested an unsupported grant type '{grant}'.",
            )
        body = await handler(request, form, client)
        return web.json_response(body, headers={"Cache-Control": "no-store, no-cache", "Pragma": "no-cache"})

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/{tenant}/v2.0/.well-known/openid-configuration", self.openid_configuration),
            web.get("/{tenant}/.well-known/openid-configuration", self.openid_configuration),
            web.get("/{tenant}/discovery/v2.0/keys", self.keys),
            web.post("/{tenant}/oauth2/v2.0/token", self.token),
        ]


def bearer_token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()
