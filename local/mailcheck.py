"""Deliver mail through the simulator and check what landed in Blob Storage.

Shared by the demo, the end-to-end tests and the benchmarks: a delivered mail's expected files
(name, sha256) against the manifest and blobs the app wrote, read back and hashed.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from dataclasses import dataclass, field
from typing import Any

from azure.storage.blob import BlobServiceClient

from local.stack import Stack
from shared.layout import MANIFEST, message_key, message_prefix, parse_graph_time


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

    @property
    def prefix(self) -> str:
        return message_prefix(self.mailbox, parse_graph_time(self.received), message_key(self.message_id))


def deliver(stack: Stack, mailbox: str, folder: str, subject: str, attachments: list[dict[str, Any]]) -> Delivered:
    answer = stack.control(
        "POST",
        "/_sim/mail",
        {
            "mailbox": mailbox,
            "folder": folder,
            "subject": subject,
            "from": "supplier@fabrikam.example",
            "body": f"Please find attached: {subject}",
            "attachments": attachments,
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

    @property
    def ok(self) -> bool:
        return self.expected_sha256 == self.actual_sha256


class BlobReader:
    def __init__(self, stack: Stack, container: str = "mail-attachments") -> None:
        self._service = BlobServiceClient.from_connection_string(stack.storage_connection_string)
        self._container = self._service.get_container_client(container)

    def manifest(self, prefix: str) -> dict[str, Any] | None:
        blob = self._container.get_blob_client(f"{prefix}/{MANIFEST}")
        if not blob.exists():
            return None
        data: dict[str, Any] = json.loads(blob.download_blob().readall())
        return data

    def sha256(self, path: str) -> tuple[int, str]:
        digest, size = hashlib.sha256(), 0
        for chunk in self._container.get_blob_client(path).download_blob().chunks():
            digest.update(chunk)
            size += len(chunk)
        return size, digest.hexdigest()

    def names(self, prefix: str = "") -> list[str]:
        return sorted(b.name for b in self._container.list_blobs(name_starts_with=prefix))

    def close(self) -> None:
        self._service.close()


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
    """Every attachment the simulator says it sent, matched by original name to the manifest and hashed."""
    stored = {e["name"]: e for e in manifest.get("attachments", []) if e.get("blob")}
    checks = []
    for sent in mail.attachments:
        entry = stored.get(sent["name"])
        size, actual = reader.sha256(entry["blob"]) if entry else (0, "missing")
        checks.append(
            FileCheck(
                mail.mailbox, mail.subject, sent["name"], entry["blob"] if entry else "-", size,
                sent["sha256"], actual, seconds,
            )
        )  # fmt: skip
    return checks
