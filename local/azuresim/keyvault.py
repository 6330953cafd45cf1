"""Key Vault secrets (REST API 7.x): get, set, list and list versions, with challenge-based auth.

An unauthenticated request gets 401 and ``WWW-Authenticate: Bearer authorization=..., resource=...``;
that is how the Azure SDK's challenge policy learns the tenant and the scope to ask for.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

from aiohttp import web

from .clock import Clock
from .errors import KeyVaultError
from .identity import VAULT_RESOURCE, Authority, TokenError, bearer_token, origin
from .store import SecretVersion, Store, new_secret_version

_NAME = re.compile(r"^[0-9a-zA-Z-]{1,127}$")
# 7.x and the date-named versions that followed them (azure-keyvault-secrets 4.12 sends 2026-04-01).
_API_VERSION = re.compile(r"^(7\.\d+(-preview)?|\d{4}-\d{2}-\d{2}(-preview)?)$")


def _epoch(value: datetime) -> int:
    return int(value.timestamp())


class KeyVault:
    def __init__(self, store: Store, clock: Clock, authority: Authority) -> None:
        self.store = store
        self.clock = clock
        self.authority = authority

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/secrets", self.list_secrets),
            web.get("/secrets/{name}/versions", self.list_versions),
            web.get("/secrets/{name}", self.get_secret),
            web.get("/secrets/{name}/", self.get_secret),
            web.get("/secrets/{name}/{version}", self.get_secret),
            web.put("/secrets/{name}", self.set_secret),
        ]

    # -- helpers --------------------------------------------------------------------------------
    def _authorize(self, request: web.Request) -> None:
        challenge = {
            "WWW-Authenticate": f'Bearer authorization="{origin(request)}/{self.store.tenant_id}", '
            f'resource="{VAULT_RESOURCE}"'
        }
        token = bearer_token(request)
        if token is None:
            raise KeyVaultError(401, "Unauthorized", "AKV10000: Request is missing a Bearer or PoP token.", challenge)
        try:
            self.authority.verify(token, {VAULT_RESOURCE, f"{VAULT_RESOURCE}/"})
        except TokenError as exc:
            raise KeyVaultError(401, "Unauthorized", f"AKV10022: {exc}", challenge) from exc
        if not _API_VERSION.match(request.query.get("api-version", "")):
            raise KeyVaultError(400, "BadParameter", "The request URI contains an invalid api-version.")

    def _name(self, request: web.Request) -> str:
        name = request.match_info["name"]
        if not _NAME.match(name):
            raise KeyVaultError(400, "BadParameter", f"The request URI contains an invalid name: {name}")
        return name

    def _versions(self, request: web.Request, name: str) -> list[SecretVersion]:
        versions = self.store.secrets.get(name.lower())
        if not versions:
            raise KeyVaultError(
                404,
                "SecretNotFound",
                f"A secret with (name/id) {name} was not found in this key vault. If you recently deleted "
                "this secret you may be able to recover it using the correct recovery command.",
            )
        return versions

    def _attributes(self, secret: SecretVersion) -> dict[str, Any]:
        attributes: dict[str, Any] = {
            "enabled": secret.enabled,
            "created": _epoch(secret.created),
            "updated": _epoch(secret.updated),
            "recoveryLevel": "Recoverable+Purgeable",
            "recoverableDays": 90,
        }
        if secret.not_before is not None:
            attributes["nbf"] = _epoch(secret.not_before)
        if secret.expires is not None:
            attributes["exp"] = _epoch(secret.expires)
        return attributes

    def _item(self, request: web.Request, secret: SecretVersion, with_version: bool) -> dict[str, Any]:
        secret_id = f"{origin(request)}/secrets/{secret.name}"
        item: dict[str, Any] = {
            "id": f"{secret_id}/{secret.version}" if with_version else secret_id,
            "attributes": self._attributes(secret),
        }
        if secret.content_type is not None:
            item["contentType"] = secret.content_type
        if secret.tags is not None:
            item["tags"] = secret.tags
        return item

    def _bundle(self, request: web.Request, secret: SecretVersion) -> dict[str, Any]:
        return {"value": secret.value, **self._item(request, secret, with_version=True)}

    # -- handlers -------------------------------------------------------------------------------
    async def get_secret(self, request: web.Request) -> web.Response:
        self._authorize(request)
        name = self._name(request)
        versions = self._versions(request, name)
        wanted = request.match_info.get("version", "")
        if wanted:
            secret = next((v for v in versions if v.version == wanted.lower()), None)
            if secret is None:
                raise KeyVaultError(
                    404,
                    "SecretNotFound",
                    f"A secret with (name/id) {name}/{wanted} was not found in this key vault.",
                )
        else:
            secret = versions[-1]
        if not secret.enabled:
            raise KeyVaultError(403, "Forbidden", "Operation get is not allowed on a disabled secret.")
        return web.json_response(self._bundle(request, secret))

    async def set_secret(self, request: web.Request) -> web.Response:
        self._authorize(request)
        name = self._name(request)
        try:
            body = json.loads(await request.read() or b"null")
        except ValueError as exc:
            raise KeyVaultError(400, "BadParameter", "The request body is not valid JSON.") from exc
        if not isinstance(body, dict) or not isinstance(body.get("value"), str):
            raise KeyVaultError(400, "BadParameter", "Property 'value' is required and must be a string.")
        attributes = body.get("attributes") or {}
        tags = body.get("tags")
        now = self.clock.now()
        existing = self.store.secrets.setdefault(name.lower(), [])
        secret = SecretVersion(
            name=existing[0].name if existing else name,
            version=new_secret_version(),
            value=body["value"],
            content_type=body.get("contentType"),
            tags={str(k): str(v) for k, v in tags.items()} if isinstance(tags, dict) else None,
            enabled=bool(attributes.get("enabled", True)),
            created=now,
            updated=now,
            not_before=datetime.fromtimestamp(attributes["nbf"], now.tzinfo) if "nbf" in attributes else None,
            expires=datetime.fromtimestamp(attributes["exp"], now.tzinfo) if "exp" in attributes else None,
        )
        existing.append(secret)
        return web.json_response(self._bundle(request, secret))

    async def list_secrets(self, request: web.Request) -> web.Response:
        self._authorize(request)
        items = [self._item(request, versions[-1], with_version=False) for versions in self.store.secrets.values()]
        return web.json_response({"value": items, "nextLink": None})

    async def list_versions(self, request: web.Request) -> web.Response:
        self._authorize(request)
        name = self._name(request)
        items = [self._item(request, v, with_version=True) for v in self._versions(request, name)]
        return web.json_response({"value": items, "nextLink": None})
