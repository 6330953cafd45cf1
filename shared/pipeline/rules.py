"""What to keep of a mail's attachments, and what to do with the mail afterwards: the typed settings, parsed
here from the environment (ATTACHMENT_*, INCLUDE_INLINE_ATTACHMENTS, SAVE_MESSAGE, SAVE_BODY, AFTER_INGEST,
AFTER_INGEST_BY_MAILBOX)."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from ..env import read_bool, read_int, read_list
from ..errors import SettingsError

# Exchange's largest configurable message size (graph_facts §8): no attachment can be larger.
MAX_ATTACHMENT_BYTES = 150 * 1024 * 1024
# What a mail client places in the text as a picture (logos, signatures, screenshots).
IMAGE_EXTENSIONS = frozenset(
    {"png", "jpg", "jpeg", "jpe", "gif", "bmp", "dib", "tif", "tiff", "webp", "svg", "ico", "emf", "wmf", "heic"}
)


def is_image(name: str, content_type: str | None) -> bool:
    ctype = (content_type or "").split(";", 1)[0].strip().lower()
    ext = name.rsplit(".", 1)[1].lower() if "." in name else ""
    return ctype.startswith("image/") or ext in IMAGE_EXTENSIONS


@dataclass(frozen=True)
class AttachmentRules:
    """Filters and limits. An attachment is kept when it passes all of them; otherwise it is
    recorded in the manifest as skipped, with the reason, never dropped silently."""

    extensions: tuple[str, ...] = ()  # lower case, without the dot; empty: any
    content_types: tuple[str, ...] = ()  # lower case patterns such as `image/*`; empty: any
    min_bytes: int = 0
    max_bytes: int = MAX_ATTACHMENT_BYTES
    include_inline: bool = False

    def type_skip(self, name: str, content_type: str | None) -> str | None:
        """Allowed if the extension or the content type is on a list (a list not set allows all)."""
        if not self.extensions and not self.content_types:
            return None
        ext = name.rsplit(".", 1)[1].lower() if "." in name else ""
        if self.extensions and ext in self.extensions:
            return None
        ctype = (content_type or "").split(";", 1)[0].strip().lower()
        if self.content_types and any(fnmatch.fnmatchcase(ctype, p) for p in self.content_types):
            return None
        return f"type not allowed (.{ext or '(none)'}, {ctype or 'no content type'})"

    def size_skip(self, size: int) -> str | None:
        if size > self.max_bytes:
            return f"larger than ATTACHMENT_MAX_BYTES ({size} > {self.max_bytes} bytes)"
        if size < self.min_bytes:
            return f"smaller than ATTACHMENT_MIN_BYTES ({size} < {self.min_bytes} bytes)"
        return None

    def skip_reason(self, name: str, content_type: str | None, inline: bool, size: int | None) -> str | None:
        """The reason to skip, judged before download (`size` None: not known yet). Only inline images
        are skipped as inline: `isInline` is the sender's flag, and Apple Mail marks PDFs inline."""
        if inline and not self.include_inline and is_image(name, content_type):
            return "inline image (INCLUDE_INLINE_ATTACHMENTS is off)"
        reason = self.type_skip(name, content_type)
        if reason is None and size is not None:
            reason = self.size_skip(size)
        return reason


SaveMode = Literal["never", "always", "no-files"]
SAVE_MODES: tuple[SaveMode, ...] = ("never", "always", "no-files")


@dataclass(frozen=True)
class SaveMail:
    """SAVE_MESSAGE and SAVE_BODY: the mail itself (its MIME, as message.eml) and its body (body.html or
    body.txt) stored beside its files; `no-files`: only when no file of the mail was kept."""

    message: SaveMode = "never"
    body: SaveMode = "never"

    @staticmethod
    def wanted(mode: SaveMode, files_kept: bool) -> bool:
        return mode == "always" or (mode == "no-files" and not files_kept)


@dataclass(frozen=True)
class AfterIngest:
    """Done to the mail once its manifest is written; each needs Mail.ReadWrite (Graph). IMAP: mark-read
    sets \\Seen, a category becomes a keyword, move uses MOVE. `delete` is POP3's only action (POP3 has no
    flags or folders), and only POP3's: settings refuse any other combination."""

    mark_read: bool = False
    category: str | None = None
    move_to: str | None = None  # a folder path like `MAILBOXES` takes: `Archive/Invoices`
    delete: bool = False  # POP3: DELE, applied at the session's QUIT

    @property
    def anything(self) -> bool:
        return self.mark_read or self.category is not None or self.move_to is not None or self.delete

    @property
    def flags_or_folders(self) -> bool:
        """Whether it asks for what only Graph and IMAP have: read state, categories, folders."""
        return self.mark_read or self.category is not None or self.move_to is not None

    def __str__(self) -> str:
        parts = ["mark-read"] if self.mark_read else []
        parts += [f"category:{self.category}"] if self.category else []
        parts += [f"move:{self.move_to}"] if self.move_to else []
        parts += ["delete"] if self.delete else []
        return ",".join(parts) or "none"


def parse_after_ingest(text: str) -> AfterIngest:
    """`none`, or a comma list of `mark-read`, `category:<name>`, `move:<folder path>`, `delete` (POP3)."""
    mark_read, category, move_to, delete = False, None, None, False
    for raw in text.split(","):
        item = raw.strip()
        kind, _, value = item.partition(":")
        kind, value = kind.strip().lower(), value.strip()
        if kind in ("", "none") and not value:
            continue
        if kind == "mark-read" and not value:
            mark_read = True
        elif kind == "delete" and not value:
            delete = True
        elif kind == "category" and value and category is None:
            category = value
        elif kind == "move" and value and move_to is None:
            segments = [s.strip() for s in value.split("/")]
            if not all(segments):
                raise ValueError(f"move:{value} has an empty folder name")
            move_to = "/".join(segments)
        else:
            raise ValueError(f"{item!r} is not one of none, mark-read, category:<name>, move:<folder>, delete")
    if delete and (mark_read or category or move_to):
        raise ValueError("delete is POP3's only action and goes alone (POP3 has no flags or folders)")
    return AfterIngest(mark_read, category, move_to, delete)


_EXTENSION = re.compile(r"^\.?[a-z0-9_+-]{1,20}$")
_CONTENT_TYPE = re.compile(r"^[a-z0-9*!#$&^_.+-]+/[a-z0-9*!#$&^_.+-]+$")


def attachment_rules_from_env(env: Mapping[str, str]) -> AttachmentRules:
    rules = AttachmentRules(
        extensions=tuple(e.lstrip(".") for e in read_list(env, "ATTACHMENT_EXTENSIONS", _EXTENSION)),
        content_types=read_list(env, "ATTACHMENT_CONTENT_TYPES", _CONTENT_TYPE),
        min_bytes=read_int(env, "ATTACHMENT_MIN_BYTES", 0, 0, MAX_ATTACHMENT_BYTES),
        max_bytes=read_int(env, "ATTACHMENT_MAX_BYTES", MAX_ATTACHMENT_BYTES, 1, MAX_ATTACHMENT_BYTES),
        include_inline=read_bool(env, "INCLUDE_INLINE_ATTACHMENTS", False),
    )
    if rules.min_bytes > rules.max_bytes:
        raise SettingsError("ATTACHMENT_MIN_BYTES", f"is above ATTACHMENT_MAX_BYTES ({rules.max_bytes})")
    return rules


def _save_mode(env: Mapping[str, str], name: str) -> SaveMode:
    raw = env.get(name, "").strip().lower() or "never"
    for mode in SAVE_MODES:
        if raw == mode:
            return mode
    raise SettingsError(name, f"must be one of {', '.join(SAVE_MODES)}, got {raw!r}")


def save_mail_from_env(env: Mapping[str, str]) -> SaveMail:
    return SaveMail(_save_mode(env, "SAVE_MESSAGE"), _save_mode(env, "SAVE_BODY"))


class Place(Protocol):
    """Where mail comes from, as after-ingest actions see it: a Microsoft 365 mailbox folder or an IMAP or
    POP3 account folder (settings' MailboxFolder and MailAccount), without the pipeline importing settings."""

    @property
    def key(self) -> str: ...

    @property
    def mailbox(self) -> str: ...

    @property
    def folder(self) -> str: ...

    @property
    def protocol(self) -> str: ...


def _after_ingest_setting(name: str, text: str) -> AfterIngest:
    try:
        return parse_after_ingest(text)
    except ValueError as exc:
        raise SettingsError(name, str(exc)) from None


def after_ingest_from_env(env: Mapping[str, str]) -> AfterIngest:
    return _after_ingest_setting("AFTER_INGEST", env.get("AFTER_INGEST", ""))


def after_ingest_by_mailbox_from_env(env: Mapping[str, str], places: Sequence[Place]) -> dict[str, AfterIngest]:
    """AFTER_INGEST_BY_MAILBOX, `mailbox=actions; mailbox/Folder=actions`: a mailbox applies to all its
    folders, a folder entry wins. An IMAP or POP3 account is named by its address (`MailAccount.address`),
    and its folder (POP3: INBOX). Keyed by `Place.key`."""
    name = "AFTER_INGEST_BY_MAILBOX"
    by_mailbox: dict[str, AfterIngest] = {}
    by_folder: dict[str, AfterIngest] = {}
    for entry in env.get("AFTER_INGEST_BY_MAILBOX", "").split(";"):
        if not entry.strip():
            continue
        target, sep, actions = entry.partition("=")
        if not sep:
            raise SettingsError(name, f"entry {entry.strip()!r} is not mailbox=actions")
        mailbox, _, folder = target.strip().lower().partition("/")
        matches = [m for m in places if m.mailbox == mailbox and (not folder or m.folder.lower() == folder)]
        if not matches:
            raise SettingsError(name, f"{target.strip()!r} is not in MAILBOXES")
        parsed = _after_ingest_setting(name, actions)
        for match in matches:
            (by_folder if folder else by_mailbox)[match.key] = parsed
    return {**by_mailbox, **by_folder}


def check_after_ingest(after_ingest: AfterIngest, by_place: Mapping[str, AfterIngest], places: Sequence[Place]) -> None:
    """The action each place gets (AFTER_INGEST_BY_MAILBOX, else AFTER_INGEST) suits its protocol
    (`action_problem`)."""
    for place in places:
        action = by_place.get(place.key, after_ingest)
        name = "AFTER_INGEST_BY_MAILBOX" if place.key in by_place else "AFTER_INGEST"
        problem = action_problem(place, action)
        if problem:
            raise SettingsError(name, problem)


def action_problem(place: Place, action: AfterIngest) -> str | None:
    """`delete` is for POP3 accounts only, and POP3 accounts take nothing else (no flags, no folders)."""
    pop3 = place.protocol == "pop3"
    if action.delete and not pop3:
        return f"delete applies to POP3 accounts only, not to {place}"
    if pop3 and action.flags_or_folders:
        return f"{action} does not apply to POP3 account {place} (POP3 has no flags or folders: only delete)"
    return None
