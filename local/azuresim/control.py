"""The control API under ``/_sim`` (no auth): seed mailboxes, deliver mail, inject faults, read the
request log and deliveries, move the clock, tune delivery, send lifecycle events.
See ``local/README.md`` for the contract."""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import re
import secrets
import uuid
from collections import Counter
from dataclasses import replace
from datetime import datetime
from email.utils import parseaddr
from typing import Any

from aiohttp import web
from cryptography import x509

from .clock import Clock, graph_datetime, graph_datetime_7
from .content import BytesContent, Content, GeneratedContent, sha256_hex
from .delivery import Delivery
from .errors import ControlError
from .faults import Faults
from .graph_mail import Mail
from .graph_subscriptions import Subscriptions
from .mime import MimeContent, envelope_headers, mime_parts
from .notifications import LIFECYCLE_EVENTS, Notifier
from .requestlog import RequestLog
from .smime import SMIME_KINDS, Signers, sealed
from .store import Attachment, EmailAddress, Mailbox, Message, Store, change_key, exchange_id
from .throttling import MailboxConcurrency
from .zips import ZipContent, ZipEntry

MAX_GENERATED_SIZE = 2**31 - 1  # Graph's attachment size is an Int32
MAX_ITEM_DEPTH = 30  # attachment-get: item attachments nest "up to 30 levels"
CONTENT_BYTES_MODES = ("include", "omit", "empty")


def _bad(message: str) -> ControlError:
    return ControlError(400, "BadRequest", message)


async def _json(request: web.Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.read() or b"{}")
    except ValueError as exc:
        raise _bad("the body is not valid JSON") from exc
    if not isinstance(body, dict):
        raise _bad("the body must be a JSON object")
    return body


def _address(value: Any, what: str) -> EmailAddress:
    if isinstance(value, dict) and isinstance(value.get("address"), str):
        return EmailAddress(str(value.get("name") or value["address"]), value["address"])
    if isinstance(value, str) and "@" in value:
        name, address = parseaddr(value)
        return EmailAddress(name or address, address)
    raise _bad(f"'{what}' must be an address string or {{'name', 'address'}}")


def _text_or_none(value: Any, what: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise _bad(f"'{what}' must be a text")
    return value


def _header_fields(value: Any) -> list[tuple[str, str]]:
    """`headers`: [{"name": ..., "value": ...}], fields the sender wrote (below Exchange's own)."""
    fields = value or []
    if not isinstance(fields, list) or not all(
        isinstance(f, dict) and isinstance(f.get("name"), str) and isinstance(f.get("value"), str) for f in fields
    ):
        raise _bad('\'headers\' must be a list of {"name": text, "value": text}')
    return [(f["name"], f["value"]) for f in fields]


def _non_negative_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _content_bytes_options(body: dict[str, Any]) -> tuple[int | None, str | None]:
    limit, mode = body.get("contentBytesLimit"), body.get("contentBytesOverLimit")
    if limit is not None and not _non_negative_int(limit):
        raise _bad("'contentBytesLimit' must be a non-negative integer (bytes) or null")
    if mode is not None and mode not in CONTENT_BYTES_MODES:
        raise _bad(f"'contentBytesOverLimit' must be one of {list(CONTENT_BYTES_MODES)}")
    return limit, mode


def _digest(attachments: list[Attachment]) -> None:
    """sha256 of every attachment, innermost first (runs in a thread: large content takes a while)."""
    for attachment in attachments:
        for inner in (attachment.item, attachment.sealed):
            if inner is not None:
                _digest(inner.attachments)
        if attachment.content is not None:
            attachment.sha256 = sha256_hex(attachment.content)


def _described(attachment: Attachment) -> dict[str, Any]:
    """What the control API reports of an attachment; for an attached mail also ``parts``: what its
    MIME carries, recursively, so a test can compare the files it extracts."""
    body: dict[str, Any] = {
        "name": attachment.name,
        "kind": attachment.kind,
        "contentType": attachment.content_type,
        "size": attachment.size,
        "sha256": attachment.sha256,
        "contentId": attachment.content_id,
    }
    inner = attachment.item or attachment.sealed
    if inner is not None:
        body["parts"] = [{**_described(a), "inline": a.is_inline} for a in mime_parts(inner)]
    return body


def _attachment_json(attachment: Attachment) -> dict[str, Any]:
    return {
        "id": attachment.immutable_id,
        "restId": attachment.rest_id,
        **_described(attachment),
        "isInline": attachment.is_inline,
    }


class Control:
    def __init__(
        self,
        store: Store,
        clock: Clock,
        delivery: Delivery,
        notifier: Notifier,
        subscriptions: Subscriptions,
        faults: Faults,
        log: RequestLog,
        mail: Mail,
        concurrency: MailboxConcurrency,
    ) -> None:
        self.mail = mail
        self.concurrency = concurrency
        self.store = store
        self.signers = Signers()
        self.clock = clock
        self.delivery = delivery
        self.notifier = notifier
        self.subscriptions = subscriptions
        self.faults = faults
        self.log = log

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/_sim/mailboxes", self.add_mailbox),
            web.post("/_sim/mail", self.add_mail),
            web.delete("/_sim/mail/{id}", self.delete_mail),
            web.post("/_sim/mail/{id}/renotify", self.renotify),
            web.get("/_sim/roles", self.get_roles),
            web.post("/_sim/roles", self.set_roles),
            web.get("/_sim/options", self.get_options),
            web.post("/_sim/options", self.set_options),
            web.get("/_sim/faults", self.list_faults),
            web.post("/_sim/faults", self.add_fault),
            web.delete("/_sim/faults", self.clear_faults),
            web.delete("/_sim/faults/{fault_id}", self.remove_fault),
            web.get("/_sim/requests", self.list_requests),
            web.get("/_sim/throttling", self.get_throttling),
            web.delete("/_sim/requests", self.clear_requests),
            web.get("/_sim/subscriptions", self.list_subscriptions),
            web.get("/_sim/deliveries", self.list_deliveries),
            web.delete("/_sim/deliveries", self.clear_deliveries),
            web.get("/_sim/clock", self.get_clock),
            web.post("/_sim/clock", self.advance_clock),
            web.get("/_sim/delivery", self.get_delivery),
            web.post("/_sim/delivery", self.set_delivery),
            web.post("/_sim/lifecycle", self.lifecycle),
            web.delete("/_sim/deltatokens", self.reset_delta_tokens),
        ]

    # -- mailboxes and mail ---------------------------------------------------------------------
    async def add_mailbox(self, request: web.Request) -> web.Response:
        body = await _json(request)
        address = body.get("address")
        if not isinstance(address, str) or "@" not in address:
            raise _bad("'address' (an e-mail address) is required")
        mailbox = self.store.find_mailbox(address)
        created = mailbox is None
        if mailbox is None:
            mailbox = self.store.add_mailbox(address, str(body.get("displayName") or address.split("@")[0]))
        folders = body.get("folders") or []
        if not isinstance(folders, list) or not all(isinstance(f, str) for f in folders):
            raise _bad("'folders' must be a list of paths like 'Inbox/Invoices'")
        for path in folders:
            mailbox.folder_by_path(path, create=True)
        return web.json_response({"id": mailbox.id, "address": mailbox.address}, status=201 if created else 200)

    def _zip(self, spec: Any, name: str) -> ZipContent:
        entries = spec.get("entries") if isinstance(spec, dict) else None
        if not isinstance(entries, list) or not entries:
            raise _bad(f'attachment \'{name}\': \'zip\' must be {{"entries": [{{"path", content or "bomb"}}]}}')
        made = []
        for entry in entries:
            if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
                raise _bad(f"attachment '{name}': each zip entry needs a 'path'")
            bomb = entry.get("bomb", 0)
            if not isinstance(bomb, int) or isinstance(bomb, bool) or not 0 <= bomb <= MAX_GENERATED_SIZE:
                raise _bad(f"attachment '{name}': a zip entry's 'bomb' is a size in bytes")
            content = None if bomb else self._content(entry, entry["path"])
            made.append(ZipEntry(entry["path"], content, bool(entry.get("encrypted", False)), bomb))
        return ZipContent(made)

    def _content(self, spec: dict[str, Any], name: str) -> Content:
        if spec.get("zip") is not None:
            return self._zip(spec["zip"], name)
        if spec.get("contentBase64") is not None:
            try:
                return BytesContent(base64.b64decode(str(spec["contentBase64"]), validate=True))
            except (ValueError, binascii.Error) as exc:
                raise _bad(f"attachment '{name}': contentBase64 is not valid base64") from exc
        size = spec.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= MAX_GENERATED_SIZE:
            raise _bad(f"attachment '{name}': give 'contentBase64' or an integer 'size' (0..2^31-1)")
        return GeneratedContent(size, str(spec.get("seed", name)))

    def _attachment(self, spec: Any, now: datetime, depth: int) -> Attachment:
        # Names are taken as given (empty, control characters, paths, 300 characters): the app sanitises.
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            raise _bad("each attachment needs a 'name' (a string, possibly empty)")
        name, kind = spec["name"], spec.get("kind", "file")
        inline, content_id = spec.get("isInline", False), spec.get("contentId")
        if not isinstance(inline, bool):
            raise _bad(f"attachment '{name}': 'isInline' must be true or false")
        if content_id is not None and not isinstance(content_id, str):
            raise _bad(f"attachment '{name}': 'contentId' must be a string")
        common: dict[str, Any] = {
            "immutable_id": exchange_id("AAkALg"),
            "rest_id": exchange_id(),
            "kind": kind,
            "name": name,
            "is_inline": inline,
            "last_modified": now,
        }
        if kind == "file":
            content_id = content_id or (f"{uuid.uuid4().hex}@sim" if inline else None)
            return Attachment(
                **common,
                content_type=str(
                    spec.get("contentType") or ("application/zip" if "zip" in spec else "application/octet-stream")
                ),
                content=self._content(spec, name),
                content_id=content_id,
            )
        if kind == "item":
            item_spec = spec.get("item")
            if not isinstance(item_spec, dict):
                raise _bad(f"attachment '{name}': kind 'item' needs 'item' (a mail like this one)")
            if depth >= MAX_ITEM_DEPTH:
                raise _bad(f"attached mails nest at most {MAX_ITEM_DEPTH} levels deep")
            item = self._message(item_spec, None, "", now, depth + 1)
            # contentType null, as in attachment-get's itemAttachment example; MIME built lazily.
            return Attachment(**common, content_type=spec.get("contentType"), content=MimeContent(item), item=item)
        if kind == "reference":
            url = spec.get("url")
            if not isinstance(url, str) or not re.match(r"^https?://", url):
                raise _bad(f"attachment '{name}': kind 'reference' needs an http(s) 'url'")
            return Attachment(
                **common,
                content_type=spec.get("contentType"),
                source_url=url,
                provider_type=str(spec.get("providerType", "oneDriveBusiness")),
                permission=str(spec.get("permission", "view")),
                is_folder=bool(spec.get("isFolder", False)),
            )
        raise _bad(f"attachment '{name}': kind must be 'file', 'item' or 'reference'")

    def _message(
        self, spec: dict[str, Any], mailbox: Mailbox | None, folder_id: str, now: datetime, depth: int = 0
    ) -> Message:
        if "from" not in spec:
            raise _bad("'from' is required")
        to = spec.get("to")
        if to is None:
            recipients = [EmailAddress(mailbox.display_name, mailbox.address)] if mailbox else []
        else:
            recipients = [_address(a, "to") for a in (to if isinstance(to, list) else [to])]
        cc = spec.get("cc") or []
        copies = [_address(a, "cc") for a in (cc if isinstance(cc, list) else [cc])]
        attachments = spec.get("attachments") or []
        if not isinstance(attachments, list):
            raise _bad("'attachments' must be a list")
        body_type = str(spec.get("bodyContentType", "text")).lower()
        if body_type not in ("text", "html"):
            raise _bad("'bodyContentType' must be 'text' or 'html'")
        return Message(
            immutable_id=exchange_id("AAkALg"),
            rest_id=exchange_id(),
            mailbox_id=mailbox.id if mailbox else "",
            folder_id=folder_id,
            subject=str(spec.get("subject", "")),
            body=str(spec.get("body", "")),
            body_type=body_type,
            sender=_address(spec["from"], "from"),
            to=recipients,
            received=now,
            internet_message_id=f"<{uuid.uuid4().hex}@azuresim.local>",
            change_key=change_key(),
            attachments=[self._attachment(a, now, depth) for a in attachments],
            importance=str(spec.get("importance", "normal")).lower(),
            cc=copies,
            authentication=_text_or_none(spec.get("authentication"), "authentication"),
            sender_headers=_header_fields(spec.get("headers")),
        )

    def _seal(self, message: Message, spec: Any) -> None:
        """As a signing or encrypting client sends it, and Graph lists it: the body and attachments are
        inside one file attachment, smime.p7m (graph_facts §8)."""
        if not isinstance(spec, dict) or spec.get("type") not in SMIME_KINDS:
            raise _bad(f'\'smime\' must be {{"type": one of {list(SMIME_KINDS)}, "recipientCertificate": PEM}}')
        recipient = None
        if "encrypted" in spec["type"]:
            try:
                recipient = x509.load_pem_x509_certificate(str(spec.get("recipientCertificate", "")).encode())
            except ValueError as exc:
                raise _bad("'smime.recipientCertificate' must be the recipient's certificate, PEM") from exc
        inner = replace(message)
        signer = self.signers.signer(message.sender.address)
        entity = MimeContent(inner, envelope=False)
        content_type, content = sealed(
            spec["type"], envelope_headers(inner), entity, signer, self.signers.ca, recipient
        )
        p7m = Attachment(
            immutable_id=exchange_id("AAkALg"),
            rest_id=exchange_id(),
            kind="file",
            name="smime.p7m",
            content_type=content_type,
            is_inline=False,
            last_modified=message.received,
            content=content,
            sealed=inner,
        )
        message.attachments = [p7m]

    async def add_mail(self, request: web.Request) -> web.Response:
        body = await _json(request)
        mailbox = self.store.find_mailbox(str(body.get("mailbox", "")))
        if mailbox is None:
            raise ControlError(404, "NotFound", f"no mailbox '{body.get('mailbox')}' (create it with /_sim/mailboxes)")
        folder = mailbox.folder_by_path(str(body.get("folder") or "Inbox"))
        if folder is None:
            raise ControlError(404, "NotFound", f"no folder '{body.get('folder')}' in {mailbox.address}")
        limit, mode = _content_bytes_options(body)
        message = self._message(body, mailbox, folder.id, self.clock.now())
        message.content_bytes_limit, message.content_bytes_over_limit = limit, mode
        if body.get("smime") is not None:
            # Signing hashes the whole mail: keep the event loop serving.
            await asyncio.to_thread(self._seal, message, body["smime"])
        # Hashing large generated content takes a while: keep the event loop serving.
        await asyncio.to_thread(_digest, message.attachments)
        mailbox.add_message(message)
        queued = self.notifier.message_changed(mailbox, folder.id, message, "created")
        return web.json_response(
            {
                "id": message.immutable_id,
                "restId": message.rest_id,
                "internetMessageId": message.internet_message_id,
                "receivedDateTime": graph_datetime(message.received),
                "notifications": queued,
                "attachments": [_attachment_json(a) for a in message.attachments],
            },
            status=201,
        )

    def _find_message(self, key: str, deleted: bool = False) -> tuple[Mailbox, Message]:
        found = self.store.find_message(key, deleted)
        if found is None:
            raise ControlError(404, "NotFound", f"no message '{key}'")
        return found

    async def delete_mail(self, request: web.Request) -> web.Response:
        """As if the user deleted the mail: Graph answers 404 for it from now on; notifications
        already queued are still delivered; subscriptions for ``deleted`` are told."""
        mailbox, message = self._find_message(request.match_info["id"])
        queued = self.mail.remove_message(mailbox, message)
        return web.json_response({"id": message.immutable_id, "notifications": queued})

    async def renotify(self, request: web.Request) -> web.Response:
        """Queue the message's change notification again, ``times`` copies sent concurrently."""
        body = await _json(request)
        times, change_type = body.get("times", 1), body.get("changeType", "created")
        if not isinstance(times, int) or isinstance(times, bool) or not 1 <= times <= 100:
            raise _bad("'times' must be an integer from 1 to 100")
        if change_type not in ("created", "updated", "deleted"):
            raise _bad("'changeType' must be 'created', 'updated' or 'deleted'")
        # A deleted mail can be renotified too: a late duplicate for a mail that is gone.
        mailbox, message = self._find_message(request.match_info["id"], deleted=True)
        queued = self.notifier.message_changed(mailbox, message.folder_id, message, change_type, copies=times)
        return web.json_response({"id": message.immutable_id, "notifications": queued}, status=202)

    def _roles_body(self) -> dict[str, Any]:
        return {"roles": {client_id: list(app.roles) for client_id, app in self.store.apps.items()}}

    async def get_roles(self, request: web.Request) -> web.Response:
        return web.json_response(self._roles_body())

    async def set_roles(self, request: web.Request) -> web.Response:
        """The application permissions granted to an app (default: every app), for tokens issued from
        now on: e.g. Mail.Read alone, to see what needs Mail.ReadWrite."""
        body = await _json(request)
        roles, client_id = body.get("roles"), body.get("clientId")
        if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
            raise _bad("'roles' must be a list of permission names, e.g. ['Mail.Read']")
        if client_id is not None and client_id not in self.store.apps:
            raise ControlError(404, "NotFound", f"no app '{client_id}'")
        for key, app in self.store.apps.items():
            if client_id in (None, key):
                app.roles = tuple(roles)
        return web.json_response(self._roles_body())

    def _options_body(self) -> dict[str, Any]:
        options = self.store.options
        return {
            "contentBytesLimit": options.content_bytes_limit,
            "contentBytesOverLimit": options.content_bytes_over_limit,
            "folderExistsStatus": options.folder_exists_status,
            "subscriptionMaxMinutes": options.subscription_max_minutes,
            "subscriptionWritesPer20Seconds": options.subscription_writes_per_20s,
        }

    async def get_options(self, request: web.Request) -> web.Response:
        return web.json_response(self._options_body())

    async def set_options(self, request: web.Request) -> web.Response:
        body = await _json(request)
        known = {
            "contentBytesLimit",
            "contentBytesOverLimit",
            "folderExistsStatus",
            "subscriptionMaxMinutes",
            "subscriptionWritesPer20Seconds",
        }
        unknown = sorted(set(body) - known)
        if unknown:
            raise _bad(f"unknown options {unknown}")
        limit, mode = _content_bytes_options(body)
        status = body.get("folderExistsStatus")
        if status is not None and status not in (400, 409):
            raise _bad("'folderExistsStatus' must be 400 or 409")
        cap = body.get("subscriptionMaxMinutes")
        if cap is not None and not (isinstance(cap, int) and 45 <= cap <= 10080):
            raise _bad("'subscriptionMaxMinutes' must be a whole number from 45 to 10080, or null")
        writes = body.get("subscriptionWritesPer20Seconds")
        if writes is not None and not (isinstance(writes, int) and not isinstance(writes, bool) and writes >= 1):
            raise _bad("'subscriptionWritesPer20Seconds' must be a whole number of at least 1")
        options = self.store.options
        if writes is not None:
            options.subscription_writes_per_20s = writes
            self.subscriptions.reset_write_windows()
        if "subscriptionMaxMinutes" in body:
            options.subscription_max_minutes = cap
        if "contentBytesLimit" in body:
            options.content_bytes_limit = limit
        if mode is not None:
            options.content_bytes_over_limit = mode
        if status is not None:
            options.folder_exists_status = status
        return web.json_response(self._options_body())

    # -- faults and request log -----------------------------------------------------------------
    async def add_fault(self, request: web.Request) -> web.Response:
        body = await _json(request)
        status, retry_after = body.get("status"), body.get("retryAfter")
        rate, seed = body.get("rate"), body.get("seed")
        latency, count = body.get("latencyMs", 0), body.get("count", None if rate is not None else 1)
        if status is not None and (not isinstance(status, int) or not 400 <= status <= 599):
            raise _bad("'status' must be an HTTP error status (400-599)")
        for key, value in (("retryAfter", retry_after), ("latencyMs", latency), ("count", count), ("seed", seed)):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
                raise _bad(f"'{key}' must be a non-negative integer")
        if rate is not None and (isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 < rate <= 1):
            raise _bad("'rate' must be a number above 0 and at most 1")
        if status is None and not latency:
            raise _bad("give 'status' and/or 'latencyMs'")
        try:
            fault = self.faults.add(
                method=body.get("method"),
                path=body.get("path"),
                status=status,
                retry_after=retry_after,
                latency_ms=latency or 0,
                count=count,
                rate=float(rate) if rate is not None else None,
                seed=seed,
            )
        except re.error as exc:
            raise _bad(f"'path' is not a valid regular expression: {exc}") from exc
        return web.json_response({"id": fault.id}, status=201)

    async def list_faults(self, request: web.Request) -> web.Response:
        return web.json_response({"faults": [f.describe() for f in self.faults.active()]})

    async def clear_faults(self, request: web.Request) -> web.Response:
        self.faults.clear()
        return web.Response(status=204)

    async def remove_fault(self, request: web.Request) -> web.Response:
        fault = self.faults.remove(request.match_info["fault_id"])
        if fault is None:
            raise web.HTTPNotFound(text="no such fault")
        return web.json_response(fault.describe())

    async def list_requests(self, request: web.Request) -> web.Response:
        records = self.log.records
        wanted = request.query.get("messageId")
        if wanted is not None:
            # Any id the message ever had selects every request naming it by any of its ids.
            message_id = self.store.message_id_of(wanted) or wanted
            records = [r for r in records if r.message_id == message_id]
        rows = [
            {
                "method": r.method,
                "path": r.path,
                "route": r.route,
                "status": r.status,
                "ms": round(r.ms, 1),
                "messageId": r.message_id,
            }
            for r in records
        ]
        per_message = Counter(r.message_id for r in records if r.message_id is not None)
        return web.json_response({"requests": rows, "counts": self.log.counts(records), "messages": per_message})

    async def clear_requests(self, request: web.Request) -> web.Response:
        self.log.clear()
        return web.Response(status=204)

    async def get_throttling(self, request: web.Request) -> web.Response:
        return web.json_response({"mailboxConcurrency": self.concurrency.describe()})

    # -- subscriptions, deliveries, clock -------------------------------------------------------
    async def list_subscriptions(self, request: web.Request) -> web.Response:
        rows = [
            {
                **self.subscriptions.describe(s),
                "immutableIds": s.immutable_ids,
                "mailboxId": s.mailbox_id,
                "folderId": s.folder_id,
            }
            for s in self.notifier.live_subscriptions()
        ]
        return web.json_response({"value": rows})

    async def list_deliveries(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"deliveries": [r.describe() for r in self.delivery.records], "pending": self.delivery.pending()}
        )

    async def clear_deliveries(self, request: web.Request) -> web.Response:
        self.delivery.records.clear()
        return web.Response(status=204)

    def _clock_body(self) -> dict[str, Any]:
        return {"now": graph_datetime_7(self.clock.now()), "offsetSeconds": self.clock.offset_seconds}

    async def get_clock(self, request: web.Request) -> web.Response:
        return web.json_response(self._clock_body())

    async def advance_clock(self, request: web.Request) -> web.Response:
        seconds = (await _json(request)).get("advanceSeconds")
        if not isinstance(seconds, int | float) or isinstance(seconds, bool) or seconds < 0:
            raise _bad("'advanceSeconds' must be a non-negative number")
        self.clock.advance(seconds)
        self.notifier.live_subscriptions()  # expiry takes effect now, not at the next lookup
        return web.json_response(self._clock_body())

    def _delivery_body(self) -> dict[str, Any]:
        return {
            "retryBaseSeconds": self.delivery.retry_base,
            "paused": self.delivery.paused,
            "duplicates": self.delivery.duplicates,
            "pending": self.delivery.pending(),
        }

    async def get_delivery(self, request: web.Request) -> web.Response:
        return web.json_response(self._delivery_body())

    async def set_delivery(self, request: web.Request) -> web.Response:
        body = await _json(request)
        base, paused, duplicates = body.get("retryBaseSeconds"), body.get("paused"), body.get("duplicates")
        if base is not None and (not isinstance(base, int | float) or isinstance(base, bool) or base <= 0):
            raise _bad("'retryBaseSeconds' must be a positive number")
        if paused is not None and not isinstance(paused, bool):
            raise _bad("'paused' must be true or false")
        if duplicates is not None and (
            not isinstance(duplicates, int) or isinstance(duplicates, bool) or not 1 <= duplicates <= 100
        ):
            raise _bad("'duplicates' must be an integer from 1 to 100")
        self.delivery.configure(float(base) if base is not None else None, paused, duplicates)
        return web.json_response(self._delivery_body())

    async def lifecycle(self, request: web.Request) -> web.Response:
        body = await _json(request)
        event = body.get("event")
        if event not in LIFECYCLE_EVENTS:
            raise _bad(f"'event' must be one of {list(LIFECYCLE_EVENTS)}")
        sub = next((s for s in self.notifier.live_subscriptions() if s.id == body.get("subscriptionId")), None)
        if sub is None:
            raise ControlError(404, "NotFound", f"no live subscription '{body.get('subscriptionId')}'")
        if sub.lifecycle_url is None:
            raise _bad("the subscription has no lifecycleNotificationUrl")
        self.notifier.lifecycle(sub, event)
        return web.json_response({"subscriptionId": sub.id, "event": event}, status=202)

    async def reset_delta_tokens(self, request: web.Request) -> web.Response:
        self.store.delta_epoch = secrets.token_hex(4)
        return web.Response(status=204)
