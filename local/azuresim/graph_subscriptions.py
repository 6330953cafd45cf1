"""Graph ``/subscriptions`` for Outlook messages (subscription-post-subscriptions, subscription-update,
subscription-delete, subscription-reauthorize).

Lifetime: at most 10,080 minutes. The docs say requests beyond the maximum "will fail" in the future;
this simulator rejects them now (400), so an app that relies on silent capping finds out locally.
Under 45 minutes is raised to 45 minutes, as documented.
"""

from __future__ import annotations

import ipaddress
import math
import re
import time
import uuid
from collections import deque
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from .clock import Clock, graph_datetime_7, parse_datetime
from .delivery import Delivery
from .errors import GraphError
from .eventgrid import is_eventgrid_url
from .graph import GraphRequest, GraphRouter, send_json, split_path
from .notifications import Notifier
from .store import Store, Subscription

MAX_LIFETIME = timedelta(minutes=10080)
MIN_LIFETIME = timedelta(minutes=45)
MAX_CLIENT_STATE = 128
CHANGE_TYPES = {"created", "updated", "deleted"}
READ_ROLES = ("Mail.Read", "Mail.ReadWrite", "Mail.ReadBasic", "Mail.ReadBasic.All")
UPDATABLE = {"expirationDateTime", "notificationUrl"}


WRITE_WINDOW_SECONDS = 20.0


def _is_loopback(host: str | None) -> bool:
    if host is None:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_url(url: Any, prop: str) -> str:
    if not isinstance(url, str) or not url:
        raise GraphError(400, "InvalidRequest", f"Subscription property '{prop}' must be a non-empty string.")
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.netloc:
        raise GraphError(400, "InvalidRequest", f"The {prop} '{url}' is not a valid absolute URL.")
    # Graph requires https; the simulator also accepts http on loopback for the local stack.
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise GraphError(400, "InvalidRequest", f"The {prop} must be an https URL.")
    return url


class Subscriptions:
    def __init__(self, store: Store, clock: Clock, delivery: Delivery, notifier: Notifier) -> None:
        self.store = store
        self.clock = clock
        self.delivery = delivery
        self.notifier = notifier
        self._writes: dict[str, deque[float]] = {}  # app id → times of its recent writes (real time)

    def register(self, router: GraphRouter) -> None:
        router.add("POST", "subscriptions", self.create)
        router.add("GET", "subscriptions", self.list)
        router.add("GET", "subscriptions/{subscription}", self.get)
        router.add("PATCH", "subscriptions/{subscription}", self.update)
        router.add("DELETE", "subscriptions/{subscription}", self.delete)
        router.add("POST", "subscriptions/{subscription}/reauthorize", self.reauthorize)

    # -- helpers --------------------------------------------------------------------------------
    def describe(self, sub: Subscription, g: GraphRequest | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": sub.id,
            "resource": sub.resource,
            "applicationId": sub.app_id,
            "changeType": sub.change_type,
            "clientState": sub.client_state,
            "notificationUrl": sub.notification_url,
            "notificationQueryOptions": None,
            "lifecycleNotificationUrl": sub.lifecycle_url,
            "expirationDateTime": graph_datetime_7(sub.expiration),
            "creatorId": sub.creator_id,
            "includeResourceData": False,
            "latestSupportedTlsVersion": "v1_2",
            "encryptionCertificate": None,
            "encryptionCertificateId": None,
            "notificationUrlAppId": None,
            "notificationContentType": "application/json",
        }
        if g is not None:
            body = {"@odata.context": f"{g.base}/$metadata#subscriptions/$entity", **body}
        return body

    @staticmethod
    def _visible(sub: Subscription, g: GraphRequest) -> bool:
        """subscription-list: this app's subscriptions; with a delegated token, those for the signed-in user only."""
        return sub.app_id == g.app_id and (not g.delegated or sub.creator_id == g.claims.get("oid"))

    def _find(self, g: GraphRequest) -> Subscription:
        sub_id = g.params["subscription"]
        for sub in self.notifier.live_subscriptions():
            if sub.id == sub_id and self._visible(sub, g):
                return sub
        raise GraphError(404, "ResourceNotFound", f"The object was not found. Subscription '{sub_id}' not found.")

    def _expiry(self, value: Any) -> datetime:
        if not isinstance(value, str):
            raise GraphError(400, "InvalidRequest", "expirationDateTime is required and must be a string.")
        try:
            requested = parse_datetime(value)
        except ValueError as exc:
            raise GraphError(400, "InvalidRequest", f"Invalid expirationDateTime '{value}'.") from exc
        now = self.clock.now()
        cap = self.store.options.subscription_max_minutes
        limit = timedelta(minutes=cap) if cap else MAX_LIFETIME
        if requested - now > limit:
            raise GraphError(
                400,
                "ExtensionError",
                f"Subscription expiration can only be {int(limit.total_seconds() // 60)} minutes in the future.",
            )
        return max(requested, now + MIN_LIFETIME)

    def _resource(self, resource: Any) -> tuple[str, str | None]:
        """``users/{id}/messages`` or ``users/{id}/mailFolders/{id}/messages`` -> mailbox id, folder id."""
        if not isinstance(resource, str) or not resource.strip():
            raise GraphError(400, "InvalidRequest", "Subscription property 'resource' is required.")
        if re.match(r"^\s*https?://", resource):
            raise GraphError(400, "InvalidRequest", "The resource must be relative, without the base URL.")
        # Query options ($filter, $select) are accepted but not applied by this simulator.
        segments = split_path(resource.split("?", 1)[0])
        lowered = [s.lower() for s in segments]
        if lowered and lowered[0] == "me":
            raise GraphError(400, "InvalidRequest", "/me request is only valid with delegated authentication flow.")
        if len(segments) == 3 and lowered[0] == "users" and lowered[2] == "messages":
            folder_key = None
        elif len(segments) == 5 and lowered[0] == "users" and lowered[2] == "mailfolders" and lowered[4] == "messages":
            folder_key = segments[3]
        else:
            raise GraphError(400, "InvalidRequest", f"The resource '{resource}' is not supported for subscriptions.")
        mailbox = self.store.find_mailbox(segments[1])
        if mailbox is None:
            raise GraphError(
                404,
                "ExtensionError",
                f"Operation: Create; Exception: [Status Code: NotFound; Reason: The requested user "
                f"'{segments[1]}' is invalid.]",
            )
        if folder_key is None:
            return mailbox.id, None
        folder = mailbox.find_folder(folder_key)
        if folder is None:
            raise GraphError(
                404,
                "ExtensionError",
                "Operation: Create; Exception: [Status Code: NotFound; Reason: The specified object was not "
                "found in the store.]",
            )
        return mailbox.id, folder.id

    async def _validate(self, url: str) -> None:
        problem = await self.delivery.validate_endpoint(url)
        if problem is not None:
            raise GraphError(400, "InvalidRequest", problem)

    def reset_write_windows(self) -> None:
        """A new limit starts with empty windows (a test sees its own writes only)."""
        self._writes.clear()

    def _count_write(self, g: GraphRequest) -> None:
        """Graph's subscription limit (POST/PATCH/DELETE, 500 per 20 s per app and tenant; graph_facts §6):
        beyond it, 429 with Retry-After until the oldest write in the window leaves it. Real time, as
        throttling windows are."""
        now = time.monotonic()
        window = self._writes.setdefault(g.app_id, deque())
        while window and now - window[0] >= WRITE_WINDOW_SECONDS:
            window.popleft()
        if len(window) >= self.store.options.subscription_writes_per_20s:
            wait = max(1, math.ceil(WRITE_WINDOW_SECONDS - (now - window[0])))
            raise GraphError(
                429,
                "TooManyRequests",
                "Too many requests. The subscription write limit of this application has been reached.",
                {"Retry-After": str(wait)},
            )
        window.append(now)

    # -- handlers -------------------------------------------------------------------------------
    async def create(self, g: GraphRequest) -> web.StreamResponse:
        g.require_role(*READ_ROLES)
        self._count_write(g)
        body = await g.json_object()
        for prop in ("changeType", "notificationUrl", "resource", "expirationDateTime"):
            if body.get(prop) in (None, ""):
                raise GraphError(400, "InvalidRequest", f"Subscription property '{prop}' is required.")
        change_type = body["changeType"]
        parts = [p.strip().lower() for p in str(change_type).split(",")]
        if not isinstance(change_type, str) or any(p not in CHANGE_TYPES for p in parts):
            raise GraphError(400, "InvalidRequest", f"Invalid 'changeType' attribute: '{change_type}'.")
        client_state = body.get("clientState")
        if client_state is not None and (not isinstance(client_state, str) or len(client_state) > MAX_CLIENT_STATE):
            raise GraphError(
                400,
                "InvalidRequest",
                f"clientState must be a string of at most {MAX_CLIENT_STATE} characters.",
            )
        if body.get("includeResourceData"):
            raise GraphError(
                400,
                "InvalidRequest",
                "includeResourceData (rich notifications) is not supported by the simulator.",
            )
        eventgrid = is_eventgrid_url(body["notificationUrl"])
        lifecycle_url = body.get("lifecycleNotificationUrl")
        if eventgrid:
            notification_url = str(body["notificationUrl"])
        else:
            notification_url = check_url(body["notificationUrl"], "notificationUrl")
            if lifecycle_url is not None:
                lifecycle_url = check_url(lifecycle_url, "lifecycleNotificationUrl")
        mailbox_id, folder_id = self._resource(g.own_resource(str(body["resource"])))
        if g.delegated and mailbox_id != g.claims.get("oid"):
            # "Delegated permissions can subscribe only to the signed-in user's own mailbox."
            raise GraphError(
                403,
                "ExtensionError",
                "Operation: Create; Exception: [Status Code: Forbidden; Reason: Access is denied. Check credentials "
                "and try again.]",
            )
        expiration = self._expiry(body["expirationDateTime"])
        for sub in self.notifier.live_subscriptions():
            same_types = sub.change_types == set(parts)
            if sub.app_id == g.app_id and same_types and (sub.mailbox_id, sub.folder_id) == (mailbox_id, folder_id):
                raise GraphError(
                    409, "Conflict", f"Subscription Id {sub.id} already exists for the requested combination"
                )
        if eventgrid:
            # No validation handshake: Graph creates (or reuses) the partner topic instead.
            self.notifier.eventgrid.bind(notification_url, lifecycle_url, g.app_id, self.store.tenant_id)
        else:
            await self._validate(notification_url)
            if lifecycle_url is not None:
                await self._validate(lifecycle_url)
        sub = Subscription(
            id=str(uuid.uuid4()),
            app_id=g.app_id,
            creator_id=str(g.claims.get("oid", "")),
            resource=body["resource"],
            mailbox_id=mailbox_id,
            folder_id=folder_id,
            change_type=change_type,
            client_state=client_state,
            notification_url=notification_url,
            lifecycle_url=lifecycle_url,
            expiration=expiration,
            immutable_ids=g.immutable,
        )
        self.store.subscriptions[sub.id] = sub
        return await send_json(g.request, self.describe(sub, g), status=201, headers=g.headers())

    async def list(self, g: GraphRequest) -> web.StreamResponse:
        subs = [self.describe(s) for s in self.notifier.live_subscriptions() if self._visible(s, g)]
        return await send_json(g.request, {"@odata.context": f"{g.base}/$metadata#subscriptions", "value": subs})

    async def get(self, g: GraphRequest) -> web.StreamResponse:
        return await send_json(g.request, self.describe(self._find(g), g))

    async def update(self, g: GraphRequest) -> web.StreamResponse:
        g.require_role(*READ_ROLES)
        self._count_write(g)
        sub = self._find(g)
        body = await g.json_object()
        extra = sorted(set(body) - UPDATABLE - {"@odata.type"})
        if extra:
            raise GraphError(
                400,
                "InvalidRequest",
                f"Only expirationDateTime and notificationUrl can be updated, not {extra}.",
            )
        if not UPDATABLE.intersection(body):
            raise GraphError(
                400,
                "InvalidRequest",
                "The request body must contain either expirationDateTime or notificationUrl.",
            )
        expiration = self._expiry(body["expirationDateTime"]) if "expirationDateTime" in body else None
        if "notificationUrl" in body and is_eventgrid_url(body["notificationUrl"]):
            url = str(body["notificationUrl"])
            self.notifier.eventgrid.bind(url, None, g.app_id, self.store.tenant_id)
        elif "notificationUrl" in body:
            url = check_url(body["notificationUrl"], "notificationUrl")
            if url != sub.notification_url:
                await self._validate(url)
            sub.notification_url = url
        if expiration is not None:
            sub.expiration = expiration
        return await send_json(g.request, self.describe(sub, g))

    async def delete(self, g: GraphRequest) -> web.StreamResponse:
        self._count_write(g)
        sub = self._find(g)
        self.store.subscriptions.pop(sub.id, None)
        return web.Response(status=204)

    async def reauthorize(self, g: GraphRequest) -> web.StreamResponse:
        g.require_role(*READ_ROLES)
        self._find(g)
        return web.Response(status=204)
