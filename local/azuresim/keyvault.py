"""Key Vault secrets (REST API 7.x): get, set, list and list versions, delete with soft delete
(``/deletedsecrets``: get, list, recover, purge), with challenge-based auth.

An unauthenticated request gets 401 and ``WWW-Authenticate: Bearer authorization=..., resource=...``;
that is how the Azure SDK's challenge policy learns the tenant and the scope to ask for.

Lists are paged as Key Vault pages them: ``maxresults`` (1 to 25, default 25) per page and a
``nextLink`` with an opaque ``$skiptoken``. A deleted secret keeps its name for 90 days of simulated
time (``scheduledPurgeDate``) unless purged or recovered. The backing secret of a certificate
(``managed``) cannot be set or deleted directly.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote, urlencode

from aiohttp import web

from . import jose
from .clock import Clock
from .errors import KeyVaultError
from .identity import VAULT_RESOURCE, Authority, TokenError, bearer_token, origin
from .store import SecretVersion, Store, new_secret_version

_NAME = re.compile(r"^[0-9a-zA-Z-]{1,127}$")
# 7.x and the date-named versions that followed them (azure-keyvault-secrets 4.12 sends 2026-04-01).
_API_VERSION = re.compile(r"^(7\.\d+(-preview)?|\d{4}-\d{2}-\d{2}(-preview)?)$")
MAX_RESULTS = 25
RECOVERABLE_DAYS = 90


def epoch(value: datetime) -> int:
    return int(value.timestamp())


@dataclass
class DeletedSecret:
    versions: list[SecretVersion]
    deleted: datetime
    scheduled_purge: datetime


def _not_found(name: str) -> KeyVaultError:
    return KeyVaultError(
        404,
        "SecretNotFound",
        f"A secret with (name/id) {name} was not found in this key vault. If you recently deleted "
        "this secret you may be able to recover it using the correct recovery command.",
    )


def _managed(operation: str) -> KeyVaultError:
    return KeyVaultError(
        403, "Forbidden", f'Operation "{operation}" is not allowed as this object\'s lifetime is managed by Key Vault.'
    )


class KeyVault:
    def __init__(self, store: Store, clock: Clock, authority: Authority) -> None:
        self.store = store
        self.clock = clock
        self.authority = authority
        self._deleted: dict[str, DeletedSecret] = {}  # by lower-case name

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/secrets", self.list_secrets),
            web.get("/secrets/{name}/versions", self.list_versions),
            web.get("/secrets/{name}", self.get_secret),
            web.get("/secrets/{name}/", self.get_secret),
            web.get("/secrets/{name}/{version}", self.get_secret),
            web.put("/secrets/{name}", self.set_secret),
            web.delete("/secrets/{name}", self.delete_secret),
            web.get("/deletedsecrets", self.list_deleted),
            web.get("/deletedsecrets/{name}", self.get_deleted),
            web.delete("/deletedsecrets/{name}", self.purge_deleted),
            web.post("/deletedsecrets/{name}/recover", self.recover_deleted),
        ]

    # -- helpers (also used by the certificates module) -------------------------------------------
    def authorize(self, request: web.Request) -> None:
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

    def name(self, request: web.Request) -> str:
        name = request.match_info["name"]
        if not _NAME.match(name):
            raise KeyVaultError(400, "BadParameter", f"The request URI contains an invalid name: {name}")
        return name

    def deleted(self, name: str) -> DeletedSecret | None:
        """A soft-deleted secret, forgetting those whose purge date has passed."""
        now = self.clock.now()
        for key in [k for k, d in self._deleted.items() if d.scheduled_purge <= now]:
            del self._deleted[key]
        return self._deleted.get(name.lower())

    def in_recoverable_state(self, name: str) -> KeyVaultError:
        return KeyVaultError(
            409,
            "Conflict",
            f"Secret {name} is currently in a deleted but recoverable state, and its name cannot be reused; "
            "in this state, the secret can only be recovered or purged.",
        )

    def page(self, request: web.Request, items: list[dict[str, Any]]) -> dict[str, Any]:
        raw = request.query.get("maxresults")
        try:
            size = int(raw) if raw is not None else MAX_RESULTS
        except ValueError:
            size = 0
        if not 1 <= size <= MAX_RESULTS:
            raise KeyVaultError(400, "BadParameter", f"invalid maxresults: it must be between 1 and {MAX_RESULTS}.")
        token = request.query.get("$skiptoken")
        try:
            offset = int(json.loads(jose.b64url_decode(token))["o"]) if token else 0
        except (ValueError, KeyError, TypeError) as exc:
            raise KeyVaultError(400, "BadParameter", "The $skiptoken is not valid.") from exc
        next_link = None
        if offset + size < len(items):
            query = {
                "api-version": request.query["api-version"],
                "$skiptoken": jose.b64url(json.dumps({"o": offset + size}).encode()),
                "maxresults": str(size),
            }
            next_link = f"{origin(request)}{quote(request.path)}?{urlencode(query, safe='$')}"
        return {"value": items[offset : offset + size], "nextLink": next_link}

    def _versions(self, name: str) -> list[SecretVersion]:
        versions = self.store.secrets.get(name.lower())
        if not versions:
            raise _not_found(name)
        return versions

    def _attributes(self, secret: SecretVersion) -> dict[str, Any]:
        attributes: dict[str, Any] = {
            "enabled": secret.enabled,
            "created": epoch(secret.created),
            "updated": epoch(secret.updated),
            "recoveryLevel": "Recoverable+Purgeable",
            "recoverableDays": RECOVERABLE_DAYS,
        }
        if secret.not_before is not None:
            attributes["nbf"] = epoch(secret.not_before)
        if secret.expires is not None:
            attributes["exp"] = epoch(secret.expires)
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
        if secret.managed:
            item["managed"] = True
        return item

    def _bundle(self, request: web.Request, secret: SecretVersion) -> dict[str, Any]:
        bundle = {"value": secret.value, **self._item(request, secret, with_version=True)}
        if secret.managed:
            bundle["kid"] = f"{origin(request)}/keys/{secret.name}/{secret.version}"
        return bundle

    def _deleted_item(self, request: web.Request, deleted: DeletedSecret, with_version: bool) -> dict[str, Any]:
        latest = deleted.versions[-1]
        return {
            "recoveryId": f"{origin(request)}/deletedsecrets/{latest.name}",
            "deletedDate": epoch(deleted.deleted),
            "scheduledPurgeDate": epoch(deleted.scheduled_purge),
            **self._item(request, latest, with_version),
        }

    # -- handlers -------------------------------------------------------------------------------
    async def get_secret(self, request: web.Request) -> web.Response:
        self.authorize(request)
        name = self.name(request)
        versions = self._versions(name)
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
        self.authorize(request)
        name = self.name(request)
        try:
            body = json.loads(await request.read() or b"null")
        except ValueError as exc:
            raise KeyVaultError(400, "BadParameter", "The request body is not valid JSON.") from exc
        if not isinstance(body, dict) or not isinstance(body.get("value"), str):
            raise KeyVaultError(400, "BadParameter", "Property 'value' is required and must be a string.")
        if self.deleted(name) is not None:
            raise self.in_recoverable_state(name)
        attributes = body.get("attributes") or {}
        tags = body.get("tags")
        now = self.clock.now()
        existing = self.store.secrets.setdefault(name.lower(), [])
        if existing and existing[-1].managed:
            raise _managed("set")
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
        self.authorize(request)
        latest = sorted(
            (versions[-1] for versions in self.store.secrets.values() if versions), key=lambda v: v.name.lower()
        )
        return web.json_response(self.page(request, [self._item(request, v, with_version=False) for v in latest]))

    async def list_versions(self, request: web.Request) -> web.Response:
        self.authorize(request)
        name = self.name(request)
        items = [self._item(request, v, with_version=True) for v in self._versions(name)]
        return web.json_response(self.page(request, items))

    async def delete_secret(self, request: web.Request) -> web.Response:
        self.authorize(request)
        name = self.name(request)
        versions = self._versions(name)
        if versions[-1].managed:
            raise _managed("delete")
        now = self.clock.now()
        deleted = DeletedSecret(versions, now, now + timedelta(days=RECOVERABLE_DAYS))
        del self.store.secrets[name.lower()]
        self._deleted[name.lower()] = deleted
        return web.json_response(self._deleted_item(request, deleted, with_version=True))

    def _deleted_or_404(self, name: str) -> DeletedSecret:
        deleted = self.deleted(name)
        if deleted is None:
            raise KeyVaultError(404, "SecretNotFound", f"Deleted Secret not found: {name}")
        return deleted

    async def get_deleted(self, request: web.Request) -> web.Response:
        self.authorize(request)
        return web.json_response(self._deleted_item(request, self._deleted_or_404(self.name(request)), True))

    async def list_deleted(self, request: web.Request) -> web.Response:
        self.authorize(request)
        self.deleted("")  # drop those past their purge date
        rows = sorted(self._deleted.values(), key=lambda d: d.versions[-1].name.lower())
        return web.json_response(self.page(request, [self._deleted_item(request, d, False) for d in rows]))

    async def purge_deleted(self, request: web.Request) -> web.Response:
        self.authorize(request)
        name = self.name(request)
        self._deleted_or_404(name)
        del self._deleted[name.lower()]
        return web.Response(status=204)

    async def recover_deleted(self, request: web.Request) -> web.Response:
        self.authorize(request)
        name = self.name(request)
        deleted = self._deleted_or_404(name)
        del self._deleted[name.lower()]
        self.store.secrets[name.lower()] = deleted.versions
        return web.json_response(self._item(request, deleted.versions[-1], with_version=True))
