"""`make bench`, duplicates part: what the duplicate lookup adds per mail, against Azurite.

A typical mail (two PDFs of 100 KB) is stored through the pipeline's own checked writer
(`shared/pipeline/filecheck.py`) many times over, each mail with its own message key: with DUPLICATES=off
(the baseline), and with `mark` and `skip`, once with files never seen (a new invoice) and once with files
another mail stored first (a reminder or a forward). Every Blob Storage request is counted by a transport
that wraps the SDK's own (aiohttp), with the bytes it sent and received; the figures are per mail, and the
added cost is each row minus the baseline.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from local.azurite import Azurite
from shared.pipeline.duplicates import Duplicates, Mode
from shared.pipeline.filecheck import CheckedWriter
from shared.pipeline.job import Entry
from shared.pipeline.storage import BlobStore

FILE_BYTES = 100 * 1024
FILES_PER_MAIL = 2


class _Counts:
    def __init__(self) -> None:
        self.requests = 0
        self.sent = 0
        self.received = 0


def _counting_transport(counts: _Counts) -> Any:
    from azure.core.pipeline.transport import AioHttpTransport

    class Counting(AioHttpTransport):  # type: ignore[misc]
        async def send(self, request: Any, **kwargs: Any) -> Any:
            counts.requests += 1
            body = request.body if isinstance(request.body, bytes | bytearray) else b""
            counts.sent += len(body)
            response = await super().send(request, **kwargs)
            if request.method != "HEAD":  # a HEAD's Content-Length is the blob's, not what came back
                counts.received += int(response.headers.get("Content-Length") or 0)
            return response

    return Counting()


class _Mail:
    def __init__(self, store: BlobStore, duplicates: Duplicates, key: str) -> None:
        self.mailbox, self.key, self.received = "ap@contoso.com", key, "2026-11-02T08:00:00Z"
        self.store, self.duplicates = store, duplicates


async def _store_mail(mail: _Mail, files: list[bytes]) -> None:
    for index, data in enumerate(files):
        name = f"invoice-{index}.pdf"
        entry = Entry(name, "file", "application/pdf", None, file=name)
        writer = await mail.store.writer(f"{mail.key}/{name}", "application/pdf", {}, {"kind": "file"})
        checked = CheckedWriter(mail, entry, writer)
        await checked.write(data)
        entry.record(await checked.commit())


async def _run(connection: str, mode: Mode, seen: bool, mails: int) -> dict[str, Any]:
    from azure.storage.blob.aio import BlobServiceClient

    counts = _Counts()
    service = BlobServiceClient.from_connection_string(connection, transport=_counting_transport(counts))
    tag = f"{mode}-{'seen' if seen else 'new'}"
    store = BlobStore(service, f"bench-{tag}")
    state = BlobStore(service, f"state-{tag}")
    duplicates = Duplicates(state, lambda _: store, mode)
    try:
        batches = [[b"%PDF-1.7 " + os.urandom(FILE_BYTES) for _ in range(FILES_PER_MAIL)] for _ in range(mails)]
        await store.names("x")  # both containers made before counting
        await state.names("x")
        if seen:  # another mail stored each of these first
            for number, files in enumerate(batches):
                await _store_mail(_Mail(store, duplicates, f"first{number}"), files)
        counts.requests = counts.sent = counts.received = 0
        seconds: list[float] = []
        for number, files in enumerate(batches):
            started = time.perf_counter()
            await _store_mail(_Mail(store, duplicates, f"mail{number}"), files)
            seconds.append(time.perf_counter() - started)
    finally:
        await service.close()
    return {
        "label": f"{mode}, {'files stored before' if seen else 'new files'}",
        "requests": counts.requests / mails,
        "sent_kib": counts.sent / mails / 1024,
        "received_kib": counts.received / mails / 1024,
        "ms_p50": statistics.median(seconds) * 1000,
        "ms_mean": statistics.fmean(seconds) * 1000,
    }


def bench_duplicates(mails: int = 100) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="bench-duplicates-") as directory:
        azurite = Azurite(Path(directory) / "azurite")
        connection = azurite.start()
        try:
            runs: list[tuple[Mode, bool]] = [("off", False), ("mark", False), ("mark", True), ("skip", False)]
            runs.append(("skip", True))
            return [asyncio.run(_run(connection, mode, seen, mails)) for mode, seen in runs]
        finally:
            azurite.stop()


def print_duplicates(rows: list[dict[str, Any]]) -> None:
    print(f"Duplicate lookup (Azurite): per mail of {FILES_PER_MAIL} PDFs of {FILE_BYTES // 1024} KiB, "
          "Blob Storage requests, bytes and time; added = minus DUPLICATES=off")  # fmt: skip
    base = rows[0]
    print(f"  {'':34} {'requests':>8} {'added':>6} {'sent KiB':>9} {'recv KiB':>9} {'added KiB':>9} "
          f"{'ms p50':>7} {'added ms':>8}")  # fmt: skip
    for row in rows:
        added_kib = row["sent_kib"] + row["received_kib"] - base["sent_kib"] - base["received_kib"]
        print(f"  {row['label']:34} {row['requests']:>8.1f} {row['requests'] - base['requests']:>+6.1f} "
              f"{row['sent_kib']:>9.1f} {row['received_kib']:>9.2f} {added_kib:>+9.2f} "
              f"{row['ms_p50']:>7.1f} {row['ms_p50'] - base['ms_p50']:>+8.1f}")  # fmt: skip
