"""What Graph sends: change notifications for messages and lifecycle notifications, composed from
the subscriptions that cover a change and handed to :class:`Delivery`."""

from __future__ import annotations

from typing import Any

from .clock import Clock, graph_datetime_7
from .delivery import Delivery
from .eventgrid import EventGrid, is_eventgrid_url
from .store import Mailbox, Message, Store, Subscription

LIFECYCLE_EVENTS = ("reauthorizationRequired", "subscriptionRemoved", "missed")


class Notifier:
    def __init__(self, store: Store, clock: Clock, delivery: Delivery, eventgrid: EventGrid) -> None:
        self.store = store
        self.clock = clock
        self.delivery = delivery
        self.eventgrid = eventgrid

    def _send(self, sub: Subscription, url: str, kind: str, item: dict[str, Any], copies: int | None) -> int:
        """To the webhook, or published to the Event Grid partner topic the URL names."""
        if is_eventgrid_url(url):
            count = copies if copies is not None else (self.delivery.duplicates if kind == "change" else 1)
            return self.eventgrid.publish(url, kind, item, sub.app_id, self.store.tenant_id, count)
        return self.delivery.enqueue(url, kind, sub.id, item, copies)

    def live_subscriptions(self) -> list[Subscription]:
        """Expired subscriptions are deleted, as Graph does once expirationDateTime passes."""
        now = self.clock.now()
        for sub_id in [s.id for s in self.store.subscriptions.values() if s.expiration <= now]:
            del self.store.subscriptions[sub_id]
        return list(self.store.subscriptions.values())

    def is_live(self, subscription_id: str) -> bool:
        return any(s.id == subscription_id for s in self.live_subscriptions())

    def message_changed(
        self,
        mailbox: Mailbox,
        folder_id: str,
        message: Message,
        change_type: str,
        rest_id: str | None = None,
        copies: int | None = None,
    ) -> int:
        """Queue one notification per covering subscription (``copies`` times; default: the delivery's
        ``duplicates``); ``rest_id`` overrides the regular id (a move's ``deleted`` names the id the
        message had before). Returns how many notifications were queued, copies included."""
        queued = 0
        for sub in self.live_subscriptions():
            if sub.mailbox_id != mailbox.id or change_type not in sub.change_types:
                continue
            if sub.folder_id is not None and sub.folder_id != folder_id:
                continue
            message_id = message.immutable_id if sub.immutable_ids else (rest_id or message.rest_id)
            # Casing as in the docs' example notification (Users/.../Messages/...).
            path = f"Users/{mailbox.id}/Messages/{message_id}"
            item: dict[str, Any] = {
                "subscriptionId": sub.id,
                "subscriptionExpirationDateTime": graph_datetime_7(sub.expiration),
                "changeType": change_type,
                "resource": path,
                "resourceData": {
                    "@odata.type": "#Microsoft.Graph.Message",
                    "@odata.id": path,
                    "@odata.etag": f'W/"{message.change_key}"',
                    "id": message_id,
                },
                "clientState": sub.client_state,
                "tenantId": self.store.tenant_id,
            }
            queued += self._send(sub, sub.notification_url, "change", item, copies)
        return queued

    def lifecycle(self, sub: Subscription, event: str) -> None:
        assert sub.lifecycle_url is not None
        item = {
            "subscriptionId": sub.id,
            "subscriptionExpirationDateTime": graph_datetime_7(sub.expiration),
            "tenantId": self.store.tenant_id,
            "clientState": sub.client_state,
            "lifecycleEvent": event,
        }
        self._send(sub, sub.lifecycle_url, "lifecycle", item, None)
        if event == "subscriptionRemoved":
            self.store.subscriptions.pop(sub.id, None)
