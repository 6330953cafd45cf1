"""Deliver mail through the simulator and check what landed in Blob Storage.

Shared by the demo, the end-to-end tests and the benchmarks: a delivered mail's expected files
(name, sha256) against the manifest and blobs the app wrote, read back and hashed.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob import BlobServiceClient
from azure.storage.queue import QueueClient, TextBase64DecodePolicy

from local.stack import Stack
from shared.pipeline.layout import MANIFEST, message_key, message_prefix, parse_graph_time
from shared.pipeline.rules import is_image


def file_attachment(name: str, content: bytes, content_type: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "contentType": content_type,
        "kind": "file",
        "contentBase64": base64.b64encode(content).decode(),
        **extra,
    }


def generated_attachment(name: str, size: int, seed: int, content_type: str) -> dict[str, Any]:
    """Bytes the simulator makes on the fly from (size, seed): large files without holding them."""
    return {"name": name, "contentType": content_type, "kind": "file", "size": size, "seed": seed}


def with_parts(mail: Delivered, files: Mapping[str, bytes | str]) -> Delivered:
    """Tell the checks what the mail's one container (a zip, a winmail.dat) holds: name → its bytes or their
    sha256 (the simulator reports only the container)."""
    mail.attachments[0]["parts"] = [
        {"name": name, "kind": "file", "sha256": data if isinstance(data, str) else hashlib.sha256(data).hexdigest()}
        for name, data in files.items()
    ]
    return mail


def change_notification(subscription: dict[str, Any], tenant_id: str, message_id: str) -> dict[str, Any]:
    """A notification as Graph sends it for a new message, for a subscription the simulator lists."""
    return {
        "value": [
            {
                "subscriptionId": subscription["id"],
                "subscriptionExpirationDateTime": subscription["expirationDateTime"],
                "changeType": "created",
                "resource": f"Users/{subscription.get('mailboxId', 'user')}/Messages/{message_id}",
                "tenantId": tenant_id,
                "clientState": subscription["clientState"],
                "resourceData": {
                    "@odata.type": "#Microsoft.Graph.Message",
                    "@odata.id": f"Users/{subscription.get('mailboxId', 'user')}/Messages/{message_id}",
                    "id": message_id,
                },
            }
        ]
    }


def subscriptions(stack: Stack) -> list[dict[str, Any]]:
    answer = stack.control("GET", "/_sim/subscriptions")
    return list(answer["value"] if isinstance(answer, dict) else answer)


@dataclass
class Delivered:
    mailbox: str
    folder: str
    subject: str
    message_id: str
    received: str
    attachments: list[dict[str, Any]]
    delivered_at: float = field(default_factory=time.monotonic)
    sender: str = "supplier@fabrikam.example"

    @property
    def prefix(self) -> str:
        return message_prefix(self.mailbox, parse_graph_time(self.received), message_key(self.message_id))


def deliver(
    stack: Stack,
    mailbox: str,
    folder: str,
    subject: str,
    attachments: list[dict[str, Any]],
    sender: str = "supplier@fabrikam.example",
    **message: Any,
) -> Delivered:
    """A mail into the simulated mailbox (Graph notifies the app). `message`: more of the control API's mail
    fields, e.g. `to=[...]`, `cc=[...]` or `smime={"type": "clear-signed"}`."""
    answer = stack.control(
        "POST",
        "/_sim/mail",
        {
            "mailbox": mailbox,
            "folder": folder,
            "subject": subject,
            "from": sender,
            "body": f"Please find attached: {subject}",
            "attachments": attachments,
            **message,
        },
    )
    return Delivered(
        mailbox,
        folder,
        subject,
        answer["id"],
        answer["receivedDateTime"],
        answer["attachments"],
        time.monotonic(),
        sender,
    )


@dataclass
class FileCheck:
    mailbox: str
    subject: str
    name: str
    blob: str
    size: int
    expected_sha256: str
    actual_sha256: str
    seconds: float
    expect: str = "stored"  # "stored", "skipped" (inline) or "link" (reference)
    parent: str | None = None  # the attached mail a file was found in
    found: bool = True  # for skips and links: the manifest records them as expected

    @property
    def ok(self) -> bool:
        if self.expect != "stored":
            return self.found
        return self.expected_sha256 == self.actual_sha256


@dataclass(frozen=True)
class Expected:
    name: str
    sha256: str
    expect: str
    parent: str | None


def expected_files(attachments: list[dict[str, Any]], parent: str | None = None) -> list[Expected]:
    """What the app should make of the attachments the simulator reports, files inside attached mails and
    signed or encrypted ones (`parts`) included: stored files with their sha256, inline images skipped,
    links recorded."""
    out: list[Expected] = []
    for sent in attachments:
        inline = bool(sent.get("isInline", sent.get("inline", False)))
        kind = sent.get("kind", "file")
        image = is_image(sent["name"], sent.get("contentType"))
        expect = "link" if kind == "reference" else "skipped" if inline and image else "stored"
        out.append(Expected(sent["name"], str(sent.get("sha256") or ""), expect, parent))
        if sent.get("parts"):
            out += expected_files(sent["parts"], sent["name"])
    return out


class BlobReader:
    def __init__(self, stack: Stack, container: str = "mail-attachments") -> None:
        self._service = BlobServiceClient.from_connection_string(stack.storage_connection_string)
        self._container = self._service.get_container_client(container)

    def manifest(self, prefix: str) -> dict[str, Any] | None:
        return self.json(f"{prefix}/{MANIFEST}")

    def json(self, path: str) -> dict[str, Any] | None:
        try:
            data: dict[str, Any] = json.loads(self._container.get_blob_client(path).download_blob().readall())
        except ResourceNotFoundError:
            return None
        return data

    def sha256(self, path: str) -> tuple[int, str]:
        digest, size = hashlib.sha256(), 0
        for chunk in self._container.get_blob_client(path).download_blob().chunks():
            digest.update(chunk)
            size += len(chunk)
        return size, digest.hexdigest()

    def read(self, path: str) -> bytes:
        """A small blob's bytes."""
        return bytes(self._container.get_blob_client(path).download_blob().readall())

    def names(self, prefix: str = "") -> list[str]:
        return sorted(b.name for b in self._container.list_blobs(name_starts_with=prefix))

    def close(self) -> None:
        self._service.close()


def take_handoffs(stack: Stack, queue: str = "mail-ingested") -> list[dict[str, Any]]:
    """Every hand-off message waiting on the queue, taken off it (received, then deleted), decoded."""
    client = QueueClient.from_connection_string(
        stack.storage_connection_string, queue, message_decode_policy=TextBase64DecodePolicy()
    )
    taken: list[dict[str, Any]] = []
    try:
        for message in client.receive_messages(messages_per_page=32, visibility_timeout=300):
            taken.append(json.loads(message.content))
            client.delete_message(message)
    except ResourceNotFoundError:
        pass  # not made yet: the first hand-off creates it
    finally:
        client.close()
    return taken


def wait_for_manifests(
    reader: BlobReader, mails: list[Delivered], timeout: float = 120.0
) -> dict[str, tuple[dict[str, Any], float]]:
    """Each mail's manifest and the seconds from its delivery until it was seen."""
    found: dict[str, tuple[dict[str, Any], float]] = {}
    deadline = time.monotonic() + timeout
    while len(found) < len(mails) and time.monotonic() < deadline:
        for mail in mails:
            if mail.message_id in found:
                continue
            manifest = reader.manifest(mail.prefix)
            if manifest is not None:
                found[mail.message_id] = (manifest, time.monotonic() - mail.delivered_at)
        time.sleep(0.1)
    return found


def check_files(reader: BlobReader, mail: Delivered, manifest: dict[str, Any], seconds: float) -> list[FileCheck]:
    """Every file the simulator says it sent, matched by original name to the manifest, stored ones hashed."""
    unused = list(manifest.get("attachments", []))
    checks = []
    for want in expected_files(mail.attachments):
        entry = next((e for e in unused if e["name"] == want.name), None)
        if entry is not None:
            unused.remove(entry)
        check = FileCheck(
            mail.mailbox, mail.subject, want.name, "-", 0, want.sha256, "missing", seconds, want.expect, want.parent
        )
        if want.expect == "link":
            check.found = bool(entry and entry.get("url"))
        elif want.expect == "skipped":
            check.found = bool(entry and entry.get("skipped") and not entry.get("blob"))
        elif entry is not None and entry.get("blob"):
            check.blob = entry["blob"]
            check.size, check.actual_sha256 = reader.sha256(entry["blob"])
        checks.append(check)
    return checks


# Graph retries a failed delivery for up to 4 hours, then drops the notification (graph_facts §3).
GRAPH_GIVES_UP_SECONDS = 4 * 3600


def deliver_while_app_is_down(
    stack: Stack, send: Callable[[], list[Delivered]], down_at_least: float, timeout: float = 60.0
) -> tuple[list[Delivered], int]:
    """Stop the app (its webhook and its timer), deliver mail, let Graph give up on the notifications, and
    start the app again: nothing but a resync can bring that mail in. `down_at_least` seconds of real
    time, so a timer occurrence passes while the app is down. Returns the mails and the number of
    notifications Graph dropped."""
    assert stack.devhost is not None
    started = time.monotonic()
    stack.devhost.stop()
    before = len(stack.control("GET", "/_sim/deliveries")["deliveries"])
    mails = send()
    # Past Graph's 4-hour window: the retries of those notifications are dropped as they fall due.
    stack.control("POST", "/_sim/clock", {"advanceSeconds": GRAPH_GIVES_UP_SECONDS + 60})
    deadline = time.monotonic() + timeout
    while True:
        answer = stack.control("GET", "/_sim/deliveries")
        if not answer["pending"]:
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"{answer['pending']} notifications still pending after {timeout:.0f}s")
        time.sleep(0.2)
    dropped = [d for d in answer["deliveries"][before:] if d["kind"] == "change" and d["outcome"] == "dropped"]
    time.sleep(max(0.0, down_at_least - (time.monotonic() - started)))
    stack.devhost.start()
    return mails, sum(int(d.get("count") or 1) for d in dropped)


def tiny_pdf(text: str) -> bytes:
    body = f"BT /F1 18 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R >>",
        b"<< /Length %d >>\nstream\n%s\nendstream" % (len(body), body),
    ]
    out = bytearray(b"%PDF-1.4\n")
    for number, obj in enumerate(objects, 1):
        out += b"%d 0 obj\n%s\nendobj\n" % (number, obj)
    out += b"trailer << /Root 1 0 R >>\n%%EOF\n"
    return bytes(out)


def tiny_png(width: int = 64, height: int = 32) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data)
        return len(data).to_bytes(4, "big") + kind + data + crc.to_bytes(4, "big")

    rows = b"".join(b"\x00" + bytes((x * 4) % 256 for x in range(width)) * 3 for _ in range(height))
    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + b"\x08\x02\x00\x00\x00"
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
