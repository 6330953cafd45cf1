"""`make soak`: the product's guarantees under its faults together, judged by what landed.

Two dev hosts share one Azurite and one simulator, as two Functions instances share a storage account
(the webhook URL Graph calls is the first host's, as a deployment has one host name; both run the
queue workers and the timer). Mail goes to several mailboxes and folders at a steady rate: small
files, 50 MB files and attached mails, plus a few mails made deliberately unprocessable (an attached
mail whose `/$value` always fails). During the traffic:

- 10 % of Graph requests are answered 429 (with `Retry-After`) or 503 (the simulator's rate faults);
- every notification is delivered twice, concurrently, and late copies of earlier mails arrive after
  newer ones (reordered);
- the webhook's host is stopped for a minute;
- one folder's subscription is removed at Graph (`subscriptionRemoved`);
- the host streaming a 50 MB file is killed with SIGKILL in the middle of it, then restarted, while
  Key Vault fails for 30 seconds (the restarted host must read the clientState key again);
- Azurite is stopped and started again.

Then the faults stop and the run waits for the backlog to drain. The verdict reads Blob Storage and
the queues, never the logs: every file sent is stored exactly once with its sha256, one complete
manifest per mail, no blob outside its message folder, the poison queue holds exactly the mails made
unprocessable. The logs, state records, manifests, poison records and queue messages are scanned for
every secret the run used. A table is printed; the exit status is 1 on any loss, duplicate or leak.

    python -m local.soak [--minutes 4] [--mails N]   # N defaults to 125 a minute (500 for 4 minutes)
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import random
import re
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from azure.storage.blob import BlobServiceClient
from azure.storage.queue import QueueServiceClient

from local.azurite import ACCOUNT_KEY
from local.mailcheck import BlobReader, Delivered, deliver, expected_files, generated_attachment
from local.stack import ROOT, DevHost, Stack, StackConfig
from shared.pipeline.layout import MANIFEST
from shared.pipeline.poison import CHANGES_QUEUE, LIFECYCLE_QUEUE, poison_queue, unwrap
from shared.vault import CLIENT_STATE_SECRET

MB = 1024 * 1024
MAILBOXES = (
    "ap@contoso.com",
    "ap@contoso.com/Inbox/Invoices",
    "scans@contoso.com/Inbox/Delivery notes",
    "hr@contoso.com",
    "ops@contoso.com/Inbox/Scans",
)
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
    # The dev host's lease on a received message (the Functions host's is a fixed 10 minutes): how long the
    # killed host's messages stay invisible before another host takes them.
    lease_seconds: int = 60
    late_duplicates: float = 0.05
    drain_timeout: float = 900.0
    seed: int = 20261129
    data_dir: Path = ROOT / ".soak"
    quiet: bool = True


@dataclass
class Sent:
    mail: Delivered
    unprocessable: bool = False

    @property
    def stored(self) -> list[tuple[str, str]]:
        """(name, sha256) of every file the app must store for this mail."""
        return [(e.name, e.sha256) for e in expected_files(self.mail.attachments) if e.expect == "stored"]


@dataclass
class Report:
    mails: int = 0
    files: int = 0
    bytes: int = 0
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

    # -- the stack ------------------------------------------------------------------------------
    def start(self) -> Stack:
        settings = {
            # Failed queue messages come back after 5 s (not 30), so the unprocessable mails reach the
            # poison queue within the run; a killed worker's message too.
            "AzureFunctionsJobHost__extensions__queues__visibilityTimeout": "00:00:05",
            "AzureFunctionsJobHost__extensions__queues__maxPollingInterval": "00:00:00.500",
            "GRAPH_MAX_RETRY_AFTER_SECONDS": "5",
            "MAINTAIN_SCHEDULE": "*/20 * * * * *",
            "DEVHOST_QUEUE_LEASE_SECONDS": str(self.config.lease_seconds),
        }
        config = StackConfig(
            mailboxes=MAILBOXES, data_dir=self.config.data_dir, app_settings=settings, quiet=self.config.quiet
        )
        stack = self.stack = Stack(config).start()
        assert stack.devhost is not None
        self.hosts = [stack.devhost, stack.another_host("b")]
        if stack.run_function("maintain").status_code != 200:
            raise RuntimeError(f"the first maintain pass failed; see {stack.devhost.log_file}")
        stack.control("POST", "/_sim/delivery", {"duplicates": 2, "retryBaseSeconds": 1})
        return stack

    def stop(self) -> None:
        for host in self.hosts[1:]:
            host.stop()
        if self.stack is not None:
            self.stack.stop()

    def _sim(self, method: str, path: str, body: Any = None) -> Any:
        assert self.stack is not None
        with self._lock:  # the stack's control client is shared by the fault thread
            return self.stack.control(method, path, body)

    # -- traffic --------------------------------------------------------------------------------
    def _mail_spec(self, index: int) -> tuple[str, str, list[dict[str, Any]]]:
        entry = self.random.choice(MAILBOXES)
        mailbox, _, folder = entry.partition("/")
        files = [
            generated_attachment(
                f"doc-{index}-{n}.pdf", self.random.randint(1, 200_000), index * 10 + n, "application/pdf"
            )
            for n in range(self.random.randint(1, 3))
        ]
        if self.random.random() < self.config.attached_share:
            size = self.random.randint(1, 100_000)
            inner = generated_attachment(f"invoice-{index}.pdf", size, index, "application/pdf")
            item = {"subject": f"Fwd {index}", "from": "vendor@fabrikam.example", "attachments": [inner]}
            files.append({"name": f"forwarded-{index}", "kind": "item", "item": item})
        return mailbox, folder or "Inbox", files

    def send(self, index: int, files: list[dict[str, Any]] | None = None, unprocessable: bool = False) -> Sent:
        assert self.stack is not None
        mailbox, folder, spec = self._mail_spec(index)
        with self._lock:
            mail = deliver(self.stack, mailbox, folder, f"soak {index}", files or spec)
        sent = Sent(mail, unprocessable)
        self.sent.append(sent)
        return sent

    def send_unprocessable(self, index: int) -> Sent:
        """A mail whose attached mail's `/$value` always fails: retried, then parked in the poison queue."""
        item = {"subject": f"Broken {index}", "from": "vendor@fabrikam.example", "attachments": []}
        sent = self.send(index, [{"name": f"broken-{index}", "kind": "item", "item": item}], unprocessable=True)
        ids = "|".join(re.escape(str(a[k])) for a in sent.mail.attachments for k in ("id", "restId") if a.get(k))
        self._sim("POST", "/_sim/faults", {"path": f"/attachments/({ids})/\\$value$", "status": 500, "rate": 1})
        return sent

    def send_large(self, index: int) -> Sent:
        size = self.config.large_bytes
        return self.send(index, [generated_attachment(f"scan-{index}.pdf", size, index, "application/pdf")])

    # -- faults ---------------------------------------------------------------------------------
    def _fault(self, name: str, body: dict[str, Any]) -> None:
        self._fault_ids[name] = self._sim("POST", "/_sim/faults", body)["id"]

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
        Vault for a while, and restart the host meanwhile."""
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
        started = time.monotonic()
        victim.stop()  # reaps the killed process
        time.sleep(2)
        victim.start()
        time.sleep(max(0.0, self.config.vault_down - (time.monotonic() - started)))
        self._end_fault("Key Vault 503")
        self.report.recoveries["hosts restarted"] = self.report.recoveries.get("hosts restarted", 0) + 1

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
        }
        kill_at = int(config.mails * 0.5)
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
            else:
                self.send(index)
            time.sleep(max(0.0, started + (index + 1) * interval - time.monotonic()))
        for thread in threads:
            thread.join()
        # Late copies of earlier mails' notifications, after newer ones: reordered.
        late = self.random.sample(self.sent, max(1, int(len(self.sent) * config.late_duplicates)))
        for sent in late:
            self._sim("POST", f"/_sim/mail/{sent.mail.message_id}/renotify", {"times": 1})
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
                waiting = [s for s in waiting if not _complete(reader.manifest(s.mail.prefix))]
                if not waiting and self._settled():
                    break
                time.sleep(1)
        finally:
            reader.close()
        self.report.drain_seconds = time.monotonic() - since

    def _settled(self) -> bool:
        """The unprocessable mails are parked, the queue is empty and Graph has nothing left to deliver."""
        if not self._poisoned() >= {s.mail.message_id for s in self.sent if s.unprocessable}:
            return False
        return self._queue_length(CHANGES_QUEUE) == 0 and not self._sim("GET", "/_sim/deliveries")["pending"]

    # -- verdict from storage -------------------------------------------------------------------
    def _queues(self) -> QueueServiceClient:
        return QueueServiceClient.from_connection_string(self._stack.storage_connection_string)

    def _queue_length(self, queue: str) -> int:
        with self._queues() as service:
            client = service.get_queue_client(queue)
            return int(client.get_queue_properties().approximate_message_count or 0)

    def _queue_texts(self, queue: str) -> Iterator[str]:
        """Every message's text, peeked without taking it (up to 32 a peek: Storage's limit), base64 decoded."""
        with self._queues() as service:
            client = service.get_queue_client(queue)
            try:
                messages = list(client.receive_messages(messages_per_page=32, visibility_timeout=1))
            except Exception:  # the queue was never made: nothing in it
                return
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
            prefixes = {s.mail.prefix: s for s in self.sent}
            for name in blobs:
                if name.rsplit("/", 1)[0] not in prefixes:
                    report.problems.append(f"a blob outside any message folder: {name}")
            for sent in self.sent:
                self._check_mail(sent, blobs, reader)
        finally:
            reader.close()
            service.close()
        wanted = {s.mail.message_id for s in self.sent if s.unprocessable}
        poisoned = self._poisoned()
        by_id = {s.mail.message_id: s.mail.subject for s in self.sent}
        for extra in sorted(poisoned - wanted):
            report.problems.append(f"poison queue holds a mail that was processable: {by_id.get(extra, extra)}")
        for missing in sorted(wanted - poisoned):
            report.problems.append(f"the unprocessable mail {missing} is not in the poison queue")
        lifecycle_poison = list(self._queue_texts(poison_queue(LIFECYCLE_QUEUE)))
        if lifecycle_poison:
            report.problems.append(f"{len(lifecycle_poison)} lifecycle events were poisoned")

    def _check_mail(self, sent: Sent, blobs: dict[str, int], reader: BlobReader) -> None:
        report, mail = self.report, sent.mail
        report.mails += 1
        if sent.unprocessable:
            return
        manifest = reader.manifest(mail.prefix)
        if not _complete(manifest):
            if manifest is None:
                report.problems.append(f"{mail.subject}: no manifest ({mail.message_id})")
            else:
                entries = manifest.get("attachments", [])
                failed = [f"{e.get('name')}: {e.get('failed')}" for e in entries if e.get("failed")]
                report.problems.append(f"{mail.subject}: manifest {manifest.get('status')}: {failed}")
            return
        assert manifest is not None
        stored = [e for e in manifest.get("attachments", []) if e.get("blob")]
        in_folder = sorted(n for n in blobs if n.rsplit("/", 1)[0] == mail.prefix and not n.endswith(f"/{MANIFEST}"))
        if sorted(e["blob"] for e in stored) != in_folder:
            report.problems.append(f"{mail.subject}: blobs {in_folder} but the manifest lists {len(stored)}")
        want = Counter(sent.stored)
        got = Counter((str(e["name"]), str(e.get("sha256"))) for e in stored)
        if want != got:
            report.problems.append(f"{mail.subject}: files {dict(got)} instead of {dict(want)}")
        for entry in stored:
            size, digest = reader.sha256(entry["blob"])
            if digest != entry.get("sha256") or size != blobs.get(entry["blob"]):
                report.problems.append(f"{mail.subject}: {entry['blob']} does not hash to its manifest's sha256")
            report.files += 1
            report.bytes += size

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

    # -- secrets --------------------------------------------------------------------------------
    def secrets(self) -> dict[str, str]:
        stack = self._stack
        keys = json.loads(Path(self.hosts[0].keys_file).read_text())
        found = {
            "client secret": stack.env["GRAPH_CLIENT_SECRET"],
            "master key": keys["masterKey"]["value"],
            "storage account key": ACCOUNT_KEY,
            "clientState key": self._vault_secret(CLIENT_STATE_SECRET),
        }
        for key in keys.get("functionKeys", []):
            found[f"function key {key['name']}"] = key["value"]
        return {name: value for name, value in found.items() if value}

    def _vault_secret(self, name: str) -> str:
        env = self._stack.env
        with self._lock:
            token = self._stack.graph_token("https://vault.azure.net/.default")
        with httpx.Client(verify=ssl.create_default_context(cafile=env["SSL_CERT_FILE"]), timeout=30) as client:
            answer = client.get(
                f"{env['KEY_VAULT_URL'].rstrip('/')}/secrets/{name}",
                params={"api-version": "7.5"},
                headers={"Authorization": f"Bearer {token}"},
            )
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
        secrets = self.secrets()
        for where, text in self._scanned():
            for name, value in secrets.items():
                if value in text:
                    self.report.leaks.append(f"{name} in {where}")
            if _JWT.search(text):
                self.report.leaks.append(f"a token (JWT) in {where}")
            if _PRIVATE_KEY.search(text):
                self.report.leaks.append(f"a private key in {where}")
        self.report.recoveries["secrets scanned for"] = len(secrets) + 2


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


def _text(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def _complete(manifest: dict[str, Any] | None) -> bool:
    return manifest is not None and manifest.get("status") == "complete"


def print_report(report: Report, config: SoakConfig) -> None:
    print(f"Soak: {config.mails} mails over {config.minutes:g} minutes, two dev hosts, one Azurite, one simulator; "
          f"message lease {config.lease_seconds} s (the Functions host's: 10 minutes)")  # fmt: skip
    rows = [
        ("mails", f"{report.mails} ({config.unprocessable} made unprocessable)"),
        ("files stored and checked (sha256)", str(report.files)),
        ("bytes", f"{report.bytes / MB:.1f} MiB"),
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
