"""The mail itself: SAVE_MESSAGE=no-files keeps message.eml only for a mail without files, SAVE_BODY=always
keeps every body; a refused MIME export is recorded and the mail still completes. A stack of its own
(these settings would change what the other tests count)."""

from __future__ import annotations

from collections.abc import Iterator
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import pytest

from local.mailcheck import BlobReader, deliver, file_attachment, wait_for_manifests
from local.stack import Stack, StackConfig

PDF = b"%PDF-1.7 order 5512"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    config = StackConfig(
        mailboxes=("orders@contoso.com",),
        data_dir=Path(tmp_path_factory.mktemp("save-stack")),
        app_settings={"SAVE_MESSAGE": "no-files", "SAVE_BODY": "always", "GRAPH_MAX_RETRIES": "0"},
    )
    with Stack(config) as running:
        assert running.run_function("maintain").status_code == 200
        yield running


def by_kind(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["kind"]: e for e in manifest["attachments"]}


def test_an_order_written_in_the_body_is_kept_as_the_mail_and_its_body(stack: Stack, reader: BlobReader):
    mail = deliver(stack, "orders@contoso.com", "Inbox", "Order: 40 pallets", [])
    manifest, _ = wait_for_manifests(reader, [mail])[mail.message_id]
    saved = by_kind(manifest)
    assert saved["message"]["file"] == "message.eml" and saved["message"]["contentType"] == "message/rfc822"
    eml = reader.read(str(saved["message"]["blob"]))
    parsed = BytesParser(policy=policy.default).parsebytes(eml)
    assert isinstance(parsed, EmailMessage) and parsed["Subject"] == "Order: 40 pallets"
    assert saved["body"]["file"] == "body.txt"
    assert reader.read(str(saved["body"]["blob"])) == b"Please find attached: Order: 40 pallets"


def test_a_mail_with_files_keeps_its_body_but_not_its_mime(stack: Stack, reader: BlobReader):
    mail = deliver(
        stack, "orders@contoso.com", "Inbox", "Order 5512", [file_attachment("order.pdf", PDF, "application/pdf")]
    )
    manifest, _ = wait_for_manifests(reader, [mail])[mail.message_id]
    assert set(by_kind(manifest)) == {"file", "body"}
    requests = stack.control("GET", f"/_sim/requests?messageId={mail.message_id}")["requests"]
    assert not any(r["route"].endswith("/messages/{id}/$value") for r in requests)


def test_a_refused_mime_export_is_recorded_and_the_mail_completes(stack: Stack, reader: BlobReader):
    stack.control(
        "POST", "/_sim/faults", {"method": "GET", "path": r"/messages/[^/]+/\$value$", "status": 500, "count": 50}
    )
    try:
        mail = deliver(stack, "orders@contoso.com", "Inbox", "Huge order", [])
        manifest, _ = wait_for_manifests(reader, [mail])[mail.message_id]
    finally:
        stack.control("DELETE", "/_sim/faults")
    assert manifest["status"] == "complete"
    message = by_kind(manifest)["message"]
    assert "blob" not in message and str(message["skipped"]).startswith("Graph refused the MIME export")
    assert reader.names(mail.prefix) == sorted([str(by_kind(manifest)["body"]["blob"]), f"{mail.prefix}/manifest.json"])
