"""IMAP and POP3 mail through the pipeline: a `mail-fetch` request read from a real Dovecot, stored in Azurite
as Graph mail is (files, manifest, hand-off, markers), with the after-ingest actions mapped to the protocol."""

from __future__ import annotations

import base64
import hashlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from email.message import EmailMessage
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import pytest

from shared.errors import SettingsError
from shared.pipeline.storage import BlobStore
from shared.settings import MailAccount, Settings, parse_settings
from shared.sources import accounts
from shared.sources.accounts import ingest_fetched, received_time
from shared.sources.cursor import CursorStore
from shared.sources.fetch import FetchRequest
from shared.sources.poll import poll_account
from shared.sources.pool import SessionPools
from tests.shared.sources.conftest import MailUser, message
from tests.shared.sources.imap.test_session import flags_of

PDF = b"%PDF-1.7 test\n"


def with_attached_mail(subject: str = "Invoice with its order") -> bytes:
    """A mail with a PDF and an attached mail that holds another PDF."""
    inner = EmailMessage()
    inner["From"], inner["To"], inner["Subject"] = "buyer@customer.example", "billing@supplier.example", "Order"
    inner.set_content("the order")
    inner.add_attachment(b"%PDF order", maintype="application", subtype="pdf", filename="order.pdf")
    outer = EmailMessage()
    outer["From"] = "Supplier <billing@supplier.example>"
    outer["To"], outer["Cc"] = "ap@example.org", "Controller <controller@example.org>"
    outer["Subject"] = subject
    outer["Date"] = "Fri, 20 Nov 2026 09:30:00 +0000"
    outer["Message-ID"] = f"<{uuid.uuid4().hex}@supplier.example>"
    outer.set_content("see attached")
    outer.add_attachment(PDF, maintype="application", subtype="pdf", filename="invoice.pdf")
    outer.add_attachment(inner)
    return bytes(outer).replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


class Rt:
    """The runtime's parts the worker uses: settings, blob stores in Azurite, Key Vault (the password), the
    hand-off queue (kept in a list), the pools of signed-in connections (closed after each test)."""

    made: ClassVar[list[Rt]] = []

    def __init__(self, settings: Settings, service: Any, password: str) -> None:
        self.settings = settings
        self.mail_sessions = SessionPools(settings.mail_connections_per_account)
        Rt.made.append(self)
        self.attachments = BlobStore(service, f"a{uuid.uuid4().hex[:12]}")
        self.state = BlobStore(service, f"s{uuid.uuid4().hex[:12]}")
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self._service = service
        self._containers: dict[str, BlobStore] = {}
        self.routes_blob = None  # no ROUTES_BLOB here: the routes are the settings'

        async def get(name: str) -> str | None:
            return password if name == "pw" else None

        async def no_keys() -> tuple[()]:
            return ()

        self.vault = SimpleNamespace(get=get)
        self.smime_keys = SimpleNamespace(get=no_keys)

    async def routes(self) -> tuple[Any, ...]:
        return self.settings.routes

    def container(self, name: str | None) -> BlobStore:
        if name is None:
            return self.attachments
        return self._containers.setdefault(name, BlobStore(self._service, name))

    async def send_queue_message(self, queue: str, text: str) -> None:
        body = text if text.startswith("{") else base64.b64decode(text).decode()
        self.sent.append((queue, json.loads(body)))

    def handoffs(self) -> list[dict[str, Any]]:
        return [m for q, m in self.sent if q == "mail-ingested"]

    def requests(self) -> list[FetchRequest]:
        return [FetchRequest.parse(json.dumps(m)) for q, m in self.sent if q == "mail-fetch"]


@pytest.fixture(autouse=True)
async def close_pools() -> AsyncIterator[None]:
    """No signed-in connection outlives its test (the event loop does)."""
    yield
    made, Rt.made = Rt.made, []
    for rt in made:
        await rt.mail_sessions.aclose()


def runtime(env: dict[str, str], service: Any, user: MailUser, scheme: str = "imaps", **settings: str) -> Any:
    """An `Rt` where the worker takes a Runtime."""
    account = user.account(scheme)
    env = {**env, "MAILBOXES": f"invoices@contoso.com, {url_of(account)}", **settings}
    return Rt(parse_settings(env), service, user.password)


def url_of(account: MailAccount) -> str:
    return f"{account!s}?secret=pw"


async def queued(rt: Any, account: MailAccount) -> list[FetchRequest]:
    """What a poll of the account queues (backfilled, so mail already there counts)."""
    from datetime import UTC, datetime

    async def login() -> Any:
        from shared.sources.jobs import account_login

        return await account_login(rt, account)

    before = len(rt.requests())
    await poll_account(
        CursorStore(rt.state), rt.send_queue_message, account, login, datetime.now(UTC), backfill_hours=24 * 30
    )
    requests: list[FetchRequest] = rt.requests()[before:]
    return requests


async def stored(store: BlobStore, prefix: str) -> list[str]:
    return sorted(name.rsplit("/", 1)[1] for name in await store.names(prefix))


async def test_an_imap_mail_is_stored_as_graph_mail_is_and_its_flags_stay(
    env: dict[str, str], service: Any, mail_user: MailUser, mail_ca_bundle: Path
):
    rt = runtime(env, service, mail_user)
    (account,) = rt.settings.accounts
    raw = with_attached_mail()
    mail_user.deliver(raw)
    (request,) = await queued(rt, account)
    outcome = await ingest_fetched(request, rt)
    assert outcome.status == "ingested" and outcome.files == 3
    key = account.message_key(request.fingerprint)
    assert outcome.prefix == f"{mail_user.name}/2026/11/20/{key}"  # the Date, as no Received field says better
    found = await rt.attachments.read_json(f"{outcome.prefix}/manifest.json")
    assert found is not None
    manifest = found[0]
    assert manifest["status"] == "complete" and manifest["source"] == "imap" and manifest["account"] == str(account)
    assert (manifest["mailbox"], manifest["folder"], manifest["messageKey"]) == (mail_user.name, "INBOX", key)
    assert manifest["from"] == "billing@supplier.example" and manifest["subject"] == "Invoice with its order"
    files = {a["name"]: a for a in manifest["attachments"]}
    assert files["invoice.pdf"]["sha256"] == hashlib.sha256(PDF).hexdigest() and "parent" not in files["invoice.pdf"]
    assert files["order.pdf"]["parent"] == files["attached message.eml"]["file"]  # found inside the attached mail
    assert files["order.pdf"]["sha256"] == hashlib.sha256(b"%PDF order").hexdigest()
    assert await stored(rt.attachments, outcome.prefix) == [
        "attached message.eml",
        "invoice.pdf",
        "manifest.json",
        "order.pdf",
    ]
    (handoff,) = rt.handoffs()
    assert handoff["messageKey"] == key and len(handoff["files"]) == 3
    assert flags_of(mail_user, mail_ca_bundle) == {1: set()}  # the import changes no flag
    # The same request again (a redelivery): nothing fetched, nothing stored twice.
    assert (await ingest_fetched(request, rt)).status == "duplicate"
    assert len(rt.handoffs()) == 1


async def test_a_recreated_folder_finds_the_message_by_fingerprint_and_stores_it_once(
    env: dict[str, str], service: Any, mail_user: MailUser
):
    rt = runtime(env, service, mail_user)
    (account,) = rt.settings.accounts
    raw = with_attached_mail("recreated")
    mail_user.deliver(message("another mail first"))
    mail_user.deliver(raw)
    _, request = await queued(rt, account)
    first = await ingest_fetched(request, rt)
    names = await rt.attachments.names("")
    await rt.state.delete(f"done/{mail_user.name}/{first.key}.json")  # as if it crashed before its marker
    time.sleep(1.1)  # Dovecot's UIDVALIDITY is the time in seconds a folder is made
    mail_user.server.remove_folder(mail_user.name, "INBOX")
    mail_user.deliver(raw)  # the folder recreated (a new UIDVALIDITY), the mail now UID 1
    again = await ingest_fetched(request, rt)  # the old request, redelivered
    assert (again.status, again.key, again.prefix) == ("duplicate", first.key, first.prefix)
    assert await rt.attachments.names("") == names
    assert len(rt.handoffs()) == 1


@pytest.mark.parametrize("scheme", ["pop3s"])
async def test_pop3_mail_stays_on_the_server_unless_delete_is_asked_for(
    env: dict[str, str], service: Any, mail_user: MailUser, scheme: str
):
    rt = runtime(env, service, mail_user, scheme)
    (account,) = rt.settings.accounts
    mail_user.deliver(with_attached_mail("kept on the server"))
    (request,) = await queued(rt, account)
    outcome = await ingest_fetched(request, rt)
    assert outcome.status == "ingested" and outcome.files == 3
    found = await rt.attachments.read_json(f"{outcome.prefix}/manifest.json")
    assert found is not None and found[0]["source"] == "pop3" and found[0]["status"] == "complete"
    assert len(list(mail_user.server.folder_path(mail_user.name).glob("*/*"))) == 1  # still there

    deleting = runtime(env, service, mail_user, scheme, AFTER_INGEST_BY_MAILBOX=f"{mail_user.name}=delete")
    mail_user.deliver(message("deleted after ingest"))
    (request,) = [r for r in await queued(deleting, account) if r.uidl != request.uidl]
    assert (await ingest_fetched(request, deleting)).status == "ingested"
    assert len(list(mail_user.server.folder_path(mail_user.name).glob("*/*"))) == 1  # only the first one


async def test_imap_after_ingest_marks_read_sets_a_keyword_and_moves(
    env: dict[str, str], service: Any, mail_user: MailUser, mail_ca_bundle: Path
):
    rt = runtime(env, service, mail_user, AFTER_INGEST="mark-read,category:Captured")
    (account,) = rt.settings.accounts
    mail_user.deliver(message("first"))
    (request,) = await queued(rt, account)
    await ingest_fetched(request, rt)
    assert flags_of(mail_user, mail_ca_bundle) == {1: {b"\\Seen", b"Captured"}}
    moving = runtime(env, service, mail_user, AFTER_INGEST="move:Archive/Done")
    mail_user.deliver(message("second"))
    *_, second = await queued(moving, account)  # a new state container: both are new to it
    await ingest_fetched(second, moving)
    assert set(flags_of(mail_user, mail_ca_bundle)) == {1}
    assert flags_of(mail_user, mail_ca_bundle, "Archive/Done") == {1: set()}


async def test_a_crash_after_the_manifest_stores_nothing_twice_and_hands_off_once(
    env: dict[str, str], service: Any, mail_user: MailUser, mail_ca_bundle: Path, monkeypatch: pytest.MonkeyPatch
):
    rt = runtime(env, service, mail_user, AFTER_INGEST="mark-read")
    (account,) = rt.settings.accounts
    mail_user.deliver(with_attached_mail("crash"))
    (request,) = await queued(rt, account)

    async def crash(*args: Any) -> None:
        raise RuntimeError("the worker died")

    with monkeypatch.context() as patch, pytest.raises(RuntimeError):
        patch.setattr(accounts, "_after", crash)
        await ingest_fetched(request, rt)
    assert flags_of(mail_user, mail_ca_bundle) == {1: set()}
    names = await rt.attachments.names("")
    outcome = await ingest_fetched(request, rt)
    assert outcome.status == "duplicate"  # the manifest was complete: nothing written again
    assert await rt.attachments.names("") == names
    assert len(rt.handoffs()) == 1
    assert flags_of(mail_user, mail_ca_bundle) == {1: {b"\\Seen"}}  # the retry did the action


async def test_a_route_on_attachment_names_reads_the_spooled_message_twice(
    env: dict[str, str], service: Any, mail_user: MailUser, monkeypatch: pytest.MonkeyPatch
):
    routes = [
        {
            "name": "orders",
            "match": {"attachment": "order*.pdf"},
            "container": "orders",
            "path": "{sender}/{messageKey}",
        },
        {"name": "skip-rest", "match": {"noKeptFile": True}, "skip": True},
    ]
    rt = runtime(env, service, mail_user, ROUTES=json.dumps(routes))
    (account,) = rt.settings.accounts
    mail_user.deliver(with_attached_mail("not an order"))
    mail_user.deliver(message("an order").replace(b'filename="invoice.pdf"', b'filename="order-17.pdf"'))
    mail_user.deliver(
        b"From: someone@spam.example\r\nSubject: no file\r\nDate: Fri, 20 Nov 2026 10:00:00 +0000\r\n\r\nhi\r\n"
    )
    first, second, third = await queued(rt, account)
    assert (await ingest_fetched(first, rt)).route == "default"
    routed = await ingest_fetched(second, rt)
    assert routed.route == "orders" and routed.prefix == f"billing@supplier.example/{routed.key}"
    assert await stored(rt.container("orders"), routed.prefix or "") == ["manifest.json", "order-17.pdf"]
    assert (await ingest_fetched(third, rt)).status == "skipped"


def raw_mail(subject: str, name: str, data: bytes, maintype: str = "application", subtype: str = "pdf") -> bytes:
    mail = EmailMessage()
    mail["From"], mail["To"], mail["Subject"] = "billing@supplier.example", "ap@example.org", subject
    mail["Date"], mail["Message-ID"] = "Fri, 20 Nov 2026 11:00:00 +0000", f"<{uuid.uuid4().hex}@supplier.example>"
    mail.set_content("see attached")
    mail.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
    return bytes(mail).replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


async def test_routes_on_duplicate_and_protected_read_a_raw_mail_before_deciding(
    env: dict[str, str], service: Any, mail_user: MailUser
):
    """IMAP mail as Graph mail: the same invoice again is a duplicate of the first (manifest and route), and a
    rights-protected mail (its MIME's message.rpmsg part) is protected, the mail itself."""
    routes = [
        {"name": "review", "match": {"protected": True}, "container": "review"},
        {"name": "again", "match": {"duplicate": True}, "container": "again"},
    ]
    rt = runtime(env, service, mail_user, ROUTES=json.dumps(routes))
    (account,) = rt.settings.accounts
    invoice = b"%PDF-1.7 invoice 77 " + uuid.uuid4().bytes * 40
    mail_user.deliver(raw_mail("Invoice 77", "invoice 77.pdf", invoice))
    mail_user.deliver(raw_mail("Reminder: invoice 77", "invoice 77.pdf", invoice))
    rpmsg = b"\x76\xe8\x04\x60\xc4\x11\xe3\x86" + uuid.uuid4().bytes * 64
    mail_user.deliver(raw_mail("Protected", "message.rpmsg", rpmsg, subtype="x-microsoft-rpmsg-message"))
    first, second, third = await queued(rt, account)
    original = await ingest_fetched(first, rt)
    assert original.route == "default"
    reminder = await ingest_fetched(second, rt)
    assert reminder.route == "again"
    found = await rt.container("again").read_json(f"{reminder.prefix}/manifest.json")
    assert found is not None
    (copy,) = found[0]["attachments"]
    assert copy["duplicateOf"]["messageKey"] == original.key and copy["duplicateOf"]["container"] == rt.attachments.name
    protected = await ingest_fetched(third, rt)
    assert protected.route == "review"
    found = await rt.container("review").read_json(f"{protected.prefix}/manifest.json")
    assert found is not None and found[0]["protected"].startswith("rights-protected mail (Purview / IRM)")


def test_received_time_prefers_the_newest_received_field(env: dict[str, str]):
    from email import policy
    from email.parser import BytesHeaderParser

    header = BytesHeaderParser(policy=policy.default).parsebytes(
        b"Received: from b by c; Sat, 21 Nov 2026 08:00:01 +0100\r\n"
        b"Received: from a by b; Sat, 21 Nov 2026 07:59:00 +0100\r\n"
        b"Date: Fri, 20 Nov 2026 09:30:00 +0000\r\n\r\n"
    )
    assert received_time(header, None).isoformat() == "2026-11-21T07:00:01+00:00"
    bare = BytesHeaderParser(policy=policy.default).parsebytes(b"Subject: x\r\n\r\n")
    assert received_time(bare, "2026-11-22T10:00:00Z").isoformat() == "2026-11-22T10:00:00+00:00"


@pytest.mark.parametrize(
    ("settings", "error"),
    [
        ({"AFTER_INGEST": "delete"}, "AFTER_INGEST: delete applies to POP3 accounts only"),
        ({"AFTER_INGEST": "mark-read"}, "AFTER_INGEST: mark-read does not apply to POP3 account"),
        ({"AFTER_INGEST_BY_MAILBOX": "u@h=delete"}, "AFTER_INGEST_BY_MAILBOX: delete applies to POP3 accounts only"),
        ({"AFTER_INGEST": "delete,mark-read"}, "AFTER_INGEST: delete is POP3's only action"),
        ({"ROUTES": '[{"name": "d", "afterIngest": "delete"}]'}, "ROUTES: route 'd': delete applies to POP3"),
    ],
)
def test_delete_is_for_pop3_accounts_only(env: dict[str, str], settings: dict[str, str], error: str):
    env["MAILBOXES"] = "invoices@contoso.com, imaps://u%40h@imap.example?secret=a, pop3s://p%40h@pop.example?secret=b"
    with pytest.raises(SettingsError) as caught:
        parse_settings({**env, **settings})
    assert error in str(caught.value) and "\n" not in str(caught.value)


def test_delete_for_a_pop3_account_by_mailbox_or_route(env: dict[str, str]):
    env["MAILBOXES"] = "invoices@contoso.com, pop3s://p%40h@pop.example?secret=b"
    env["AFTER_INGEST"] = "mark-read"
    env["AFTER_INGEST_BY_MAILBOX"] = "p@h=delete"
    env["ROUTES"] = '[{"name": "d", "match": {"mailbox": "p@h"}, "afterIngest": "delete"}]'
    settings = parse_settings(env)
    (account,) = settings.accounts
    assert settings.after_ingest_for(account).delete and settings.after_ingest_for(settings.mailboxes[0]).mark_read


async def test_save_message_stores_the_raw_mime_as_read_from_the_server(
    env: dict[str, str], service: Any, mail_user: MailUser
):
    rt = runtime(env, service, mail_user, "pop3s", SAVE_MESSAGE="always")
    (account,) = rt.settings.accounts
    raw = with_attached_mail("kept whole")
    mail_user.deliver(raw)
    (request,) = await queued(rt, account)
    outcome = await ingest_fetched(request, rt)
    found = await rt.attachments.read_json(f"{outcome.prefix}/manifest.json")
    assert found is not None
    (message,) = [a for a in found[0]["attachments"] if a["kind"] == "message"]
    assert (message["file"], message["sha256"], message["size"]) == ("message.eml", sha(raw), len(raw))


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


HTML = "<p>Grüße, die Buchhaltung</p>"


def alternative(subject: str, *, html: bool = True, files: tuple[tuple[str, bytes], ...] = (("a.pdf", PDF),)) -> bytes:
    """A mail as clients send it: text and (if `html`) HTML alternatives, the HTML in Latin-1 quoted-printable."""
    mail = EmailMessage()
    mail["From"], mail["To"], mail["Subject"] = "billing@supplier.example", "ap@example.org", subject
    mail["Date"], mail["Message-ID"] = "Fri, 20 Nov 2026 09:30:00 +0000", f"<{uuid.uuid4().hex}@supplier.example>"
    mail.set_content("Grüße als Text")
    if html:
        mail.add_alternative(HTML, subtype="html", charset="iso-8859-1", cte="quoted-printable")
    for name, data in files:
        maintype, subtype = ("application", "pdf") if name.endswith(".pdf") else ("text", "csv")
        mail.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
    return bytes(mail).replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


async def body_of(rt: Any, request: FetchRequest) -> tuple[dict[str, Any] | None, list[str], bytes | None]:
    """Ingest the request: the manifest's body entry, the names stored, the body's bytes as stored."""
    outcome = await ingest_fetched(request, rt)
    assert outcome.status == "ingested" and outcome.prefix
    found = await rt.attachments.read_json(f"{outcome.prefix}/manifest.json")
    assert found is not None and found[0]["status"] == "complete"
    bodies = [a for a in found[0]["attachments"] if a["kind"] == "body"]
    assert len(bodies) <= 1
    if not bodies:
        return None, await stored(rt.attachments, outcome.prefix), None
    blob = rt.attachments._container.get_blob_client(bodies[0]["blob"])
    data = await (await blob.download_blob()).readall()
    properties = await blob.get_blob_properties()
    assert properties.content_settings.content_type == bodies[0]["contentType"]
    assert (len(data), sha(data)) == (bodies[0]["size"], bodies[0]["sha256"])
    return bodies[0], await stored(rt.attachments, outcome.prefix), data


async def test_save_body_stores_the_html_alternative_as_utf8_as_graph_mail_has_it(
    env: dict[str, str], service: Any, mail_user: MailUser
):
    rt = runtime(env, service, mail_user, SAVE_BODY="always", SAVE_MESSAGE="always")
    (account,) = rt.settings.accounts
    mail_user.deliver(alternative("html and text"))
    (request,) = await queued(rt, account)
    body, names, data = await body_of(rt, request)
    assert body is not None and data == f"{HTML}\r\n".encode()  # Latin-1 QP on the wire, UTF-8 stored
    assert (body["name"], body["file"], body["contentType"]) == ("body.html", "body.html", "text/html; charset=utf-8")
    assert names == ["a.pdf", "body.html", "manifest.json", "message.eml"]  # the text alternative is not kept


async def test_save_body_of_a_text_only_mail_is_its_own_text_not_the_attached_mails(
    env: dict[str, str], service: Any, mail_user: MailUser
):
    rt = runtime(env, service, mail_user, "pop3s", SAVE_BODY="always")
    (account,) = rt.settings.accounts
    mail = EmailMessage()
    mail["From"], mail["Subject"], mail["Date"] = (
        "billing@supplier.example",
        "text only",
        "Fri, 20 Nov 2026 09:30:00 +0000",
    )
    mail.set_content("Rechnung für März – bitte zahlen\n", charset="windows-1252", cte="base64")
    inner = EmailMessage()
    inner["Subject"] = "the order"
    inner.set_content("not the mail's body")
    inner.add_alternative("<p>nor this</p>", subtype="html")
    mail.add_attachment(inner)
    mail_user.deliver(bytes(mail).replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))
    (request,) = await queued(rt, account)
    body, names, data = await body_of(rt, request)
    assert body is not None and data == "Rechnung für März – bitte zahlen\n".encode()  # base64: its own line ends
    assert (body["file"], body["contentType"]) == ("body.txt", "text/plain; charset=utf-8")
    assert names == ["attached message.eml", "body.txt", "manifest.json"]


async def test_save_body_of_a_signed_mail_is_the_body_inside_the_signature(
    env: dict[str, str], service: Any, mail_user: MailUser
):
    from tests.shared.unpack.test_cms import clear_signed, identity

    rt = runtime(env, service, mail_user, SAVE_BODY="always")
    (account,) = rt.settings.accounts
    entity = EmailMessage()
    entity.set_content("signed text")
    entity.add_alternative(HTML, subtype="html", charset="iso-8859-1", cte="quoted-printable")
    entity.add_attachment(PDF, maintype="application", subtype="pdf", filename="signed.pdf")
    head = b"From: billing@supplier.example\r\nSubject: signed\r\nDate: Fri, 20 Nov 2026 09:30:00 +0000\r\n"
    signed = clear_signed(identity("Billing", "billing@supplier.example"), bytes(entity).replace(b"\n", b"\r\n"))
    mail_user.deliver(head + b"MIME-Version: 1.0\r\n" + signed)
    (request,) = await queued(rt, account)
    body, names, data = await body_of(rt, request)
    assert body is not None and body["file"] == "body.html" and data == f"{HTML}\r\n".encode()
    assert "signed.pdf" in names


async def test_save_body_no_files_stores_the_body_only_when_no_file_is_kept(
    env: dict[str, str], service: Any, mail_user: MailUser
):
    rt = runtime(env, service, mail_user, SAVE_BODY="no-files", ATTACHMENT_EXTENSIONS="pdf")
    (account,) = rt.settings.accounts
    mail_user.deliver(alternative("a kept file"))
    mail_user.deliver(alternative("only a skipped file", html=False, files=(("list.csv", b"a;b\r\n"),)))
    mail_user.deliver(
        b"From: scanner@example.org\r\nSubject: no text at all\r\nDate: Fri, 20 Nov 2026 09:30:00 +0000\r\n"
        b'MIME-Version: 1.0\r\nContent-Type: application/octet-stream; name="scan.bin"\r\n\r\nBINARY\r\n'
    )
    kept, skipped, bare = await queued(rt, account)
    body, names, _ = await body_of(rt, kept)
    assert body is None and names == ["a.pdf", "manifest.json"]
    body, names, data = await body_of(rt, skipped)
    assert body is not None and body["file"] == "body.txt" and data == "Grüße als Text\r\n".encode()
    assert names == ["body.txt", "manifest.json"]
    body, names, data = await body_of(rt, bare)  # no text part: an empty body.txt, as Graph gives a body
    assert body is not None and body["file"] == "body.txt" and data == b""
