"""Graph mail: users, mailFolders (list, get, create), messages (list, get, update, move, delete)
and attachments, as app-only callers see them.

Ids honour ``Prefer: IdType="ImmutableId"``; either kind of id is accepted in a path. Large file
attachments are streamed from :mod:`content` both as ``/$value`` and as base64 ``contentBytes``.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from aiohttp import web

from .clock import Clock, graph_datetime, parse_datetime
from .content import BytesContent
from .errors import GraphError
from .graph import (
    Base64Of,
    GraphRequest,
    GraphRouter,
    page,
    parse_list,
    select_fields,
    send_content,
    send_json,
)
from .headers import internet_headers
from .mime import message_mime
from .notifications import Notifier
from .store import ROOT_FOLDER, Attachment, EmailAddress, Folder, Mailbox, Message, Store, change_key

READ_ROLES = ("Mail.Read", "Mail.ReadWrite")
WRITE_ROLES = ("Mail.ReadWrite",)
ATTACHMENT_BASE = ("id", "name", "contentType", "size", "isInline", "lastModifiedDateTime")
ODATA_TYPES = {
    "file": "#microsoft.graph.fileAttachment",
    "item": "#microsoft.graph.itemAttachment",
    "reference": "#microsoft.graph.referenceAttachment",
}
PATCHABLE = {"isRead", "categories", "importance"}
_EXPAND = re.compile(r"^\s*attachments\s*(?:\((.*)\))?\s*$", re.IGNORECASE)
_FILTER_NAME = re.compile(r"^\s*displayName\s+eq\s+'((?:[^']|'')*)'\s*$", re.IGNORECASE)
_FILTER_CLAUSE = re.compile(
    r"^\s*(?:(receivedDateTime)\s+(ge|gt|le|lt)\s+(\S+)|(hasAttachments|isRead)\s+eq\s+(true|false))\s*$",
    re.IGNORECASE,
)

_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "ge": operator.ge,
    "gt": operator.gt,
    "le": operator.le,
    "lt": operator.lt,
}


def _recipient(address: EmailAddress) -> dict[str, Any]:
    return {"emailAddress": {"name": address.name, "address": address.address}}


def _filter_clause(match: re.Match[str]) -> Callable[[Message], bool]:
    if match.group(1):
        compare = _COMPARE[match.group(2).lower()]
        when = parse_datetime(match.group(3)).replace(microsecond=0)
        return lambda m: compare(m.received.replace(microsecond=0), when)
    wanted = match.group(5).lower() == "true"
    if match.group(4).lower() == "isread":
        return lambda m: m.is_read == wanted
    return lambda m: any(not a.is_inline for a in m.attachments) == wanted


def _not_found() -> GraphError:
    return GraphError(404, "ErrorItemNotFound", "The specified object was not found in the store.")


class Mail:
    def __init__(self, store: Store, clock: Clock, notifier: Notifier) -> None:
        self.store = store
        self.clock = clock
        self.notifier = notifier

    def register(self, router: GraphRouter) -> None:
        router.add("GET", "users/{user}", self.get_user)
        router.add("GET", "users/{user}/mailFolders", self.list_top_folders)
        router.add("POST", "users/{user}/mailFolders", self.create_folder)
        router.add("GET", "users/{user}/mailFolders/{folder}", self.get_folder)
        router.add("GET", "users/{user}/mailFolders/{folder}/childFolders", self.list_child_folders)
        router.add("POST", "users/{user}/mailFolders/{folder}/childFolders", self.create_folder)
        router.add("GET", "users/{user}/mailFolders/{parent}/childFolders/{folder}", self.get_folder)
        router.add("GET", "users/{user}/mailFolders/{folder}/messages", self.list_messages)
        router.add("GET", "users/{user}/messages", self.list_messages)
        for prefix in (
            "users/{user}/messages/{message}",
            "users/{user}/mailFolders/{folder}/messages/{message}",
        ):
            router.add("GET", prefix, self.get_message)
            router.add("GET", f"{prefix}/$value", self.message_value)
            router.add("PATCH", prefix, self.update_message)
            router.add("DELETE", prefix, self.delete_message)
            router.add("POST", f"{prefix}/move", self.move_message)
            router.add("GET", f"{prefix}/attachments", self.list_attachments)
            router.add("GET", f"{prefix}/attachments/{{attachment}}", self.get_attachment)
            router.add("GET", f"{prefix}/attachments/{{attachment}}/$value", self.attachment_value)

    # -- lookups --------------------------------------------------------------------------------
    def mailbox_of(self, g: GraphRequest) -> Mailbox:
        mailbox = self.store.find_mailbox(g.params["user"])
        if mailbox is None:
            raise GraphError(404, "ErrorInvalidUser", f"The requested user '{g.params['user']}' is invalid.")
        return mailbox

    def folder_of(self, g: GraphRequest, mailbox: Mailbox) -> Folder | None:
        key = g.params.get("folder")
        if key is None:
            return None
        folder = mailbox.find_folder(key)
        parent = g.params.get("parent")
        if folder is None or (parent is not None and mailbox.find_folder(parent) is None):
            raise _not_found()
        return folder

    def _message(self, g: GraphRequest) -> tuple[Mailbox, Message]:
        mailbox = self.mailbox_of(g)
        self.folder_of(g, mailbox)
        message = mailbox.messages.get(g.params["message"])
        if message is None:
            raise _not_found()
        return mailbox, message

    def _attachment(self, g: GraphRequest) -> tuple[Message, Attachment]:
        _, message = self._message(g)
        attachment = message.find_attachment(g.params["attachment"])
        if attachment is None:
            raise _not_found()
        return message, attachment

    # -- rendering ------------------------------------------------------------------------------
    def folder_json(self, mailbox: Mailbox, folder: Folder) -> dict[str, Any]:
        messages = mailbox.folder_messages(folder.id)
        return {
            "id": folder.id,
            "displayName": folder.display_name,
            "parentFolderId": folder.parent_id or None,
            "childFolderCount": len(mailbox.children(folder.id)),
            "unreadItemCount": sum(1 for m in messages if not m.is_read),
            "totalItemCount": len(messages),
            "sizeInBytes": sum(a.size for m in messages for a in m.attachments),
            "isHidden": folder.is_hidden,
        }

    def _content_bytes_mode(self, message: Message, attachment: Attachment) -> str:
        """How a listing carries a file's contentBytes: "include", "omit" or "empty" (SimOptions)."""
        options = self.store.options
        limit = message.content_bytes_limit if message.content_bytes_limit is not None else options.content_bytes_limit
        mode = message.content_bytes_over_limit or options.content_bytes_over_limit
        return mode if limit is not None and attachment.size > limit else "include"

    def attachment_json(
        self,
        attachment: Attachment,
        immutable: bool,
        select: list[str] | None,
        expand_item: bool = False,
        content_bytes: str = "include",
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "@odata.type": ODATA_TYPES[attachment.kind],
            "id": attachment.graph_id(immutable),
            "lastModifiedDateTime": graph_datetime(attachment.last_modified),
            "name": attachment.name,
            "contentType": attachment.content_type,
            "size": attachment.size,
            "isInline": attachment.is_inline,
        }
        if select:
            # $select on attachments is typed as the base type: derived properties are unknown there.
            for name in select:
                if name.lower() not in {p.lower() for p in ATTACHMENT_BASE}:
                    raise GraphError(
                        400,
                        "RequestBroker--ParseUri",
                        f"Could not find a property named '{name}' on type 'microsoft.graph.attachment'.",
                    )
            return select_fields(body, select, "microsoft.graph.attachment")
        if attachment.kind == "file":
            body["@odata.mediaContentType"] = attachment.content_type
            body["contentId"] = attachment.content_id
            body["contentLocation"] = None
            if content_bytes == "include":
                body["contentBytes"] = Base64Of(attachment.content or BytesContent(b""))
            elif content_bytes == "empty":
                body["contentBytes"] = ""
        elif attachment.kind == "reference":
            body.update(
                sourceUrl=attachment.source_url,
                providerType=attachment.provider_type,
                thumbnailUrl=None,
                previewUrl=None,
                permission=attachment.permission,
                isFolder=attachment.is_folder,
            )
        elif attachment.kind == "item" and expand_item and attachment.item is not None:
            body["item"] = {
                "@odata.type": "#microsoft.graph.message",
                **self.message_json(attachment.item, immutable),
            }
        return body

    def message_json(self, message: Message, immutable: bool) -> dict[str, Any]:
        sent = message.received - timedelta(seconds=2)
        visible = [a for a in message.attachments if not a.is_inline]
        return {
            "@odata.etag": f'W/"{message.change_key}"',
            "id": message.graph_id(immutable),
            "createdDateTime": graph_datetime(message.received),
            "lastModifiedDateTime": graph_datetime(message.received),
            "changeKey": message.change_key,
            "categories": list(message.categories),
            "receivedDateTime": graph_datetime(message.received),
            "sentDateTime": graph_datetime(sent),
            "hasAttachments": bool(visible),
            "internetMessageId": message.internet_message_id,
            "subject": message.subject,
            "bodyPreview": " ".join(message.body.split())[:255],
            "importance": message.importance,
            "parentFolderId": message.folder_id,
            "conversationId": "AAQkA" + message.immutable_id[6:40],
            "isDeliveryReceiptRequested": False,
            "isReadReceiptRequested": False,
            "isRead": message.is_read,
            "isDraft": False,
            "inferenceClassification": "focused",
            "body": {"contentType": message.body_type, "content": message.body},
            "sender": _recipient(message.sender),
            "from": _recipient(message.sender),
            "toRecipients": [_recipient(a) for a in message.to],
            "ccRecipients": [_recipient(a) for a in message.cc],
            "bccRecipients": [],
            "replyTo": [],
            "flag": {"flagStatus": "notFlagged"},
        }

    def _expand(self, g: GraphRequest) -> list[str] | None:
        """None: no expansion; else the attachments' ``$select`` (empty list: all properties)."""
        expand = g.option("expand")
        if not expand:
            return None
        match = _EXPAND.match(expand)
        if match is None:
            raise GraphError(400, "BadRequest", f"Parsing OData Select and Expand failed: '{expand}'.")
        inner = match.group(1) or ""
        select: list[str] = []
        for option in inner.split(";"):
            name, _, value = option.partition("=")
            if name.strip().lower().lstrip("$") == "select":
                select = parse_list(value)
            elif name.strip():
                raise GraphError(400, "BadRequest", f"Unsupported expand option '{name.strip()}'.")
        return select

    def render_message(self, g: GraphRequest, message: Message) -> dict[str, Any]:
        body = self.message_json(message, g.immutable)
        select = parse_list(g.option("select")) or None
        if select is not None:
            select = [s for s in select if s.lower() != "attachments"]
            if any(s.lower() == "internetmessageheaders" for s in select):
                # "Returned only on applying a $select query option" (the message resource).
                body["internetMessageHeaders"] = internet_headers(message)
        body = select_fields(body, select, "microsoft.graph.message")
        expand = self._expand(g)
        if expand is not None:
            body["attachments"] = [
                self.attachment_json(a, g.immutable, expand or None, content_bytes=self._content_bytes_mode(message, a))
                for a in message.attachments
            ]
        return body

    # -- handlers: users and folders ------------------------------------------------------------
    async def get_user(self, g: GraphRequest) -> web.StreamResponse:
        mailbox = self.store.find_mailbox(g.params["user"])
        if mailbox is None:
            raise GraphError(
                404,
                "Request_ResourceNotFound",
                f"Resource '{g.params['user']}' does not exist or one of its queried "
                "reference-property objects are not present.",
            )
        user: dict[str, Any] = {
            "businessPhones": [],
            "displayName": mailbox.display_name,
            "givenName": None,
            "jobTitle": None,
            "mail": mailbox.address,
            "mobilePhone": None,
            "officeLocation": None,
            "preferredLanguage": None,
            "surname": None,
            "userPrincipalName": mailbox.address,
            "id": mailbox.id,
        }
        user = select_fields(user, parse_list(g.option("select")) or None, "microsoft.graph.user")
        return await send_json(g.request, {"@odata.context": f"{g.base}/$metadata#users/$entity", **user})

    async def _folder_list(self, g: GraphRequest, mailbox: Mailbox, parent_id: str) -> web.StreamResponse:
        folders = mailbox.children(parent_id)
        # Hidden folders are listed only on request (user-list-mailfolders, mailfolder-list-childfolders).
        if (g.query.get("includeHiddenFolders") or "").lower() != "true":
            folders = [f for f in folders if not f.is_hidden]
        name_filter = g.option("filter")
        if name_filter:
            match = _FILTER_NAME.match(name_filter)
            if match is None:
                raise GraphError(
                    400,
                    "ErrorInvalidUrlQueryFilter",
                    "The simulator supports only $filter=displayName eq '...'.",
                )
            wanted = match.group(1).replace("''", "'").lower()
            folders = [f for f in folders if f.display_name.lower() == wanted]
        select = parse_list(g.option("select")) or None
        rows, next_link = page(g, folders, default_top=10)
        payload: dict[str, Any] = {
            "@odata.context": f"{g.base}/$metadata#users('{g.params['user']}')/mailFolders",
            "value": [select_fields(self.folder_json(mailbox, f), select, "microsoft.graph.mailFolder") for f in rows],
        }
        if next_link:
            payload["@odata.nextLink"] = next_link
        return await send_json(g.request, payload)

    async def list_top_folders(self, g: GraphRequest) -> web.StreamResponse:
        g.require_role(*READ_ROLES)
        mailbox = self.mailbox_of(g)
        return await self._folder_list(g, mailbox, mailbox.root_id())

    async def list_child_folders(self, g: GraphRequest) -> web.StreamResponse:
        g.require_role(*READ_ROLES)
        mailbox = self.mailbox_of(g)
        folder = self.folder_of(g, mailbox)
        assert folder is not None
        return await self._folder_list(g, mailbox, folder.id)

    async def get_folder(self, g: GraphRequest) -> web.StreamResponse:
        g.require_role(*READ_ROLES)
        mailbox = self.mailbox_of(g)
        folder = self.folder_of(g, mailbox)
        assert folder is not None
        body = select_fields(
            self.folder_json(mailbox, folder),
            parse_list(g.option("select")) or None,
            "microsoft.graph.mailFolder",
        )
        context = f"{g.base}/$metadata#users('{g.params['user']}')/mailFolders/$entity"
        return await send_json(g.request, {"@odata.context": context, **body})

    async def create_folder(self, g: GraphRequest) -> web.StreamResponse:
        """``POST mailFolders`` (under the root) and ``POST mailFolders/{id}/childFolders``."""
        g.require_role(*WRITE_ROLES)
        mailbox = self.mailbox_of(g)
        parent = self.folder_of(g, mailbox)
        parent_id = parent.id if parent is not None else mailbox.root_id()
        body = await g.json_object()
        extra = sorted(k for k in body if not k.startswith("@") and k not in ("displayName", "isHidden"))
        if extra:
            raise GraphError(
                400, "ErrorInvalidProperty", f"Only displayName and isHidden can be set on a new folder, not {extra}."
            )
        name, hidden = body.get("displayName"), body.get("isHidden", False)
        if not isinstance(name, str) or not name.strip():
            raise GraphError(400, "ErrorInvalidParameter", "The displayName of the folder is required.")
        if not isinstance(hidden, bool):
            raise GraphError(400, "BadRequest", "isHidden must be true or false.")
        # Names are unique under a parent, case-insensitively, hidden folders included.
        if mailbox.find_child(parent_id, name) is not None:
            raise GraphError(
                self.store.options.folder_exists_status,
                "ErrorFolderExists",
                f"A folder with the specified name already exists., Could not create folder '{name}'.",
            )
        folder = mailbox.add_folder(name, parent_id, is_hidden=hidden)
        context = f"{g.base}/$metadata#users('{g.params['user']}')/mailFolders/$entity"
        return await send_json(g.request, {"@odata.context": context, **self.folder_json(mailbox, folder)}, status=201)

    # -- handlers: messages ---------------------------------------------------------------------
    def _message_filter(self, g: GraphRequest) -> Callable[[Message], bool]:
        text = g.option("filter")
        if not text:
            return lambda _m: True
        checks: list[Callable[[Message], bool]] = []
        for clause in re.split(r"\s+and\s+", text, flags=re.IGNORECASE):
            match = _FILTER_CLAUSE.match(clause)
            if match is None:
                raise GraphError(
                    400,
                    "ErrorInvalidUrlQueryFilter",
                    "The simulator supports $filter on receivedDateTime (ge, gt, le, lt), hasAttachments and "
                    "isRead (eq), joined by 'and'.",
                )
            checks.append(_filter_clause(match))
        return lambda m: all(check(m) for check in checks)

    async def list_messages(self, g: GraphRequest) -> web.StreamResponse:
        g.require_role(*READ_ROLES)
        mailbox = self.mailbox_of(g)
        folder = self.folder_of(g, mailbox)
        messages = mailbox.folder_messages(folder.id) if folder else mailbox.all_messages()
        keep = self._message_filter(g)
        messages = [m for m in messages if keep(m)]
        order = (g.option("orderby") or "receivedDateTime desc").strip().lower().split()
        if order[0] != "receiveddatetime":
            raise GraphError(400, "BadRequest", "The simulator supports $orderby=receivedDateTime only.")
        messages.sort(key=lambda m: (m.received, m.immutable_id), reverse=order[-1] != "asc")
        rows, next_link = page(g, messages, default_top=10)
        where = f"mailFolders('{g.params['folder']}')/messages" if folder else "messages"
        payload: dict[str, Any] = {
            "@odata.context": f"{g.base}/$metadata#users('{g.params['user']}')/{where}",
            "value": [self.render_message(g, m) for m in rows],
        }
        if next_link:
            payload["@odata.nextLink"] = next_link
        return await send_json(g.request, payload, headers=g.headers())

    def _message_context(self, g: GraphRequest) -> str:
        return f"{g.base}/$metadata#users('{g.params['user']}')/messages/$entity"

    async def get_message(self, g: GraphRequest) -> web.StreamResponse:
        g.require_role(*READ_ROLES)
        _, message = self._message(g)
        body = {"@odata.context": self._message_context(g), **self.render_message(g, message)}
        return await send_json(g.request, body, headers=g.headers())

    async def message_value(self, g: GraphRequest) -> web.StreamResponse:
        """The message's MIME (get-message, "Get MIME content"); Graph answers it as text/plain."""
        g.require_role(*READ_ROLES)
        _, message = self._message(g)
        return await send_content(g.request, message_mime(message), "text/plain", headers=g.headers())

    async def update_message(self, g: GraphRequest) -> web.StreamResponse:
        g.require_role(*WRITE_ROLES)
        mailbox, message = self._message(g)
        body = await g.json_object()
        unknown = sorted(set(body) - PATCHABLE)
        if unknown:
            raise GraphError(
                400,
                "ErrorInvalidProperty",
                f"The simulator can update only {sorted(PATCHABLE)}, not {unknown}.",
            )
        if "isRead" in body:
            message.is_read = bool(body["isRead"])
        if "categories" in body:
            categories = body["categories"]
            if not isinstance(categories, list) or not all(isinstance(c, str) for c in categories):
                raise GraphError(400, "BadRequest", "categories must be a string collection.")
            # A collection in PATCH replaces the whole collection (OData), it is not merged.
            message.categories = list(body["categories"])
        if "importance" in body:
            # The update doc writes Low/Normal/High, the resource low/normal/high: enums match either.
            importance = str(body["importance"]).lower()
            if importance not in ("low", "normal", "high"):
                raise GraphError(400, "BadRequest", "importance must be low, normal or high.")
            message.importance = importance
        message.change_key = change_key()
        mailbox.record_change(message.folder_id, message)
        self.notifier.message_changed(mailbox, message.folder_id, message, "updated")
        body = {"@odata.context": self._message_context(g), **self.render_message(g, message)}
        return await send_json(g.request, body, headers=g.headers())

    async def delete_message(self, g: GraphRequest) -> web.StreamResponse:
        g.require_role(*WRITE_ROLES)
        mailbox, message = self._message(g)
        self.remove_message(mailbox, message)
        return web.Response(status=204)

    def remove_message(self, mailbox: Mailbox, message: Message) -> int:
        """Delete (Graph or control API): gone for every id, ``deleted`` to subscribers that asked."""
        folder_id = message.folder_id
        mailbox.delete_message(message)
        return self.notifier.message_changed(mailbox, folder_id, message, "deleted")

    async def move_message(self, g: GraphRequest) -> web.StreamResponse:
        g.require_role(*WRITE_ROLES)
        mailbox, message = self._message(g)
        body = await g.json_object()
        destination = mailbox.find_folder(str(body.get("destinationId", "")))
        if destination is None or destination.well_known == ROOT_FOLDER:
            raise _not_found()
        source, old_rest_id = message.folder_id, message.rest_id
        mailbox.move_message(message, destination.id)
        self.notifier.message_changed(mailbox, source, message, "deleted", rest_id=old_rest_id)
        self.notifier.message_changed(mailbox, destination.id, message, "created")
        body = {"@odata.context": self._message_context(g), **self.render_message(g, message)}
        return await send_json(g.request, body, status=201, headers=g.headers())

    # -- handlers: attachments ------------------------------------------------------------------
    @staticmethod
    def _attachments_context(g: GraphRequest) -> str:
        return f"{g.base}/$metadata#users('{g.params['user']}')/messages('{g.params['message']}')/attachments"

    async def list_attachments(self, g: GraphRequest) -> web.StreamResponse:
        g.require_role(*READ_ROLES)
        _, message = self._message(g)
        select = parse_list(g.option("select")) or None
        payload = {
            "@odata.context": self._attachments_context(g),
            "value": [
                self.attachment_json(a, g.immutable, select, content_bytes=self._content_bytes_mode(message, a))
                for a in message.attachments
            ],
        }
        return await send_json(g.request, payload, headers=g.headers())

    async def get_attachment(self, g: GraphRequest) -> web.StreamResponse:
        g.require_role(*READ_ROLES)
        _, attachment = self._attachment(g)
        expand = (g.option("expand") or "").replace(" ", "").lower()
        if expand and expand not in ("microsoft.graph.itemattachment/item", "item"):
            raise GraphError(400, "BadRequest", f"Unsupported $expand '{g.option('expand')}' on an attachment.")
        select = parse_list(g.option("select")) or None
        body = self.attachment_json(attachment, g.immutable, select, expand_item=bool(expand))
        context = f"{self._attachments_context(g)}/$entity"
        return await send_json(g.request, {"@odata.context": context, **body}, headers=g.headers())

    async def attachment_value(self, g: GraphRequest) -> web.StreamResponse:
        g.require_role(*READ_ROLES)
        _, attachment = self._attachment(g)
        if attachment.kind == "reference" or attachment.content is None:
            raise GraphError(
                405,
                "ErrorInvalidRequest",
                "The $value of a reference attachment cannot be retrieved; it is a link to a file.",
            )
        content_type = (
            "message/rfc822" if attachment.kind == "item" else (attachment.content_type or "application/octet-stream")
        )
        return await send_content(g.request, attachment.content, content_type, headers=g.headers())
