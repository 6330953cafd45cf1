"""Sender authentication and S/MIME trust, end to end through the dev host: Graph mail (the simulator's Exchange
Online stamps its Authentication-Results on top) and an IMAP account in Dovecot (`authserv=` names the receiving
server whose field counts). A forged field lower in the headers changes nothing; a DMARC failure goes to the review
container by its route; a multipart/signed IMAP mail has its signature on the manifest, trusted or not."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime, make_msgid
from typing import Any
from urllib.parse import quote

import pytest
from azure.storage.blob import BlobServiceClient
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs7

from local.dovecot import Dovecot
from local.mailcheck import BlobReader, deliver, file_attachment, take_handoffs
from local.stack import Stack, StackConfig
from shared.pipeline.layout import message_key
from tests.e2e.conftest import trusted_dovecot, wait_until
from tests.e2e.test_mail_accounts import manifests, store_secret
from tests.shared.unpack.test_trust import Issued, make_ca, make_signer, pem

USER, PASSWORD, SECRET = "ap@example.org", "app-Passw0rd", "imap-ap-password"
MAILBOX = "ap@contoso.com"
RECEIVER = "mx.example.org"  # the receiving mail server's authserv-id
REVIEW = "ap-review"
ROUTES = [
    {"name": "review", "match": {"senderAuthentication": {"dmarc": "fail"}}, "container": REVIEW,
     "path": "{mailbox}/{messageKey}", "tags": {"queue": "review"}},
]  # fmt: skip
EXO_FAIL = (
    "spf=fail (sender IP is 203.0.113.9) smtp.mailfrom=fabrikam.example; dkim=none (message not signed) "
    "header.d=none;dmarc=fail action=quarantine header.from=fabrikam.example;compauth=fail reason=000"
)
FORGED_PASS = (
    "spf=pass smtp.mailfrom=fabrikam.example; dkim=pass header.d=fabrikam.example; dmarc=pass;compauth=pass reason=100"
)
PDF = "application/pdf"


@dataclass
class Setup:
    stack: Stack
    server: Dovecot
    ca: Issued  # in SMIME_CA_CERTIFICATES


@pytest.fixture(scope="module")
def auth_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    smime_ca = make_ca("Fabrikam S/MIME CA")
    directory = tmp_path_factory.mktemp("sender-auth")
    with trusted_dovecot(directory, USER, PASSWORD) as server:
        account = (
            f"imaps://{quote(USER, safe='')}@127.0.0.1:{server.ports['imaps']}?secret={SECRET}&authserv={RECEIVER}"
        )
        config = StackConfig(
            mailboxes=(MAILBOX, account),
            data_dir=directory / "stack",
            app_settings={
                "MAIL_POLL_SCHEDULE": "*/2 * * * * *",
                "AzureFunctionsJobHost__extensions__queues__maxPollingInterval": "00:00:00.500",
                "ROUTES": json.dumps(ROUTES),
                # One line, as an app setting holds it: the PEM's line breaks flattened.
                "SMIME_CA_CERTIFICATES": " ".join(pem(smime_ca[0]).split()),
            },
        )
        with Stack(config) as stack:
            assert stack.run_function("maintain").status_code == 200
            store_secret(stack, SECRET, PASSWORD)
            yield Setup(stack, server, smime_ca)


def read(stack: Stack, container: str, prefix: str) -> dict[str, Any]:
    reader = BlobReader(stack, container)
    try:
        found: list[dict[str, Any]] = wait_until(lambda: manifests(reader, prefix), 60, f"a manifest in {container}")
        return found[0]
    finally:
        reader.close()


def raw_mail(subject: str, headers: list[tuple[str, str]], body: bytes | None = None) -> bytes:
    """A mail as the receiving server delivered it: its trace fields (`headers`) on top of the sender's."""
    top = "".join(f"{name}: {value}\r\n" for name, value in headers)
    own = (
        f"From: Billing <billing@fabrikam.example>\r\nTo: {USER}\r\nSubject: {subject}\r\n"
        f"Date: {format_datetime(datetime.now(UTC))}\r\nMessage-ID: {make_msgid(domain='fabrikam.example')}\r\n"
        "MIME-Version: 1.0\r\n"
    )
    content = body or b"Content-Type: text/plain\r\n\r\nInvoice 88.\r\n"
    return top.encode() + own.encode() + content


def received(authentication: str) -> list[tuple[str, str]]:
    return [
        ("Received", f"from mail.fabrikam.example by {RECEIVER} with ESMTPS; {format_datetime(datetime.now(UTC))}"),
        ("Authentication-Results", authentication),
    ]  # fmt: skip


def signed_body(signer: Issued) -> bytes:
    """The body of a clear-signed mail as another S/MIME implementation (`cryptography`'s) writes it."""
    content = b"Content-Type: text/plain\r\n\r\nInvoice 88, signed.\r\n"
    builder = pkcs7.PKCS7SignatureBuilder().set_data(content).add_signer(signer[0], signer[1], hashes.SHA256())
    signed = builder.sign(serialization.Encoding.SMIME, [pkcs7.PKCS7Options.DetachedSignature])
    return signed.replace(b"MIME-Version: 1.0\r\n", b"", 1)


def test_graph_a_forged_lower_field_is_ignored_and_dmarc_failure_goes_to_review(auth_stack: Setup):
    stack = auth_stack.stack
    mail = deliver(
        stack, MAILBOX, "Inbox", "Invoice 88 (look-alike)", [file_attachment("invoice.pdf", b"%PDF 88", PDF)],
        sender="billing@fabrikam.example", authentication=EXO_FAIL,
        headers=[{"name": "Authentication-Results", "value": FORGED_PASS}],
    )  # fmt: skip
    key = message_key(mail.message_id)
    manifest = read(stack, REVIEW, f"{MAILBOX}/{key}")
    assert manifest["route"] == "review" and manifest["status"] == "complete"
    auth = manifest["senderAuthentication"]
    assert (auth["result"], auth["by"], auth["dmarc"], auth["spf"]) == ("fail", "Exchange Online", "fail", "fail")
    assert (auth["compauth"], auth["compauthReason"]) == ("fail", "000")
    assert manifest["tags"]["senderAuth"] == "fail"
    with BlobServiceClient.from_connection_string(stack.storage_connection_string) as blobs:
        assert blobs.get_blob_client(REVIEW, f"{MAILBOX}/{key}/invoice.pdf").get_blob_tags()["senderAuth"] == "fail"
    sent = wait_until(lambda: [m for m in take_handoffs(stack) if m["id"] == key], 30, "the hand-off")
    assert sent[0]["senderAuthentication"]["result"] == "fail"


def test_graph_a_passing_mail_passes_and_keeps_the_standard_layout(auth_stack: Setup):
    stack = auth_stack.stack
    mail = deliver(
        stack, MAILBOX, "Inbox", "Invoice 89", [file_attachment("invoice.pdf", b"%PDF 89", PDF)],
        sender="billing@fabrikam.example",
        headers=[{"name": "Authentication-Results", "value": "dmarc=fail;compauth=fail reason=000"}],
    )  # fmt: skip
    manifest = read(stack, "mail-attachments", mail.prefix)
    assert manifest["route"] == "default"
    assert manifest["senderAuthentication"]["result"] == "pass"  # Exchange's own verdict; the forged fail ignored
    assert manifest["senderAuthentication"]["compauth"] == "pass"


def test_imap_only_the_topmost_field_of_the_trusted_authserv_id_counts(auth_stack: Setup):
    stack = auth_stack.stack
    headers = [
        *received(f"{RECEIVER}; spf=fail smtp.mailfrom=fabrikam.example; dmarc=fail header.from=fabrikam.example"),
        # The sender's own: one claiming the receiver's id, one from another server. Neither counts.
        ("Authentication-Results", f"{RECEIVER}; spf=pass; dkim=pass; dmarc=pass header.from=fabrikam.example"),
        ("Authentication-Results", "mx.fabrikam.example; dmarc=pass header.from=fabrikam.example"),
    ]  # fmt: skip
    auth_stack.server.deliver(USER, raw_mail("Invoice 90 (spoofed)", headers))
    manifest = read(stack, REVIEW, f"{USER}/")
    assert manifest["subject"] == "Invoice 90 (spoofed)" and manifest["route"] == "review"
    auth = manifest["senderAuthentication"]
    assert (auth["result"], auth["by"], auth["dmarc"], auth["spf"]) == ("fail", RECEIVER, "fail", "fail")


def test_imap_multipart_signed_mail_has_its_signature_trusted_or_not(auth_stack: Setup):
    stack, server = auth_stack.stack, auth_stack.server
    passing = received(f"{RECEIVER}; spf=pass smtp.mailfrom=fabrikam.example; dmarc=pass header.from=fabrikam.example")
    server.deliver(USER, raw_mail("Signed by a trusted CA", passing, signed_body(make_signer(auth_stack.ca))))
    server.deliver(USER, raw_mail("Signed by itself", passing, signed_body(make_signer(None))))
    expired = make_signer(auth_stack.ca, valid=(datetime(2024, 1, 1, tzinfo=UTC), datetime(2025, 1, 1, tzinfo=UTC)))
    server.deliver(USER, raw_mail("Signed with an expired certificate", passing, signed_body(expired)))
    reader = BlobReader(stack)
    try:
        found = wait_until(lambda: (m := manifests(reader, f"{USER}/")) and len(m) == 3 and m, 90, "three manifests")
    finally:
        reader.close()
    by_subject = {m["subject"]: m for m in found}
    trusted = by_subject["Signed by a trusted CA"]
    assert trusted["senderAuthentication"]["result"] == "pass"
    signature = trusted["signature"]  # on the mail itself: a raw multipart/signed has no smime.p7m to carry it
    assert (signature["status"], signature["intact"], signature["trusted"]) == ("valid", True, True)
    assert signature["signer"].startswith("CN=Billing Fabrikam")
    for subject, why in (
        ("Signed by itself", ""),
        ("Signed with an expired certificate", "not valid at validation time"),
    ):
        untrusted = by_subject[subject]["signature"]
        assert (untrusted["status"], untrusted["intact"], untrusted["trusted"]) == ("valid", True, False), subject
        assert (
            untrusted["trustReason"].startswith("no trusted chain at the signing time")
            and why in untrusted["trustReason"]
        )
