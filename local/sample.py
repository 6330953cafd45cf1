"""The README's "What lands in storage": one mail in the standard layout and one routed mail, as `make demo`
stores them, written out as the README shows them.

What changes from run to run (the date, message keys, hashes, ids, times, the signer's certificate) is written
as a placeholder, so the text is the same on every run: the demo prints it, and tests/e2e/test_readme_sample.py
delivers the same two mails on the local stack and compares the result with the README, so the README cannot
drift from what the app stores.
"""

from __future__ import annotations

import io
import json
import re
import time
import zipfile
from dataclasses import dataclass
from typing import Any

from local.mailcheck import BlobReader, Delivered, deliver, file_attachment, tiny_pdf, tiny_png
from local.stack import Stack
from shared.pipeline.layout import MANIFEST, message_key

MAILBOX = "invoices@contoso.com"
STATE_CONTAINER = "mail-ingest-state"
DEFAULT_CONTAINER = "mail-attachments"
# The route the demo's ROUTES give Northwind's mail (local/demo.py): its own container, a layout by sender domain.
ROUTED_CONTAINER = "ap-invoices"
ROUTED_SENDER = "billing@eu.northwind.example"
# A zip entry's time is part of the archive's bytes: fixed, so its size and the sample are the same on every run.
ZIP_TIME = (2026, 12, 1, 8, 0, 0)
# Values that differ on every run, by manifest field: shown as what they are, not as a run's value.
VOLATILE = {
    "sha256": "<sha256>",
    "messageId": "<immutable message id>",
    "internetMessageId": "<internet message id>",
    "receivedDateTime": "<received, UTC>",
    "ingestedAt": "<ingested, UTC>",
    "subscriptionId": "<subscription id>",
}
_DAY = re.compile(r"/\d{4}/\d{2}/\d{2}/")
# Times and dates inside texts (a certificate's validity, a trust check's time).
_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z")
_DATE = re.compile(r"\b\d{4}-\d{2}-\d{2}\b")
_MONTH = re.compile(r"/\d{4}/\d{2}/")


@dataclass(frozen=True)
class Sample:
    tree: str  # the blob tree of both mails
    manifest: dict[str, Any]  # the standard-layout mail's manifest, normalised


def signed_mail(stack: Stack) -> Delivered:
    """A signed invoice with a zip of scans and a signature logo: Graph lists it as one smime.p7m, and the
    invoice, the zip, the scan inside the zip and the skipped logo come out of it. Its files are the demo's only
    copies (a file the demo stored before would be marked `duplicateOf`)."""
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zipped:
        zipped.writestr(zipfile.ZipInfo("Scans/scan-0001.pdf", ZIP_TIME), tiny_pdf("Delivery scan 1"))
    return deliver(stack, MAILBOX, "Inbox", "Invoice 2026-1210 with the delivery scans", [
        file_attachment("Invoice 2026-1210.pdf", tiny_pdf("Invoice 2026-1210"), "application/pdf"),
        file_attachment("scans-2026-12.zip", archive.getvalue(), "application/zip"),
        file_attachment("signature-logo.png", tiny_png(48, 16), "image/png", isInline=True),
    ], smime={"type": "clear-signed"})  # fmt: skip


def routed_mail(stack: Stack) -> Delivered:
    """Northwind's invoice, which the demo's first route sends to its own container (not the demo's other
    Northwind invoice: the same PDF again would be marked a duplicate)."""
    return deliver(stack, MAILBOX, "Inbox", "Invoice NW-7740", [
        file_attachment("Invoice NW-7740.pdf", tiny_pdf("Invoice NW-7740"), "application/pdf"),
    ], sender=ROUTED_SENDER)  # fmt: skip


def finished(stack: Stack, mails: list[Delivered], timeout: float = 60.0) -> dict[str, dict[str, Any]]:
    """Each finished mail's `done/` record (its route and prefix), by message id; those that finish in time."""
    state = BlobReader(stack, STATE_CONTAINER)
    done: dict[str, dict[str, Any]] = {}
    try:
        deadline = time.monotonic() + timeout
        while len(done) < len(mails) and time.monotonic() < deadline:
            for mail in mails:
                record = state.json(f"done/{mail.mailbox}/{message_key(mail.message_id)}.json")
                if record is not None:
                    done[mail.message_id] = record
            time.sleep(0.2)
    finally:
        state.close()
    return done


def settled_manifest(reader: BlobReader, prefix: str, deadline: float) -> dict[str, Any] | None:
    """The mail's manifest once its malware scan is settled (the demo scans, MALWARE_SCANNING=defender: `done/` comes
    before the verdicts); None if it is not settled by the deadline."""
    while True:
        manifest = reader.manifest(prefix)
        if manifest is not None and (manifest.get("malwareScan") or {}).get("status") != "pending":
            return manifest
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.2)


def placeholders(text: str, keys: list[str]) -> str:
    """A blob path with its date and message key as the README's layout names them."""
    for key in keys:
        text = text.replace(key, "{messageKey}")
    return _MONTH.sub("/{yyyy}/{MM}/", _DAY.sub("/{yyyy}/{MM}/{dd}/", text))


def normalised(value: Any, keys: list[str]) -> Any:
    """A manifest with what differs from run to run replaced by placeholders."""
    if isinstance(value, dict):
        out = {k: VOLATILE[k] if k in VOLATILE else normalised(v, keys) for k, v in value.items()}
        if "signature" in out and "size" in out:
            out["size"] = "<bytes>"  # a signed mail's size follows its signer's certificate, made afresh each run
        return out
    if isinstance(value, list):
        return [normalised(item, keys) for item in value]
    if isinstance(value, str):
        return _DATE.sub("<date>", _TIME.sub("<time>", placeholders(value, keys)))
    return value


def tree(listing: list[tuple[str, str, list[str]]]) -> str:
    """`container/`, then each mail's folder and its blobs, the manifest last as it is written last."""
    lines: list[str] = []
    for container, folder, names in listing:
        lines += [f"{container}/", f"└── {folder}/"]
        ordered = [*sorted((n for n in names if n != MANIFEST), key=str.lower), MANIFEST]
        lines += [f"    {'└──' if i == len(ordered) - 1 else '├──'} {name}" for i, name in enumerate(ordered)]
    return "\n".join(lines)


def store_sample(stack: Stack, timeout: float = 60.0) -> Sample | None:
    """Deliver the two mails, wait for them, and read back what the app stored; None if they did not finish."""
    mails = [signed_mail(stack), routed_mail(stack)]
    done = finished(stack, mails, timeout)
    if len(done) < len(mails):
        return None
    keys = [message_key(mail.message_id) for mail in mails]
    listing: list[tuple[str, str, list[str]]] = []
    manifest: dict[str, Any] = {}
    deadline = time.monotonic() + timeout
    for mail in mails:
        record = done[mail.message_id]
        container = DEFAULT_CONTAINER if record.get("route") == "default" else ROUTED_CONTAINER
        prefix = str(record["prefix"])
        reader = BlobReader(stack, container)
        try:
            settled = settled_manifest(reader, prefix, deadline)
            if settled is None:
                return None
            names = [name.removeprefix(f"{prefix}/") for name in reader.names(f"{prefix}/")]
            if mail is mails[0]:
                manifest = settled
        finally:
            reader.close()
        listing.append((container, placeholders(prefix, keys), names))
    return Sample(tree(listing), normalised(manifest, keys))


def manifest_text(manifest: dict[str, Any]) -> str:
    """The manifest as the README prints it: a line per field and per attachment, so it stays short."""
    head = {k: v for k, v in manifest.items() if k != "attachments"}
    fields = [f" {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)}" for k, v in head.items()]
    entries = [f"  {json.dumps(entry, ensure_ascii=False)}" for entry in manifest.get("attachments", [])]
    return "\n".join(["{", ",\n".join([*fields, ' "attachments": [']), ",\n".join(entries), " ]", "}"])
