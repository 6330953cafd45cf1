"""Microsoft identity platform v2.0, the part an app-only daemon uses: OpenID discovery, signing
keys and the token endpoint with the client-credentials grant. Tokens are RS256 JWTs signed with a
key made at start-up; Graph and Key Vault check them with :meth:`Authority.verify`.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import time
import uuid
from typing import Any

from aiohttp import web
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from .errors import IdentityError
from .store import App, Store

GRAPH_RESOURCE = "https://graph.microsoft.com"
GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"
VAULT_RESOURCE = "https://vault.azure.net"
TOKEN_LIFETIME_SECONDS = 3599
CLOCK_SKEW_SECONDS = 300
# MSAL may add these OpenID scopes; they carry no resource and a client-credentials grant ignores them.
RESERVED_SCOPES = {"openid", "profile", "offline_access", "email"}


def origin(request: web.Request) -> str:
    """The simulator's base URL as this caller reached it (``127.0.0.1`` or ``localhost``)."""
    return f"https://{request.host}"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenError(Exception):
    """Why a bearer token was refused; the message is safe to show (it never holds the token)."""


class Authority:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = uuid.uuid4().hex

    # -- tokens ---------------------------------------------------------------------------------
    def issue(self, issuer_origin: str, audience: str, app: App, roles: list[str]) -> str:
        now = int(time.time())
        tenant = self.store.tenant_id
        claims: dict[str, Any] = {
            "aud": audience,
            "iss": f"{issuer_origin}/{tenant}/v2.0",
            "iat": now,
            "nbf": now,
            "exp": now + TOKEN_LIFETIME_SECONDS,
            "azp": app.client_id,
            "azpacr": "1",
            "appid": app.client_id,
            "idtyp": "app",
            "oid": app.service_principal_id,
            "sub": app.service_principal_id,
            "tid": tenant,
            "uti": _b64url(uuid.uuid4().bytes),
            "ver": "2.0",
        }
        if roles:
            claims["roles"] = roles
        header = {"typ": "JWT", "alg": "RS256", "kid": self.kid}
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        signature = self._key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{_b64url(signature)}"

    def verify(self, token: str, audiences: set[str]) -> dict[str, Any]:
        parts = token.split(".")
        if len(parts) != 3:
            raise TokenError("IDX14100: JWT is not well formed.")
        try:
            header = json.loads(_b64url_decode(parts[0]))
            claims: dict[str, Any] = json.loads(_b64url_decode(parts[1]))
            signature = _b64url_decode(parts[2])
        except (ValueError, binascii.Error) as exc:
            raise TokenError("IDX14100: JWT is not well formed.") from exc
        if header.get("alg") != "RS256" or header.get("kid") != self.kid:
            raise TokenError("Access token validation failure.")
        try:
            self._key.public_key().verify(
                signature, f"{parts[0]}.{parts[1]}".encode(), padding.PKCS1v15(), hashes.SHA256()
            )
        except InvalidSignature as exc:
            raise TokenError("Access token validation failure.") from exc
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
        return {"keys": [{"kty": "RSA", "use": "sig", "kid": self.kid, "n": _b64url(n), "e": _b64url(e)}]}

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

    def _client(self, form: dict[str, str], request: web.Request) -> App:
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
        return app

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
        if resource in (GRAPH_APP_ID, GRAPH_RESOURCE):
            return GRAPH_RESOURCE
        if resource == VAULT_RESOURCE or resource == origin(request):
            return resource
        raise IdentityError(
            400,
            "invalid_resource",
            500011,
            f"The resource principal named {resource} was not found in the tenant named {self.store.tenant_id}.",
        )

    async def token(self, request: web.Request) -> web.Response:
        self._tenant(request)
        form = {k: str(v) for k, v in (await request.post()).items()}
        app = self._client(form, request)
        grant = form.get("grant_type", "")
        if grant != "client_credentials":
            raise IdentityError(
                400,
                "unsupported_grant_type",
                70003,
                f"The app requested an unsupported grant type '{grant}'.",
            )
        resource = self._resource(form.get("scope", ""), request)
        roles = list(app.roles) if resource != VAULT_RESOURCE else []
        token = self.issue(origin(request), resource, app, roles)
        return web.json_response(
            {
                "token_type": "Bearer",
                "expires_in": TOKEN_LIFETIME_SECONDS,
                "ext_expires_in": TOKEN_LIFETIME_SECONDS,
                "access_token": token,
            },
            headers={"Cache-Control": "no-store, no-cache", "Pragma": "no-cache"},
        )

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
