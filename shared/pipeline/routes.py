"""Routes: an ordered list of rules that send a mail to a container and a folder layout, tag it, or skip it.

Configured as a JSON list, in the setting `ROUTES` or in a file that ships with the app named by `ROUTES_FILE`
(`ROUTES` wins when both are set, so an app setting can override the shipped file without a redeployment), or in
a blob of the state container named by `ROUTES_BLOB`, re-read while the app runs (routes_blob.py).
Parsed and checked once at start-up (`routes_from_env`): a bad route stops start-up with one line naming the
route and the problem. The first route whose conditions all hold decides; a mail that no route matches (and every mail
when there are no routes) keeps the standard layout in `ATTACHMENTS_CONTAINER`, as route `default`.

A route's conditions read only `MailFacts`, which any source (Graph, IMAP, POP3) can fill in; they know no
protocol. Path templates put only sanitised values into a blob path (`layout.sanitize_name`), one folder
name per value, and always include `{messageKey}`, so a hostile subject or address cannot leave the
container's folder layout and two mails never share a folder.
"""

from __future__ import annotations

import fnmatch
import json
import re
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..env import CONTAINER_NAME
from ..errors import SettingsError
from .layout import MAX_TAG_VALUE, MAX_TAGS, TAG_KEY, message_prefix, sanitize_name, tag_value
from .rules import AfterIngest, Place, action_problem, parse_after_ingest
from .senderauth import SenderAuthentication
from .senderauth import condition as sender_authentication

DEFAULT_ROUTE = "default"
TOKENS = ("mailbox", "folder", "yyyy", "MM", "dd", "messageKey", "sender", "senderDomain", "route")
# Tags every stored blob carries; `kind` is set per blob (file, item, manifest...); `protected` and `duplicate`
# only a file that is (`filecheck.py`), but the budget must hold for one that is both.
SYSTEM_TAGS = ("mailbox", "messageKey", "senderDomain", "route", "kind", "senderAuth", "protected", "duplicate")
MAX_ROUTE_TAGS = MAX_TAGS - len(SYSTEM_TAGS)
# A template's length and token count, and each value's bytes, are bounded so that the prefix plus a file
# name (at most 200 bytes) stays well inside Blob Storage's 1,024-character blob name.
MAX_TEMPLATE = 256
MAX_TEMPLATE_TOKENS = 8
MAX_VALUE_BYTES = 64
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_TOKEN = re.compile(r"\{([^{}]*)\}")
_MATCH_KEYS = (
    "mailbox", "folder", "from", "to", "subject", "attachment", "contentType", "noKeptFile", "senderAuthentication",
    "duplicate", "protected",
)  # fmt: skip
_FILE_KEYS = ("attachment", "contentType", "noKeptFile")  # known only once the files are listed
_CONTENT_KEYS = ("duplicate", "protected")  # known only once the files' bytes have passed (`survey.py`)
_ROUTE_KEYS = ("name", "match", "container", "path", "skip", "tags", "afterIngest")


class RouteError(ValueError):
    """One route's problem, as one line that names it."""


@dataclass(frozen=True)
class Attachment:
    name: str
    content_type: str | None = None


@dataclass(frozen=True)
class MailFacts:
    """What routes may look at, as a source reads it from the mail."""

    mailbox: str
    folder: str
    message_key: str
    received: datetime
    sender: str | None = None
    recipients: tuple[str, ...] = ()  # To and Cc
    subject: str = ""
    attachments: tuple[Attachment, ...] = ()  # as the source lists them, links excluded
    has_kept_file: bool = False  # whether the attachment rules keep at least one file
    authentication: SenderAuthentication | None = None  # the receiving server's verdicts (`senderauth.py`)
    duplicate: bool = False  # a kept file was stored before, by another mail (DUPLICATES)
    protected: bool = False  # a file, or the mail itself, cannot be read (a password, an envelope, IRM)

    @property
    def sender_domain(self) -> str:
        return (self.sender or "").rpartition("@")[2].strip().lower()


Condition = Callable[[MailFacts], bool]


def _label(label: str) -> str:
    if label.startswith("xn--"):
        try:
            return label[4:].encode("ascii").decode("punycode")
        except (UnicodeError, ValueError):
            return label
    return label


def normalise_address(address: str) -> tuple[str, str] | None:
    """(local part, domain) compared case-insensitively in Unicode: `Rechnung@XN--MLLER-KVA.de` and
    `rechnung@müller.de` are the same address. None when it has no `@`."""
    local, at, domain = unicodedata.normalize("NFC", address.strip()).rpartition("@")
    if not at or not local or not domain:
        return None
    labels = [_label(part.lower()) for part in domain.rstrip(".").split(".")]
    return local.casefold(), unicodedata.normalize("NFC", ".".join(labels)).casefold()


@dataclass(frozen=True)
class AddressPattern:
    """`name@domain`, `*@domain` (that domain only) or `*@*.domain` (its subdomains, at any depth)."""

    local: str | None  # None: any
    domain: str
    subdomains: bool

    @classmethod
    def parse(cls, text: str) -> AddressPattern:
        local, at, domain = text.strip().rpartition("@")
        subdomains = domain.startswith("*.")
        parsed = normalise_address(f"{local}@{domain.removeprefix('*.')}") if at else None
        if parsed is None or "*" in parsed[1] or (local != "*" and "*" in local):
            raise ValueError(f"{text!r} is not name@domain, *@domain or *@*.domain")
        return cls(None if local == "*" else parsed[0], parsed[1], subdomains)

    def matches(self, address: str) -> bool:
        parsed = normalise_address(address)
        if parsed is None:
            return False
        local, domain = parsed
        if self.local is not None and local != self.local:
            return False
        return domain.endswith(f".{self.domain}") if self.subdomains else domain == self.domain


@dataclass(frozen=True)
class Template:
    """A blob folder layout such as `{senderDomain}/{yyyy}/{MM}/{messageKey}`."""

    text: str

    @classmethod
    def parse(cls, text: str) -> Template:
        if len(text) > MAX_TEMPLATE:
            raise ValueError(f"path is longer than {MAX_TEMPLATE} characters")
        tokens = _TOKEN.findall(text)
        unknown = [t for t in tokens if t not in TOKENS]
        if unknown:
            raise ValueError(f"path has an unknown token {{{unknown[0]}}} (known: {', '.join(TOKENS)})")
        if "{" in _TOKEN.sub("", text) or "}" in _TOKEN.sub("", text):
            raise ValueError("path has an unmatched { or }")
        if len(tokens) > MAX_TEMPLATE_TOKENS:
            raise ValueError(f"path has more than {MAX_TEMPLATE_TOKENS} tokens")
        if "messageKey" not in tokens:
            raise ValueError("path must contain {messageKey}, so that every mail has a folder of its own")
        for segment in text.split("/"):
            sample = _TOKEN.sub("x", segment)  # the literal text must come through sanitising unchanged
            if not segment or sanitize_name(sample, "_") != sample:
                raise ValueError(f"path folder {segment!r} is empty or has characters a blob path cannot keep")
        return cls(text)

    def render(self, values: Mapping[str, str]) -> str:
        """Each value made a safe folder-name part (no `/`, no `..`, no control characters), each folder
        sanitised again as a whole: the result is always a relative path inside the container."""

        def value(match: re.Match[str]) -> str:
            text = sanitize_name(values[match.group(1)], "_")
            return text.encode()[:MAX_VALUE_BYTES].decode(errors="ignore") or "_"

        return "/".join(sanitize_name(_TOKEN.sub(value, segment), "_") for segment in self.text.split("/"))


@dataclass(frozen=True)
class Route:
    name: str
    conditions: tuple[Condition, ...] = ()
    container: str | None = None  # None: ATTACHMENTS_CONTAINER
    template: Template | None = None  # None: the standard layout
    skip: bool = False
    tags: Mapping[str, str] = field(default_factory=dict)
    after_ingest: AfterIngest | None = None  # None: AFTER_INGEST_BY_MAILBOX, then AFTER_INGEST
    on_files: bool = False  # a condition looks at the mail's files (names, types, whether one is kept)
    on_content: bool = False  # a condition looks at the files' bytes (duplicate, protected)
    mailboxes: tuple[str, ...] | None = None  # match.mailbox as given; None: any mailbox

    def matches(self, mail: MailFacts) -> bool:
        return all(condition(mail) for condition in self.conditions)


@dataclass(frozen=True)
class Decision:
    """What the deciding route makes of one mail."""

    route: str
    container: str | None
    prefix: str
    skip: bool
    tags: Mapping[str, str]  # every blob's tags but `kind`
    after_ingest: AfterIngest | None


def decide(routes: tuple[Route, ...], mail: MailFacts) -> Decision:
    """The first matching route's decision; the standard layout (route `default`) when none matches."""
    route = next((r for r in routes if r.matches(mail)), None) or Route(DEFAULT_ROUTE)
    if route.template is None:
        prefix = message_prefix(mail.mailbox, mail.received, mail.message_key)
    else:
        day = mail.received.astimezone(UTC)
        prefix = route.template.render(
            {
                "mailbox": mail.mailbox.lower(),
                "folder": mail.folder,
                "yyyy": f"{day:%Y}",
                "MM": f"{day:%m}",
                "dd": f"{day:%d}",
                "messageKey": mail.message_key,
                "sender": (mail.sender or "").lower(),
                "senderDomain": mail.sender_domain,
                "route": route.name,
            }
        )
    tags = {
        "mailbox": tag_value(mail.mailbox.lower()),
        "messageKey": mail.message_key,
        "senderDomain": tag_value(mail.sender_domain),
        "route": route.name,
        "senderAuth": mail.authentication.result if mail.authentication else "none",
        **route.tags,
    }
    return Decision(route.name, route.container, prefix, route.skip, tags, route.after_ingest)


# -- parsing -------------------------------------------------------------------------------------------


def _strings(value: Any, what: str) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(i, str) and i.strip() for i in items):
        raise ValueError(f"{what} must be a text or a list of texts")
    return tuple(i.strip() for i in items)


def _in(values: tuple[str, ...]) -> Callable[[str], bool]:
    wanted = {unicodedata.normalize("NFC", v).casefold() for v in values}
    return lambda text: unicodedata.normalize("NFC", text).casefold() in wanted


def _addresses(value: Any, what: str) -> tuple[AddressPattern, ...]:
    return tuple(AddressPattern.parse(p) for p in _strings(value, what))


def _conditions(match: Any) -> tuple[Condition, ...]:
    if not isinstance(match, dict):
        raise ValueError("match must be an object")
    unknown = [k for k in match if k not in _MATCH_KEYS]
    if unknown:
        raise ValueError(f"match has an unknown field {unknown[0]!r} (known: {', '.join(_MATCH_KEYS)})")
    conditions: list[Condition] = []
    if "mailbox" in match:
        mailbox = _in(_strings(match["mailbox"], "match.mailbox"))
        conditions.append(lambda m: mailbox(m.mailbox))
    if "folder" in match:
        folders = _in(tuple("/".join(s.strip() for s in f.split("/")) for f in _strings(match["folder"], "folder")))
        conditions.append(lambda m: folders(m.folder))
    if "from" in match:
        senders = _addresses(match["from"], "match.from")
        conditions.append(lambda m: m.sender is not None and any(p.matches(m.sender) for p in senders))
    if "to" in match:
        recipients = _addresses(match["to"], "match.to")
        conditions.append(lambda m: any(p.matches(r) for p in recipients for r in m.recipients))
    if "subject" in match:
        if not isinstance(match["subject"], str):
            raise ValueError("match.subject must be a regular expression (a text)")
        try:
            subject = re.compile(match["subject"])
        except re.error as exc:
            raise ValueError(f"match.subject is not a valid regular expression ({exc})") from None
        conditions.append(lambda m: subject.search(m.subject) is not None)
    if "attachment" in match:
        globs = tuple(g.casefold() for g in _strings(match["attachment"], "match.attachment"))
        conditions.append(
            lambda m: any(fnmatch.fnmatchcase(a.name.casefold(), g) for a in m.attachments for g in globs)
        )
    if "contentType" in match:
        types = tuple(t.lower() for t in _strings(match["contentType"], "match.contentType"))
        conditions.append(
            lambda m: any(fnmatch.fnmatchcase(_media_type(a.content_type), t) for a in m.attachments for t in types)
        )
    if "noKeptFile" in match:
        wanted = match["noKeptFile"]
        if not isinstance(wanted, bool):
            raise ValueError("match.noKeptFile must be true or false")
        conditions.append(lambda m: m.has_kept_file is not wanted)
    if "senderAuthentication" in match:
        authenticated = sender_authentication(match["senderAuthentication"])
        conditions.append(lambda m: authenticated(m.authentication))
    for key in _CONTENT_KEYS:
        if key in match:
            conditions.append(_flag(key, match[key]))
    return tuple(conditions)


def _flag(key: str, wanted: Any) -> Condition:
    """`duplicate` or `protected`: true or false."""
    if not isinstance(wanted, bool):
        raise ValueError(f"match.{key} must be true or false")
    return lambda m: bool(getattr(m, key)) is wanted


def _media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def _tags(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        raise ValueError("tags must be an object of names and texts")
    if len(value) > MAX_ROUTE_TAGS:
        raise ValueError(
            f"tags has {len(value)} tags; a route may add at most {MAX_ROUTE_TAGS} (a blob takes {MAX_TAGS})"
        )
    for key, text in value.items():
        if key in SYSTEM_TAGS:
            raise ValueError(f"tag {key!r} is set by the app")
        if not TAG_KEY.match(key):
            raise ValueError(f"tag name {key!r} is not 1 to 128 letters, digits, space or + - . / : = _")
        if not isinstance(text, str) or len(text) > MAX_TAG_VALUE or tag_value(text) != text:
            raise ValueError(f"tag {key!r}: the value must be up to 256 letters, digits, space or + - . / : = _")
    return dict(value)


def _route(raw: Any) -> Route:
    if not isinstance(raw, dict):
        raise ValueError("must be an object")
    unknown = [k for k in raw if k not in _ROUTE_KEYS]
    if unknown:
        raise ValueError(f"unknown field {unknown[0]!r} (known: {', '.join(_ROUTE_KEYS)})")
    skip = raw.get("skip", False)
    if not isinstance(skip, bool):
        raise ValueError("skip must be true or false")
    stored = [k for k in ("container", "path", "tags") if k in raw]
    if skip and stored:
        raise ValueError(f"a skip route stores nothing, so {stored[0]} does not apply")
    container = raw.get("container")
    if container is not None and (not isinstance(container, str) or not CONTAINER_NAME.match(container)):
        raise ValueError(
            f"container {container!r} is not a valid blob container name "
            "(3 to 63 lower-case letters, digits and single hyphens, starting and ending with a letter or digit)"
        )
    path = raw.get("path")
    if path is not None and not isinstance(path, str):
        raise ValueError("path must be a text")
    after = raw.get("afterIngest")
    if after is not None and not isinstance(after, str):
        raise ValueError("afterIngest must be a text such as mark-read,move:Archive")
    return Route(
        name=str(raw["name"]),
        conditions=_conditions(raw.get("match", {})),
        container=container,
        template=Template.parse(path) if path is not None else None,
        skip=skip,
        tags=_tags(raw.get("tags", {})),
        after_ingest=parse_after_ingest(after) if after is not None else None,
        on_files=any(k in raw.get("match", {}) for k in _FILE_KEYS),
        on_content=any(k in raw.get("match", {}) for k in _CONTENT_KEYS),
        mailboxes=_strings(raw["match"]["mailbox"], "match.mailbox") if "mailbox" in raw.get("match", {}) else None,
    )


def parse_routes(text: str) -> tuple[Route, ...]:
    """The routes of a JSON list; RouteError names the route (by name, else by position) and the problem."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise RouteError(f"not valid JSON ({exc})") from None
    if not isinstance(data, list):
        raise RouteError("must be a JSON list of routes")
    routes: list[Route] = []
    seen: set[str] = set()
    for number, raw in enumerate(data, 1):
        name = raw.get("name") if isinstance(raw, dict) else None
        where = f"route {name!r}" if isinstance(name, str) and name else f"route {number}"
        if not isinstance(name, str) or not _NAME.match(name):
            raise RouteError(f"{where}: name is required: 1 to 64 letters, digits, '.', '_' or '-'")
        if name.lower() == DEFAULT_ROUTE or name.lower() in seen:
            raise RouteError(f"{where}: the name is {'reserved' if name.lower() == DEFAULT_ROUTE else 'used twice'}")
        seen.add(name.lower())
        try:
            routes.append(_route(raw))
        except ValueError as exc:
            raise RouteError(f"{where}: {exc}") from None
    return tuple(routes)


# The app's root (beside function_app.py): a relative ROUTES_FILE is found there, wherever the host starts.
APP_ROOT = Path(__file__).resolve().parents[2]


def routes_from_env(env: Mapping[str, str], state_container: str) -> tuple[Route, ...]:
    """ROUTES (JSON), else the JSON file ROUTES_FILE names; ROUTES wins when both are set. The file is read
    once, here at start-up, so that a bad route stops the app before it takes any mail. (ROUTES_BLOB is read
    at run time: routes_blob.py.)"""
    name, text = "ROUTES", env.get("ROUTES", "").strip()
    if not text and env.get("ROUTES_FILE", "").strip():
        name, path = "ROUTES_FILE", APP_ROOT / env["ROUTES_FILE"].strip()
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeError) as exc:
            raise SettingsError(name, f"{path.name} cannot be read ({type(exc).__name__})") from None
    return checked_routes(name, text, state_container) if text else ()


def checked_routes(name: str, text: str, state_container: str) -> tuple[Route, ...]:
    """The routes of `text`, for the setting `name`. No route may write into the state container, where its files
    could meet the app's own records."""
    try:
        routes = parse_routes(text)
    except RouteError as exc:
        raise SettingsError(name, str(exc)) from None
    for route in routes:
        if route.container == state_container:
            raise SettingsError(name, f"route {route.name!r}: container {route.container!r} is STATE_CONTAINER")
    return routes


def routes_blob_from_env(env: Mapping[str, str]) -> str | None:
    """ROUTES_BLOB: a blob in STATE_CONTAINER holding the routes, read while the app runs. Alone: with ROUTES or
    ROUTES_FILE beside it, which routes apply would depend on a rule nobody remembers."""
    name = env.get("ROUTES_BLOB", "").strip()
    if not name:
        return None
    others = [other for other in ("ROUTES", "ROUTES_FILE") if env.get(other, "").strip()]
    if others:
        raise SettingsError("ROUTES_BLOB", f"is set, and so is {others[0]}: set one of them")
    if name.startswith("/") or name.endswith("/") or len(name) > 1024 or any(ord(c) < 32 for c in name):
        raise SettingsError(
            "ROUTES_BLOB", f"{name!r} is not a blob name in STATE_CONTAINER, such as config/routes.json"
        )
    return name


def check_route_actions(routes: tuple[Route, ...], places: Sequence[Place], setting: str = "ROUTES") -> None:
    """Each route's afterIngest suits the places it can match (`rules.action_problem`): a route without
    match.mailbox can match them all."""
    for route in routes:
        if route.after_ingest is None or not route.after_ingest.anything:
            continue
        wanted = {m.casefold() for m in route.mailboxes} if route.mailboxes is not None else None
        for place in places:
            if wanted is not None and place.mailbox.casefold() not in wanted:
                continue
            problem = action_problem(place, route.after_ingest)
            if problem:
                hint = "" if wanted is not None else " (limit the route with match.mailbox)"
                raise SettingsError(setting, f"route {route.name!r}: {problem}{hint}")
