"""`make bench`, IMAP part: the peak memory of fetching one IMAP message of 1 MB and of 100 MB, and of
ingesting one end to end (fetched, unpacked, its file and manifest written to Azurite by the fetch
worker's code, `sources/accounts.py`), and the seconds to drain 1,000 small messages from one IMAP
folder (poll them into `mail-fetch`, then read each one on a connection of its own, as the fetch worker did
before `sources/pool.py`, and again on the account's pool of signed-in connections, as it does now),
against Debian's Dovecot and Azurite."""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import trustme

from local.azurite import Azurite
from local.dovecot import Dovecot
from local.stack import ROOT, write_ca_bundle

MB = 1024 * 1024
USER, PASSWORD = "bench@example.org", "bench-password"

# One message streamed in a fresh interpreter, which then reports its own RSS high-water mark.
STREAM_PROBE = """
import asyncio, hashlib, resource, sys
from shared.settings import parse_account
from shared.sources.common import Login
from shared.sources.imap.session import ImapSession

async def main():
    account = parse_account(sys.argv[1])
    async with await ImapSession.open(account, Login(account.user, password=sys.argv[2])) as session:
        await session.examine()
        digest, total = hashlib.sha256(), 0
        async for piece in session.stream(int(sys.argv[3])):
            digest.update(piece)
            total += len(piece)
    print(total, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)

asyncio.run(main())
"""


# One message ingested end to end in a fresh interpreter (Key Vault stood in by the password given, the
# hand-off off), which then reports its own RSS high-water mark.
INGEST_PROBE = """
import asyncio, resource, sys
from types import SimpleNamespace
from shared.sources.accounts import ingest_fetched
from shared.settings import parse_settings
from shared.sources.common import Login
from shared.sources.fetch import FetchRequest
from shared.sources.imap.session import ImapSession
from shared.pipeline.storage import BlobStore, blob_service
from shared.sources.pool import SessionPools

async def main():
    url, password, storage, uid = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    settings = parse_settings({
        "GRAPH_TENANT_ID": "bench", "GRAPH_CLIENT_ID": "bench", "GRAPH_CLIENT_SECRET": "bench", "MAILBOXES": url,
        "AzureWebJobsStorage": storage, "KEY_VAULT_URL": "https://bench.vault.azure.net", "INGESTED_QUEUE": "",
    })
    (account,) = settings.accounts
    async with await ImapSession.open(account, Login(account.user, password=password)) as session:
        status = await session.examine()
        (info,) = await session.describe([uid])
    request = FetchRequest(account.key, "imap", account.folder, info.fingerprint, info.size, status.uidvalidity, uid)
    service = blob_service(settings.storage, None)
    files = BlobStore(service, "bench-ingest")

    async def secret(name):
        return password

    async def no_keys():
        return ()

    rt = SimpleNamespace(
        settings=settings, attachments=files, state=BlobStore(service, "bench-ingest-state"),
        container=lambda name: files, vault=SimpleNamespace(get=secret), smime_keys=SimpleNamespace(get=no_keys),
        mail_sessions=SessionPools(1),
    )
    outcome = await ingest_fetched(request, rt)
    await rt.mail_sessions.aclose()
    await service.close()
    assert outcome.status == "ingested", outcome
    print(outcome.bytes, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)

asyncio.run(main())
"""


def _attachment_message(size: int, n: int) -> Iterator[bytes]:
    """A mail of about `size` bytes with one PDF, base64 as mail clients send it."""
    yield f"From: scanner@example.org\r\nSubject: scan {n}\r\nMessage-ID: <bench-mime-{n}@example.org>\r\n".encode()
    yield b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n'
    yield b"Content-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n"
    yield b'Content-Disposition: attachment; filename="scan.pdf"\r\n\r\n'
    lines = b"".join(base64.b64encode(os.urandom(57)) + b"\r\n" for _ in range(1000))
    for _ in range(size // len(lines)):
        yield lines
    yield b"--b--\r\n"


def _message(size: int, n: int) -> Iterator[bytes]:
    yield f"From: scanner@example.org\r\nSubject: scan {n}\r\nMessage-ID: <bench-{n}@example.org>\r\n".encode()
    yield b"Content-Type: application/octet-stream\r\n\r\n"
    line = os.urandom(38).hex().encode() + b"\r\n"
    for _ in range(size // len(line)):
        yield line


def _url(server: Dovecot) -> str:
    return f"imaps://{quote(USER, safe='')}@127.0.0.1:{server.ports['imaps']}?secret=bench"


def _probe(env: dict[str, str], script: str, *args: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", script, *args], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    return done.stdout.split()


def _peaks(server: Dovecot, env: dict[str, str], storage: str) -> list[dict[str, Any]]:
    rows = []
    for uid, (label, size) in enumerate((("one 1 MB message", MB), ("one 100 MB message", 100 * MB)), start=1):
        server.deliver_file(USER, _message(size, uid))
        out = _probe(env, STREAM_PROBE, _url(server), PASSWORD, str(uid))
        rows.append({"label": label, "bytes": int(out[0]), "peak_mib": int(out[1]) / 1024})
    for uid, (label, size) in enumerate((("ingest 1 MB message", MB), ("ingest 100 MB message", 100 * MB)), start=3):
        server.deliver_file(USER, _attachment_message(size, uid))
        out = _probe(env, INGEST_PROBE, _url(server), PASSWORD, storage, str(uid))
        rows.append({"label": label, "bytes": int(out[0]), "peak_mib": int(out[1]) / 1024})
    return rows


async def _drain(server: Dovecot, connection_string: str, count: int) -> dict[str, Any]:
    from shared.pipeline.storage import BlobStore, blob_service, queue_service
    from shared.settings import StorageSettings, parse_account
    from shared.sources.common import Login
    from shared.sources.cursor import CursorStore
    from shared.sources.fetch import FetchRequest, open_fetched, open_message
    from shared.sources.poll import poll_account
    from shared.sources.pool import AccountPool

    account = parse_account(_url(server).replace("?", "/Drain?"))
    login = Login(USER, password=PASSWORD)
    service = blob_service(StorageSettings(connection_string=connection_string), None)
    queues = queue_service(StorageSettings(connection_string=connection_string), None)
    store = CursorStore(BlobStore(service, "bench-state"))
    queue = queues.get_queue_client("mail-fetch")
    await queue.create_queue()

    async def send(name: str, text: str) -> None:
        await queue.send_message(text)

    async def credentials() -> Login:
        return login

    async def drain_queue(pool: AccountPool | None) -> tuple[int, int, float, list[str]]:
        """Take every mail-fetch message and read its mail: on a connection of its own per message (as
        before the pool), or on the pool's."""
        started, fetched, total, bodies = time.perf_counter(), 0, 0, []
        while True:
            batch = [m async for m in queue.receive_messages(messages_per_page=32, max_messages=32)]
            if not batch:
                break
            for message in batch:
                request = FetchRequest.parse(message.content)
                if pool is None:
                    async with open_message(account, login, request) as chunks:
                        total += sum([len(c) async for c in chunks])
                else:
                    async with open_fetched(pool, request) as mail:
                        total += sum([len(c) async for c in mail.chunks])
                bodies.append(message.content)
                await queue.delete_message(message)
                fetched += 1
        return fetched, total, time.perf_counter() - started, bodies

    try:
        server.create_folder(USER, "Drain")
        await poll_account(store, send, account, credentials, datetime.now(UTC))  # starts from now
        for n in range(count):
            server.deliver(USER, b"".join(_message(4000, 1000 + n)), folder="Drain")
        started = time.perf_counter()
        result = await poll_account(store, send, account, credentials, datetime.now(UTC))
        polled = time.perf_counter() - started
        fetched, total, seconds, bodies = await drain_queue(None)
        for body in bodies:  # the same requests again, for the pooled drain
            await queue.send_message(body)
        pool = AccountPool(account, 4, credentials)
        try:
            pooled, pooled_total, pooled_seconds, _ = await drain_queue(pool)
        finally:
            await pool.aclose()
        return {
            "queued": result.queued,
            "poll_seconds": polled,
            "fetched": fetched,
            "fetch_seconds": seconds,
            "bytes": total,
            "pooled_fetched": pooled,
            "pooled_seconds": pooled_seconds,
            "pooled_bytes": pooled_total,
            "pooled_logins": pool.logins,
        }
    finally:
        await queues.close()
        await service.close()


def bench_imap(count: int = 1000) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-imap-") as folder:
        directory = Path(folder)
        ca = trustme.CA()
        own = directory / "ca.pem"
        ca.cert_pem.write_to_path(str(own))
        bundle = write_ca_bundle(directory / "bundle.pem", own, os.environ)
        previous = os.environ.get("SSL_CERT_FILE")
        os.environ["SSL_CERT_FILE"] = str(bundle)
        try:
            with Dovecot(directory / "dovecot", ca) as server, Azurite(directory / "azurite") as azurite:
                server.add_user(USER, PASSWORD)
                peaks = _peaks(server, {**os.environ, "PYTHONPATH": str(ROOT)}, azurite.connection_string)
                drain = asyncio.run(_drain(server, azurite.connection_string, count))
        finally:
            if previous is None:
                os.environ.pop("SSL_CERT_FILE", None)
            else:
                os.environ["SSL_CERT_FILE"] = previous
    return {"peaks": peaks, "drain": drain, "count": count}


def print_imap(figures: dict[str, Any]) -> None:
    print("IMAP (Dovecot): peak RSS of a fresh process fetching one message in chunks, and ingesting one")
    print("(fetched, unpacked, its PDF and manifest written to Azurite; bytes: the file stored)")
    for row in figures["peaks"]:
        print(f"  {row['label']:26} {row['peak_mib']:>6.0f}MiB  ({row['bytes']} bytes)")
    by = {row["label"]: row for row in figures["peaks"]}
    for what in ("", "ingest "):
        small, large = by[f"{what or 'one '}1 MB message"], by[f"{what or 'one '}100 MB message"]
        extra = large["peak_mib"] - small["peak_mib"]
        print(f"  {what or 'fetch '}100 MB peak minus 1 MB peak: {extra:.0f} MiB (target: within 64 MiB)")
    drain = figures["drain"]
    print(f"Draining {figures['count']} small messages from one IMAP folder")
    print(f"  poll (find, queue to mail-fetch):     {drain['poll_seconds']:>7.1f} s, {drain['queued']} queued")
    print(f"  fetch (one connection per message):   {drain['fetch_seconds']:>7.1f} s, {drain['fetched']} read")
    print(
        f"  fetch (pooled connections, as now):   {drain['pooled_seconds']:>7.1f} s, {drain['pooled_fetched']} read, "
        f"{drain['pooled_logins']} sign-in(s)"
    )
    print("  (before the pool, the fetch worker signed in once per message: 32.1 s in the run docs/proof.md shows)")
