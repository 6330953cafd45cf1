"""An IMAP account in MAILBOXES, end to end through the dev host: the poll timer fans out, the poll
worker reads the password from Key Vault, and each new mail in Dovecot becomes one `mail-fetch` request."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import trustme
from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob import BlobServiceClient
from azure.storage.queue import QueueClient, TextBase64EncodePolicy

from local.azuresim.runner import secret_client
from local.dovecot import Dovecot
from local.mailcheck import BlobReader, take_handoffs
from local.stack import Stack, StackConfig, write_ca_bundle
from shared.pipeline.poison import FETCH_QUEUE
from shared.settings import parse_account
from shared.sources.cursor import CursorStore
from tests.e2e.conftest import wait_until
from tests.e2e.test_cli import cli, health
from tests.shared.sources.conftest import MailUser
from tests.shared.sources.imap.test_session import flags_of as session_flags

USER, PASSWORD, SECRET = "ap@example.org", "app-Passw0rd", "imap-ap-password"
# A POP3 maildrop whose mail a route sends to its own container, deleted from the server once stored.
POP_USER, POP_PASSWORD, POP_SECRET = "scans@example.org", "pop-Passw0rd", "pop3-scans-password"
POP_CONTAINER = "pop3-scans"
ROUTES = [{"name": "pop3-scans", "match": {"mailbox": POP_USER}, "container": POP_CONTAINER, "path": "{messageKey}"}]
PDF = b"%PDF-1.7 scanned invoice\n"


@dataclass
class Accounts:
    stack: Stack
    server: Dovecot
    url: str  # the IMAPS account (INBOX): no after-ingest action
    scans_url: str  # the IMAPS account's folder Scans: mark-read, move:Done
    pop_url: str
    ca_file: Path


@pytest.fixture(scope="module")
def imap_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Accounts]:
    ca = trustme.CA()
    directory = tmp_path_factory.mktemp("imap-e2e")
    with Dovecot(directory / "dovecot", ca) as server, pytest.MonkeyPatch.context() as patch:
        server.add_user(USER, PASSWORD)
        server.add_user(POP_USER, POP_PASSWORD)
        server.create_folder(USER, "Scans")
        own = directory / "mail-ca.pem"
        ca.cert_pem.write_to_path(str(own))
        # The stack's bundle takes the CAs the machine trusts: here, the mail server's too.
        patch.setenv("SSL_CERT_FILE", str(write_ca_bundle(directory / "bundle.pem", own, os.environ)))
        imaps = f"imaps://{quote(USER, safe='')}@127.0.0.1:{server.ports['imaps']}"
        url, scans = f"{imaps}?secret={SECRET}", f"{imaps}/Scans?secret={SECRET}"
        pop = f"pop3s://{quote(POP_USER, safe='')}@127.0.0.1:{server.ports['pop3s']}?secret={POP_SECRET}"
        config = StackConfig(
            mailboxes=("invoices@contoso.com", url, scans, pop),
            data_dir=directory / "stack",
            app_settings={
                "MAIL_POLL_SCHEDULE": "*/2 * * * * *",
                "AzureFunctionsJobHost__extensions__queues__maxPollingInterval": "00:00:00.500",
                "AFTER_INGEST_BY_MAILBOX": f"{USER}/Scans=mark-read,move:Done; {POP_USER}=delete",
                "ROUTES": json.dumps(ROUTES),
                "SAVE_BODY": "no-files",  # a mail with no file keeps its body
            },
        )
        with Stack(config) as stack:
            yield Accounts(stack, server, url, scans, pop, own)


def mail_with_attached_mail(subject: str, pdf: bytes = PDF) -> bytes:
    """A scanned invoice (a PDF) with the order it answers attached as a mail, itself with a PDF."""
    inner = EmailMessage()
    inner["From"], inner["To"], inner["Subject"] = "buyer@customer.example", "billing@supplier.example", "Order 17"
    inner.set_content("our order")
    inner.add_attachment(b"%PDF order 17", maintype="application", subtype="pdf", filename="order.pdf")
    outer = EmailMessage()
    outer["From"], outer["To"], outer["Subject"] = "Supplier <billing@supplier.example>", USER, subject
    outer["Date"] = format_datetime(datetime.now(UTC))
    outer["Message-ID"] = make_msgid(domain="supplier.example")
    outer.set_content("invoice attached")
    outer.add_attachment(pdf, maintype="application", subtype="pdf", filename="invoice.pdf")
    outer.add_attachment(inner)
    return bytes(outer).replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def manifests(reader: BlobReader, prefix: str) -> list[dict[str, Any]]:
    try:
        names = reader.names(prefix)
    except ResourceNotFoundError:  # the container is made with its first file
        return []
    return [m for name in names if name.endswith("/manifest.json") and (m := reader.json(name))]


def checked(reader: BlobReader, manifest: dict[str, Any]) -> dict[str, str]:
    """Every stored file of the manifest read back: its sha256 and size as recorded. Name → sha256."""
    found = {}
    for entry in manifest["attachments"]:
        if entry.get("blob"):
            assert reader.sha256(entry["blob"]) == (entry["size"], entry["sha256"]), entry["name"]
            found[entry["name"]] = entry["sha256"]
    return found


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def store_secret(stack: Stack, name: str, value: str) -> None:
    async def store() -> None:
        assert stack.sim is not None
        async with secret_client(stack.sim) as client:
            await client.set_secret(name, value)

    asyncio.run(store())


def fetch_requests(stack: Stack) -> list[dict[str, Any]]:
    queue = QueueClient.from_connection_string(stack.storage_connection_string, FETCH_QUEUE)
    try:
        found = [json.loads(base64.b64decode(m.content)) for m in queue.peek_messages(max_messages=32)]
    except Exception:  # the queue is made by the first request
        found = []
    finally:
        queue.close()
    return found


def cursor_of(stack: Stack, url: str) -> dict[str, Any] | None:
    from shared.pipeline.storage import BlobStore, blob_service
    from shared.settings import StorageSettings

    async def load() -> dict[str, Any] | None:
        service = blob_service(StorageSettings(connection_string=stack.storage_connection_string), None)
        try:
            cursor, _ = await CursorStore(BlobStore(service, "mail-ingest-state")).load(parse_account(url).key)
        finally:
            await service.close()
        return cursor.__dict__ if cursor else None

    return asyncio.run(load())


def test_a_new_mail_in_an_imap_account_is_stored_once_as_files(imap_stack: Accounts):
    stack, server, url = imap_stack.stack, imap_stack.server, imap_stack.url
    # No password in Key Vault yet: the account's polls fail, and say why, while the app goes on.
    failed = wait_until(lambda: (cursor_of(stack, url) or {}).get("last_error"), 60, "a failed poll")
    assert f"secret {SECRET} does not exist" in failed
    report = health(stack)
    assert report.status_code == 503
    account = next(a for a in report.json()["accounts"] if a["account"] == str(parse_account(url)))
    assert account["account"] in report.json()["unhealthy"]
    assert account["problems"] and f"secret {SECRET} does not exist" in account["problems"][0]

    refused = cli(stack, "check")
    assert refused.returncode != 0
    assert f"secret {SECRET} does not exist" in refused.stdout and "Key Vault secret imap-ap-password" in refused.stdout
    store_secret(stack, SECRET, PASSWORD)
    store_secret(stack, POP_SECRET, POP_PASSWORD)
    checked_accounts = cli(stack, "check")
    line = next(line for line in checked_accounts.stdout.splitlines() if str(parse_account(url)) in line)
    assert "signed in; INBOX: 0 message(s)" in line
    wait_until(lambda: (cursor_of(stack, url) or {}).get("last_poll_at"), 60, "a successful poll")
    assert (cursor_of(stack, url) or {}).get("last_error") is None
    server.deliver(USER, mail_with_attached_mail("scanned invoice"))
    reader = BlobReader(stack)
    try:
        (manifest,) = wait_until(lambda: manifests(reader, f"{USER}/"), 60, "the IMAP mail's manifest")
        assert manifest["status"] == "complete" and manifest["source"] == "imap"
        assert (manifest["mailbox"], manifest["folder"], manifest["subject"]) == (USER, "INBOX", "scanned invoice")
        files = checked(reader, manifest)
        assert files == {
            "invoice.pdf": sha(PDF),
            "attached message.eml": files["attached message.eml"],
            "order.pdf": sha(b"%PDF order 17"),
        }
    finally:
        reader.close()
    assert (cursor_of(stack, url) or {}).get("last_uid") == 1
    assert flags_of(USER, imap_stack) == {1: set()}  # no after-ingest action for INBOX: no flag changed
    # Later polls queue nothing again.
    polled = (cursor_of(stack, url) or {})["last_poll_at"]
    wait_until(lambda: (cursor_of(stack, url) or {}).get("last_poll_at") != polled, 60, "another poll")
    assert fetch_requests(stack) == []
    (account,) = [a for a in health(stack).json()["accounts"] if a["account"] == str(parse_account(url))]
    assert account["healthy"] and account["cursor"]["last_uid"] == 1 and account["queued"] == 1
    handoffs = [h for h in take_handoffs(stack) if h["mailbox"] == USER]
    assert [h["messageKey"] for h in handoffs] == [manifest["messageKey"]]
    # The activity record is written right after the mail: `status` shows it under the account.
    shown = wait_until(
        lambda: (
            (text := cli(stack, "status").stdout.split(str(parse_account(url)))[1].split("\n    problem")[0])
            and f"message {manifest['messageKey']}, 3 file(s), route default" in text
            and text
        ),
        30,
        "the account's ingest in status",
    )
    assert "queued in all" in shown
    # resync: the next poll lists the folder again by fingerprint, and finds nothing it had not queued.
    resynced = cli(stack, "resync", f"{USER}/INBOX")
    assert resynced.returncode == 0 and "the next poll lists its mail since" in resynced.stdout
    wait_until(lambda: (cursor_of(stack, url) or {}).get("uidvalidity"), 60, "a poll after the resync")
    assert (cursor_of(stack, url) or {})["queued"] == 1


def flags_of(user: str, accounts: Accounts, folder: str = "INBOX") -> dict[int, set[bytes]]:
    password = PASSWORD if user == USER else POP_PASSWORD
    mail_user = MailUser(accounts.server, user, password)
    return session_flags(mail_user, accounts.ca_file, folder)


def test_an_imap_folder_with_after_ingest_actions(imap_stack: Accounts):
    stack, server = imap_stack.stack, imap_stack.server
    wait_until(lambda: (cursor_of(stack, imap_stack.scans_url) or {}).get("last_poll_at"), 60, "a poll of Scans")
    server.deliver(USER, mail_with_attached_mail("to be moved"), "Scans")
    reader = BlobReader(stack)
    try:
        wait_until(lambda: [m for m in manifests(reader, f"{USER}/") if m["folder"] == "Scans"], 60, "the Scans mail")
    finally:
        reader.close()
    # Marked read, then moved: Scans is empty, Done has it, \Seen.
    wait_until(lambda: flags_of(USER, imap_stack, "Done") == {1: {b"\\Seen"}}, 30, "the mail moved to Done, read")
    assert flags_of(USER, imap_stack, "Scans") == {}


def test_pop3_mail_is_routed_to_its_container_and_deleted_once_stored(imap_stack: Accounts):
    stack, server = imap_stack.stack, imap_stack.server
    wait_until(lambda: (cursor_of(stack, imap_stack.pop_url) or {}).get("last_poll_at"), 60, "a POP3 poll")
    server.deliver(POP_USER, mail_with_attached_mail("over POP3", b"%PDF pop3"))
    reader = BlobReader(stack, POP_CONTAINER)
    try:
        (manifest,) = wait_until(lambda: manifests(reader, ""), 60, "the POP3 mail's manifest in its container")
        assert manifest["status"] == "complete" and manifest["source"] == "pop3" and manifest["route"] == "pop3-scans"
        assert checked(reader, manifest)["invoice.pdf"] == sha(b"%PDF pop3")
        assert reader.names("")[0].startswith(f"{manifest['messageKey']}/")  # the route's path: {messageKey}
    finally:
        reader.close()
    maildrop = server.folder_path(POP_USER)
    wait_until(lambda: not [*maildrop.glob("new/*"), *maildrop.glob("cur/*")], 30, "the mail deleted (DELE, QUIT)")
    handoffs = wait_until(lambda: [h for h in take_handoffs(stack) if h["mailbox"] == POP_USER], 30, "the hand-off")
    assert [h["messageKey"] for h in handoffs] == [manifest["messageKey"]]  # one per mail


def test_a_recreated_folder_doubles_nothing(imap_stack: Accounts):
    stack, server, url = imap_stack.stack, imap_stack.server, imap_stack.url
    reader = BlobReader(stack)
    try:
        before = {m["messageKey"] for m in manifests(reader, f"{USER}/")}
        assert before, "runs after the first test's mail"
        time.sleep(1.1)  # Dovecot's UIDVALIDITY is the second a folder is made
        old = (cursor_of(stack, url) or {})["uidvalidity"]
        # The folder made again from the same mail (a restore), plus one new mail.
        kept = sorted(server.folder_path(USER).glob("cur/*")) + sorted(server.folder_path(USER).glob("new/*"))
        contents = [path.read_bytes() for path in kept]
        server.remove_folder(USER, "INBOX")
        server.create_folder(USER, "Scans")
        for raw in contents:
            server.deliver(USER, raw)
        server.deliver(USER, mail_with_attached_mail("after the restore"))
        wait_until(lambda: (cursor_of(stack, url) or {}).get("uidvalidity") != old, 60, "the new UIDVALIDITY seen")
        after = wait_until(
            lambda: (keys := {m["messageKey"] for m in manifests(reader, f"{USER}/")}) - before and keys,
            60,
            "the new mail",
        )
        assert len(after - before) == 1 and before <= after
    finally:
        reader.close()


def big_mail(size: int) -> tuple[Iterator[bytes], str]:
    """A mail of about `size` bytes with one large PDF (base64), made piece by piece; and the PDF's sha256."""
    piece = (b"%PDF-1.7 scan " + bytes(range(256)) * 230)[:57_000]
    encoded = base64.b64encode(piece)
    lines = b"".join(encoded[i : i + 76] + b"\r\n" for i in range(0, len(encoded), 76))
    count = size // len(lines)
    digest = hashlib.sha256()
    for _ in range(count):
        digest.update(piece)

    def parts() -> Iterator[bytes]:
        yield (
            f"From: scanner@example.org\r\nTo: {USER}\r\nSubject: big scan\r\nMessage-ID: <big-scan@example.org>\r\n"
            "Date: Sun, 29 Nov 2026 08:00:00 +0000\r\nMIME-Version: 1.0\r\n"
            'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nscan\r\n'
            '--b\r\nContent-Type: application/pdf; name="scan.pdf"\r\nContent-Transfer-Encoding: base64\r\n'
            'Content-Disposition: attachment; filename="scan.pdf"\r\n\r\n'
        ).encode()
        for _ in range(count):
            yield lines
        yield b"--b--\r\n"

    return parts(), digest.hexdigest()


def staging(stack: Stack, name: str) -> bool:
    """Whether a blob of that name has blocks staged but is not committed yet."""
    service = BlobServiceClient.from_connection_string(stack.storage_connection_string)
    try:
        found = service.get_container_client("mail-attachments").list_blobs(
            name_starts_with=f"{USER}/", include=["uncommittedblobs"]
        )
        return any(b.name.endswith(f"/{name}") and not b.size for b in found)
    finally:
        service.close()


def peak_rss(pid: int) -> tuple[int, int]:
    """The process's resident set now and at its highest (VmRSS, VmHWM), in bytes."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) * 1024, int(fields["VmHWM"].split()[0]) * 1024


def test_a_60_mb_mail_survives_a_crash_and_is_stored_once_in_bounded_memory(imap_stack: Accounts):
    stack, server, url = imap_stack.stack, imap_stack.server, imap_stack.url
    assert stack.devhost is not None
    parts, pdf_sha = big_mail(60 * 1024 * 1024)
    server.deliver_file(USER, parts)
    account = parse_account(url)
    seen = f"sources/{account.key}/seen/"
    state = BlobReader(stack, "mail-ingest-state")
    reader = BlobReader(stack)
    try:
        marks = wait_until(lambda: [n for n in state.names(seen) if (state.json(n) or {}).get("size", 0) > 2**25], 60)
        request = state.json(marks[0])
        assert request is not None
        # The worker is writing the PDF's blocks (staged, not committed): the dev host dies mid-message.
        wait_until(lambda: staging(stack, "scan.pdf"), 60, "the PDF's first blocks")
        os.killpg(stack.devhost.pid, signal.SIGKILL)
        assert not [m for m in manifests(reader, f"{USER}/") if m["subject"] == "big scan"], "finished too soon"
        stack.devhost.stop()
        stack.devhost.start()
        # A 2 MB mail first: the new worker process loads and allocates what every ingest of a mail of more
        # than one chunk needs (the 1 MB case of `make bench`), then its peak so far is the baseline.
        server.deliver(USER, mail_with_attached_mail("warm-up", b"%PDF warm-up" + os.urandom(2 * 1024 * 1024)))
        wait_until(lambda: [m for m in manifests(reader, f"{USER}/") if m["subject"] == "warm-up"], 60, "warm-up")
        _, baseline = peak_rss(stack.devhost.pid)
        # The killed worker's message stays invisible for the host's 10 minutes; its redelivery, sooner:
        send = QueueClient.from_connection_string(
            stack.storage_connection_string, FETCH_QUEUE, message_encode_policy=TextBase64EncodePolicy()
        )
        with send:
            send.send_message(json.dumps(request))
        (manifest,) = wait_until(
            lambda: [m for m in manifests(reader, f"{USER}/") if m["subject"] == "big scan"], 180, "the big mail"
        )
        _, peak = peak_rss(stack.devhost.pid)
        assert manifest["status"] == "complete"
        assert checked(reader, manifest) == {"scan.pdf": pdf_sha}
        files = reader.names(manifest["attachments"][0]["blob"].rsplit("/", 1)[0])
        assert [f.rsplit("/", 1)[1] for f in files] == ["manifest.json", "scan.pdf"]  # nothing twice
        # The worker held a few chunks of the 60 MB mail at a time, not the mail.
        # (Holding it would take 60 MiB more for the MIME alone; `make bench` measures about 25 MiB for 100 MB.)
        assert peak - baseline < 48 * 1024 * 1024, f"peak grew by {(peak - baseline) / 2**20:.1f} MiB"
        handoffs = [h for h in take_handoffs(stack) if h["messageKey"] == manifest["messageKey"]]
        assert len(handoffs) == 1
    finally:
        state.close()
        reader.close()


def test_an_imap_mail_without_files_keeps_its_body(imap_stack: Accounts):
    """SAVE_BODY=no-files: a mail with no file is stored as its body, the HTML alternative, in UTF-8."""
    stack, server = imap_stack.stack, imap_stack.server
    mail = EmailMessage()
    mail["From"], mail["To"], mail["Subject"] = "Supplier <billing@supplier.example>", USER, "order by mail"
    mail["Date"], mail["Message-ID"] = format_datetime(datetime.now(UTC)), make_msgid(domain="supplier.example")
    mail.set_content("Bitte liefern: 3 Paletten")
    mail.add_alternative("<p>Bitte liefern: 3 Paletten, Grüße</p>", subtype="html", charset="iso-8859-1")
    server.deliver(USER, bytes(mail).replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))
    reader = BlobReader(stack)
    try:
        (manifest,) = wait_until(
            lambda: [m for m in manifests(reader, f"{USER}/") if m["subject"] == "order by mail"], 60, "the mail"
        )
        (body,) = manifest["attachments"]
        assert (body["kind"], body["file"], body["contentType"]) == ("body", "body.html", "text/html; charset=utf-8")
        assert checked(reader, manifest) == {"body.html": sha("<p>Bitte liefern: 3 Paletten, Grüße</p>\r\n".encode())}
    finally:
        reader.close()


def test_unsubscribe_leaves_polled_accounts_and_forgets_those_taken_out(imap_stack: Accounts):
    """An account has no subscription: `unsubscribe` changes nothing for one in MAILBOXES (its polls go on
    from its cursor) and forgets one no longer there, with `--all` as well."""
    stack, url = imap_stack.stack, imap_stack.url
    wait_until(lambda: (cursor_of(stack, url) or {}).get("last_poll_at"), 60, "a poll of INBOX")
    kept = cli(stack, "unsubscribe", USER)
    assert kept.returncode == 0, kept.stderr
    for configured in (url, imap_stack.scans_url):
        line = next(line for line in kept.stdout.splitlines() if line.startswith(f"{parse_account(configured)}:"))
        assert "still in MAILBOXES, nothing changed" in line and "remove it from MAILBOXES first" in line
    assert (cursor_of(stack, url) or {}).get("last_uid") is not None  # still there, still polled
    # An account polled once and taken out of MAILBOXES since: its cursor and a seen mark are left over.
    old = parse_account(f"imaps://old%40example.org@127.0.0.1:{imap_stack.server.ports['imaps']}?secret=x")
    state = BlobServiceClient.from_connection_string(stack.storage_connection_string).get_container_client(
        "mail-ingest-state"
    )
    cursor = {"account_key": old.key, "account": str(old), "protocol": "imap", "window_start": "2026-11-01T00:00:00Z"}
    state.upload_blob(f"sources/{old.key}.json", json.dumps(cursor))
    state.upload_blob(f"sources/{old.key}/seen/abc.json", json.dumps({"uid": 1}))
    try:
        done = cli(stack, "unsubscribe", "--all")
        assert done.returncode == 0, done.stderr
        assert f"{old}: not in MAILBOXES, forgotten: cursor, 1 seen mark(s), activity record removed" in done.stdout
        assert f"{parse_account(url)}: still in MAILBOXES, nothing changed" in done.stdout
        assert not list(state.list_blobs(name_starts_with=f"sources/{old.key}"))
        assert (cursor_of(stack, url) or {}).get("last_uid") is not None
    finally:
        # --all unsubscribed the Graph mailbox too: the timer's pass subscribes it again.
        assert stack.run_function("maintain").status_code == 200
        state.close()
