"""Every document in every mail, through the dev host: signed, encrypted, winmail.dat, zipped (with hostile
entries and a bomb), nested; each file checked by sha256 against what the simulator was given."""

from __future__ import annotations

import hashlib
import os
import ssl
from typing import Any

import httpx
import pytest
from azure.storage.blob import BlobServiceClient

from local.azuresim.content import GeneratedContent, sha256_hex
from local.azuresim.smime import Identity, new_identity
from local.azuresim.tnef import TnefFile, encode_tnef
from local.mailcheck import BlobReader, deliver, file_attachment, wait_for_manifests
from local.stack import Stack

PDF = "application/pdf"
INVOICE = b"%PDF-1.7 invoice 4711 " + os.urandom(40_000)
NOTE = b"%PDF-1.7 delivery note " + os.urandom(5_000)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def b64(data: bytes) -> str:
    return file_attachment("", data, PDF)["contentBase64"]  # type: ignore[no-any-return]


def entries(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in manifest["attachments"]}


def stored(reader: BlobReader, entry: dict[str, Any]) -> str:
    return reader.sha256(entry["blob"])[1]


def only_listed_blobs(reader: BlobReader, prefix: str, manifest: dict[str, Any]) -> None:
    listed = {e["blob"] for e in manifest["attachments"] if "blob" in e}
    assert set(reader.names(prefix)) == listed | {f"{prefix}/manifest.json"}


@pytest.fixture(scope="module")
def mailbox_key(stack: Stack) -> Identity:
    """invoices@contoso.com's S/MIME certificate and key, imported into Key Vault as SMIME_CERTIFICATES names."""
    from cryptography.hazmat.primitives import serialization

    identity = new_identity("Invoices Contoso", "invoices@contoso.com")
    pem = identity.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ) + identity.certificate.public_bytes(serialization.Encoding.PEM)
    env = stack.env
    with httpx.Client(verify=ssl.create_default_context(cafile=env["SSL_CERT_FILE"])) as http:
        token = http.post(
            f"{env['GRAPH_AUTHORITY_HOST']}/{env['GRAPH_TENANT_ID']}/oauth2/v2.0/token",
            data={
                "grant_type": "client_credentials",
                "client_id": env["GRAPH_CLIENT_ID"],
                "client_secret": env["GRAPH_CLIENT_SECRET"],
                "scope": "https://vault.azure.net/.default",
            },
        ).raise_for_status()
        http.post(
            f"{env['KEY_VAULT_URL'].rstrip('/')}/certificates/invoices-smime/import",
            params={"api-version": "7.5"},
            json={"value": pem.decode(), "policy": {"secret_props": {"contentType": "application/x-pem-file"}}},
            headers={"Authorization": f"Bearer {token.json()['access_token']}"},
        ).raise_for_status()
    return identity


def test_a_signed_invoice_arrives_as_a_file_with_its_signature_checked(stack: Stack, reader: BlobReader):
    mail = deliver(stack, "invoices@contoso.com", "Inbox", "signed invoice", [
        file_attachment("Rechnung 4711.pdf", INVOICE, PDF),
    ], smime={"type": "clear-signed"})  # fmt: skip
    (p7m,) = mail.attachments
    assert p7m["name"] == "smime.p7m" and p7m["contentType"] == "multipart/signed"
    manifest, _ = wait_for_manifests(reader, [mail])[mail.message_id]
    by_name = entries(manifest)
    assert manifest["status"] == "complete"
    evidence = by_name["smime.p7m"]
    assert stored(reader, evidence) == p7m["sha256"]
    assert evidence["signature"]["status"] == "valid" and "supplier@fabrikam.example" in evidence["signature"]["signer"]
    # Intact, and not trusted: the simulator's signing CA is in neither the system's CAs nor SMIME_CA_CERTIFICATES.
    assert evidence["signature"]["intact"] is True and evidence["signature"]["trusted"] is False
    assert evidence["signature"]["trustReason"].startswith("no trusted chain at the signing time")
    invoice = by_name["Rechnung 4711.pdf"]
    assert invoice["parent"] == "smime.p7m" and stored(reader, invoice) == sha(INVOICE)
    only_listed_blobs(reader, mail.prefix, manifest)


def test_opaque_signed_mail_with_a_zip_opens_through_the_chain(stack: Stack, reader: BlobReader):
    zipped = {"name": "scans.zip", "kind": "file", "zip": {"entries": [
        {"path": "2026/11/note.pdf", "contentBase64": b64(NOTE)},
    ]}}  # fmt: skip
    mail = deliver(stack, "invoices@contoso.com", "Inbox", "opaque", [
        file_attachment("invoice.pdf", INVOICE, PDF), zipped,
    ], smime={"type": "opaque-signed"})  # fmt: skip
    manifest, _ = wait_for_manifests(reader, [mail])[mail.message_id]
    by_name = entries(manifest)
    assert by_name["smime.p7m"]["signature"]["status"] == "valid"
    assert by_name["scans.zip"]["parent"] == "smime.p7m"
    note = by_name["2026/11/note.pdf"]
    assert note["parent"] == "scans.zip" and note["file"] == "2026_11_note.pdf" and note["path"] == "2026/11/note.pdf"
    assert stored(reader, note) == sha(NOTE) and stored(reader, by_name["invoice.pdf"]) == sha(INVOICE)
    blob = BlobServiceClient.from_connection_string(stack.storage_connection_string).get_blob_client(
        "mail-attachments", note["blob"]
    )
    assert blob.get_blob_properties().metadata["archivepath"] == "2026%2F11%2Fnote.pdf"  # percent-encoded, as names


def test_encrypted_mail_is_decrypted_with_the_mailbox_key(stack: Stack, reader: BlobReader, mailbox_key: Identity):
    from cryptography.hazmat.primitives import serialization

    certificate = mailbox_key.certificate.public_bytes(serialization.Encoding.PEM).decode()
    mail = deliver(stack, "invoices@contoso.com", "Inbox", "secret invoice", [
        file_attachment("invoice.pdf", INVOICE, PDF),
    ], smime={"type": "signed-encrypted", "recipientCertificate": certificate})  # fmt: skip
    manifest, _ = wait_for_manifests(reader, [mail])[mail.message_id]
    by_name = entries(manifest)
    outer = next(e for e in manifest["attachments"] if e["name"] == "smime.p7m" and "parent" not in e)
    assert outer["encrypted"]["decrypted"] is True and outer["encrypted"]["key"] == "invoices-smime"
    inner = next(e for e in manifest["attachments"] if e["name"] == "smime.p7m" and "parent" in e)
    assert inner["parent"] == outer["file"] and inner["signature"]["status"] == "valid"
    assert by_name["invoice.pdf"]["parent"] == inner["file"] and stored(reader, by_name["invoice.pdf"]) == sha(INVOICE)


def test_encrypted_mail_without_a_key_completes_with_its_recipient(stack: Stack, reader: BlobReader):
    from cryptography.hazmat.primitives import serialization

    stranger = new_identity("Someone Else", "else@contoso.com")
    certificate = stranger.certificate.public_bytes(serialization.Encoding.PEM).decode()
    mail = deliver(stack, "invoices@contoso.com", "Inbox", "not for us", [
        file_attachment("invoice.pdf", INVOICE, PDF),
    ], smime={"type": "encrypted", "recipientCertificate": certificate})  # fmt: skip
    manifest, _ = wait_for_manifests(reader, [mail])[mail.message_id]
    assert manifest["status"] == "complete"
    (p7m,) = manifest["attachments"]
    recipient = f"issuer CN=Someone Else, serial {stranger.certificate.serial_number:#x}"  # self-signed
    assert p7m["encrypted"]["decrypted"] is False and p7m["encrypted"]["recipients"] == [recipient]
    assert stored(reader, p7m) == mail.attachments[0]["sha256"]  # stored as it came
    fetches = stack.control("GET", f"/_sim/requests?messageId={mail.message_id}")["requests"]
    assert len([r for r in fetches if r["route"] == "/v1.0/users/{id}/messages/{id}"]) == 1  # not retried


def test_winmail_dat_arrives_as_its_files(stack: Stack, reader: BlobReader):
    tnef = encode_tnef([TnefFile("Rechnung März.pdf", PDF, INVOICE), TnefFile("Lieferschein.pdf", PDF, NOTE)])
    mail = deliver(stack, "invoices@contoso.com", "Inbox", "from an old Outlook", [
        file_attachment("winmail.dat", tnef, "application/ms-tnef"),
    ])  # fmt: skip
    manifest, _ = wait_for_manifests(reader, [mail])[mail.message_id]
    by_name = entries(manifest)
    assert by_name["Rechnung März.pdf"]["parent"] == "winmail.dat"
    assert stored(reader, by_name["Rechnung März.pdf"]) == sha(INVOICE)
    assert stored(reader, by_name["Lieferschein.pdf"]) == sha(NOTE)


def test_a_zip_with_folders_hostile_names_and_an_encrypted_entry(stack: Stack, reader: BlobReader):
    big = GeneratedContent(3 * 1024 * 1024, "scan")
    mail = deliver(stack, "invoices@contoso.com", "Inbox", "zipped", [{
        "name": "scans.zip", "kind": "file", "zip": {"entries": [
            {"path": "Scans/2026/scan-001.pdf", "size": big.size, "seed": "scan"},
            {"path": "../../../etc/passwd", "contentBase64": b64(b"root:x:0:0")},
            {"path": "/abs/invoice.pdf", "contentBase64": b64(INVOICE)},
            {"path": "secret.pdf", "contentBase64": b64(NOTE), "encrypted": True},
        ]},
    }])  # fmt: skip
    manifest, _ = wait_for_manifests(reader, [mail])[mail.message_id]
    by_name = entries(manifest)
    assert stored(reader, by_name["Scans/2026/scan-001.pdf"]) == sha256_hex(big)
    assert by_name["../../../etc/passwd"]["file"] == "etc_passwd"
    assert by_name["/abs/invoice.pdf"]["file"] == "abs_invoice.pdf"
    assert (
        by_name["secret.pdf"]["skipped"] == "encrypted zip entry (no password)" and "blob" not in by_name["secret.pdf"]
    )
    assert all(e["blob"].startswith(f"{mail.prefix}/") for e in manifest["attachments"] if "blob" in e)
    only_listed_blobs(reader, mail.prefix, manifest)


def test_a_zip_bomb_is_skipped_and_written_nowhere(stack: Stack, reader: BlobReader):
    mail = deliver(stack, "invoices@contoso.com", "Inbox", "bomb", [
        {"name": "bomb.zip", "kind": "file", "zip": {"entries": [
            {"path": "first.pdf", "contentBase64": b64(NOTE)},
            {"path": "huge.pdf", "bomb": 300 * 1024 * 1024},
        ]}},
        file_attachment("cover.pdf", INVOICE, PDF),
    ])  # fmt: skip
    manifest, _ = wait_for_manifests(reader, [mail])[mail.message_id]
    by_name = entries(manifest)
    assert manifest["status"] == "complete"
    assert "zip bomb" in by_name["bomb.zip"]["skipped"] and "blob" not in by_name["bomb.zip"]
    assert "first.pdf" not in by_name and "huge.pdf" not in by_name
    assert set(reader.names(mail.prefix)) == {by_name["cover.pdf"]["blob"], f"{mail.prefix}/manifest.json"}
