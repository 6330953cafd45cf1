"""Delta query on a mail folder (``/users/{id}/mailFolders/{id}/messages/delta``), as in Graph's
delta-query-messages doc: pages linked by ``@odata.nextLink`` (``$skiptoken``), a round closed by
``@odata.deltaLink`` (``$deltatoken``), query options carried inside the tokens, removed messages as
``{"id", "@removed": {"reason": "deleted"}}``, page size by ``Prefer: odata.maxpagesize``.

Query options, given on the first request only (later ones are ignored, as the tokens carry them):
``$select``; ``changeType=created|updated|deleted``; ``$filter=receivedDateTime ge|gt {value}``
(the first round is capped at the newest 5,000 matches); ``$orderby=receivedDateTime desc`` (the
first round's order; later rounds list changes oldest first).

Tokens are opaque to callers; the control API can invalidate them all (``DELETE /_sim/deltatokens``),
after which they get ``410 Gone`` with a ``Location`` for a fresh full synchronisation.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aiohttp import web

from .clock import parse_datetime
from .errors import GraphError
from .graph import GraphRequest, GraphRouter, parse_list, select_fields, send_json
from .graph_mail import READ_ROLES, Mail
from .store import Mailbox, Message, Store

DEFAULT_PAGE_SIZE = 10
# "Applying $filter in a delta query returns only up to 5,000 messages" (delta-query-messages).
FILTER_LIMIT = 5000
CHANGE_TYPES = ("created", "updated", "deleted")
_MAX_PAGE = re.compile(r"odata\.maxpagesize\s*=\s*(\d+)", re.IGNORECASE)
_FILTER = re.compile(r"^\s*receivedDateTime\s+(ge|gt)\s+(\S+)\s*$", re.IGNORECASE)
_ORDERBY = re.compile(r"^\s*receivedDateTime\s+desc\s*$", re.IGNORECASE)


def _encode(state: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(state, separators=(",", ":")).encode()).decode().rstrip("=")


def _decode(token: str) -> dict[str, Any] | None:
    try:
        state = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (ValueError, binascii.Error):
        return None
    return state if isinstance(state, dict) else None


@dataclass(frozen=True)
class DeltaQuery:
    """The query options of a round, as the tokens carry them."""

    change_type: str | None = None
    filter_op: str | None = None  # "ge" | "gt"
    filter_at: datetime | None = None
    newest_first: bool = False

    def matches(self, message: Message) -> bool:
        if self.filter_at is None:
            return True
        # Graph shows receivedDateTime to the second, so a value copied from a message compares equal.
        received = message.received.replace(microsecond=0)
        return received >= self.filter_at if self.filter_op == "ge" else received > self.filter_at

    def to_state(self) -> dict[str, Any]:
        return {
            "ct": self.change_type,
            "fop": self.filter_op,
            "fat": self.filter_at.isoformat() if self.filter_at else None,
            "desc": self.newest_first,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> DeltaQuery:
        at = state.get("fat")
        return cls(state.get("ct"), state.get("fop"), parse_datetime(at) if at else None, bool(state.get("desc")))

    @classmethod
    def parse(cls, change_type: str | None, filter_text: str | None, orderby: str | None) -> DeltaQuery:
        """The options of a first request; unsupported ones are a 400."""
        kind = None
        if change_type is not None:
            kind = change_type.strip().lower()
            if kind not in CHANGE_TYPES:
                # Not documented; Graph's exact answer to a bad changeType is unknown.
                raise GraphError(400, "ErrorInvalidUrlQuery", "changeType must be 'created', 'updated' or 'deleted'.")
        op = at = None
        if filter_text is not None:
            match = _FILTER.match(filter_text)
            try:
                at = parse_datetime(match.group(2)) if match else None
            except ValueError:
                at = None
            if match is None or at is None:
                # Graph's answer as reported by callers (its wording names only 'ge'; 'gt' is documented too).
                raise GraphError(
                    400,
                    "ErrorInvalidUrlQuery",
                    "The '$filter' parameter value is not supported for 'Messages' resource; "
                    "only a value of 'receivedDateTime ge value' is supported.",
                )
            op = match.group(1).lower()
        if orderby is not None and not _ORDERBY.match(orderby):
            raise GraphError(
                400,
                "ErrorInvalidUrlQuery",
                "The '$orderby' parameter value is not supported for 'Messages' resource; "
                "only a value of 'receivedDateTime desc' is supported.",
            )
        return cls(kind, op, at, orderby is not None)


@dataclass(frozen=True)
class Entry:
    """One item of a round: a message (``kind`` created or updated) or a removal (deleted)."""

    message_id: str  # immutable id
    rest_id: str  # the regular id it had at its last change in the folder
    kind: str


def _message(mailbox: Mailbox, message_id: str) -> Message | None:
    return mailbox.messages.get(message_id) or mailbox.deleted.get(message_id)


def round_entries(mailbox: Mailbox, folder_id: str, query: DeltaQuery, since: int | None, upto: int) -> list[Entry]:
    """What a round reports, as of change ``upto``, so that mail arriving or leaving while a round
    is paged neither shifts its pages nor gets lost (the next round, from ``upto``, reports it).

    First round (``since`` None): the messages in the folder at ``upto`` (none for changeType
    deleted). Later rounds: each message changed in the folder in ``(since, upto]``, once, latest
    change last, classified by its net change: deleted if it is no longer in the folder, created if
    it came into the folder (delivered or moved in), else updated; only the asked-for type is kept."""
    last: dict[str, tuple[str, str]] = {}  # message id -> (rest id, type of its last change)
    came_in: set[str] = set()
    for change in mailbox.changes:
        if change.seq > upto:
            break  # the log is in seq order
        if change.folder_id != folder_id:
            continue
        if since is not None and change.seq <= since:
            continue
        last.pop(change.message_id, None)
        last[change.message_id] = (change.rest_id, change.change_type)
        if change.change_type == "created":
            came_in.add(change.message_id)
    if since is None:
        if query.change_type == "deleted":
            return []
        members: list[Message] = []
        for message_id, (_, last_type) in last.items():
            message = _message(mailbox, message_id)
            if last_type != "deleted" and message is not None and query.matches(message):
                members.append(message)
        members.sort(key=lambda m: (m.received, m.immutable_id), reverse=query.newest_first)
        if query.filter_at is not None and len(members) > FILTER_LIMIT:
            # Which 5,000 is not documented: the newest, whatever the order asked for.
            members = members[:FILTER_LIMIT] if query.newest_first else members[-FILTER_LIMIT:]
        return [Entry(m.immutable_id, m.rest_id, "created") for m in members]
    entries: list[Entry] = []
    for message_id, (rest_id, last_type) in last.items():
        kind = "deleted" if last_type == "deleted" else "created" if message_id in came_in else "updated"
        message = _message(mailbox, message_id)
        if query.change_type not in (None, kind) or message is None or not query.matches(message):
            continue
        entries.append(Entry(message_id, rest_id, kind))
    return entries


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
            query = DeltaQuery.parse(g.option("changeType"), g.option("filter"), g.option("orderby"))
            return {
                "e": self.store.delta_epoch,
                "f": folder_id,
                "since": None,
                "sel": g.option("select") or "",
                **query.to_state(),
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

    def _render(
        self, g: GraphRequest, mailbox: Mailbox, folder_id: str, entry: Entry, select: str
    ) -> dict[str, Any] | None:
        if entry.kind == "deleted":
            # Reported with the id it had in the folder.
            return {
                "@odata.type": "#microsoft.graph.message",
                "id": entry.message_id if g.immutable else entry.rest_id,
                "@removed": {"reason": "deleted"},
            }
        message = mailbox.messages.get(entry.message_id)
        if message is None or message.folder_id != folder_id:
            return None  # left the folder after the round began: the next round reports that
        body = self.mail.message_json(message, g.immutable)
        body = select_fields(body, parse_list(select) or None, "microsoft.graph.message")
        return {"@odata.type": "#microsoft.graph.message", **body}

    async def delta(self, g: GraphRequest) -> web.StreamResponse:
        g.require_role(*READ_ROLES, "Mail.ReadBasic.All")
        mailbox = self.mail.mailbox_of(g)
        folder = self.mail.folder_of(g, mailbox)
        assert folder is not None  # the route always has {folder}
        state = self._state(g, folder.id)
        upto = int(state.get("upto", mailbox.change_seq))
        items = round_entries(mailbox, folder.id, DeltaQuery.from_state(state), state.get("since"), upto)
        skip = int(state.get("skip", 0))
        size = self._page_size(g) or DEFAULT_PAGE_SIZE
        rendered = (self._render(g, mailbox, folder.id, entry, state["sel"]) for entry in items[skip : skip + size])
        payload: dict[str, Any] = {
            "@odata.context": f"{g.base}/$metadata#Collection(message)",
            "value": [item for item in rendered if item is not None],
        }
        base = self._link(g)
        if skip + size < len(items):
            payload["@odata.nextLink"] = f"{base}?$skiptoken={_encode({**state, 'upto': upto, 'skip': skip + size})}"
        else:
            closed = {k: v for k, v in state.items() if k not in ("upto", "skip")}
            payload["@odata.deltaLink"] = f"{base}?$deltatoken={_encode({**closed, 'since': upto})}"
        headers = g.headers()
        if self._page_size(g):
            applied = [headers["Preference-Applied"]] if headers else []
            headers = {"Preference-Applied": ", ".join([*applied, f"odata.maxpagesize={size}"])}
        return await send_json(g.request, payload, headers=headers)
