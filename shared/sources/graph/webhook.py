"""The two Graph webhooks: validation handshake, then verify and enqueue, then 202.

This module is on the cold-start path of the validation handshake: it imports only the standard
library, azure.functions and the app's light modules; Key Vault is reached lazily, once per process.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import azure.functions as func

from ...errors import InvalidNotification, SubscriptionNotYetKnown
from ...logs import log_event
from ...pipeline.layout import message_key
from ...settings import NO_MICROSOFT_365, MailboxFolder, Settings
from .clientstate import verify_client_state
from .known_subscriptions import Holding, now
from .messages import LIFECYCLE_EVENTS, ChangeMessage, LifecycleMessage

logger = logging.getLogger(__name__)

MAX_VALIDATION_TOKEN = 4096
MAX_BODY_BYTES = 4 * 1024 * 1024
# Graph's ids and resource paths are a few hundred characters; a longer field is not Graph's, and would
# make a queue message beyond Storage's 64 KiB, which the output binding then fails to write (a 500).
MAX_FIELD_CHARS = 2048
# Control characters, line and paragraph separators and lone surrogates: never in Graph's ids, and they
# would split a log line or fail to encode.
_NOT_TEXT = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
CHANGE_TYPES = frozenset({"created", "updated", "deleted"})
NO_GRAPH = f"{NO_MICROSOFT_365}: this deployment takes no Graph notifications"
NO_WEBHOOK = "GRAPH_DELIVERY=eventgrid: Graph's notifications come through Event Grid, never to this webhook"

SecretSource = Callable[[], Awaitable[bytes]]
# (folder key, subscription id, when the call arrived) → whether that is the app's subscription for the folder
# (known_subscriptions.py).
Holds = Callable[[str, str, float], Awaitable[Holding]]


@dataclass(frozen=True)
class Trust:
    """What an item is checked against: our tenant and folders, the clientState key, our subscriptions (as
    read since `arrived`, when the call came in: known_subscriptions.now())."""

    settings: Settings
    secret: bytes
    holds: Holds
    arrived: float


def handshake(params: Mapping[str, str]) -> func.HttpResponse | None:
    """Graph's validation request: echo the (already URL-decoded) token as text/plain, 200."""
    token = params.get("validationToken")
    if token is None:
        return None
    if len(token) > MAX_VALIDATION_TOKEN:
        return _refuse("validationToken is too long")
    # nosniff: the echoed token is attacker-chosen; never let a browser render it as HTML.
    return func.HttpResponse(
        token,
        status_code=200,
        mimetype="text/plain",
        charset="utf-8",
        headers={"X-Content-Type-Options": "nosniff"},
    )


def _refuse(reason: str) -> func.HttpResponse:
    return func.HttpResponse(reason, status_code=400, mimetype="text/plain", charset="utf-8")


def load_json(body: bytes) -> Any:
    """The JSON of a notification body (webhook call or Event Grid event), or InvalidNotification."""
    if len(body) > MAX_BODY_BYTES:
        raise InvalidNotification("body is too large")
    try:
        return json.loads(body, object_pairs_hook=_unique_keys)
    except _DuplicateKey as exc:
        raise InvalidNotification(f"body has a duplicate key {str(exc)[:64]!r}") from None
    except RecursionError:
        raise InvalidNotification("body is nested too deeply") from None
    except (ValueError, UnicodeDecodeError):
        raise InvalidNotification("body is not JSON") from None


def parse_collection(body: bytes) -> list[dict[str, Any]]:
    """The `value` items of a changeNotificationCollection, or InvalidNotification."""
    data = load_json(body)
    items = data.get("value") if isinstance(data, dict) else None
    if not isinstance(items, list) or not items:
        raise InvalidNotification("body has no 'value' list of notifications")
    if not all(isinstance(item, dict) for item in items):
        raise InvalidNotification("a notification is not an object")
    return items


class _DuplicateKey(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose names are unique (RFC 8259 says they SHOULD be; Graph's are): with a name twice,
    which value counts depends on the parser, so a body that has one is refused whole."""
    data = dict(pairs)
    if len(data) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return data


def _text_field(item: Mapping[str, Any], name: str, index: int, label: str = "") -> str:
    value = item.get(name)
    name = label or name
    if not isinstance(value, str) or not value:
        raise InvalidNotification(f"notification {index} lacks {name}")
    if len(value) > MAX_FIELD_CHARS:
        raise InvalidNotification(f"notification {index} has a {name} longer than {MAX_FIELD_CHARS} characters")
    if _NOT_TEXT.search(value):
        raise InvalidNotification(f"notification {index} has control characters in {name}")
    return value


def _common_fields(item: Mapping[str, Any], index: int) -> str:
    """What every item carries (changeNotification: tenantId and subscriptionId are required); its subscription id."""
    _text_field(item, "tenantId", index)
    return _text_field(item, "subscriptionId", index)


@dataclass
class Verdict:
    """What a webhook call accepted (queue message bodies) and how many items it refused."""

    messages: list[str] = field(default_factory=list)
    refused: int = 0


async def _authentic(item: Mapping[str, Any], subscription_id: str, trust: Trust) -> tuple[MailboxFolder | None, str]:
    """The item's mailbox folder if it is ours, else None and why not. The cheap checks come first: only
    an item whose clientState verifies can cost a state read (for a subscription id not seen yet)."""
    if str(item["tenantId"]).lower() != trust.settings.tenant_id.lower():
        return None, "other tenant"
    folder_key = verify_client_state(trust.secret, item.get("clientState"))
    if folder_key is None:
        return None, "clientState mismatch"
    folder = trust.settings.folder_by_key(folder_key)
    if folder is None:
        return None, "mailbox folder no longer configured"
    held = await trust.holds(folder.key, subscription_id, trust.arrived)
    if held is Holding.UNSURE:
        raise SubscriptionNotYetKnown(f"subscription {subscription_id[:64]} is not yet known for {folder}")
    if held is Holding.NO:
        return None, "not the app's subscription for this folder"
    return folder, ""


async def verify_changes(items: list[dict[str, Any]], trust: Trust) -> Verdict:
    # Check every item's shape first: a malformed body is refused whole, with nothing enqueued.
    parsed = []
    for index, item in enumerate(items):
        subscription_id = _common_fields(item, index)
        change_type = _text_field(item, "changeType", index)
        if change_type.lower() not in CHANGE_TYPES:
            raise InvalidNotification(f"notification {index} has unknown changeType {change_type[:64]!r}")
        resource = _text_field(item, "resource", index)
        data = item.get("resourceData")
        if not isinstance(data, dict):
            raise InvalidNotification(f"notification {index} lacks resourceData.id")
        message_id = _text_field(data, "id", index, "resourceData.id")
        parsed.append((item, subscription_id, change_type, resource, message_id))
    now = _now()
    verdict = Verdict()
    for item, subscription_id, change_type, resource, message_id in parsed:
        folder, why = await _authentic(item, subscription_id, trust)
        if folder is None:
            verdict.refused += 1
            log_event(
                logger,
                "notification.refused",
                logging.WARNING,
                kind="notifications",
                subscription=subscription_id,
                reason=why,
            )
            continue
        verdict.messages.append(
            ChangeMessage(folder.key, subscription_id, change_type, message_id, resource, now).to_json()
        )
        log_event(
            logger,
            "notification.accepted",
            kind="notifications",
            mailbox=folder.mailbox,
            folder=folder.folder,
            subscription=subscription_id,
            message_key=message_key(message_id),
            change_type=change_type,
        )
    return verdict


async def verify_lifecycle(items: list[dict[str, Any]], trust: Trust) -> Verdict:
    parsed = []
    for index, item in enumerate(items):
        subscription_id = _common_fields(item, index)
        event = _text_field(item, "lifecycleEvent", index)
        if event not in LIFECYCLE_EVENTS:
            raise InvalidNotification(f"notification {index} has unknown lifecycleEvent {event[:64]!r}")
        parsed.append((item, subscription_id, event))
    now = _now()
    verdict = Verdict()
    for item, subscription_id, event in parsed:
        folder, why = await _authentic(item, subscription_id, trust)
        if folder is None:
            verdict.refused += 1
            log_event(
                logger,
                "notification.refused",
                logging.WARNING,
                kind="lifecycle",
                lifecycle=event,
                subscription=subscription_id,
                reason=why,
            )
            continue
        verdict.messages.append(LifecycleMessage(folder.key, subscription_id, event, now).to_json())
        log_event(
            logger,
            "lifecycle.accepted",
            mailbox=folder.mailbox,
            folder=folder.folder,
            subscription=subscription_id,
            lifecycle=event,
        )
    return verdict


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


Verifier = Callable[[list[dict[str, Any]], Trust], Awaitable[Verdict]]


async def receive(
    req: func.HttpRequest,
    out: func.Out[list[str]],
    verifier: Verifier,
    settings: Settings,
    secret: SecretSource,
    holds: Holds,
    kind: str,
) -> func.HttpResponse:
    """The whole webhook: handshake, or verify and hand the accepted items to the queue output."""
    refusal = NO_GRAPH if not settings.uses_graph else NO_WEBHOOK if settings.eventgrid is not None else None
    if refusal is not None:
        # No subscription of this app points here (no Microsoft 365 mailbox, or Graph delivers through Event
        # Grid): refuse the handshake too (no subscription can be made to this URL), read no secret, queue nothing.
        log_event(logger, "notification.refused", logging.WARNING, kind=kind, reason=refusal)
        return func.HttpResponse(refusal, status_code=403, mimetype="text/plain", charset="utf-8")
    answer = handshake(req.params)
    if answer is not None:
        log_event(logger, "webhook.validated", kind=kind)
        return answer
    arrived = now()
    try:
        items = parse_collection(req.get_body())
        verdict = await verifier(items, Trust(settings, await secret(), holds, arrived))
    except InvalidNotification as exc:
        log_event(logger, "notification.refused", logging.WARNING, kind=kind, reason=str(exc))
        return _refuse(str(exc))
    except SubscriptionNotYetKnown as exc:
        # Nothing is queued; Graph retries a failed delivery, by when the folder's record can be read again.
        log_event(logger, "notification.deferred", logging.WARNING, kind=kind, reason=str(exc))
        return func.HttpResponse(str(exc), status_code=503, mimetype="text/plain", charset="utf-8")
    if verdict.messages:
        out.set(verdict.messages)
    return func.HttpResponse(status_code=202)
