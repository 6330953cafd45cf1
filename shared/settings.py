"""Settings from environment variables, parsed once into a typed object.

The names are a contract (docs/configuration.md, infra). A missing or malformed setting raises SettingsError,
whose text is one line naming the setting.

Each role parses its own section, with the readers of `env.py`, and `parse_settings` composes them:
- `unpack/options.py`: UNPACK_MAX_DEPTH (old name ATTACHED_MAIL_MAX_DEPTH), EXTRACT_ATTACHED_MAIL,
  EXTRACT_ARCHIVES, ARCHIVE_*, SMIME_CERTIFICATES;
- `pipeline/rules.py`: ATTACHMENT_*, INCLUDE_INLINE_ATTACHMENTS, SAVE_MESSAGE, SAVE_BODY, AFTER_INGEST,
  AFTER_INGEST_BY_MAILBOX, and which after-ingest actions suit which place (POP3: delete only);
- `pipeline/routes.py`: ROUTES, ROUTES_FILE, ROUTES_BLOB (none into STATE_CONTAINER), the routes' after-ingest
  actions;
- `delivery.py`: GRAPH_DELIVERY and the Event Grid partner topic and queue (EVENTGRID_*);
- `defender_target.py`: MALWARE_SCANNING and MALWARE_SCAN_QUEUE as far as `check` needs them;
- `pipeline/duplicates.py`: DUPLICATES;
- `pipeline/malware/options.py`: MALWARE_SCANNING, MALWARE_SCAN_*, QUARANTINE_CONTAINER, and the routes' tag room;
- here: MAILBOXES (Microsoft 365 mailboxes and IMAP/POP3 account URLs), the app registration and Graph,
  webhooks, storage and containers, Key Vault, the schedules and lifetimes, INGESTED_QUEUE.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from typing import Literal, cast
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

from .defender_target import DefenderTarget, defender_target_from_env
from .delivery import EventGridTarget, GraphDelivery, graph_delivery_from_env
from .env import (
    VAULT_NAME,
    ResolvedEnv,
    read_bool,
    read_choice,
    read_container,
    read_int,
    read_queue_name,
    read_required,
    read_schedule,
    read_url,
)
from .errors import SettingsError
from .pipeline.duplicates import Mode as DuplicatesMode
from .pipeline.duplicates import duplicates_from_env
from .pipeline.layout import message_key
from .pipeline.malware.options import MalwareScanning, check_tag_room, malware_scanning_from_env
from .pipeline.routes import Route, check_route_actions, routes_blob_from_env, routes_from_env
from .pipeline.rules import (
    AfterIngest,
    AttachmentRules,
    SaveMail,
    after_ingest_by_mailbox_from_env,
    after_ingest_from_env,
    attachment_rules_from_env,
    check_after_ingest,
    save_mail_from_env,
)
from .unpack.options import UnpackOptions, smime_certificates_from_env, unpack_options_from_env

AuthMode = Literal["application", "delegated"]

# Subscriptions on Outlook messages live at most 10,080 minutes (graph_facts §1).
MAX_SUBSCRIPTION_MINUTES = 10_080
MIN_SUBSCRIPTION_MINUTES = 45
# Refresh tokens lapse after 90 days unused (graph_facts §11): the keep-alive must come well inside that.
MAX_TOKEN_REFRESH_HOURS = 30 * 24

# The poll timer of IMAP and POP3 accounts (NCRONTAB, with seconds): every minute.
DEFAULT_MAIL_POLL_SCHEDULE = "0 * * * * *"

# Authority hosts of Microsoft's clouds: only these take part in MSAL's instance discovery.
MICROSOFT_AUTHORITY_HOSTS = frozenset(
    {
        "login.microsoftonline.com",
        "login.microsoft.com",
        "login.windows.net",
        "login.microsoftonline.us",
        "login.chinacloudapi.cn",
        "login.partner.microsoftonline.cn",
    }
)


# A client-credentials scope is a resource followed by `/.default` (the app's granted permissions on it).
DEFAULT_SUFFIX = "/.default"
# Microsoft Graph by its URI or its well-known app id: the resource a bare permission name means.
GRAPH_RESOURCES = frozenset({"https://graph.microsoft.com", "00000003-0000-0000-c000-000000000000"})


@dataclass(frozen=True)
class MailboxFolder:
    """One `MAILBOXES` entry: a mailbox (address or object id) and a folder path."""

    mailbox: str
    folder: str = "Inbox"

    @property
    def key(self) -> str:
        """Short, stable id of this mailbox folder, used in clientState, queue messages and state."""
        ident = f"{self.mailbox.lower()}/{self.folder.lower()}".encode()
        return hashlib.sha256(ident).hexdigest()[:16]

    @property
    def segments(self) -> tuple[str, ...]:
        return tuple(self.folder.split("/"))

    @property
    def protocol(self) -> Literal["graph"]:
        """Read through Microsoft Graph: beside `MailAccount.protocol`, what `pipeline.rules.Place` asks of both."""
        return "graph"

    def __str__(self) -> str:
        return f"{self.mailbox}/{self.folder}"


AccountProtocol = Literal["imap", "pop3"]
AccountAuth = Literal["password", "xoauth2"]

# The schemes a `MAILBOXES` account URL may have: protocol, TLS from the first byte (else STARTTLS/STLS,
# which is then required), default port (RFC 8314 for the implicit-TLS ports).
ACCOUNT_SCHEMES: Mapping[str, tuple[AccountProtocol, bool, int]] = {
    "imaps": ("imap", True, 993),
    "imap": ("imap", False, 143),
    "pop3s": ("pop3", True, 995),
    "pop3": ("pop3", False, 110),
}


@dataclass(frozen=True)
class MailAccount:
    """One `MAILBOXES` account URL: a folder of an IMAP account, or a POP3 maildrop.

    `implicit_tls` false means STARTTLS (IMAP) or STLS (POP3) is required before logging in. `secret`
    names the Key Vault secret that holds the password (or, with `auth=xoauth2`, what yields a token).
    """

    protocol: AccountProtocol
    implicit_tls: bool
    user: str
    host: str
    port: int
    folder: str = "INBOX"  # POP3 has only the maildrop, named INBOX here
    secret: str | None = None
    auth: AccountAuth = "password"
    authserv_id: str | None = None  # `authserv=`: whose Authentication-Results to trust (pipeline/senderauth.py)

    @property
    def scheme(self) -> str:
        return self.protocol + ("s" if self.implicit_tls else "")

    @property
    def uses_app(self) -> bool:
        """XOAUTH2 without a secret: tokens come from the app's own Entra credential (`sources/oauth.py`)."""
        return self.auth == "xoauth2" and self.secret is None

    @property
    def key(self) -> str:
        """Short, stable id of this account folder, for state records and queue messages."""
        ident = f"{self.protocol}://{self.user.lower()}@{self.host.lower()}:{self.port}/{self.folder}".encode()
        return hashlib.sha256(ident).hexdigest()[:16]

    @property
    def address(self) -> str:
        """The account's mail address: `{mailbox}` in the blob layout. A user name that is no address
        (on-premises servers) is qualified with the host."""
        return self.user.lower() if "@" in self.user else f"{self.user.lower()}@{self.host.lower()}"

    @property
    def mailbox(self) -> str:
        """What `{mailbox}` means for an account, as for a Microsoft 365 mailbox (blob layout, records)."""
        return self.address

    def message_key(self, fingerprint: str) -> str:
        """A message's key (blob layout, markers): the account and the message's fingerprint, so it stays the
        same across UIDVALIDITY changes and renumbered UIDLs."""
        return message_key(f"{self.key}/{fingerprint}")

    @property
    def segments(self) -> tuple[str, ...]:
        return tuple(self.folder.split("/"))

    def __str__(self) -> str:
        """The URL without its query: safe for logs and errors (the query names the secret, never holds it)."""
        folder = "" if self.protocol == "pop3" else "/" + "/".join(quote(s, safe="") for s in self.segments)
        return f"{self.scheme}://{quote(self.user, safe='')}@{self.host}:{self.port}{folder}"


@dataclass(frozen=True)
class StorageSettings:
    """Either a connection string or identity-based service URIs (`AzureWebJobsStorage__*`)."""

    connection_string: str | None = None
    blob_service_uri: str | None = None
    queue_service_uri: str | None = None


# Why the Graph parts (webhooks, maintain pass, Graph checks) stand idle when `Settings.uses_graph` is false.
NO_MICROSOFT_365 = "no Microsoft 365 mailbox in MAILBOXES"


@dataclass(frozen=True)
class Settings:
    # The app registration: "" (and no credential) in a deployment that does not use it, one whose MAILBOXES
    # lists no Microsoft 365 mailbox and no `auth=xoauth2` account without `secret=` (`uses_app`).
    tenant_id: str
    client_id: str
    client_secret: str | None
    client_certificate: str | None
    auth_mode: AuthMode
    authority_host: str
    graph_api_url: str
    graph_scope: str
    mailboxes: tuple[MailboxFolder, ...]  # the Microsoft 365 (Graph) entries of MAILBOXES
    webhook_base_url: str | None
    storage: StorageSettings
    attachments_container: str
    state_container: str
    key_vault_url: str
    key_vault_verify_challenge_resource: bool
    subscription_minutes: int
    graph_max_retries: int
    graph_max_retry_after_seconds: float
    reconcile_minutes: int = 60
    backfill_hours: int = 0
    full_resync_hours: int = 72
    token_refresh_hours: int = 24
    rules: AttachmentRules = field(default_factory=AttachmentRules)
    unpack: UnpackOptions = field(default_factory=UnpackOptions)
    smime_certificates: tuple[str, ...] = ()  # Key Vault certificates whose keys open encrypted mail
    save: SaveMail = field(default_factory=SaveMail)
    after_ingest: AfterIngest = field(default_factory=AfterIngest)
    after_ingest_by_folder: Mapping[str, AfterIngest] = field(default_factory=dict)  # by MailboxFolder.key
    routes: tuple[Route, ...] = ()  # ROUTES or ROUTES_FILE, in order
    duplicates: DuplicatesMode = "mark"  # DUPLICATES: mark, skip or off
    routes_blob: str | None = None  # ROUTES_BLOB: routes read at run time instead (Runtime.routes)
    ingested_queue: str | None = "mail-ingested"  # INGESTED_QUEUE; None: no hand-off messages
    # The Functions host key the webhook routes require; Graph calls the URLs with it. Kept out of repr.
    webhook_function_key: str | None = field(default=None, repr=False)
    accounts: tuple[MailAccount, ...] = ()  # the IMAP and POP3 account URLs of MAILBOXES
    mail_poll_schedule: str = DEFAULT_MAIL_POLL_SCHEDULE
    mail_connections_per_account: int = 4  # signed-in connections per account and instance (sources/pool.py)
    graph_delivery: GraphDelivery = "webhook"  # GRAPH_DELIVERY (delivery.py)
    eventgrid: EventGridTarget | None = None  # with GRAPH_DELIVERY=eventgrid: the partner topic and queue
    malware: MalwareScanning = field(default_factory=MalwareScanning)  # MALWARE_SCANNING and its settings
    defender: DefenderTarget | None = None  # with MALWARE_SCANNING=defender: what `check` reads in Azure

    @property
    def uses_graph(self) -> bool:
        """Whether MAILBOXES lists a Microsoft 365 mailbox: Graph, its subscriptions and webhooks are in use."""
        return bool(self.mailboxes)

    @property
    def uses_app(self) -> bool:
        """Whether the app registration signs in anywhere: Graph, or an account's XOAUTH2 with the app's own
        Entra credential (Exchange Online IMAP/POP)."""
        return self.uses_graph or any(a.uses_app for a in self.accounts)

    @property
    def app_configured(self) -> bool:
        """Whether the app registration is set (tenant, client id, a credential), needed or not: what deleting a
        subscription left over from earlier Microsoft 365 mailboxes signs in with."""
        return bool(self.tenant_id and self.client_id and (self.client_secret or self.client_certificate))

    def account_by_key(self, key: str) -> MailAccount | None:
        return next((a for a in self.accounts if a.key == key), None)

    def after_ingest_for(self, folder: MailboxFolder | MailAccount, route: AfterIngest | None = None) -> AfterIngest:
        """The deciding route's action if it sets one, else the folder's or account's (AFTER_INGEST_BY_MAILBOX),
        else AFTER_INGEST."""
        return route if route is not None else self.after_ingest_by_folder.get(folder.key, self.after_ingest)

    @cached_property
    def _by_key(self) -> Mapping[str, MailboxFolder]:
        return {m.key: m for m in self.mailboxes}

    @property
    def authority(self) -> str:
        return f"{self.authority_host}/{self.tenant_id}"

    @property
    def graph_resource(self) -> str:
        """The resource Graph tokens are for: GRAPH_SCOPE without its `/.default`."""
        return self.graph_scope[: -len(DEFAULT_SUFFIX)]

    @property
    def delegated_scopes(self) -> tuple[str, ...]:
        """Delegated mode's Graph permissions. Bare names mean Microsoft Graph (permissions-consent-overview),
        any other resource is named; MSAL adds openid, profile and offline_access (the refresh token)."""
        writes = (
            self.after_ingest.anything
            or any(a.anything for a in self.after_ingest_by_folder.values())
            or any(r.after_ingest is not None and r.after_ingest.anything for r in self.routes)
        )
        permission = "Mail.ReadWrite" if writes else "Mail.Read"
        if self.graph_resource.lower() in GRAPH_RESOURCES:
            return (permission,)
        return (f"{self.graph_resource}/{permission}",)

    @property
    def consent_redirect_uri(self) -> str:
        """Where the identity platform sends the browser back; registered on the app as a Web redirect URI."""
        return f"{self._require_webhook_base()}/api/consent/callback"

    def consent_url(self, mailbox: str) -> str:
        """The page a mailbox's owner opens to consent (delegated mode)."""
        return f"{self._require_webhook_base()}/api/consent?{urlencode({'mailbox': mailbox})}"

    @property
    def delegated_mailboxes(self) -> tuple[str, ...]:
        """Each configured mailbox once, in MAILBOXES order."""
        return tuple(dict.fromkeys(m.mailbox for m in self.mailboxes))

    @property
    def instance_discovery(self) -> bool:
        return (urlsplit(self.authority_host).hostname or "") in MICROSOFT_AUTHORITY_HOSTS

    @property
    def notification_url(self) -> str:
        if self.eventgrid is not None:
            return self.eventgrid.notification_url
        return self._webhook_url("notifications")

    @property
    def lifecycle_url(self) -> str:
        # Through Event Grid, lifecycle events go to the same partner topic as the changes.
        if self.eventgrid is not None:
            return self.eventgrid.notification_url
        return self._webhook_url("lifecycle")

    def _webhook_url(self, route: str) -> str:
        # Graph posts to the URL as given, query included, and appends `&validationToken=` to a URL that
        # has a query (graph_facts §2), so the function key travels as the host's `code` parameter.
        url = f"{self._require_webhook_base()}/api/{route}"
        return f"{url}?code={quote(self.webhook_function_key, safe='')}" if self.webhook_function_key else url

    def folder_by_key(self, key: str) -> MailboxFolder | None:
        return self._by_key.get(key)

    def _require_webhook_base(self) -> str:
        if not self.webhook_base_url:
            raise SettingsError("WEBHOOK_BASE_URL", "required (or WEBSITE_HOSTNAME, as set in Azure)")
        return self.webhook_base_url


def _safe_entry(item: str) -> str:
    """An account URL as it may appear in an error: scheme, user, host and path, never a password put in
    the user info by mistake, nor the query."""
    scheme, _, rest = item.partition("://")
    netloc, slash, path = rest.partition("/")
    netloc = netloc.partition("?")[0].partition("#")[0]
    userinfo, at, host = netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    shown = f"{scheme}://{user}{at}{host}"
    return shown + (slash + path.partition("?")[0].partition("#")[0] if slash else "")


ACCOUNT_PARAMETERS = ("secret", "auth", "authserv")
# RFC 8601's authserv-id is a MIME token (RFC 2045); in practice the receiving server's host name.
AUTHSERV_ID = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`{|}~-]{1,255}$")


def parse_account(item: str) -> MailAccount:
    """`imaps://USER@HOST[:PORT][/FOLDER/PATH]?secret=NAME[&auth=xoauth2][&authserv=ID]` (also `imap`, `pop3s`,
    `pop3`)."""
    shown = _safe_entry(item)

    def bad(problem: str) -> SettingsError:
        return SettingsError("MAILBOXES", f"entry {shown!r} {problem}")

    parts = urlsplit(item)
    scheme = parts.scheme.lower()
    if scheme not in ACCOUNT_SCHEMES:
        raise bad(f"has an unknown scheme (use {', '.join(ACCOUNT_SCHEMES)})")
    protocol, implicit_tls, default_port = ACCOUNT_SCHEMES[scheme]
    if parts.password is not None:
        raise bad("has a password in it: keep it in Key Vault and name the secret with ?secret=NAME")
    if parts.fragment:
        raise bad("has a fragment (#...)")
    try:
        port = parts.port or default_port
    except ValueError:
        raise bad("has an invalid port") from None
    host = (parts.hostname or "").strip()
    user = unquote(parts.username or "").strip()
    if not user or not host:
        raise bad("needs a user and a host (USER@HOST, the user percent-encoded)")
    segments = [unquote(s).strip() for s in parts.path.strip("/").split("/")] if parts.path.strip("/") else []
    if any(not s for s in segments):
        raise bad("has an empty folder name")
    if protocol == "pop3" and segments:
        raise bad("names a folder, but POP3 has only the inbox")
    folder = "/".join(segments) if segments else "INBOX"
    if folder.upper() == "INBOX":
        folder = "INBOX"  # RFC 3501 5.1: INBOX is case-insensitive
    query: dict[str, str] = {}
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name not in ACCOUNT_PARAMETERS:
            raise bad(f"has an unknown parameter {name!r} ({', '.join(ACCOUNT_PARAMETERS)})")
        if name in query:
            raise bad(f"has {name} twice")
        query[name] = value.strip()
    auth = query.get("auth", "password").lower()
    if auth not in ("password", "xoauth2"):
        raise bad("has auth other than password or xoauth2")
    secret = query.get("secret") or None
    if secret is not None and not VAULT_NAME.match(secret):
        raise bad(f"names {secret!r}, which is not a Key Vault secret name")
    if auth == "password" and secret is None:
        raise bad("needs ?secret=NAME, the Key Vault secret holding the password")
    authserv = query.get("authserv")
    if authserv is not None and not AUTHSERV_ID.match(authserv):
        raise bad(f"has authserv={authserv!r}, which is not an authserv-id (a host name such as mx.example.org)")
    return MailAccount(
        protocol=protocol,
        implicit_tls=implicit_tls,
        user=user,
        host=host.lower(),
        port=port,
        folder=folder,
        secret=secret,
        auth="xoauth2" if auth == "xoauth2" else "password",
        authserv_id=authserv.lower() if authserv else None,
    )


def parse_mailbox_entries(raw: str) -> tuple[tuple[MailboxFolder, ...], tuple[MailAccount, ...]]:
    """MAILBOXES: Microsoft 365 entries (`a@x.com`, `b@x.com/Inbox/Sub folder`) and account URLs."""
    accounts: list[MailAccount] = []
    seen: set[str] = set()
    graph_items: list[str] = []
    for item in raw.split(","):
        item = item.strip()
        if "://" not in item:
            graph_items.append(item)
            continue
        account = parse_account(item)
        if account.key in seen:
            raise SettingsError("MAILBOXES", f"entry {str(account)!r} is listed twice")
        seen.add(account.key)
        accounts.append(account)
    folders = parse_mailboxes(",".join(graph_items), required=not accounts)
    return folders, tuple(accounts)


def parse_mailboxes(raw: str, *, required: bool = True) -> tuple[MailboxFolder, ...]:
    """`a@x.com, b@x.com/Inbox/Sub folder`: the first `/` splits mailbox from folder path."""
    entries: list[MailboxFolder] = []
    seen: set[str] = set()
    for item in raw.split(","):
        item = item.strip()
        if not item:
            continue
        mailbox, _, folder = item.partition("/")
        mailbox = mailbox.strip()
        segments = [s.strip() for s in folder.split("/")] if folder else ["Inbox"]
        if not mailbox or any(not s for s in segments):
            raise SettingsError("MAILBOXES", f"entry {item!r} has an empty mailbox or folder name")
        if any(ch in mailbox for ch in " '\"\\?#"):
            raise SettingsError("MAILBOXES", f"entry {item!r} is not a mailbox address or id")
        entry = MailboxFolder(mailbox=mailbox.lower(), folder="/".join(segments))
        if entry.key in seen:
            raise SettingsError("MAILBOXES", f"entry {item!r} is listed twice")
        seen.add(entry.key)
        entries.append(entry)
    if not entries and required:
        raise SettingsError("MAILBOXES", "required but lists no mailbox")
    return tuple(entries)


def _storage(env: Mapping[str, str]) -> StorageSettings:
    conn = env.get("AzureWebJobsStorage", "").strip()
    if conn:
        if "=" not in conn:
            raise SettingsError("AzureWebJobsStorage", "is not a storage connection string")
        return StorageSettings(connection_string=conn)
    blob = env.get("AzureWebJobsStorage__blobServiceUri", "").strip()
    queue = env.get("AzureWebJobsStorage__queueServiceUri", "").strip()
    if blob and queue:
        return StorageSettings(
            blob_service_uri=read_url(env, "AzureWebJobsStorage__blobServiceUri", None),
            queue_service_uri=read_url(env, "AzureWebJobsStorage__queueServiceUri", None),
        )
    raise SettingsError(
        "AzureWebJobsStorage",
        "required: a connection string, or AzureWebJobsStorage__blobServiceUri and __queueServiceUri",
    )


def _auth_mode(env: Mapping[str, str]) -> AuthMode:
    return cast(AuthMode, read_choice(env, "GRAPH_AUTH_MODE", ("application", "delegated")))


def _certificate_name(env: Mapping[str, str]) -> str | None:
    name = env.get("GRAPH_CLIENT_CERTIFICATE", "").strip()
    if name and not VAULT_NAME.match(name):
        raise SettingsError("GRAPH_CLIENT_CERTIFICATE", f"{name!r} is not a Key Vault certificate name")
    return name or None


def _graph_scope(env: Mapping[str, str], graph_api_url: str) -> str:
    """GRAPH_SCOPE, else `{origin of GRAPH_API_URL}/.default` (Graph's own host, or a national cloud's). A
    gateway or emulator whose host is not a resource Entra ID knows needs it set (to Graph's, usually)."""
    name = "GRAPH_SCOPE"
    value = env.get("GRAPH_SCOPE", "").strip()
    if not value:
        parts = urlsplit(graph_api_url)
        return f"{parts.scheme}://{parts.netloc}{DEFAULT_SUFFIX}"
    resource = value[: -len(DEFAULT_SUFFIX)] if value.endswith(DEFAULT_SUFFIX) else ""
    if not resource.rstrip("/") or any(ch.isspace() for ch in value):
        raise SettingsError(
            name,
            f"must be a resource followed by {DEFAULT_SUFFIX}, such as "
            f"https://graph.microsoft.com{DEFAULT_SUFFIX}; got {value!r}",
        )
    return value


def _app(
    env: Mapping[str, str], mailboxes: tuple[MailboxFolder, ...], accounts: tuple[MailAccount, ...]
) -> tuple[str, str, str | None, str | None]:
    """The app registration (tenant, client id, secret, certificate name): required with a Microsoft 365 mailbox
    in MAILBOXES, or an account whose XOAUTH2 uses the app's own credential; optional otherwise ("", None)."""
    user = None if mailboxes else next((a for a in accounts if a.uses_app), None)
    needed = bool(mailboxes) or user is not None
    why = "required" if mailboxes else f"required: {user} signs in with auth=xoauth2 and the app's Entra credential"

    def one(source: Mapping[str, str], name: str) -> str:
        value = source.get(name, "").strip()
        if needed and not value:
            raise SettingsError(name, "required but not set" if mailboxes else why)
        return value

    tenant_id, client_id = one(env, "GRAPH_TENANT_ID"), one(env, "GRAPH_CLIENT_ID")
    secret = env.get("GRAPH_CLIENT_SECRET", "").strip() or None
    certificate = _certificate_name(env)
    if needed and not secret and not certificate:
        raise SettingsError("GRAPH_CLIENT_SECRET", f"{why} (or GRAPH_CLIENT_CERTIFICATE, a Key Vault certificate)")
    return tenant_id, client_id, secret, certificate


def parse_settings(environ: Mapping[str, str]) -> Settings:
    env = ResolvedEnv(environ)
    mailboxes, accounts = parse_mailbox_entries(read_required(env, "MAILBOXES"))
    tenant_id, client_id, secret, certificate = _app(env, mailboxes, accounts)
    mode = _auth_mode(env)
    website = env.get("WEBSITE_HOSTNAME", "").strip()
    webhook = env.get("WEBHOOK_BASE_URL", "").strip()
    webhook_base = (
        read_url(env, "WEBHOOK_BASE_URL", None, https=False) if webhook else (f"https://{website}" if website else None)
    )
    if mode == "delegated" and mailboxes and not webhook_base:
        raise SettingsError("WEBHOOK_BASE_URL", "required in delegated mode: the consent redirect URI is built from it")
    graph_api_url = read_url(env, "GRAPH_API_URL", "https://graph.microsoft.com/v1.0")
    state_container = read_container(env, "STATE_CONTAINER", "mail-ingest-state")
    places: tuple[MailboxFolder | MailAccount, ...] = (*mailboxes, *accounts)
    after_ingest = after_ingest_from_env(env)
    by_folder = after_ingest_by_mailbox_from_env(env, places)
    routes = routes_from_env(env, state_container)
    check_after_ingest(after_ingest, by_folder, places)
    check_route_actions(routes, places)
    delivery, eventgrid = graph_delivery_from_env(env)
    attachments_container = read_container(env, "ATTACHMENTS_CONTAINER", "mail-attachments")
    taken = {state_container: "STATE_CONTAINER", attachments_container: "ATTACHMENTS_CONTAINER"}
    malware = malware_scanning_from_env(env, taken)
    check_tag_room(routes, malware)
    return Settings(
        tenant_id=tenant_id,
        client_id=client_id,
        client_secret=secret,
        client_certificate=certificate,
        auth_mode=mode,
        authority_host=read_url(env, "GRAPH_AUTHORITY_HOST", "https://login.microsoftonline.com"),
        graph_api_url=graph_api_url,
        graph_scope=_graph_scope(env, graph_api_url),
        mailboxes=mailboxes,
        accounts=accounts,
        mail_poll_schedule=read_schedule(env, "MAIL_POLL_SCHEDULE", DEFAULT_MAIL_POLL_SCHEDULE),
        mail_connections_per_account=read_int(env, "MAIL_CONNECTIONS_PER_ACCOUNT", 4, 1, 50),
        webhook_base_url=webhook_base,
        webhook_function_key=env.get("WEBHOOK_FUNCTION_KEY", "").strip() or None,
        storage=_storage(env),
        attachments_container=attachments_container,
        state_container=state_container,
        key_vault_url=read_url(env, "KEY_VAULT_URL", None),
        key_vault_verify_challenge_resource=read_bool(env, "KEY_VAULT_VERIFY_CHALLENGE_RESOURCE", True),
        subscription_minutes=read_int(
            env,
            "SUBSCRIPTION_LIFETIME_MINUTES",
            MAX_SUBSCRIPTION_MINUTES,
            MIN_SUBSCRIPTION_MINUTES,
            MAX_SUBSCRIPTION_MINUTES,
        ),
        graph_max_retries=read_int(env, "GRAPH_MAX_RETRIES", 4, 0, 10),
        graph_max_retry_after_seconds=float(read_int(env, "GRAPH_MAX_RETRY_AFTER_SECONDS", 60, 1, 600)),
        reconcile_minutes=read_int(env, "RECONCILE_MINUTES", 60, 0, 24 * 60),
        backfill_hours=read_int(env, "BACKFILL_HOURS", 0, 0, 24 * 90),
        full_resync_hours=read_int(env, "FULL_RESYNC_HOURS", 72, 1, 24 * 90),
        token_refresh_hours=read_int(env, "TOKEN_REFRESH_HOURS", 24, 1, MAX_TOKEN_REFRESH_HOURS),
        rules=attachment_rules_from_env(env),
        unpack=unpack_options_from_env(env),
        smime_certificates=smime_certificates_from_env(env),
        save=save_mail_from_env(env),
        after_ingest=after_ingest,
        after_ingest_by_folder=by_folder,
        routes=routes,
        duplicates=duplicates_from_env(env),
        routes_blob=routes_blob_from_env(env),
        # Read here, not in pipeline/handoff.py: that imports pipeline/storage.py, which imports this module.
        ingested_queue=read_queue_name(env, "INGESTED_QUEUE", "mail-ingested"),
        graph_delivery=delivery,
        eventgrid=eventgrid,
        malware=malware,
        defender=defender_target_from_env(env, malware),
    )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, parsed on first use."""
    return parse_settings(os.environ)
