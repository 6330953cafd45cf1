"""Delta query on a mail folder (``/users/{id}/mailFolders/{id}/messages/delta``), as in Graph's
delta-query-messages doc: pages linked by ``@odata.nextLink`` (``$skiptoken``), a round closed by
``@odata.deltaLink`` (``$deltatoken``), query options carried inside the tokens, removed messages as
``{"id", "@removed": {"reason": "deleted"}}``, page size by ``Prefer: odata.maxpagesize``.

Tokens are opaque to callers; the control API can invalidate them all (``DELETE /_sim/deltatokens``),
after which they get ``410 Gone`` with a ``Location`` for a fresh full synchronisation.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any

from aiohttp import web

from .errors import GraphError
from .graph import GraphRequest, GraphRouter, parse_list, select_fields, send_json
from .graph_mail import READ_ROLES, Mail
from .store import Mailbox, Store

DEFAULT_PAGE_SIZE = 10
_MAX_PAGE = re.compile(r"odata\.maxpagesize\s*=\s*(\d+)", re.IGNORECASE)


def _encode(state: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(state, separators=(",", ":")).encode()).decode().rstrip("=")


def _decode(token: str) -> dict[str, Any] | None:
    try:
        state = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (ValueError, binascii.Error):
        return None
    return state if isinstance(state, dict) else None


class Delta:
    def __init__(self, store: Store, mail: Mail) -> None:
        self.store = store
        self.mail = mail

    def register(self, router: GraphRouter) -> None:
        router.add("GET", "users/{user}/mailFolders/{folder}/messages/delta", self.delta)

    @staticmethod
    def _link(g: GraphRequest) -> str:
        return f"{g.base}/users/{g.params['user']}/mailFolders/{g.params['folder']}/messages/delta"

    def _page_size(self, g: GraphRequest) -> int | None:
        for value in g.request.headers.getall("Prefer", []):
            match = _MAX_PAGE.search(value)
            if match:
                return max(1, int(match.group(1)))
        return None

    def _state(self, g: GraphRequest, folder_id: str) -> dict[str, Any]:
        token = g.option("skiptoken") or g.option("deltatoken")
        if not token:
            if g.option("changeType") or g.option("filter") or g.option("orderby"):
                raise GraphError(400, "BadRequest", "The simulator's delta supports $select only.")
            return {
                "e": self.store.delta_epoch,
                "f": folder_id,
                "since": None,
                "sel": g.option("select") or "",
            }
        state = _decode(token)
        if state is None or state.get("e") != self.store.delta_epoch or state.get("f") != folder_id:
            raise GraphError(
                410,
                "SyncStateNotFound",
                "The sync state generation is invalid or the sync state has expired. Do a full synchronization.",
                {"Location": f"{self._link(g)}?$deltatoken="},
            )
        return state

    @staticmethod
    def _entries(mailbox: Mailbox, folder_id: str, since: int | None, upto: int) -> list[tuple[str, str]]:
        """(immutable id, regular id) of what the round reports: everything in the folder on the first
        round, else each message changed in the folder since the last round, once, latest change last."""
        if since is None:
            messages = sorted(mailbox.folder_messages(folder_id), key=lambda m: (m.received, m.immutable_id))
            return [(m.immutable_id, m.rest_id) for m in messages]
        last: dict[str, str] = {}
        for change in mailbox.changes:
            if since < change.seq <= upto and change.folder_id == folder_id:
                last.pop(change.message_id, None)
                last[change.message_id] = change.rest_id
        return list(last.items())

    def _render(
        self, g: GraphRequest, mailbox: Mailbox, folder_id: str, entry: tuple[str, str], select: str
    ) -> dict[str, Any]:
        message_id, rest_id = entry
        message = mailbox.messages.get(message_id)
        if message is not None and message.folder_id == folder_id:
            body = self.mail.message_json(message, g.immutable)
            body = select_fields(body, parse_list(select) or None, "microsoft.graph.message")
            return {"@odata.type": "#microsoft.graph.message", **body}
        # Gone from the folder (moved or deleted): reported with the id it had there.
        removed_id = message_id if g.immutable else rest_id
        return {
            "@odata.type": "#microsoft.graph.message",
            "id": removed_id,
            "@removed": {"reason": "deleted"},
        }

    async def delta(self, g: GraphRequest) -> web.StreamResponse:
        g.require_role(*READ_ROLES, "Mail.ReadBasic.All")
        mailbox = self.mail.mailbox_of(g)
        folder = self.mail.folder_of(g, mailbox)
        assert folder is not None  # the route always has {folder}
        state = self._state(g, folder.id)
        upto = int(state.get("upto", mailbox.change_seq))
        since = state.get("since")
        items = self._entries(mailbox, folder.id, since, upto)
        skip = int(state.get("skip", 0))
        size = self._page_size(g) or DEFAULT_PAGE_SIZE
        chunk = items[skip : skip + size]
        base = self._link(g)
        payload: dict[str, Any] = {
            "@odata.context": f"{g.base}/$metadata#Collection(message)",
            "value": [self._render(g, mailbox, folder.id, (e[0], e[1]), state["sel"]) for e in chunk],
        }
        if skip + size < len(items):
            payload["@odata.nextLink"] = f"{base}?$skiptoken={_encode({**state, 'upto': upto, 'skip': skip + size})}"
        else:
            closed = {"e": state["e"], "f": folder.id, "since": upto, "sel": state["sel"]}
            payload["@odata.deltaLink"] = f"{base}?$deltatoken={_encode(closed)}"
        headers = g.headers()
        if self._page_size(g):
            applied = [headers["Preference-Applied"]] if headers else []
            headers = {"Preference-Applied": ", ".join([*applied, f"odata.maxpagesize={size}"])}
        return await send_json(g.request, payload, headers=headers)
