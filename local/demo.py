"""`make demo`: the product end to end on the local stack, checked file by file.

Starts Azurite, the Azure simulator and the dev host running the app; the timer creates the
subscriptions; mails with varied attachments arrive in two mailboxes; Graph's notifications reach
the webhook; the ingest worker writes the files. Among them: an invoice forwarded as an attached mail
(the invoice is extracted from it), a signature logo (inline: skipped), a PDF Apple Mail marked inline
(kept), a signed invoice (Graph lists it as one smime.p7m; the invoice comes out of it, its signature
checked), a winmail.dat from an old Outlook, a zip of scans in folders, and a 100 MB scan (streamed in
bounded memory). Every stored file is read back from Blob Storage and its sha256 compared with what
was sent; skipped ones must be recorded as skipped.

Then routes: a supplier's invoice goes to its own container in a layout by sender domain, a lottery mail
is skipped (recorded, nothing stored), and the hand-off messages the queue received are printed: one per
completed mail, never one for the skipped mail.

Then what capture needs to trust a document: an invoice already stored arrives again, forwarded to the
other mailbox (stored, marked `duplicateOf` the first); a password-protected PDF and a rights-protected
(Purview / IRM) mail are marked `protected` and routed to a review container; a winmail.dat whose
checksums fail is extracted and its files marked `damaged`.

Then malware verdicts (MALWARE_SCANNING=defender, the simulator's Defender for Storage scanning every upload):
a clean invoice is handed off after its verdict, the EICAR test file is moved to the quarantine container and
the rest of its mail handed off marked, and a zip Defender cannot open is handed off marked unscanned.

Then the README's sample of what lands in storage (local/sample.py): the blob tree of a signed mail with a zip
and an inline logo and of a routed mail, and the first one's manifest.

Then an IMAP account: a Dovecot server (started here, TLS from a test CA the app trusts through
SSL_CERT_FILE, the password in Key Vault) receives an invoice with the order attached as a mail; the
poll timer queues it, the fetch worker takes it through the same pipeline, and its files are checked by
sha256 as Graph mail's are.

Then a missed-mail recovery: the app (webhook and timer) is stopped, mail arrives, Graph gives up on
its notifications after 4 hours (the simulator's clock is moved), the app comes back, its timer runs
past due and resyncs every folder, and those files are checked too. Exits 0 only if every check passes.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import io
import json
import os
import sys
import tempfile
import time
import zipfile
from contextlib import ExitStack
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path
from typing import Any
from urllib.parse import quote

from local.azuresim.defender import eicar
from local.azuresim.runner import secret_client
from local.azuresim.tnef import TnefFile, encode_tnef
from local.dovecot import Dovecot
from local.mailcheck import (
    BlobReader,
    Delivered,
    FileCheck,
    check_files,
    deliver,
    deliver_while_app_is_down,
    file_attachment,
    generated_attachment,
    take_handoffs,
    tiny_pdf,
    tiny_png,
    wait_for_manifests,
    with_parts,
)
from local.sample import manifest_text, store_sample
from local.stack import Stack, StackConfig, write_ca_bundle
from shared.pipeline.layout import message_key

INVOICES = "invoices@contoso.com"
SCANS = "scans@contoso.com"
SCANS_FOLDER = "Inbox/Delivery notes"
TICK = 5  # seconds between the timer's runs in the demo (15 minutes in Azure), so an outage spans one
AP_CONTAINER = "ap-invoices"
REVIEW_CONTAINER = "ap-review"  # documents no one can read without a password or a key, for a person to look at
# Northwind's mail by sender domain in its own container, lottery mail skipped; all other mail as before.
ROUTES = [
    {
        "name": "northwind-invoices",
        "match": {"from": ["*@northwind.example", "*@*.northwind.example"]},
        "container": AP_CONTAINER,
        "path": "{senderDomain}/{yyyy}/{MM}/{messageKey}",
        # No tags of its own: with MALWARE_SCANNING=defender Defender's two need the room (docs/trust.md).
    },
    {"name": "junk", "match": {"from": "*@lottery.example"}, "skip": True},
    {"name": "review-protected", "match": {"protected": True}, "container": REVIEW_CONTAINER},
]
# The IMAP account on the demo's own Dovecot.
IMAP_USER, IMAP_PASSWORD, IMAP_SECRET = "ap@example.org", "demo-Passw0rd", "demo-imap-password"


def forwarded_invoice() -> dict[str, object]:
    """An invoice that reached the mailbox inside a forwarded mail, as Outlook's "Forward as attachment"."""
    return {
        "name": "Invoice 2026-1201 from Fabrikam",
        "kind": "item",
        "item": {
            "from": "billing@fabrikam.example",
            "subject": "Invoice 2026-1201 from Fabrikam",
            "bodyContentType": "html",
            "body": "<p>Dear customer, please find our invoice attached.</p><img src='cid:fabrikam-logo'>",
            "attachments": [
                file_attachment("Invoice 2026-1201.pdf", tiny_pdf("Invoice 2026-1201"), "application/pdf"),
                file_attachment(
                    "fabrikam-logo.png", tiny_png(32, 16), "image/png", isInline=True, contentId="fabrikam-logo"
                ),
            ],
        },
    }


def containers(stack: Stack) -> list[Delivered]:
    """A signed invoice, a winmail.dat and a zip: each arrives as the files inside it."""
    winmail = {
        "Rechnung 2026-1204 März.pdf": tiny_pdf("Rechnung 2026-1204"),
        "Lieferschein 7790.pdf": tiny_pdf("Lieferschein 7790"),
    }
    scans = {
        "Scans/2026-11/scan-0001.pdf": tiny_pdf("Scan 1"),
        "Scans/2026-11/scan-0002.pdf": tiny_pdf("Scan 2"),
        "index.csv": b"file,pages\nscan-0001.pdf,1\nscan-0002.pdf,1\n",
    }
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zipped:
        for name, data in scans.items():
            zipped.writestr(name, data)
    signed: list[dict[str, Any]] = [
        file_attachment("Invoice 2026-1203.pdf", tiny_pdf("Invoice 2026-1203"), "application/pdf"),
    ]
    tnef = encode_tnef([TnefFile(name, "application/pdf", data) for name, data in winmail.items()])
    return [
        deliver(stack, INVOICES, "Inbox", "Invoice 2026-1203 (signed)", signed, smime={"type": "clear-signed"}),
        with_parts(deliver(stack, INVOICES, "Inbox", "Rechnung from an old Outlook", [
            file_attachment("winmail.dat", tnef, "application/ms-tnef"),
        ]), winmail),
        with_parts(deliver(stack, SCANS, SCANS_FOLDER, "Scans of November, zipped", [
            file_attachment("scans-2026-11.zip", archive.getvalue(), "application/zip"),
        ]), scans),
    ]  # fmt: skip


def send_mails(stack: Stack) -> list[Delivered]:
    return [
        deliver(stack, INVOICES, "Inbox", "Invoice 2026-1187", [
            file_attachment("Invoice 2026-1187.pdf", tiny_pdf("Invoice 2026-1187"), "application/pdf"),
        ]),
        deliver(stack, INVOICES, "Inbox", "Photo of the damaged pallet", [
            file_attachment("pallet.png", tiny_png(), "image/png"),
        ]),
        deliver(stack, INVOICES, "Inbox", "October statements", [
            file_attachment("statement-october.pdf", tiny_pdf("Statement October"), "application/pdf"),
            file_attachment("statement.csv", b"date,amount\n2026-10-01,120.00\n2026-10-15,89.50\n", "text/csv"),
            file_attachment("Lieferschein Müller.pdf", tiny_pdf("Lieferschein"), "application/pdf"),
        ]),
        deliver(stack, INVOICES, "Inbox", "FW: Invoice 2026-1201 from Fabrikam", [forwarded_invoice()]),
        deliver(stack, INVOICES, "Inbox", "Order confirmation", [
            file_attachment("Order 5512.pdf", tiny_pdf("Order 5512"), "application/pdf"),
            file_attachment("signature-logo.png", tiny_png(48, 16), "image/png", isInline=True),
        ]),
        deliver(stack, INVOICES, "Inbox", "Invoice 2026-1202 from an iPhone", [
            file_attachment("Invoice 2026-1202.pdf", tiny_pdf("Invoice 2026-1202"), "application/pdf", isInline=True),
        ]),
        *containers(stack),
        deliver(stack, SCANS, SCANS_FOLDER, "Scanner batch 0042", [
            generated_attachment("scan-batch-0042.tif", 20 * 1024 * 1024, 42, "image/tiff"),
        ]),
        deliver(stack, SCANS, SCANS_FOLDER, "Archive scan, 100 MB", [
            generated_attachment("archive-scan-2026.tif", 100 * 1024 * 1024, 100, "image/tiff"),
        ]),
    ]  # fmt: skip


def print_table(checks: list[FileCheck]) -> None:
    header = f"{'mailbox':22} {'file':34} {'bytes':>10}  {'sha256':10} {'check':18} {'seconds':>7}"
    print(header)
    print("-" * len(header))
    for c in checks:
        name = f"  └ {c.name}" if c.parent else c.name
        if c.expect == "stored":
            verdict, digest = ("ok" if c.ok else "BAD"), c.actual_sha256[:10]
        else:
            verdict, digest = (f"{c.expect} ok" if c.ok else f"not {c.expect}: BAD"), "-"
        print(f"{c.mailbox:22} {name[:34]:34} {c.size:>10}  {digest:10} {verdict:18} {c.seconds:>7.2f}")


def send_while_down(stack: Stack) -> list[Delivered]:
    return [
        deliver(stack, INVOICES, "Inbox", "Invoice 2026-1190 (sent while the app was down)", [
            file_attachment("Invoice 2026-1190.pdf", tiny_pdf("Invoice 2026-1190"), "application/pdf"),
        ]),
        deliver(stack, SCANS, SCANS_FOLDER, "Delivery note 7781 (sent while the app was down)", [
            file_attachment("Delivery note 7781.pdf", tiny_pdf("Delivery note 7781"), "application/pdf"),
        ]),
    ]  # fmt: skip


def verify(stack: Stack, mails: list[Delivered]) -> tuple[list[FileCheck], bool]:
    """Wait for each mail's manifest and check its files; false if a manifest never came."""
    reader = BlobReader(stack)
    try:
        manifests = wait_for_manifests(reader, mails)
        checks: list[FileCheck] = []
        for mail in mails:
            if mail.message_id not in manifests:
                print(f"FAILED: no manifest for {mail.subject!r} in {mail.mailbox}")
                continue
            manifest, seconds = manifests[mail.message_id]
            checks.extend(check_files(reader, mail, manifest, seconds))
    finally:
        reader.close()
    return checks, len(manifests) == len(mails)


def recover_missed_mail(stack: Stack, delivery: str) -> bool:
    print()
    print("Missed-mail recovery: stopping the app (its webhook and its timer) ...")
    mails, dropped = deliver_while_app_is_down(stack, lambda: send_while_down(stack), down_at_least=2 * TICK)
    if delivery == "eventgrid":
        # Event Grid delivered to the queue meanwhile: nothing was dropped, the events wait for the app.
        print(f"  {len(mails)} mails arrived while it was down; Event Grid delivered their events to the queue,")
        print("  where they waited. The app is back: it takes them, and its timer runs past due and resyncs ...")
        dropped = len(mails)
    else:
        print(f"  {len(mails)} mails arrived while it was down; Graph retried for 4 hours (simulated clock), then")
        print(
            f"  dropped {dropped} notifications. The app is back; its timer runs past due and resyncs every folder ..."
        )
    checks, complete = verify(stack, mails)
    print()
    print_table(checks)
    recovered = sum(c.ok for c in checks)
    print(f"\n{recovered} of {len(checks)} files sent while the app was down are stored and verified.")
    return complete and dropped == len(mails) and all(c.ok for c in checks)


def show_routes(stack: Stack) -> bool:
    print()
    print("Routes: Northwind's invoice to container ap-invoices by sender domain; a lottery mail skipped ...")
    invoice = deliver(stack, INVOICES, "Inbox", "Invoice NW-7731", [
        file_attachment("Invoice NW-7731.pdf", tiny_pdf("Invoice NW-7731"), "application/pdf"),
    ], sender="billing@eu.northwind.example")  # fmt: skip
    junk = deliver(stack, INVOICES, "Inbox", "You have won a prize", [
        file_attachment("claim form.pdf", tiny_pdf("Claim"), "application/pdf"),
    ], sender="prize@lottery.example")  # fmt: skip
    state, routed = BlobReader(stack, "mail-ingest-state"), BlobReader(stack, AP_CONTAINER)
    try:
        done: dict[str, dict[str, object]] = {}
        deadline = time.monotonic() + 60
        while len(done) < 2 and time.monotonic() < deadline:
            for mail in (invoice, junk):
                record = state.json(f"done/{mail.mailbox}/{message_key(mail.message_id)}.json")
                if record is not None:
                    done[mail.subject] = record
            time.sleep(0.2)
        if len(done) < 2:
            print("FAILED: the routed mails were not finished; see .stack/devhost.log")
            return False
        prefix = str(done[invoice.subject]["prefix"])
        manifest = routed.manifest(prefix)
        if manifest is None:
            print(f"FAILED: no manifest in {AP_CONTAINER}/{prefix}")
            return False
        checks = check_files(routed, invoice, manifest, time.monotonic() - invoice.delivered_at)
        skipped = state.json(f"skipped/{junk.mailbox}/{message_key(junk.message_id)}.json") or {}
    finally:
        state.close()
        routed.close()
    print(f"  {invoice.subject!r} from {invoice.sender}: route {manifest['route']}, stored in {AP_CONTAINER}/{prefix}/")
    print(f"  {junk.subject!r} from {junk.sender}: route {skipped.get('route')}, recorded, nothing stored")
    auth = manifest.get("senderAuthentication") or {}
    print(f"  its sender authentication (Exchange's Authentication-Results): {auth.get('result')} by {auth.get('by')}: "
          f"spf={auth.get('spf')} dkim={auth.get('dkim')} dmarc={auth.get('dmarc')} compauth={auth.get('compauth')} "
          f"reason={auth.get('compauthReason')}")  # fmt: skip
    if auth.get("result") != "pass":
        print("FAILED: the invoice's senderAuthentication is not Exchange's pass")
        return False
    print()
    print_table(checks)
    handoffs = wait_for_handoffs(stack, [invoice])
    print()
    print(f"Hand-off messages received on mail-ingested ({len(handoffs)}, one per completed mail):")
    for message in handoffs:
        names = ", ".join(str(f["name"]) for f in message["files"])
        print(f"  {message['route']:19} {message['mailbox']:22} {message['id']}  {names[:60]}")
    example = next((m for m in handoffs if m["id"] == message_key(invoice.message_id)), None)
    if example is not None:
        print("\nThe routed invoice's message:")
        print(json.dumps(example, indent=1, ensure_ascii=False))
    ids = [m["id"] for m in handoffs]
    return (
        all(c.ok for c in checks)
        and skipped.get("route") == "junk"
        and ids.count(message_key(invoice.message_id)) == 1
        and message_key(junk.message_id) not in ids
    )


def wait_for_handoffs(stack: Stack, mails: list[Delivered], timeout: float = 60) -> list[dict[str, Any]]:
    """Hand-off messages taken off the queue until each of `mails` has one (they come once their files' malware
    verdicts are in)."""
    wanted = {message_key(m.message_id) for m in mails}
    taken: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while not wanted <= {m["id"] for m in taken} and time.monotonic() < deadline:
        taken += take_handoffs(stack)
        time.sleep(0.2)
    return taken


def show_malware(stack: Stack) -> bool:
    """MALWARE_SCANNING=defender: a clean invoice, one with the EICAR test file (quarantined), and a zip Defender
    cannot open (Not Scanned: handed off unscanned). Each hand-off comes after the verdicts."""
    print()
    print("Malware verdicts (Defender for Storage, simulated): clean, malicious, not scanned ...")
    secret = {
        "path": "secret.pdf",
        "contentBase64": file_attachment("", tiny_pdf("Price list"), "")["contentBase64"],
        "encrypted": True,
    }
    mails = {
        "clean": deliver(stack, INVOICES, "Inbox", "Invoice 2026-1400", [
            file_attachment("Invoice 2026-1400.pdf", tiny_pdf("Invoice 2026-1400"), "application/pdf"),
        ]),
        "malicious": deliver(stack, INVOICES, "Inbox", "Invoice 2026-1401 (and a test virus)", [
            file_attachment("Invoice 2026-1401.pdf", tiny_pdf("Invoice 2026-1401"), "application/pdf"),
            file_attachment("eicar.txt", eicar(), "text/plain"),
        ]),
        "unscanned": deliver(stack, INVOICES, "Inbox", "Price list (zip, password in a separate mail)", [
            {"name": "price list.zip", "kind": "file", "contentType": "application/zip", "zip": {"entries": [secret]}},
        ]),
    }  # fmt: skip
    handoffs = {m["id"]: m for m in wait_for_handoffs(stack, list(mails.values()))}
    ok = True
    for expected, mail in mails.items():
        message = handoffs.get(message_key(mail.message_id))
        if message is None:
            print(f"  FAILED: no hand-off for {mail.subject!r}")
            ok = False
            continue
        status = message["malwareScan"]["status"]
        ok = ok and status == expected
        print(f"  {mail.subject[:46]:46} malwareScan {status}")
        for file in message["files"]:
            scan = file["malwareScan"]
            print(f"      handed off   {file['name']:24} {scan.get('result') or '-'}  {scan.get('reason') or ''}"[:118])
        for file in message.get("quarantined", []):
            scan = file["malwareScan"]
            where = (scan.get("quarantine") or {}).get("container")
            print(f"      quarantined  {file['name']:24} {','.join(scan['threats'])} → container {where}")
            ok = ok and where == "quarantine"
    return ok


def locked_pdf(text: str) -> bytes:
    from pypdf import PdfWriter

    writer = PdfWriter()
    writer.add_blank_page(612, 792)
    writer.add_metadata({"/Title": text})
    writer.encrypt(user_password="Rechnung-2026", algorithm="AES-256")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def show_trust(stack: Stack) -> bool:
    """One of each: a duplicate, a protected file, a protected mail, a damaged container."""
    print()
    print("Trust: a duplicate, a password-protected PDF, a rights-protected mail, a damaged winmail.dat ...")
    tnef = bytearray(encode_tnef([TnefFile("Rechnung 2026-1300.pdf", "application/pdf", tiny_pdf("R 2026-1300"))]))
    tnef[tnef.index(b"%PDF") + 12] ^= 0x20  # one object's checksum no longer holds
    rpmsg = b"\x76\xe8\x04\x60\xc4\x11\xe3\x86" + os.urandom(2048)  # [MS-OXORMMS] 2.2.4.5 prefix
    mails = {
        "duplicateOf": deliver(stack, SCANS, SCANS_FOLDER, "FW: Invoice 2026-1187", [
            file_attachment("Invoice 2026-1187.pdf", tiny_pdf("Invoice 2026-1187"), "application/pdf"),
        ]),
        "protected": deliver(stack, INVOICES, "Inbox", "Invoice 2026-1299 (password in a separate mail)", [
            file_attachment("Invoice 2026-1299.pdf", locked_pdf("Invoice 2026-1299"), "application/pdf"),
        ]),
        "protected mail": deliver(stack, INVOICES, "Inbox", "Confidential: price list", [
            file_attachment("message.rpmsg", rpmsg, "application/x-microsoft-rpmsg-message"),
        ], body="Fabrikam has sent you a protected message."),
        "damaged": deliver(stack, INVOICES, "Inbox", "Rechnung 2026-1300 from an old Outlook", [
            file_attachment("winmail.dat", bytes(tnef), "application/ms-tnef"),
        ]),
    }  # fmt: skip
    state = BlobReader(stack, "mail-ingest-state")
    readers = {name: BlobReader(stack, name) for name in ("mail-attachments", REVIEW_CONTAINER)}
    try:
        found: dict[str, dict[str, Any]] = {}
        deadline = time.monotonic() + 60
        while len(found) < len(mails) and time.monotonic() < deadline:
            for field, mail in mails.items():
                done = state.json(f"done/{mail.mailbox}/{message_key(mail.message_id)}.json")
                if done is not None and field not in found:
                    container = REVIEW_CONTAINER if done["route"] == "review-protected" else "mail-attachments"
                    found[field] = {"container": container, **(readers[container].manifest(done["prefix"]) or {})}
            time.sleep(0.2)
    finally:
        state.close()
        for reader in readers.values():
            reader.close()
    ok = len(found) == len(mails)
    for field, manifest in found.items():
        key = field.split()[0]
        said = (
            manifest.get(key)
            if field == "protected mail"
            else next((e[key] for e in manifest.get("attachments", []) if e.get(key)), None)
        )
        ok = ok and bool(said) and (manifest["container"] == REVIEW_CONTAINER) is field.startswith("protected")
        print(f"  {mails[field].subject[:44]:44} route {manifest.get('route')!s:17} {key}: {json.dumps(said)[:90]}")
    return ok


def start_dovecot(stack_exit: ExitStack) -> tuple[Dovecot, str]:
    """Dovecot with one user, its TLS certificate from a CA the app then trusts (SSL_CERT_FILE, which the
    stack's CA bundle takes in); the account URL for MAILBOXES."""
    import trustme

    directory = Path(stack_exit.enter_context(tempfile.TemporaryDirectory(prefix="demo-dovecot-")))
    ca = trustme.CA()
    server = stack_exit.enter_context(Dovecot(directory / "dovecot", ca))
    server.add_user(IMAP_USER, IMAP_PASSWORD)
    own = directory / "mail-ca.pem"
    ca.cert_pem.write_to_path(str(own))
    os.environ["SSL_CERT_FILE"] = str(write_ca_bundle(directory / "bundle.pem", own, os.environ))
    return server, f"imaps://{quote(IMAP_USER, safe='')}@127.0.0.1:{server.ports['imaps']}?secret={IMAP_SECRET}"


def import_from_imap(stack: Stack, server: Dovecot) -> bool:
    """A mail in the Dovecot account comes out as files in Blob Storage, checked by sha256."""
    print()
    print(f"IMAP: a mail to {IMAP_USER} on Dovecot (invoice PDF, the order attached as a mail) ...")

    async def store_password() -> None:
        assert stack.sim is not None
        async with secret_client(stack.sim) as client:
            await client.set_secret(IMAP_SECRET, IMAP_PASSWORD)

    asyncio.run(store_password())
    time.sleep(3)  # a poll has run (refused until now): mail after its window opened is the app's
    invoice, order = tiny_pdf("Invoice DC-1001"), tiny_pdf("Order 4711")
    inner = EmailMessage()
    inner["From"], inner["To"], inner["Subject"] = "buyer@contoso.com", "billing@supplier.example", "Order 4711"
    inner.set_content("Our order.")
    inner.add_attachment(order, maintype="application", subtype="pdf", filename="Order 4711.pdf")
    mail = EmailMessage()
    mail["From"], mail["To"], mail["Subject"] = "billing@supplier.example", IMAP_USER, "Invoice DC-1001"
    mail["Message-ID"] = make_msgid(domain="supplier.example")
    mail.set_content("Invoice attached, with your order.")
    mail.add_attachment(invoice, maintype="application", subtype="pdf", filename="Invoice DC-1001.pdf")
    mail.add_attachment(inner)
    server.deliver(IMAP_USER, bytes(mail).replace(b"\n", b"\r\n"))
    sent = {"Invoice DC-1001.pdf": invoice, "Order 4711.pdf": order}
    reader = BlobReader(stack)
    try:
        manifest: dict[str, Any] | None = None
        deadline = time.monotonic() + 90
        while manifest is None and time.monotonic() < deadline:
            time.sleep(0.5)
            try:
                names = [n for n in reader.names(f"{IMAP_USER}/") if n.endswith("/manifest.json")]
            except Exception:  # the container is made with its first file
                names = []
            manifest = reader.json(names[0]) if names else None
        if manifest is None:
            print("FAILED: the IMAP mail was not stored; see .stack/devhost.log")
            return False
        ok = manifest["status"] == "complete" and manifest["source"] == "imap"
        for entry in manifest["attachments"]:
            name, blob = entry["name"], entry.get("blob")
            size, digest = reader.sha256(blob) if blob else (0, "")
            expected = hashlib.sha256(sent[name]).hexdigest() if name in sent else entry.get("sha256")
            good = bool(blob) and digest == entry.get("sha256") == expected
            ok = ok and good
            print(f"  {'ok ' if good else 'BAD'} {name:28} {size:>8} bytes  {blob}")
        ok = ok and all(any(e["name"] == n for e in manifest["attachments"]) for n in sent)
    finally:
        reader.close()
    print(f"  manifest: source {manifest['source']}, account {manifest['account']}, route {manifest['route']}")
    return ok


def show_sample(stack: Stack) -> bool:
    """The README's "What lands in storage", from this run: a signed mail with a zip and a logo, and a routed mail."""
    print()
    print("What lands in storage (the README's sample; dates, keys and hashes as placeholders) ...")
    sample = store_sample(stack)
    if sample is None:
        print("FAILED: the sample mails were not finished; see .stack/devhost.log")
        return False
    print(sample.tree)
    print(manifest_text(sample.manifest))
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="make demo")
    parser.add_argument(
        "--delivery",
        choices=("webhook", "eventgrid"),
        default="webhook",
        help="GRAPH_DELIVERY: Graph calls the webhook, or publishes through Event Grid to the app's queue",
    )
    delivery = parser.parse_args(argv).delivery
    print(
        f"Starting Dovecot, Azurite, the Azure simulator and the dev host (GRAPH_DELIVERY={delivery}) ...", flush=True
    )
    with ExitStack() as running:
        server, account = start_dovecot(running)
        config = StackConfig(
            mailboxes=(INVOICES, f"{SCANS}/{SCANS_FOLDER}", account),
            app_settings={
                "MAINTAIN_SCHEDULE": f"*/{TICK} * * * * *",
                "ROUTES": json.dumps(ROUTES),
                "MAIL_POLL_SCHEDULE": "*/2 * * * * *",
                "GRAPH_DELIVERY": delivery,
                "MALWARE_SCANNING": "defender",
            },
        )
        stack = running.enter_context(Stack(config))
        print(f"  dev host {stack.app_url}, simulator {stack.sim_url}")
        started = time.monotonic()
        result = stack.run_function("maintain")
        subscriptions = stack.control("GET", "/_sim/subscriptions")
        count = len(subscriptions.get("value", subscriptions) if isinstance(subscriptions, dict) else subscriptions)
        print(f"Timer 'maintain': {result.status_code}, {count} subscriptions ({time.monotonic() - started:.1f}s)")
        if result.status_code != 200 or count != len(config.mailboxes) - 1:  # the IMAP account is polled
            print("FAILED: subscriptions were not created; see .stack/devhost.log")
            return 1
        if delivery == "eventgrid":
            # What the postdeploy hook does in Azure once Graph has made the partner topic (docs/setup.md).
            topic = stack.connect_eventgrid()
            print(f"Partner topic {topic['name']}: {topic['activationState']}, delivering to queue mail-events")
        mails = send_mails(stack)
        print(f"Delivered {len(mails)} mails with {sum(len(m.attachments) for m in mails)} attachments; waiting ...")
        print("(the files inside the forwarded mail, the signed mail, the winmail.dat and the zip are extracted too;")
        print(" inline logos are recorded as skipped, an inline PDF is kept)")
        checks, complete = verify(stack, mails)
        print()
        print_table(checks)
        stored = [c for c in checks if c.expect == "stored"]
        skipped = [c for c in checks if c.expect != "stored"]
        print()
        verified, recorded = sum(c.ok for c in stored), sum(c.ok for c in skipped)
        print(f"{verified} of {len(stored)} files verified (sha256 of the blob equals the sha256 sent); "
              f"{recorded} of {len(skipped)} inline images and links recorded, not stored.")  # fmt: skip
        delivered = complete and all(c.ok for c in checks)
        routed = show_routes(stack)
        trusted = show_trust(stack)
        scanned = show_malware(stack)
        sampled = show_sample(stack)
        imported = import_from_imap(stack, server)
        recovered = recover_missed_mail(stack, delivery)
        return 0 if delivered and routed and trusted and scanned and sampled and imported and recovered else 1


if __name__ == "__main__":
    sys.exit(main())
