"""What capture needs to trust a document, through the dev host: the same PDF in three mails (two mailboxes, a
forward) under each DUPLICATES mode, also two at once; each kind of protected document recorded and routed
to review; a damaged winmail.dat extracted and marked. A stack of its own: routes on `duplicate` and
`protected`, and DUPLICATES changed between tests by restarting the dev host on the same storage."""

from __future__ import annotations

import io
import json
import os
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.storage.blob import BlobServiceClient

from local.azuresim.smime import new_identity
from local.azuresim.tnef import TnefFile, encode_tnef
from local.mailcheck import Delivered, deliver, file_attachment
from local.stack import Stack, StackConfig
from shared.pipeline.duplicates import record_path
from tests.e2e.test_routes import STATE, HandOffs, done, read_json

PDF = "application/pdf"
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
RPMSG = "application/x-microsoft-rpmsg-message"
ROUTES = [
    {"name": "protected-review", "match": {"protected": True}, "container": "review-protected"},
    {"name": "duplicate-review", "match": {"duplicate": True}, "container": "review-duplicates"},
]
CONTAINERS = {
    "default": "mail-attachments",
    "protected-review": "review-protected",
    "duplicate-review": "review-duplicates",
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    config = StackConfig(
        mailboxes=("ap@contoso.com", "invoices@contoso.com"),
        data_dir=Path(tmp_path_factory.mktemp("trust-stack")),
        app_settings={"ROUTES": json.dumps(ROUTES), "GRAPH_MAX_RETRIES": "1"},
    )
    with Stack(config) as running:
        assert running.run_function("maintain").status_code == 200
        yield running


@pytest.fixture(scope="module")
def blobs(stack: Stack) -> Iterator[BlobServiceClient]:
    service = BlobServiceClient.from_connection_string(stack.storage_connection_string)
    yield service
    service.close()


@pytest.fixture(scope="module")
def handoffs(stack: Stack) -> HandOffs:
    return HandOffs(stack)


def duplicates_mode(stack: Stack, mode: str) -> None:
    """The app restarted with DUPLICATES=mode (same port, storage and subscriptions)."""
    assert stack.devhost is not None
    if stack.env.get("DUPLICATES") == mode:
        return
    stack.devhost.stop()
    stack.env["DUPLICATES"] = mode  # the dev host reads this same mapping when it starts
    stack.devhost.start()


def manifest_of(blobs: BlobServiceClient, mail: Delivered) -> tuple[str, dict[str, Any]]:
    """The deciding route and the mail's manifest, wherever the route put it."""
    marker = done(blobs, mail)
    manifest = read_json(blobs, CONTAINERS[marker["route"]], f"{marker['prefix']}/manifest.json")
    assert manifest is not None
    return marker["route"], manifest


def entry(manifest: dict[str, Any], name: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [e for e in manifest["attachments"] if e["name"] == name]
    assert len(found) == 1, found
    return found[0]


def tags(blobs: BlobServiceClient, container: str, blob: str) -> dict[str, str]:
    return dict(blobs.get_blob_client(container, blob).get_blob_tags())


def invoice(tag: str) -> bytes:
    return f"%PDF-1.7 invoice {tag} ".encode() + os.urandom(20_000)


def forward(pdf: bytes) -> dict[str, Any]:
    return {"name": "Invoice 88", "kind": "item", "item": {
        "from": "billing@fabrikam.example", "subject": "Invoice 88",
        "attachments": [file_attachment("Invoice 88.pdf", pdf, PDF)],
    }}  # fmt: skip


def three_mails(stack: Stack, blobs: BlobServiceClient, pdf: bytes) -> list[tuple[str, dict[str, Any]]]:
    """The original (ap@), a reminder from the same supplier to another mailbox, and a forward (the invoice
    in an attached mail), one after another."""
    sends = [
        ("ap@contoso.com", "Invoice 88", [file_attachment("Invoice 88.pdf", pdf, PDF)]),
        ("invoices@contoso.com", "Reminder: invoice 88", [file_attachment("Invoice 88 reminder.pdf", pdf, PDF)]),
        ("ap@contoso.com", "Fwd: Invoice 88", [forward(pdf)]),
    ]
    return [manifest_of(blobs, deliver(stack, box, "Inbox", subject, files)) for box, subject, files in sends]


def test_mark_stores_every_copy_and_marks_the_later_ones(stack: Stack, blobs: BlobServiceClient, handoffs: HandOffs):
    duplicates_mode(stack, "mark")
    (route_a, a), (route_b, b), (route_c, c) = three_mails(stack, blobs, invoice("mark"))
    first = entry(a, "Invoice 88.pdf")
    assert route_a == "default" and "duplicateOf" not in first
    assert "duplicate" not in tags(blobs, "mail-attachments", first["blob"])
    expected = {
        "container": "mail-attachments",
        "blob": first["blob"],
        "mailbox": "ap@contoso.com",
        "messageKey": a["messageKey"],
        "receivedDateTime": a["receivedDateTime"],
    }
    reminder = entry(b, "Invoice 88 reminder.pdf")
    assert route_b == "duplicate-review" and reminder["duplicateOf"] == expected and reminder["blob"]
    assert tags(blobs, "review-duplicates", reminder["blob"])["duplicate"] == "true"
    forwarded = entry(c, "Invoice 88.pdf")
    assert route_c == "duplicate-review" and forwarded["parent"] == "Invoice 88.eml"
    assert forwarded["duplicateOf"] == expected and "duplicateOf" not in entry(c, "Invoice 88")
    (message,) = handoffs.of(b["messageKey"])
    assert message["files"][0]["duplicateOf"] == expected
    assert message["duplicates"] == [{
        "name": "Invoice 88 reminder.pdf", "file": "Invoice 88 reminder.pdf", "sha256": first["sha256"],
        "duplicateOf": expected, "stored": True,
    }]  # fmt: skip


def test_skip_stores_no_copy_and_points_to_the_first(stack: Stack, blobs: BlobServiceClient, handoffs: HandOffs):
    duplicates_mode(stack, "skip")
    (_, a), (route_b, b), (_, c) = three_mails(stack, blobs, invoice("skip"))
    first = entry(a, "Invoice 88.pdf")
    for manifest, name in ((b, "Invoice 88 reminder.pdf"), (c, "Invoice 88.pdf")):
        copy = entry(manifest, name)
        assert "blob" not in copy and copy["duplicateOf"]["blob"] == first["blob"]
        assert copy["skipped"].startswith(f"duplicate of mail-attachments/{first['blob']}")
        assert copy["sha256"] == first["sha256"]
    assert route_b == "duplicate-review" and b["status"] == "complete"
    stored = [x.name for x in blobs.get_container_client("review-duplicates").list_blobs()]
    mine = [n for n in stored if b["messageKey"] in n or c["messageKey"] in n]
    assert mine and not any(n.endswith(".pdf") for n in mine)  # the forward's .eml is stored, its copy is not
    (message,) = handoffs.of(b["messageKey"])
    assert message["files"] == [] and message["duplicates"][0]["stored"] is False


def test_off_looks_nothing_up(stack: Stack, blobs: BlobServiceClient):
    duplicates_mode(stack, "off")
    pdf = invoice("off")
    results = three_mails(stack, blobs, pdf)
    assert [route for route, _ in results] == ["default"] * 3
    assert all("duplicateOf" not in e for _, m in results for e in m["attachments"])
    assert read_json(blobs, STATE, record_path(entry(results[0][1], "Invoice 88.pdf")["sha256"])) is None


@pytest.mark.parametrize("mode", ["mark", "skip"])
def test_two_mails_at_once_agree_on_the_first(stack: Stack, blobs: BlobServiceClient, mode: str):
    duplicates_mode(stack, mode)
    pdf = invoice(f"race-{mode}")
    stack.control("POST", "/_sim/delivery", {"paused": True})
    try:
        mails = [
            deliver(stack, box, "Inbox", f"Invoice 99 {mode}", [file_attachment("Invoice 99.pdf", pdf, PDF)])
            for box in ("ap@contoso.com", "invoices@contoso.com")
        ]
    finally:
        stack.control("POST", "/_sim/delivery", {"paused": False})
    copies = [entry(manifest_of(blobs, mail)[1], "Invoice 99.pdf") for mail in mails]
    firsts = [c for c in copies if "duplicateOf" not in c]
    assert len(firsts) == 1, copies
    (later,) = [c for c in copies if "duplicateOf" in c]
    assert later["duplicateOf"]["blob"] == firsts[0]["blob"]
    assert ("blob" in later) is (mode == "mark")
    record = read_json(blobs, STATE, record_path(firsts[0]["sha256"]))
    assert record is not None and record["blob"] == firsts[0]["blob"]


def encrypted_pdf() -> bytes:
    from pypdf import PdfWriter

    writer = PdfWriter()
    writer.add_blank_page(595, 842)
    writer.encrypt(user_password="Rechnung-2026", algorithm="AES-256")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def encrypted_docx() -> bytes:
    from msoffcrypto.format.ooxml import OOXMLFile

    plain = io.BytesIO()
    with zipfile.ZipFile(plain, "w") as package:
        types = '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"/>'
        package.writestr("[Content_Types].xml", types)
        package.writestr("word/document.xml", "<w:document/>")
    plain.seek(0)
    out = io.BytesIO()
    OOXMLFile(plain).encrypt("Angebot", out)
    return out.getvalue()


def rpmsg() -> bytes:
    """A message.rpmsg: the [MS-OXORMMS] 2.2.4.5 prefix, then (here) bytes no one can read."""
    return b"\x76\xe8\x04\x60\xc4\x11\xe3\x86" + os.urandom(3000)


@pytest.mark.parametrize(
    ("name", "attachments", "extra", "reason"),
    [
        ("password PDF", [file_attachment("Rechnung.pdf", encrypted_pdf(), PDF)], {}, "password-protected PDF"),
        ("encrypted docx", [file_attachment("Angebot.docx", encrypted_docx(), DOCX)], {}, "encrypted Office"),
        ("zip entry", [{"name": "scans.zip", "kind": "file", "zip": {"entries": [
            {"path": "open.pdf", "contentBase64": file_attachment("", invoice("zip"), PDF)["contentBase64"]},
            {"path": "secret.pdf", "contentBase64": file_attachment("", invoice("z2"), PDF)["contentBase64"],
             "encrypted": True},
        ]}}], {}, "encrypted zip entry"),
        ("IRM", [file_attachment("message.rpmsg", rpmsg(), RPMSG)],
         {"body": "This message is protected with Microsoft Purview Message Encryption."}, "rights-protected mail"),
    ],
)  # fmt: skip
def test_each_protected_kind_is_recorded_and_routed_to_review(
    stack: Stack,
    blobs: BlobServiceClient,
    handoffs: HandOffs,
    name: str,
    attachments: list[Any],
    extra: Any,
    reason: str,
):
    duplicates_mode(stack, "mark")
    mail = deliver(stack, "ap@contoso.com", "Inbox", f"protected: {name}", attachments, **extra)
    route, manifest = manifest_of(blobs, mail)
    assert route == "protected-review" and manifest["status"] == "complete"
    (marked,) = [e for e in manifest["attachments"] if e.get("protected")]
    assert marked["protected"].startswith(reason)
    if "blob" in marked:
        assert tags(blobs, "review-protected", marked["blob"])["protected"] == "true"
    (message,) = handoffs.of(manifest["messageKey"])
    if reason == "rights-protected mail":
        assert manifest["protected"] == marked["protected"] and message["protected"] == manifest["protected"]
    else:
        assert "protected" not in manifest


def test_smime_no_key_opens_is_a_protected_mail(stack: Stack, blobs: BlobServiceClient):
    from cryptography.hazmat.primitives import serialization

    stranger = new_identity("Someone Else", "else@contoso.com")
    certificate = stranger.certificate.public_bytes(serialization.Encoding.PEM).decode()
    mail = deliver(stack, "ap@contoso.com", "Inbox", "not for us", [
        file_attachment("invoice.pdf", invoice("smime"), PDF),
    ], smime={"type": "encrypted", "recipientCertificate": certificate})  # fmt: skip
    route, manifest = manifest_of(blobs, mail)
    (p7m,) = manifest["attachments"]
    assert route == "protected-review" and p7m["protected"].startswith("S/MIME encrypted, not opened")
    assert manifest["protected"] == p7m["protected"]


def test_a_damaged_winmail_dat_is_extracted_and_marked(stack: Stack, blobs: BlobServiceClient):
    pdf = invoice("tnef")
    raw = bytearray(encode_tnef([TnefFile("Rechnung.pdf", PDF, pdf), TnefFile("Lieferschein.pdf", PDF, invoice("t2"))]))
    raw[raw.index(b"%PDF") + 30] ^= 0xFF  # one TNEF object's checksum no longer holds
    mail = deliver(stack, "ap@contoso.com", "Inbox", "old Outlook", [
        file_attachment("winmail.dat", bytes(raw), "application/ms-tnef"),
    ])  # fmt: skip
    route, manifest = manifest_of(blobs, mail)
    assert route == "default" and manifest["status"] == "complete"
    container = entry(manifest, "winmail.dat")
    files = [entry(manifest, "Rechnung.pdf"), entry(manifest, "Lieferschein.pdf")]
    assert "fail their checksum" in container["damaged"]
    assert all(f["damaged"] == container["damaged"] and f["blob"] and f["parent"] == "winmail.dat" for f in files)
