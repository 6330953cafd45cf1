"""In-memory state of the simulated tenant: app registrations, mailboxes, folders, messages,
attachments, subscriptions and Key Vault secrets. Nothing is persisted: a restart is a fresh tenant.
"""

from __future__ import annotations

import base64
import os
import secrets
import uuid
from dataclasses import dataclass, field
from datetime import datetime

from .content import Content

DEFAULT_ROLES = ("Mail.Read", "Mail.ReadWrite")

# Well-known folder names (Graph's mailFolder docs) and their display names, in Outlook's order.
WELL_KNOWN_FOLDERS: dict[str, str] = {
    "inbox": "Inbox",
    "archive": "Archive",
    "deleteditems": "Deleted Items",
    "drafts": "Drafts",
    "sentitems": "Sent Items",
    "junkemail": "Junk Email",
    "outbox": "Outbox",
}
ROOT_FOLDER = "msgfolderroot"


def exchange_id(prefix: str = "AAMkA") -> str:
    """An opaque id shaped like Exchange's: long, base64url with padding, so callers must not
    assume ids are URL-path-safe without encoding or that they are short."""
    return prefix + base64.urlsafe_b64encode(os.urandom(71)).decode()


def change_key() -> str:
    return "CQAAABYAAA" + base64.b64encode(os.urandom(18)).decode()


@dataclass
class App:
    client_id: str
    secret: str
    roles: tuple[str, ...] = DEFAULT_ROLES
    service_principal_id: str = field(default_factory=lambda: str(uuid.uuid4()))


@dataclass
class Folder:
    id: str
    mailbox_id: str
    display_name: str
    parent_id: str
    well_known: str | None = None
    is_hidden: bool = False


@dataclass
class EmailAddress:
    name: str
    address: str


@dataclass
class Attachment:
    immutable_id: str
    rest_id: str
    kind: str  # "file" | "item" | "reference"
    name: str
    content_type: str | None
    is_inline: bool
    last_modified: datetime
    content: Content | None = None  # file bytes, or the attached mail's MIME for an item
    sha256: str | None = None
    content_id: str | None = None
    item: Message | None = None
    sealed: Message | None = None  # smime.p7m: the mail whose body and attachments it signs or encrypts
    source_url: str | None = None
    provider_type: str = "other"
    permission: str = "other"
    is_folder: bool = False

    @property
    def size(self) -> int:
        return self.content.size if self.content is not None else 0

    def graph_id(self, immutable: bool) -> str:
        return self.immutable_id if immutable else self.rest_id


@dataclass
class Message:
    immutable_id: str
    rest_id: str
    mailbox_id: str
    folder_id: str
    subject: str
    body: str
    body_type: str  # "text" | "html"
    sender: EmailAddress
    to: list[EmailAddress]
    received: datetime
    internet_message_id: str
    change_key: str
    attachments: list[Attachment] = field(default_factory=list)
    is_read: bool = False
    categories: list[str] = field(default_factory=list)
    importance: str = "normal"
    cc: list[EmailAddress] = field(default_factory=list)
    # Per-message override of the contentBytes listing options (see SimOptions).
    content_bytes_limit: int | None = None
    content_bytes_over_limit: str | None = None
    # What Exchange Online stamped as its Authentication-Results (None: a pass for the sender's domain), and the
    # header fields the sender wrote beyond the usual ones (`headers.py`).
    authentication: str | None = None
    sender_headers: list[tuple[str, str]] = field(default_factory=list)

    def graph_id(self, immutable: bool) -> str:
        return self.immutable_id if immutable else self.rest_id

    def find_attachment(self, attachment_id: str) -> Attachment | None:
        for attachment in self.attachments:
            if attachment_id in (attachment.immutable_id, attachment.rest_id):
                return attachment
        return None


@dataclass
class Change:
    """One entry of a mailbox's change log, which delta queries replay."""

    seq: int
    folder_id: str
    message_id: str  # immutable id
    rest_id: str  # the regular id at the time of the change
    # "created" (new in the folder, moves in included), "updated" (changed in place) or "deleted"
    # (gone from the folder, moves out included): what delta's changeType filters on.
    change_type: str = "updated"


@dataclass
class Mailbox:
    id: str
    address: str
    display_name: str
    folders: dict[str, Folder] = field(default_factory=dict)
    # Both the regular and the immutable id of a message map to it: Graph accepts either.
    messages: dict[str, Message] = field(default_factory=dict)
    changes: list[Change] = field(default_factory=list)
    # Every id a message ever had (regular ids before moves, deleted messages too) -> immutable id,
    # so the request log can attribute any request to its message.
    known_ids: dict[str, str] = field(default_factory=dict)
    deleted: dict[str, Message] = field(default_factory=dict)  # by immutable id

    def record_change(self, folder_id: str, message: Message, change_type: str = "updated") -> None:
        seq = self.changes[-1].seq + 1 if self.changes else 1
        self.changes.append(Change(seq, folder_id, message.immutable_id, message.rest_id, change_type))

    @property
    def change_seq(self) -> int:
        return self.changes[-1].seq if self.changes else 0

    def children(self, parent_id: str) -> list[Folder]:
        return [folder for folder in self.folders.values() if folder.parent_id == parent_id]

    def root_id(self) -> str:
        return next(f.id for f in self.folders.values() if f.well_known == ROOT_FOLDER)

    def find_folder(self, key: str) -> Folder | None:
        """By id or, case-insensitively, by well-known name."""
        if key in self.folders:
            return self.folders[key]
        lowered = key.lower()
        for folder in self.folders.values():
            if folder.well_known == lowered:
                return folder
        return None

    def find_child(self, parent_id: str, display_name: str) -> Folder | None:
        lowered = display_name.lower()
        for folder in self.children(parent_id):
            if folder.display_name.lower() == lowered:
                return folder
        return None

    def add_folder(
        self, display_name: str, parent_id: str, well_known: str | None = None, is_hidden: bool = False
    ) -> Folder:
        folder = Folder(exchange_id(), self.id, display_name, parent_id, well_known, is_hidden)
        self.folders[folder.id] = folder
        return folder

    def folder_by_path(self, path: str, create: bool = False) -> Folder | None:
        """``Inbox/Invoices``: the first segment is a top-level folder by display or well-known name."""
        parent = self.root_id()
        folder: Folder | None = None
        for index, part in enumerate(p for p in path.split("/") if p):
            folder = self.find_child(parent, part)
            if folder is None and index == 0:
                candidate = self.find_folder(part)
                if candidate is not None and candidate.well_known != ROOT_FOLDER:
                    folder = candidate
            if folder is None:
                if not create:
                    return None
                folder = self.add_folder(part, parent)
            parent = folder.id
        return folder

    def folder_messages(self, folder_id: str) -> list[Message]:
        unique = {m.immutable_id: m for m in self.messages.values() if m.folder_id == folder_id}
        return list(unique.values())

    def all_messages(self) -> list[Message]:
        return list({m.immutable_id: m for m in self.messages.values()}.values())

    def add_message(self, message: Message) -> None:
        self.messages[message.immutable_id] = message
        self.messages[message.rest_id] = message
        self.known_ids[message.immutable_id] = self.known_ids[message.rest_id] = message.immutable_id
        self.record_change(message.folder_id, message, "created")

    def delete_message(self, message: Message) -> None:
        """Gone for every id (Graph's delete moves it out of reach of the mailbox's folders)."""
        self.messages.pop(message.immutable_id, None)
        self.messages.pop(message.rest_id, None)
        self.deleted[message.immutable_id] = message
        self.record_change(message.folder_id, message, "deleted")

    def move_message(self, message: Message, folder_id: str) -> None:
        """A move gives the message (and its attachments) new regular ids; immutable ids stay."""
        self.record_change(message.folder_id, message, "deleted")
        del self.messages[message.rest_id]
        message.rest_id = exchange_id()
        message.folder_id = folder_id
        message.change_key = change_key()
        for attachment in message.attachments:
            attachment.rest_id = exchange_id()
        self.messages[message.rest_id] = message
        self.known_ids[message.rest_id] = message.immutable_id
        self.record_change(folder_id, message, "created")


@dataclass
class Subscription:
    id: str
    app_id: str
    creator_id: str
    resource: str
    mailbox_id: str
    folder_id: str | None  # None: the whole mailbox (``users/{id}/messages``)
    change_type: str
    client_state: str | None
    notification_url: str
    lifecycle_url: str | None
    expiration: datetime
    immutable_ids: bool

    @property
    def change_types(self) -> set[str]:
        return {part.strip().lower() for part in self.change_type.split(",")}


@dataclass
class SecretVersion:
    name: str
    version: str
    value: str
    content_type: str | None
    tags: dict[str, str] | None
    enabled: bool
    created: datetime
    updated: datetime
    not_before: datetime | None = None
    expires: datetime | None = None
    managed: bool = False  # the backing secret of a Key Vault certificate


@dataclass
class SimOptions:
    """Behaviour the docs leave open, chosen by tests through ``/_sim/options``."""

    # Listings ($expand=attachments, GET .../attachments) of file attachments larger than the limit
    # carry contentBytes as given by the mode: "include" (as documented), "omit" or "empty" ("").
    content_bytes_limit: int | None = None
    content_bytes_over_limit: str = "include"
    # Status of a duplicate folder name (code ErrorFolderExists); 409 by default, 400 also seen.
    folder_exists_status: int = 409
    # A lifetime cap below the documented 10,080 minutes: Graph names the cap in its 400 answer
    # (graph_facts §1); some tenants and resource kinds have shorter ones.
    subscription_max_minutes: int | None = None
    # Graph's subscription API limit: POST, PATCH and DELETE per app and tenant in 20 seconds (graph_facts §6).
    subscription_writes_per_20s: int = 500


class Store:
    def __init__(self, tenant_id: str, client_id: str, client_secret: str) -> None:
        self.tenant_id = tenant_id
        self.apps: dict[str, App] = {client_id: App(client_id, client_secret)}
        self.mailboxes: dict[str, Mailbox] = {}
        self.subscriptions: dict[str, Subscription] = {}
        # Key Vault secret names are case-insensitive; versions are kept oldest first.
        self.secrets: dict[str, list[SecretVersion]] = {}
        # Part of every delta token: changing it invalidates them all (``410 Gone``).
        self.delta_epoch = secrets.token_hex(4)
        self.options = SimOptions()

    def find_mailbox(self, key: str) -> Mailbox | None:
        """By object id or by address/UPN, case-insensitively (``AAD-UPN:`` prefix allowed)."""
        if key.lower().startswith("aad-upn:"):
            key = key[len("aad-upn:") :]
        lowered = key.lower()
        for mailbox in self.mailboxes.values():
            if lowered in (mailbox.id.lower(), mailbox.address.lower()):
                return mailbox
        return None

    def find_message(self, key: str, deleted: bool = False) -> tuple[Mailbox, Message] | None:
        """A live message by its immutable or current regular id, in any mailbox; with ``deleted``,
        also a deleted one by any id it had."""
        for mailbox in self.mailboxes.values():
            message = mailbox.messages.get(key)
            if message is None and deleted and key in mailbox.known_ids:
                message = mailbox.deleted.get(mailbox.known_ids[key])
            if message is not None:
                return mailbox, message
        return None

    def message_id_of(self, key: str) -> str | None:
        """The immutable id behind any id a message ever had, or None."""
        for mailbox in self.mailboxes.values():
            found = mailbox.known_ids.get(key)
            if found is not None:
                return found
        return None

    def add_mailbox(self, address: str, display_name: str) -> Mailbox:
        mailbox = Mailbox(str(uuid.uuid4()), address, display_name)
        root = mailbox.add_folder("Top of Information Store", "", ROOT_FOLDER)
        for well_known, name in WELL_KNOWN_FOLDERS.items():
            mailbox.add_folder(name, root.id, well_known)
        self.mailboxes[mailbox.id] = mailbox
        return mailbox


def new_secret_version() -> str:
    return secrets.token_hex(16)
