"""`make soak`: the product's guarantees under its faults together, judged by what landed.

Two dev hosts share one Azurite and one simulator, as two Functions instances share a storage account
(the webhook URL Graph calls is the first host's, as a deployment has one host name; both run the
queue workers and the timer). Mail goes to several mailboxes and folders at a steady rate: small
files, 50 MB files and attached mails; clear-signed, opaque-signed and encrypted S/MIME mail (the
mailbox's key in Key Vault), winmail.dat, zips with folders inside and inline PDFs; and mail delivered
into an IMAP account on a real Dovecot (one of them large), which both hosts poll. A few mails are made
deliberately unprocessable (an attached mail whose `/$value` always fails). During the traffic:

- 10 % of Graph requests are answered 429 (with `Retry-After`) or 503 (the simulator's rate faults);
  on top, the simulator refuses a fifth concurrent request to one mailbox (Outlook's limit, per app and
  mailbox): each host keeps four in flight, two hosts together can exceed it;
- every notification is delivered twice, concurrently, and late copies of earlier mails arrive after
  newer ones (reordered);
- the webhook's host is stopped for a minute;
- one folder's subscription is removed at Graph (`subscriptionRemoved`);
- the host streaming a 50 MB file is killed with SIGKILL in the middle of it, then restarted, while
  Key Vault fails for 30 seconds (the restarted host must read the clientState key again);
- Azurite is stopped and started again.

Then the faults stop and the run waits for the backlog to drain. The verdict reads Blob Storage and
the queues, never the logs: every file sent is stored exactly once with its sha256, one complete
manifest per mail (an IMAP mail's found by its subject: exactly one), no blob outside its message
folder, the poison queue holds exactly the mails made unprocessable and the other poison queues nothing. The
logs, state records, manifests, poison records and queue messages are scanned for every secret the run
used. A table is printed; the exit status is 1 on any loss, duplicate or leak.

    python -m local.soak [--minutes 4] [--mails N]   # N defaults to 125 a minute (500 for 4 minutes)
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import functools
import json
import os
import random
import re
import secrets
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from azure.storage.blob import BlobServiceClient
from azure.storage.queue import QueueServiceClient

from local.azuresim.content import GeneratedContent, sha256_hex
from local.azuresim.runner import secret_client
from local.azuresim.smime import Identity, new_identity
from local.azuresim.tnef import TnefFile, encode_tnef
from local.azurite import ACCOUNT_KEY
from local.dovecot import Dovecot
from local.mailcheck import (
    BlobReader,
    Delivered,
    deliver,
    expected_files,
    file_attachment,
    generated_attachment,
    with_parts,
)
from local.stack import ROOT, DevHost, Stack, StackConfig, write_ca_bundle
from shared.pipeline.layout import MANIFEST
from shared.pipeline.poison import CHANGES_QUEUE, FETCH_QUEUE, LIFECYCLE_QUEUE, POLL_QUEUE, poison_queue, unwrap
from shared.vault import CLIENT_STATE_SECRET

MB = 1024 * 1024
PDF = "application/pdf"
MAILBOXES = (
    "ap@contoso.com",
    "ap@contoso.com/Inbox/Invoices",
    "scans@contoso.com/Inbox/Delivery notes",
    "hr@contoso.com",
    "ops@contoso.com/Inbox/Scans",
)
# The IMAP account on the soak's own Dovecot, in MAILBOXES too; its password is in Key Vault.
IMAP_USER, IMAP_SECRET = "scans@example.org", "soak-imap-password"
# The mailbox whose S/MIME key is in Key Vault (SMIME_CERTIFICATES): encrypted mail goes there.
SMIME_MAILBOX, SMIME_KEY = "ap@contoso.com", "soak-smime"
# Of every 20 mails, these positions carry a kind of their own; the rest are plain (small files, now and
# then an attached mail). Fixed positions, so a short run sees every kind too.
CYCLE = 20
KINDS = {
    0: "S/MIME clear-signed",
    2: "S/MIME opaque-signed",
    4: "S/MIME encrypted",
    6: "winmail.dat",
    8: "zip (folders inside)",
    10: "inline PDF",
    12: "IMAP",
    15: "IMAP",
    18: "IMAP",
}
GRAPH_PATHS = r"^/v1\.0/"
VAULT_PATHS = r"^/(secrets|certificates|keys|deletedsecrets)(/|$)"
# Anything shaped like a JWT (access, ID or refresh tokens the simulator issues) or a private key.
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]+")
_PRIVATE_KEY = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----")


@dataclass
class SoakConfig:
    minutes: float = 4.0
    mails: int = 500
    large_files: int = 3
    large_bytes: int = 50 * MB
    attached_share: float = 0.08
    unprocessable: int = 2
    fault_rate: float = 0.10
    webhook_down: float = 60.0
    vault_down: float = 30.0
    storage_down: float = 5.0
    # Mails piled up at one mailbox and notified at once, each with one file of 5 MB (over the 4 MB the app
    # takes inline, so it streams from `/$value`), while that mailbox answers slowly: both hosts take
    # them, four requests in flight each, so Graph's four per mailbox are exceeded.
    burst: int = 24
    slow_ms: int = 400
    # The dev host's lease on a received message (the Functions host's is a fixed 10 minutes): how long the
    # killed host's messages stay invisible before another host takes them.
    lease_seconds: int = 60
    late_duplicates: float = 0.05
    drain_timeout: float = 900.0
    seed: int = 20261129
    data_dir: Path = ROOT / ".soak"
    quiet: bool = True
    # Both hosts poll the IMAP account this often (cron with seconds).
    poll_schedule: str = "*/5 * * * * *"


@dataclass
class Sent:
    kind: str
    subject: str
    # (name, sha256) of every file the app must store for this mail.
    stored: list[tuple[str, str]]
    mail: Delivered | None = None  # a Graph mail; None for an IMAP one
    unprocessable: bool = False
    # An IMAP mail's message folder, once its manifest is found (by subject).
    found_prefix: str | None = None

    @classmethod
    def graph(cls, kind: str, mail: Delivered, unprocessable: bool = False) -> Sent:
        stored = [(e.name, e.sha256) for e in expected_files(mail.attachments) if e.expect == "stored"]
        return cls(kind, mail.subject, stored, mail, unprocessable)

    @property
    def prefix(self) -> str | None:
        return self.mail.prefix if self.mail is not None else self.found_prefix

    @property
    def label(self) -> str:
        return f"{self.subject} ({self.mail.message_id})" if self.mail is not None else f"{self.subject} (IMAP)"


@dataclass
class Report:
    mails: int = 0
    files: int = 0
    bytes: int = 0
    # Per kind of mail: (mails, files stored and checked).
    kinds: dict[str, list[int]] = field(default_factory=dict)
    faults: dict[str, int] = field(default_factory=dict)
    recoveries: dict[str, int] = field(default_factory=dict)
    drain_seconds: float = 0.0
    problems: list[str] = field(default_factory=list)
    leaks: list[str] = field(default_factory=list)
    # On a failure, what the hosts logged at ERROR (distinct, first ones): where to start looking.
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and not self.leaks


class Soak:
    def __init__(self, config: SoakConfig) -> None:
        self.config = config
        self.random = random.Random(config.seed)
        self.stack: Stack | None = None
        self.hosts: list[DevHost] = []
        self.sent: list[Sent] = []
        self.report = Report()
        self._lock = threading.Lock()
        self._fault_ids: dict[str, str] = {}
        self._resources = ExitStack()
        self.dovecot: Dovecot | None = None
        self.imap_password = f"soak-{secrets.token_hex(12)}"
        self.smime: Identity | None = None
        self._imap_subjects: dict[str, str] = {}  # an IMAP manifest's blob name → its mail's subject

    # -- the stack ------------------------------------------------------------------------------
    def _start_dovecot(self) -> str:
        """Dovecot with the IMAP user, its TLS certificate from a CA the app then trusts (the stack's CA
        bundle takes SSL_CERT_FILE in, so it is set while the stack starts); the account's URL."""
        import trustme

        directory = Path(self._resources.enter_context(tempfile.TemporaryDirectory(prefix="soak-dovecot-")))
        ca = trustme.CA()
        server = self.dovecot = self._resources.enter_context(Dovecot(directory / "dovecot", ca))
        server.add_user(IMAP_USER, self.imap_password)
        own = directory / "mail-ca.pem"
        ca.cert_pem.write_to_path(str(own))
        before = os.environ.get("SSL_CERT_FILE")
        os.environ["SSL_CERT_FILE"] = str(write_ca_bundle(directory / "bundle.pem", own, os.environ))
        self._resources.callback(_restore_env, "SSL_CERT_FILE", before)
        return f"imaps://{quote(IMAP_USER, safe='')}@127.0.0.1:{server.ports['imaps']}?secret={IMAP_SECRET}"

    def start(self) -> Stack:
        account = self._start_dovecot()
        settings = {
            # Failed queue messages come back after 5 s (not 30), so the unprocessable mails reach the
            # poison queue within the run; a killed worker's message too.
            "AzureFunctionsJobHost__extensions__queues__visibilityTimeout": "00:00:05",
            "AzureFunctionsJobHost__extensions__queues__maxPollingInterval": "00:00:00.500",
            "GRAPH_MAX_RETRY_AFTER_SECONDS": "5",
            "MAINTAIN_SCHEDULE": "*/20 * * * * *",
            "DEVHOST_QUEUE_LEASE_SECONDS": str(self.config.lease_seconds),
            "MAIL_POLL_SCHEDULE": self.config.poll_schedule,
            "SMIME_CERTIFICATES": SMIME_KEY,
        }
        config = StackConfig(
            mailboxes=(*MAILBOXES, account),
            data_dir=self.config.data_dir,
            app_settings=settings,
            quiet=self.config.quiet,
        )
        stack = self.stack = Stack(config).start()
        assert stack.devhost is not None
        self._store_imap_password()
        self.smime = self._import_smime_key()
        self.hosts = [stack.devhost, stack.another_host("b")]
        if stack.run_function("maintain").status_code != 200:
            raise RuntimeError(f"the first maintain pass failed; see {stack.devhost.log_file}")
        stack.control("POST", "/_sim/delivery", {"duplicates": 2, "retryBaseSeconds": 1})
        return stack

    def stop(self) -> None:
        try:
            for host in self.hosts[1:]:
                host.stop()
            if self.stack is not None:
                self.stack.stop()
        finally:
            self._resources.close()

    def _store_imap_password(self) -> None:
        async def store() -> None:
            assert self._stack.sim is not None
            async with secret_client(self._stack.sim) as client:
                await client.set_secret(IMAP_SECRET, self.imap_password)

        asyncio.run(store())

    def _import_smime_key(self) -> Identity:
        """The S/MIME mailbox's certificate and key, imported into Key Vault under SMIME_CERTIFICATES' name."""
        from cryptography.hazmat.primitives import serialization

        identity = new_identity("AP Contoso", SMIME_MAILBOX)
        pem = identity.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ) + identity.certificate.public_bytes(serialization.Encoding.PEM)
        body = {"value": pem.decode(), "policy": {"secret_props": {"contentType": "application/x-pem-file"}}}
        answer = self._vault("POST", f"certificates/{SMIME_KEY}/import", body)
        answer.raise_for_status()
        return identity

    def _sim(self, method: str, path: str, body: Any = None) -> Any:
        assert self.stack is not None
        with self._lock:  # the stack's control client is shared by the fault thread
            return self.stack.control(method, path, body)

    # -- traffic --------------------------------------------------------------------------------
    def _pdfs(self, index: int, count: int, largest: int = 200_000) -> list[dict[str, Any]]:
        return [
            generated_attachment(f"doc-{index}-{n}.pdf", self.random.randint(1, largest), index * 10 + n, PDF)
            for n in range(count)
        ]

    def _mail_spec(self, index: int) -> tuple[str, str, list[dict[str, Any]], str]:
        """A plain mail: one to three small PDFs, now and then an attached mail with an invoice inside."""
        entry = self.random.choice(MAILBOXES)
        mailbox, _, folder = entry.partition("/")
        files, kind = self._pdfs(index, self.random.randint(1, 3)), "plain"
        if self.random.random() < self.config.attached_share:
            size = self.random.randint(1, 100_000)
            inner = generated_attachment(f"invoice-{index}.pdf", size, index, PDF)
            item = {"subject": f"Fwd {index}", "from": "vendor@fabrikam.example", "attachments": [inner]}
            files.append({"name": f"forwarded-{index}", "kind": "item", "item": item})
            kind = "attached mail"
        return mailbox, folder or "Inbox", files, kind

    def _deliver(
        self, mailbox: str, folder: str, index: int | str, files: list[dict[str, Any]], **extra: Any
    ) -> Delivered:
        with self._lock:
            return deliver(self._stack, mailbox, folder, f"soak {index}", files, **extra)

    def _record(self, sent: Sent) -> Sent:
        self.sent.append(sent)
        return sent

    def send(self, index: int, files: list[dict[str, Any]] | None = None, unprocessable: bool = False) -> Sent:
        mailbox, folder, spec, kind = self._mail_spec(index)
        if files is not None:
            kind = "unprocessable" if unprocessable else "large file"
        mail = self._deliver(mailbox, folder, index, files or spec)
        return self._record(Sent.graph(kind, mail, unprocessable))

    def send_kind(self, index: int, kind: str) -> Sent:
        """A mail of one of KINDS: its documents inside a container (S/MIME, winmail.dat, zip), inline, or
        delivered into the IMAP account."""
        if kind == "IMAP":
            return self.send_imap(index)
        mailbox, folder = SMIME_MAILBOX, "Inbox"
        if kind.startswith("S/MIME"):
            smime: dict[str, Any] = {"type": kind.removeprefix("S/MIME ")}
            if kind.endswith("encrypted"):
                from cryptography.hazmat.primitives import serialization

                assert self.smime is not None
                smime["recipientCertificate"] = self.smime.certificate.public_bytes(serialization.Encoding.PEM).decode()
            mail = self._deliver(mailbox, folder, index, self._pdfs(index, 2), smime=smime)
            return self._record(Sent.graph(kind, mail))
        if kind == "winmail.dat":
            documents = {f"Rechnung {index}-{n}.pdf": _generated(self.random.randint(1, 100_000), index * 10 + n)
                         for n in range(2)}  # fmt: skip
            tnef = encode_tnef([TnefFile(name, PDF, data) for name, data in documents.items()])
            spec = [file_attachment("winmail.dat", tnef, "application/ms-tnef")]
            mail = with_parts(self._deliver(mailbox, folder, index, spec), documents)
            return self._record(Sent.graph(kind, mail))
        if kind == "zip (folders inside)":
            scans = {f"Scans/{index}/scan-{n}.pdf": GeneratedContent(self.random.randint(1, 150_000), f"{index}-{n}")
                     for n in range(3)}  # fmt: skip
            entries = [{"path": path, "size": c.length, "seed": c.seed} for path, c in scans.items()]
            spec = [{"name": f"scans-{index}.zip", "kind": "file", "zip": {"entries": entries}}]
            mail = self._deliver(mailbox, folder, index, spec)
            inside = {path: sha256_hex(content) for path, content in scans.items()}
            return self._record(Sent.graph(kind, with_parts(mail, inside)))
        if kind == "inline PDF":
            # Apple Mail marks a PDF inline: a document all the same, stored (only inline images are skipped).
            spec = [{**self._pdfs(index, 1)[0], "isInline": True}]
            return self._record(Sent.graph(kind, self._deliver(mailbox, folder, index, spec)))
        raise ValueError(f"unknown kind of mail: {kind}")

    def send_imap(self, index: int, size: int | None = None) -> Sent:
        """A mail with one or two PDFs (or one of `size` bytes) into the Dovecot account's INBOX."""
        assert self.dovecot is not None
        sizes = [size] if size else [self.random.randint(1, 150_000) for _ in range(self.random.randint(1, 2))]
        files = [
            (f"imap-{index}-{n}.pdf", GeneratedContent(length, f"imap-{index}-{n}")) for n, length in enumerate(sizes)
        ]
        subject = f"soak {index} via IMAP"
        self.dovecot.deliver_file(IMAP_USER, mime_mail(subject, files))
        stored = [(name, sha256_hex(content)) for name, content in files]
        return self._record(Sent("IMAP, large" if size else "IMAP", subject, stored))

    def send_unprocessable(self, index: int) -> Sent:
        """A mail whose attached mail's `/$value` always fails: retried, then parked in the poison queue."""
        item = {"subject": f"Broken {index}", "from": "vendor@fabrikam.example", "attachments": []}
        sent = self.send(index, [{"name": f"broken-{index}", "kind": "item", "item": item}], unprocessable=True)
        assert sent.mail is not None
        ids = "|".join(re.escape(str(a[k])) for a in sent.mail.attachments for k in ("id", "restId") if a.get(k))
        self._sim("POST", "/_sim/faults", {"path": f"/attachments/({ids})/\\$value$", "status": 500, "rate": 1})
        return sent

    def send_large(self, index: int) -> Sent:
        size = self.config.large_bytes
        return self.send(index, [generated_attachment(f"scan-{index}.pdf", size, index, PDF)])

    # -- faults ---------------------------------------------------------------------------------
    def _fault(self, name: str, body: dict[str, Any]) -> None:
        self._fault_ids[name] = self._sim("POST", "/_sim/faults", body)["id"]

    def _fault_hits(self, name: str) -> int:
        """How many requests the named fault, still active, has answered so far."""
        faults = self._sim("GET", "/_sim/faults")["faults"]
        return sum(int(f["hits"]) for f in faults if f["id"] == self._fault_ids[name])

    def _end_fault(self, name: str) -> dict[str, Any]:
        ended: dict[str, Any] = self._sim("DELETE", f"/_sim/faults/{self._fault_ids.pop(name)}")
        self.report.faults[name] = self.report.faults.get(name, 0) + int(ended["hits"])
        return ended

    def throttle(self) -> None:
        """429 with Retry-After on half the share, 503 without on the other half."""
        half = self.config.fault_rate / 2
        seed = self.config.seed
        self._fault("Graph 429", {"path": GRAPH_PATHS, "status": 429, "retryAfter": 1, "rate": half, "seed": seed})
        # The second fault sees only requests the first let pass: its rate is raised so that each is `half`.
        rate = half / (1 - half)
        # (seed + 3: its first hits come early, so a short run sees both kinds)
        self._fault("Graph 503", {"path": GRAPH_PATHS, "status": 503, "rate": rate, "seed": seed + 3})

    def webhook_outage(self) -> None:
        host = self.hosts[0]
        host.stop()
        time.sleep(self.config.webhook_down)
        host.start()
        self.report.faults["webhook stopped (s)"] = round(self.config.webhook_down)

    def remove_subscription(self) -> None:
        subscription = self.random.choice(self._sim("GET", "/_sim/subscriptions")["value"])
        self._sim("POST", "/_sim/lifecycle", {"subscriptionId": subscription["id"], "event": "subscriptionRemoved"})
        self.report.faults["subscription removed"] = 1

    @property
    def _stack(self) -> Stack:
        assert self.stack is not None
        return self.stack

    def kill_mid_file(self, index: int) -> None:
        """Send a large file, SIGKILL the host that is reading it once it has read a fifth of it, fail Key
        Vault for a while, and restart the host meanwhile. The new process needs Key Vault at once: the
        webhook's host for the clientState key, either host for the IMAP password of its next poll."""
        port = int(self._stack.sim_url.rsplit(":", 1)[1])
        before = _received(port)
        self.send_large(index)
        deadline = time.monotonic() + 120
        victim = None
        while victim is None and time.monotonic() < deadline:
            time.sleep(0.05)
            now = _received(port)
            for host in self.hosts:
                grown = sum(n - before.get(sock, 0) for sock, n in now.items() if sock[0] == host.pid)
                if host.running and grown > self.config.large_bytes / 5:
                    victim = host
        if victim is None:
            raise RuntimeError("no host started reading the large file within 120 s")
        os.kill(victim.pid, signal.SIGKILL)
        self.report.faults["host killed mid-file"] = 1
        self._fault("Key Vault 503", {"path": VAULT_PATHS, "status": 503, "rate": 1})
        victim.stop()  # reaps the killed process
        time.sleep(2)
        victim.start()
        # The outage lasts `vault_down` from the moment the hosts are up again (a start can take longer than a
        # short outage), and on until a request has met it (at most three times as long): never unseen.
        up = time.monotonic()
        while time.monotonic() < up + self.config.vault_down or (
            not self._fault_hits("Key Vault 503") and time.monotonic() < up + 3 * self.config.vault_down
        ):
            time.sleep(0.25)
        self._end_fault("Key Vault 503")
        self.report.recoveries["hosts restarted"] = self.report.recoveries.get("hosts restarted", 0) + 1

    def burst(self) -> None:
        """Mail piles up at one mailbox while Graph holds the notifications (delivery paused), then they
        arrive at once, as after a mailing run or an outage, while the mailbox answers slowly (each of its
        next requests takes `slow_ms` longer, in flight all the while)."""
        config, mailbox = self.config, MAILBOXES[0]
        self._sim("POST", "/_sim/delivery", {"paused": True})
        try:
            for n in range(config.burst):
                spec = [generated_attachment(f"burst-{n}.pdf", 5 * MB + n, 7_000_000 + n, PDF)]
                mail = self._deliver(mailbox, "Inbox", f"burst {n}", spec)
                self._record(Sent.graph("burst to one mailbox", mail))
            slow = {"path": f"(?i)^/v1\\.0/users/{re.escape(mailbox)}/", "latencyMs": config.slow_ms}
            self._fault(f"slow mailbox (requests {config.slow_ms} ms slower)", {**slow, "count": 4 * config.burst})
        finally:
            self._sim("POST", "/_sim/delivery", {"paused": False})
        self.report.faults["burst to one mailbox (mails)"] = config.burst

    def storage_outage(self) -> None:
        azurite = self._stack.azurite
        assert azurite is not None
        azurite.restart(down_seconds=self.config.storage_down)
        self.report.faults["Azurite restarted"] = 1

    def _in_thread(self, fault: Callable[[], None]) -> threading.Thread:
        """A fault alongside the traffic; one that could not be injected fails the run."""

        def run() -> None:
            try:
                fault()
            except Exception as exc:
                self.report.problems.append(f"a fault was not injected: {type(exc).__name__}: {exc}")

        thread = threading.Thread(target=run, name="fault")
        thread.start()
        return thread

    # -- the run --------------------------------------------------------------------------------
    def run(self) -> Report:
        config = self.config
        self.throttle()
        # Where in the traffic each fault starts (a share of the mails sent).
        events: dict[int, Callable[[], None]] = {
            int(config.mails * 0.15): self.webhook_outage,
            int(config.mails * 0.35): self.remove_subscription,
            int(config.mails * 0.70): self.storage_outage,
            int(config.mails * 0.85): self.burst,
        }
        kill_at = int(config.mails * 0.5)
        large_imap_at = int(config.mails * 0.6) + 1
        large_at = {int(config.mails * (n + 1) / (config.large_files + 1)) for n in range(config.large_files)}
        broken_at = {int(config.mails * (n + 1) / (config.unprocessable + 2)) + 1 for n in range(config.unprocessable)}
        interval = config.minutes * 60 / max(1, config.mails)
        threads: list[threading.Thread] = []
        started = time.monotonic()
        for index in range(config.mails):
            if index in events:
                threads.append(self._in_thread(events[index]))
            if index == kill_at:
                threads.append(self._in_thread(functools.partial(self.kill_mid_file, index)))
            elif index in broken_at:
                self.send_unprocessable(index)
            elif index in large_at and index != kill_at:
                self.send_large(index)
            elif index == large_imap_at:
                self.send_imap(index, config.large_bytes)
            elif index % CYCLE in KINDS:
                self.send_kind(index, KINDS[index % CYCLE])
            else:
                self.send(index)
            time.sleep(max(0.0, started + (index + 1) * interval - time.monotonic()))
        for thread in threads:
            thread.join()
        # Late copies of earlier mails' notifications, after newer ones: reordered.
        graph_mail = [s.mail for s in self.sent if s.mail is not None]
        late = self.random.sample(graph_mail, max(1, int(len(graph_mail) * config.late_duplicates)))
        for mail in late:
            self._sim("POST", f"/_sim/mail/{mail.message_id}/renotify", {"times": 1})
        # The first throttling fault was drawn for every Graph request of the traffic.
        self.report.faults["(Graph requests meanwhile)"] = int(self._end_fault("Graph 429")["seen"])
        self._end_fault("Graph 503")
        faults_ended = time.monotonic()
        self.report.faults["late duplicate notifications"] = len(late)
        self._drain(faults_ended)
        self._verdict()
        self._recoveries()
        self._scan()
        if not self.report.ok:
            self._errors()
        return self.report

    def _errors(self) -> None:
        seen: set[str] = set()
        for host in self.hosts:
            for line in _text(host.log_file).splitlines():
                if " ERROR " not in line:
                    continue
                # Without its timestamp and ids, so that one kind of error shows once.
                key = re.sub(r"[0-9a-f-]{36}|\d+", "#", line.split(" ERROR ", 1)[1])[:200]
                if key not in seen and len(seen) < 20:
                    seen.add(key)
                    self.report.errors.append(f"{host.log_file.parent.name}: {line[:400]}")

    def _drain(self, since: float) -> None:
        reader = BlobReader(self._stack)
        waiting = [s for s in self.sent if not s.unprocessable]
        deadline = time.monotonic() + self.config.drain_timeout
        try:
            while time.monotonic() < deadline:
                if any(s.mail is None for s in waiting):
                    self._match_imap(reader)
                waiting = [s for s in waiting if not (s.prefix and _complete(reader.manifest(s.prefix)))]
                if not waiting and self._settled():
                    break
                time.sleep(1)
        finally:
            reader.close()
        self.report.drain_seconds = time.monotonic() - since

    def _settled(self) -> bool:
        """The unprocessable mails are parked, the queue is empty and Graph has nothing left to deliver."""
        if not self._poisoned() >= {s.mail.message_id for s in self.sent if s.mail and s.unprocessable}:
            return False
        if self._queue_length(CHANGES_QUEUE) or self._queue_length(FETCH_QUEUE):
            return False
        return not self._sim("GET", "/_sim/deliveries")["pending"]

    def _match_imap(self, reader: BlobReader) -> dict[str, list[str]]:
        """The IMAP account's message folders by the subject of their manifest (each manifest read once); an
        IMAP mail found in exactly one gets it as its prefix."""
        try:
            names = [n for n in reader.names(f"{IMAP_USER}/") if n.endswith(f"/{MANIFEST}")]
        except Exception:  # the container is made with the first file stored
            names = []
        for name in names:
            if name not in self._imap_subjects:
                manifest = reader.json(name)
                if manifest is not None:
                    self._imap_subjects[name] = str(manifest.get("subject"))
        folders: dict[str, list[str]] = {}
        for name, subject in self._imap_subjects.items():
            folders.setdefault(subject, []).append(name.rsplit("/", 1)[0])
        for sent in self.sent:
            if sent.mail is None and len(folders.get(sent.subject, [])) == 1:
                sent.found_prefix = folders[sent.subject][0]
        return folders

    # -- verdict from storage -------------------------------------------------------------------
    def _queues(self) -> QueueServiceClient:
        return QueueServiceClient.from_connection_string(self._stack.storage_connection_string)

    def _queue_length(self, queue: str) -> int:
        with self._queues() as service:
            client = service.get_queue_client(queue)
            return int(client.get_queue_properties().approximate_message_count or 0)

    def _queue_texts(self, queue: str) -> Iterator[str]:
        """Every message's text, base64 decoded, peeked: receiving would hide the messages for a while, and the
        next look (the verdict after the drain's last one) would miss them. A peek returns at most 32 messages
        (Storage's limit), so a queue holding more is reported rather than read in part."""
        with self._queues() as service:
            client = service.get_queue_client(queue)
            try:
                messages = list(client.peek_messages(max_messages=32))
            except Exception:  # the queue was never made: nothing in it
                return
            too_many = f"{queue} holds 32 messages or more; the soak reads only 32"
            if len(messages) == 32 and too_many not in self.report.problems:
                self.report.problems.append(too_many)
            for message in messages:
                yield unwrap(message.id, None, message.content, None).original

    def _poisoned(self) -> set[str]:
        ids = set()
        for text in self._queue_texts(poison_queue(CHANGES_QUEUE)):
            try:
                ids.add(str(json.loads(text)["message_id"]))
            except (ValueError, KeyError, TypeError):
                ids.add(f"(unreadable: {text[:40]})")
        return ids

    def _verdict(self) -> None:
        report = self.report
        service = BlobServiceClient.from_connection_string(self._stack.storage_connection_string)
        reader = BlobReader(self._stack)
        try:
            blobs = {b.name: int(b.size) for b in service.get_container_client("mail-attachments").list_blobs()}
            folders = self._match_imap(reader)
            for sent in self.sent:
                if sent.mail is None and len(folders.get(sent.subject, [])) > 1:
                    report.problems.append(f"{sent.label}: stored {len(folders[sent.subject])} times")
            prefixes = {s.prefix for s in self.sent}
            for name in blobs:
                if name.rsplit("/", 1)[0] not in prefixes:
                    report.problems.append(f"a blob outside any message folder: {name}")
            for sent in self.sent:
                self._check_mail(sent, blobs, reader)
        finally:
            reader.close()
            service.close()
        wanted = {s.mail.message_id for s in self.sent if s.mail and s.unprocessable}
        poisoned = self._poisoned()
        by_id = {s.mail.message_id: s.subject for s in self.sent if s.mail}
        for extra in sorted(poisoned - wanted):
            report.problems.append(f"poison queue holds a mail that was processable: {by_id.get(extra, extra)}")
        for missing in sorted(wanted - poisoned):
            report.problems.append(f"the unprocessable mail {missing} is not in the poison queue")
        for queue, what in (
            (LIFECYCLE_QUEUE, "lifecycle events"),
            (POLL_QUEUE, "IMAP polls"),
            (FETCH_QUEUE, "IMAP mails"),
        ):
            poisoned_texts = list(self._queue_texts(poison_queue(queue)))
            if poisoned_texts:
                report.problems.append(f"{len(poisoned_texts)} {what} were poisoned: {poisoned_texts[0][:200]}")

    def _check_mail(self, sent: Sent, blobs: dict[str, int], reader: BlobReader) -> None:
        report = self.report
        report.mails += 1
        counts = report.kinds.setdefault(sent.kind, [0, 0])
        counts[0] += 1
        if sent.unprocessable:
            return
        manifest = reader.manifest(sent.prefix) if sent.prefix else None
        if not _complete(manifest):
            if manifest is None:
                report.problems.append(f"{sent.label}: no manifest")
            else:
                entries = manifest.get("attachments", [])
                failed = [f"{e.get('name')}: {e.get('failed')}" for e in entries if e.get("failed")]
                report.problems.append(f"{sent.label}: manifest {manifest.get('status')}: {failed}")
            return
        assert manifest is not None
        stored = [e for e in manifest.get("attachments", []) if e.get("blob")]
        in_folder = sorted(n for n in blobs if n.rsplit("/", 1)[0] == sent.prefix and not n.endswith(f"/{MANIFEST}"))
        if sorted(e["blob"] for e in stored) != in_folder:
            report.problems.append(f"{sent.label}: blobs {in_folder} but the manifest lists {len(stored)}")
        want = Counter(sent.stored)
        got = Counter((str(e["name"]), str(e.get("sha256"))) for e in stored)
        if want != got:
            report.problems.append(f"{sent.label}: files {dict(got)} instead of {dict(want)}")
        for entry in stored:
            size, digest = reader.sha256(entry["blob"])
            if digest != entry.get("sha256") or size != blobs.get(entry["blob"]):
                report.problems.append(f"{sent.label}: {entry['blob']} does not hash to its manifest's sha256")
            report.files += 1
            report.bytes += size
            counts[1] += 1

    def _recoveries(self) -> None:
        deliveries = self._sim("GET", "/_sim/deliveries")["deliveries"]
        copies = sum(1 for d in deliveries if d["kind"] == "change" and d.get("copy") and d["outcome"] == "delivered")
        self.report.faults["duplicate notifications"] = copies
        failed = [d for d in deliveries if d["outcome"] == "failed"]
        recoveries = self.report.recoveries
        recoveries["notification POSTs retried by Graph"] = len(failed)
        logs = "".join(_text(h.log_file) for h in self.hosts)
        recoveries["ingest attempts failed, then retried"] = logs.count("ingest.failed ")
        recoveries["subscriptions recreated"] = logs.count("subscription.recreated ")
        recoveries["mails resynced by delta"] = sum(int(n) for n in re.findall(r"resync\.\w+ .*?enqueued=(\d+)", logs))
        for name in [n for n in self._fault_ids if n.startswith("slow mailbox")]:
            self._end_fault(name)  # it ends by itself, after the burst's requests: read at the end
        throttled = self._sim("GET", "/_sim/throttling")["mailboxConcurrency"]
        self.report.faults["mailbox concurrency"] = int(throttled["refused"])
        self.report.faults["(most requests in flight on one mailbox)"] = int(throttled["peakInFlight"])

    # -- secrets --------------------------------------------------------------------------------
    def secrets(self) -> dict[str, str]:
        stack = self._stack
        keys = json.loads(Path(self.hosts[0].keys_file).read_text())
        found = {
            "client secret": stack.env["GRAPH_CLIENT_SECRET"],
            "master key": keys["masterKey"]["value"],
            "storage account key": ACCOUNT_KEY,
            "clientState key": self._vault_secret(CLIENT_STATE_SECRET),
            "IMAP password": self.imap_password,
        }
        if self.smime is not None:
            from cryptography.hazmat.primitives import serialization

            pem = self.smime.key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
            # A line of its base64 from within the modulus (the first lines are the same for every RSA key):
            # found whether the key is written as PEM or as base64 DER on one line (48 bytes a line either way).
            found["S/MIME private key"] = pem.decode().splitlines()[4]
        for key in keys.get("functionKeys", []):
            found[f"function key {key['name']}"] = key["value"]
        return {name: value for name, value in found.items() if value}

    def _vault(self, method: str, path: str, body: Any = None) -> httpx.Response:
        env = self._stack.env
        with self._lock:
            token = self._stack.graph_token("https://vault.azure.net/.default")
        with httpx.Client(verify=ssl.create_default_context(cafile=env["SSL_CERT_FILE"]), timeout=30) as client:
            return client.request(
                method,
                f"{env['KEY_VAULT_URL'].rstrip('/')}/{path}",
                params={"api-version": "7.5"},
                json=body,
                headers={"Authorization": f"Bearer {token}"},
            )

    def _vault_secret(self, name: str) -> str:
        answer = self._vault("GET", f"secrets/{name}")
        return str(answer.json().get("value", "")) if answer.status_code == 200 else ""

    def _scanned(self) -> Iterator[tuple[str, str]]:
        """(where, text) of everything the run left: logs, state records, manifests, queue messages."""
        for host in self.hosts:
            yield str(host.log_file.name), _text(host.log_file)
        service = BlobServiceClient.from_connection_string(self._stack.storage_connection_string)
        try:
            for container in ("mail-ingest-state", "mail-attachments"):
                client = service.get_container_client(container)
                for blob in client.list_blobs():
                    if container == "mail-attachments" and not blob.name.endswith(f"/{MANIFEST}"):
                        continue
                    data = client.get_blob_client(blob.name).download_blob().readall()
                    yield f"{container}/{blob.name}", data.decode("utf-8", "replace")
        finally:
            service.close()
        for queue in (CHANGES_QUEUE, LIFECYCLE_QUEUE, poison_queue(CHANGES_QUEUE), poison_queue(LIFECYCLE_QUEUE)):
            for text in self._queue_texts(queue):
                yield f"queue {queue}", text

    def _scan(self) -> None:
        used = self.secrets()
        for where, text in self._scanned():
            for name, value in used.items():
                if value in text:
                    self.report.leaks.append(f"{name} in {where}")
            if _JWT.search(text):
                self.report.leaks.append(f"a token (JWT) in {where}")
            if _PRIVATE_KEY.search(text):
                self.report.leaks.append(f"a private key in {where}")
        self.report.recoveries["secrets scanned for"] = len(used) + 2


_SOCKET = re.compile(r"^ESTAB\s+\d+\s+\d+\s+(\S+)\s+\S+\s+users:\(\(.*?pid=(\d+),")
_RECEIVED = re.compile(r"bytes_received:(\d+)")


def _received(port: int) -> dict[tuple[int, str], int]:
    """(pid, local address) → bytes received, of every TCP connection to the simulator's port (`ss`): which
    process is streaming a large response from it right now."""
    out = subprocess.run(
        ["ss", "-tinpH", "dst", f"127.0.0.1:{port}"], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    found: dict[tuple[int, str], int] = {}
    for line, detail in zip(out, [*out[1:], ""], strict=True):
        socket, received = _SOCKET.match(line), _RECEIVED.search(detail)
        if socket and received:
            found[(int(socket.group(2)), socket.group(1))] = int(received.group(1))
    return found


def _generated(size: int, seed: int) -> bytes:
    return b"".join(GeneratedContent(size, str(seed)).chunks())


def mime_mail(subject: str, files: list[tuple[str, GeneratedContent]]) -> Iterator[bytes]:
    """A mail with PDF attachments as a sending server writes it, made piece by piece (a large one is never
    held whole): CRLF lines, each file base64 in lines of 76."""
    boundary = f"soak-{abs(hash(subject)):x}"
    yield (
        f"From: Scanner <scanner@example.org>\r\nTo: {IMAP_USER}\r\nSubject: {subject}\r\n"
        f"Date: {format_datetime(datetime.now(UTC))}\r\nMessage-ID: <{boundary}.{time.time_ns()}@example.org>\r\n"
        f'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="{boundary}"\r\n\r\n'
        f"--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{subject}\r\n"
    ).encode()
    for name, content in files:
        yield (
            f'--{boundary}\r\nContent-Type: application/pdf; name="{name}"\r\nContent-Transfer-Encoding: base64\r\n'
            f'Content-Disposition: attachment; filename="{name}"\r\n\r\n'
        ).encode()
        pending = b""
        for chunk in content.chunks():
            pending += chunk
            whole = len(pending) - len(pending) % 57  # 57 bytes: one line of 76 base64 characters
            encoded = base64.b64encode(pending[:whole])
            pending = pending[whole:]
            yield b"".join(encoded[i : i + 76] + b"\r\n" for i in range(0, len(encoded), 76))
        if pending:
            yield base64.b64encode(pending) + b"\r\n"
    yield f"--{boundary}--\r\n".encode()


def _restore_env(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


def _text(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def _complete(manifest: dict[str, Any] | None) -> bool:
    return manifest is not None and manifest.get("status") == "complete"


def print_report(report: Report, config: SoakConfig) -> None:
    print(f"Soak: {config.mails} mails over {config.minutes:g} minutes and a burst of {config.burst} to one mailbox, "
          f"two dev hosts, one Azurite, one simulator; message lease {config.lease_seconds} s "
          "(the Functions host's: 10 minutes)")  # fmt: skip
    rows = [
        ("mails", f"{report.mails} ({config.unprocessable} made unprocessable)"),
        ("files stored and checked (sha256)", str(report.files)),
        ("bytes", f"{report.bytes / MB:.1f} MiB"),
    ]
    rows += [
        (f"kind: {kind}", f"{mails} mails, {files} files") for kind, (mails, files) in sorted(report.kinds.items())
    ]
    rows += [(f"fault: {name}", str(count)) for name, count in report.faults.items()]
    rows += [(f"recovery: {name}", str(count)) for name, count in report.recoveries.items()]
    rows.append(("drain after the last fault", f"{report.drain_seconds:.1f} s"))
    rows.append(("verdict", "PASS" if report.ok else f"FAIL ({len(report.problems) + len(report.leaks)} findings)"))
    width = max(len(name) for name, _ in rows)
    print(f"| {'':{width}} | value |")
    print(f"| {'-' * width} | --- |")
    for name, value in rows:
        print(f"| {name:{width}} | {value} |")
    for line in [*report.problems[:50], *report.leaks[:50]]:
        print(f"  ✗ {line}")
    for line in report.errors:
        print(f"  logged: {line}")


def run(config: SoakConfig) -> Report:
    soak = Soak(config)
    try:
        soak.start()
        return soak.run()
    finally:
        soak.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=float(os.environ.get("SOAK_MINUTES", "4")))
    parser.add_argument("--mails", type=int, help="default: 125 a minute")
    args = parser.parse_args(argv)
    mails = args.mails or max(500, int(125 * args.minutes))
    config = SoakConfig(minutes=args.minutes, mails=mails)
    report = run(config)
    print_report(report, config)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
