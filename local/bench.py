"""`make bench`: figures for docs/proof.md. Prints tables; asserts nothing about time.

1. Cold start of the handshake path: the import time of `function_app` in a fresh interpreter
   (what a cold instance pays before it can answer Graph's validation request).
2. Webhook acknowledgement latency through the dev host: a burst of notifications, each a valid
   change for a configured folder, from concurrent callers; each call enqueues before it answers.
3. Ingest: the dev host's peak memory (RSS high-water mark, reset before each mail) while it ingests
   a mail with one 1 MB file and one with a 100 MB file, a 100 MB zip and a signed mail carrying a
   100 MB file (both unpacked from the stream), and the Graph requests each mail cost, with a typical
   mail (two small PDFs) beside them.
4. IMAP (local/bench_sources.py): the peak memory of fetching a 1 MB and a 100 MB message, and of
   ingesting each end to end, and the seconds to drain 1,000 small messages from one folder.
5. The maintain timer at 1, 100 and 1,000 mailbox folders: seconds and Graph requests of the first pass,
   a steady one and the busiest renewal pass, and how the renewals fall over the timer's passes.
6. Throughput and latency: a backlog of 1,000 small mails drained (one and two dev hosts, one and ten
   mailboxes) beside Graph's per-mailbox bound; notification-to-blob p50/p99 at a steady 5 mails/s;
   one 100 MB file beside a bare copy; the webhook's own CPU per notification item, in process.
7. The duplicate lookup (local/bench_duplicates.py): Blob Storage requests, bytes and time it adds per mail,
   under each DUPLICATES mode, for new files and for files stored before.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import ssl
import statistics
import subprocess
import sys
import time
import uuid
from typing import Any

import aiohttp

from local.azuresim.content import GeneratedContent, sha256_hex
from local.mailcheck import (
    BlobReader,
    change_notification,
    check_files,
    deliver,
    file_attachment,
    generated_attachment,
    subscriptions,
    wait_for_manifests,
)
from local.stack import ROOT, Stack, StackConfig

IMPORT_PROBE = (
    "import time; t = time.perf_counter(); import function_app; "
    "print((time.perf_counter() - t) * 1000); import sys; "
    "print(int(any(m.startswith(('azure.storage', 'azure.identity', 'azure.keyvault', 'msal', 'httpx')) "
    "for m in sys.modules)))"
)
BENCH_ENV = {
    "GRAPH_TENANT_ID": str(uuid.uuid4()),
    "GRAPH_CLIENT_ID": str(uuid.uuid4()),
    "GRAPH_CLIENT_SECRET": "bench",
    "MAILBOXES": "a@contoso.com",
    "AzureWebJobsStorage": "UseDevelopmentStorage=true",
    "KEY_VAULT_URL": "https://kv.vault.azure.net",
    "WEBHOOK_BASE_URL": "https://example.net",
}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def bench_import(runs: int) -> dict[str, Any]:
    times, heavy = [], 0
    env = {**os.environ, **BENCH_ENV}
    for _ in range(runs):
        out = subprocess.run(
            [sys.executable, "-c", IMPORT_PROBE],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        times.append(float(out[0]))
        heavy = max(heavy, int(out[1]))
    return {
        "runs": runs,
        "median_ms": statistics.median(times),
        "max_ms": max(times),
        "heavy_sdks_loaded": bool(heavy),
    }


async def burst(url: str, bodies: list[dict[str, Any]], concurrency: int) -> tuple[list[float], dict[int, int], float]:
    """POST every body, `concurrency` callers at a time; latency per call in ms, statuses, elapsed seconds."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    payloads = iter([json.dumps(body).encode() for body in bodies])
    headers = {"Content-Type": "application/json"}
    # aiohttp as the caller: its per-request cost is small beside the server's, so the figure is the server's.
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:

        async def caller() -> None:
            for payload in payloads:
                started = time.perf_counter()
                async with session.post(url, data=payload, headers=headers) as response:
                    await response.read()
                latencies.append((time.perf_counter() - started) * 1000)
                statuses[response.status] = statuses.get(response.status, 0) + 1

        started = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return latencies, statuses, elapsed


def _figures(label: str, latencies: list[float], statuses: dict[int, int], elapsed: float) -> dict[str, Any]:
    return {
        "label": label,
        "statuses": statuses,
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "max_ms": max(latencies),
        "calls_per_s": len(latencies) / elapsed,
    }


def bench_webhook(total: int, concurrency: int, with_ingest: bool) -> list[dict[str, Any]]:
    """One stack; a single caller first (the service time of one call), then the concurrent burst."""
    settings = {"GRAPH_MAX_RETRIES": "0"}
    if not with_ingest:
        # The host's switch to leave a function out: the webhook alone, no queue consumer beside it.
        settings["AzureWebJobs.ingest.Disabled"] = "true"
    worker = "ingest running" if with_ingest else "ingest disabled"
    with Stack(StackConfig(mailboxes=("bench@contoso.com",), app_settings=settings)) as stack:
        if stack.run_function("maintain").status_code != 200:
            raise SystemExit("maintain failed; see .stack/devhost.log")
        sub = subscriptions(stack)[0]
        url = stack.webhook_url("notifications")
        tenant = stack.env["GRAPH_TENANT_ID"]

        def bodies(count: int) -> list[dict[str, Any]]:
            return [change_notification(sub, tenant, f"AAMkBench{i:06d}=") for i in range(count)]

        # Warm up: the first call reads the clientState key from Key Vault, once per process.
        asyncio.run(burst(url, bodies(concurrency), concurrency))
        single = asyncio.run(burst(url, bodies(min(total, 200)), 1))
        many = asyncio.run(burst(url, bodies(total), concurrency))
    return [
        _figures(f"1 caller, {worker}", *single),
        _figures(f"{concurrency} callers, {worker}", *many),
    ]


MB = 1024 * 1024


def _status_kib(pid: int, field: str) -> int:
    for line in open(f"/proc/{pid}/status").read().splitlines():  # noqa: SIM115 - a one-shot read
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/{pid}/status")


def _reset_peak(pid: int) -> bool:
    """Reset the process's RSS high-water mark (Linux: `5` to clear_refs), so each case has its own."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as refs:
            refs.write("5")
        return True
    except OSError:
        return False


def bench_ingest() -> list[dict[str, Any]]:
    rows = []
    with Stack(StackConfig(mailboxes=("bench@contoso.com",))) as stack:
        if stack.run_function("maintain").status_code != 200:
            raise SystemExit("maintain failed; see .stack/devhost.log")
        assert stack.devhost is not None
        pid = stack.devhost.pid
        reader = BlobReader(stack)
        cases = [
            ("typical: two small PDFs", [
                file_attachment("invoice.pdf", os.urandom(180_000), "application/pdf"),
                file_attachment("terms.pdf", os.urandom(60_000), "application/pdf"),
            ]),
            ("one 1 MB file", [generated_attachment("one.pdf", MB, 1, "application/pdf")]),
            ("one 100 MB file", [generated_attachment("hundred.pdf", 100 * MB, 2, "application/pdf")]),
            # Graph documents no size limit for contentBytes in an expanded message, so the simulator
            # sends them for every file by default; this case shows the cost when Graph leaves them out.
            ("100 MB, no contentBytes", [generated_attachment("lean.pdf", 100 * MB, 3, "application/pdf")]),
            ("zip holding a 100 MB file", [{"name": "scans.zip", "kind": "file", "zip": {"entries": [
                {"path": "scans/hundred.pdf", "size": 100 * MB, "seed": "zip"},
            ]}}]),
            ("signed, a 100 MB file", [generated_attachment("signed.pdf", 100 * MB, 4, "application/pdf")]),
        ]  # fmt: skip
        # What the zip holds, as the simulator makes it (the control API reports the archive's own sha256).
        inside_zip = {"scans/hundred.pdf": sha256_hex(GeneratedContent(100 * MB, "zip"))}
        # Warm up: the first mail pays for the token, the clientState key and the clients.
        warm = deliver(stack, "bench@contoso.com", "Inbox", "warm-up", cases[0][1])
        wait_for_manifests(reader, [warm], timeout=120)
        for label, attachments in cases:
            if "no contentBytes" in label:
                stack.control("POST", "/_sim/options", {"contentBytesLimit": 4 * MB, "contentBytesOverLimit": "omit"})
            time.sleep(1)
            reset = _reset_peak(pid)
            before = _status_kib(pid, "VmRSS")
            extra: dict[str, Any] = {"smime": {"type": "clear-signed"}} if label.startswith("signed") else {}
            mail = deliver(stack, "bench@contoso.com", "Inbox", label, attachments, **extra)
            found = wait_for_manifests(reader, [mail], timeout=600)
            if mail.message_id not in found:
                raise SystemExit(f"{label}: no manifest; see .stack/devhost.log")
            manifest, seconds = found[mail.message_id]
            ok = all(c.ok for c in check_files(reader, mail, manifest, seconds))
            for entry in manifest["attachments"]:
                if entry.get("name") in inside_zip:
                    ok = ok and "blob" in entry and reader.sha256(entry["blob"])[1] == inside_zip[entry["name"]]
            requests = stack.control("GET", f"/_sim/requests?messageId={mail.message_id}")["requests"]
            rows.append({
                "label": label,
                "peak_mib": _status_kib(pid, "VmHWM") / 1024,
                "rss_before_mib": before / 1024,
                "peak_reset": reset,
                "graph_requests": len(requests),
                "seconds": seconds,
                "sha256_ok": ok,
            })  # fmt: skip
        reader.close()
    return rows


# -- the maintain timer at scale ---------------------------------------------------------------------
TIMER_PASS = 15 * 60  # seconds between the timer's passes (MAINTAIN_SCHEDULE's default)


def scale_mailboxes(folders: int) -> tuple[str, ...]:
    """`folders` mailbox folders: one Inbox per mailbox up to 100 mailboxes, then ten folders in each."""
    per_mailbox = 1 if folders <= 100 else 10
    entries = []
    for index in range(folders):
        mailbox = f"m{index // per_mailbox:03d}@contoso.com"
        entries.append(mailbox if index % per_mailbox == 0 else f"{mailbox}/Inbox/Folder {index % per_mailbox}")
    return tuple(entries)


def _graph_counts(stack: Stack) -> dict[str, int]:
    records = [r for r in stack.control("GET", "/_sim/requests")["requests"] if r["path"].startswith("/v1.0/")]
    writes = [r for r in records if r["method"] in ("POST", "PATCH", "DELETE") and "/subscriptions" in r["route"]]
    return {
        "graph_requests": len(records),
        "subscription_writes": len(writes),
        "throttled": sum(1 for r in records if r["status"] == 429),
    }


def _timed_pass(stack: Stack, run: Any) -> dict[str, Any]:
    stack.control("DELETE", "/_sim/requests")
    started = time.perf_counter()
    report = run()
    seconds = time.perf_counter() - started
    actions: dict[str, int] = {}
    for result in report.values():
        key = str(result).split(":")[0].split(",")[0]
        actions[key] = actions.get(key, 0) + 1
    return {"seconds": seconds, "actions": actions, **_graph_counts(stack)}


def bench_maintain(folders: int) -> dict[str, Any]:
    """The first pass (every subscription created), a steady pass (nothing due), how the renewals of the
    folders created together fall over the timer's passes, and the busiest of those passes, run for real."""
    from azure.storage.blob import BlobServiceClient

    from local.stack import maintain_at
    from shared.pipeline.layout import parse_graph_time
    from shared.sources.graph.state import FolderState
    from shared.sources.graph.subscriptions import renewal_due

    mailboxes = scale_mailboxes(folders)
    settings = {"RECONCILE_MINUTES": "0", "GRAPH_MAX_RETRY_AFTER_SECONDS": "30"}
    with Stack(StackConfig(mailboxes=mailboxes, app_settings=settings)) as stack:

        def through_host() -> dict[str, str]:
            answer = stack.run_function("maintain", timeout=1800)
            if answer.status_code != 200:
                raise SystemExit(f"maintain failed at {folders} folders; see .stack/devhost.log")
            found = BlobServiceClient.from_connection_string(stack.storage_connection_string)
            with found:
                blob = found.get_blob_client("mail-ingest-state", "maintain/last.json")
                return dict(json.loads(blob.download_blob().readall())["folders"])

        first = _timed_pass(stack, through_host)
        steady = _timed_pass(stack, through_host)
        service = BlobServiceClient.from_connection_string(stack.storage_connection_string)
        with service:
            container = service.get_container_client("mail-ingest-state")
            states = [
                FolderState.from_dict(json.loads(container.get_blob_client(b.name).download_blob().readall()))
                for b in container.list_blobs(name_starts_with="folders/")
            ]
        minutes = int(stack.env.get("SUBSCRIPTION_LIFETIME_MINUTES", "10080"))
        now = parse_graph_time(stack.control("GET", "/_sim/clock")["now"])
        dues = [
            (renewal_due(parse_graph_time(str(s.expiration)), minutes, s.folder_key) - now).total_seconds()
            for s in states
        ]
        per_pass: dict[int, int] = {}
        for due in dues:
            per_pass[int(due // TIMER_PASS) + 1] = per_pass.get(int(due // TIMER_PASS) + 1, 0) + 1
        busiest = max(per_pass, key=lambda slot: per_pass[slot])
        # The busiest pass for real: the simulator's clock and the app's moved to the pass before it, where
        # every earlier renewal is made (as the passes before would have), then one pass on.
        before = (busiest - 1) * TIMER_PASS
        stack.control("POST", "/_sim/clock", {"advanceSeconds": before})
        maintain_at(stack.env, before, timeout=1800)
        stack.control("POST", "/_sim/clock", {"advanceSeconds": TIMER_PASS})
        renewal = _timed_pass(stack, lambda: maintain_at(stack.env, before + TIMER_PASS, timeout=1800))
    return {
        "folders": folders,
        "mailboxes": len({m.split("/")[0] for m in mailboxes}),
        "first": first,
        "steady": steady,
        "renewal": renewal,
        "due_passes": len(per_pass),
        "due_max": per_pass[busiest],
        "due_first_hours": min(dues) / 3600,
        "due_last_hours": max(dues) / 3600,
    }


def print_maintain(rows: list[dict[str, Any]]) -> None:
    print("The maintain timer at scale (dev host and simulator; Graph allows 500 subscription writes per 20 s)")
    header = f"{'folders':>7} {'pass':<18} {'seconds':>8} {'Graph requests':>15} {'sub. writes':>12} {'429':>5}"
    print(f"  {header}  actions")
    for row in rows:
        for name in ("first", "steady", "renewal"):
            p = row[name]
            label = {"first": "first (create)", "steady": "steady (none due)", "renewal": "busiest renewal"}[name]
            print(f"  {row['folders']:>7} {label:<18} {p['seconds']:>8.1f} {p['graph_requests']:>15} "
                  f"{p['subscription_writes']:>12} {p['throttled']:>5}  {p['actions']}")  # fmt: skip
        print(f"  {'':>7} renewals of the folders created together fall due over {row['due_passes']} passes of 15 min "
              f"({row['due_first_hours']:.0f} to {row['due_last_hours']:.0f} h from now), at most {row['due_max']} "
              f"in one")  # fmt: skip


# -- throughput and latency ----------------------------------------------------------------------------
# Graph's bound per mailbox (graph_facts §9): 4 requests in flight and 10,000 requests per 10 minutes.
MAILBOX_REQUESTS_PER_S = 10_000 / 600
SMALL_MAIL = ("invoice.pdf", 40_000), ("delivery-note.pdf", 20_000)


def _manifests(service: Any) -> set[str]:
    """The message folders that have a manifest in the attachments container."""
    from azure.core.exceptions import ResourceNotFoundError

    container = service.get_container_client("mail-attachments")
    try:
        return {b.name.rsplit("/", 1)[0] for b in container.list_blobs() if b.name.endswith("/manifest.json")}
    except ResourceNotFoundError:  # the app makes the container with its first file
        return set()


def _deliver_small(stack: Stack, mailbox: str, index: int) -> Any:
    files = [generated_attachment(f"{index}-{name}", size, index * 2 + n, "application/pdf")
             for n, (name, size) in enumerate(SMALL_MAIL)]  # fmt: skip
    return deliver(stack, mailbox, "Inbox", f"backlog {index}", files)


def drained_after(service: Any, mails: int, started: float, label: str) -> float:
    """Seconds from `started` (time.time()) until `mails` manifests are there (seen every 250 ms; Last-Modified has
    whole seconds only); closes `service`. Gives up after 30 minutes."""
    deadline = time.monotonic() + 1800
    found: set[str] = set()
    while len(found) < mails and time.monotonic() < deadline:
        time.sleep(0.25)
        found = _manifests(service)
    seconds = time.time() - started
    service.close()
    if len(found) < mails:
        raise SystemExit(f"{label}: {len(found)} of {mails} mails after 30 minutes")
    return seconds


def bench_backlog(mails: int, mailboxes: int, hosts: int) -> dict[str, Any]:
    """`mails` small mails delivered while Graph holds their notifications (the webhook was down), then
    released at once: seconds until the last manifest, as mails/s and MB/s beside Graph's bound."""
    from azure.storage.blob import BlobServiceClient

    boxes = tuple(f"box{n:02d}@contoso.com" for n in range(mailboxes))
    with Stack(StackConfig(mailboxes=boxes)) as stack:
        extra = [stack.another_host(str(n)) for n in range(1, hosts)]
        try:
            if stack.run_function("maintain").status_code != 200:
                raise SystemExit("maintain failed; see .stack/devhost.log")
            stack.control("POST", "/_sim/delivery", {"paused": True})
            sent = [_deliver_small(stack, boxes[i % mailboxes], i) for i in range(mails)]
            size = sum(a["size"] for mail in sent for a in mail.attachments)
            stack.control("DELETE", "/_sim/requests")
            service = BlobServiceClient.from_connection_string(stack.storage_connection_string)
            started = time.time()
            stack.control("POST", "/_sim/delivery", {"paused": False})
            seconds = drained_after(service, mails, started, "backlog")
            counts = _graph_counts(stack)
        finally:
            for host in extra:
                host.stop()
    per_mail = counts["graph_requests"] / mails
    bound = MAILBOX_REQUESTS_PER_S * mailboxes / per_mail
    rate = mails / seconds
    return {
        "mails": mails, "mailboxes": mailboxes, "hosts": hosts, "seconds": seconds, "mails_per_s": rate,
        "mb_per_s": size / MB / seconds, "requests_per_mail": per_mail, "bound_mails_per_s": bound,
        "ratio": rate / bound,
    }  # fmt: skip


def bench_latency(rate: float, seconds: float) -> dict[str, Any]:
    """Mails delivered at a steady `rate` for `seconds`; each one's delivery to manifest (polled every 50 ms)."""
    with Stack(StackConfig(mailboxes=("steady@contoso.com",))) as stack:
        if stack.run_function("maintain").status_code != 200:
            raise SystemExit("maintain failed; see .stack/devhost.log")
        latencies = steady_latencies(stack, "steady@contoso.com", rate, seconds)
    return {"mails": len(latencies), "rate": rate, "p50": percentile(latencies, 50),
            "p99": percentile(latencies, 99), "max": max(latencies)}  # fmt: skip


def steady_latencies(stack: Stack, mailbox: str, rate: float, seconds: float) -> list[float]:
    """After one warm-up mail, mails at a steady `rate` for `seconds`: each one's delivery to manifest (seconds,
    polled every 50 ms)."""
    from local.mailcheck import BlobReader

    reader = BlobReader(stack)
    wait_for_manifests(reader, [_deliver_small(stack, mailbox, 0)], timeout=60)  # warm-up
    pending: dict[str, tuple[str, float]] = {}
    latencies: list[float] = []
    total = int(rate * seconds)
    started = time.monotonic()
    sent = 0
    while sent < total or pending:
        if sent < total and time.monotonic() >= started + sent / rate:
            mail = _deliver_small(stack, mailbox, sent + 1)
            pending[mail.message_id] = (mail.prefix, mail.delivered_at)
            sent += 1
            continue
        for message_id, (prefix, at) in list(pending.items()):
            if reader.manifest(prefix) is not None:
                latencies.append(time.monotonic() - at)
                del pending[message_id]
        if time.monotonic() > started + seconds + 300:
            raise SystemExit(f"steady rate: {len(pending)} mails without a manifest")
        time.sleep(0.05)
    reader.close()
    return latencies


def bench_large_file(size: int) -> dict[str, Any]:
    """One file of `size` bytes: the app's notification-to-blob beside a bare copy, an httpx stream of the
    simulator's `/$value` into `upload_blob` with the app's block size, in the same run."""
    import httpx
    from azure.storage.blob import BlobServiceClient

    from local.mailcheck import BlobReader
    from shared.pipeline.storage import BLOCK_SIZE

    with Stack(StackConfig(mailboxes=("large@contoso.com",))) as stack:
        if stack.run_function("maintain").status_code != 200:
            raise SystemExit("maintain failed; see .stack/devhost.log")
        reader = BlobReader(stack)
        wait_for_manifests(reader, [_deliver_small(stack, "large@contoso.com", 0)], timeout=60)  # warm-up
        mail = deliver(stack, "large@contoso.com", "Inbox", "large", [
            generated_attachment("large.pdf", size, 7, "application/pdf")])  # fmt: skip
        found = wait_for_manifests(reader, [mail], timeout=900)
        reader.close()
        if mail.message_id not in found:
            raise SystemExit("large file: no manifest; see .stack/devhost.log")
        app_seconds = found[mail.message_id][1]
        env = stack.env
        token = stack.graph_token()
        url = f"{env['GRAPH_API_URL']}/users/large@contoso.com/messages/{mail.message_id}/attachments/" \
              f"{mail.attachments[0]['id']}/$value"  # fmt: skip
        service = BlobServiceClient.from_connection_string(
            stack.storage_connection_string, max_block_size=BLOCK_SIZE, max_single_put_size=BLOCK_SIZE
        )
        blob = service.get_blob_client("bare-copy", "large.pdf")
        service.create_container("bare-copy")
        headers = {"Authorization": f"Bearer {token}", "Prefer": 'IdType="ImmutableId"'}
        started = time.monotonic()
        with (
            httpx.Client(verify=ssl.create_default_context(cafile=env["SSL_CERT_FILE"]), timeout=300) as client,
            client.stream("GET", url, headers=headers) as response,
        ):
            response.raise_for_status()
            blob.upload_blob(response.iter_bytes(BLOCK_SIZE), length=size, overwrite=True)
        bare_seconds = time.monotonic() - started
        service.close()
    return {"mb": size / MB, "app_seconds": app_seconds, "bare_seconds": bare_seconds,
            "ratio": app_seconds / bare_seconds}  # fmt: skip


def bench_webhook_cpu(calls: int, items: int) -> dict[str, Any]:
    """The app's own CPU per notification item: workers.notifications in process, as the Functions worker
    calls it, with the clientState key and the subscription ids already read (a warm instance) and its log
    lines formatted into a discarded stream; no dev host, no queue write (the host's output binding does it)."""
    import io
    import logging

    import azure.functions as func

    from shared import runtime, workers
    from shared.settings import get_settings
    from shared.sources.graph.clientstate import make_client_state
    from shared.sources.graph.known_subscriptions import KnownSubscriptions

    saved = {name: os.environ.get(name) for name in BENCH_ENV}
    os.environ.update(BENCH_ENV)
    get_settings.cache_clear()
    handler = logging.StreamHandler(io.StringIO())
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.INFO)
    try:
        settings = get_settings()
        folder = settings.mailboxes[0]
        key = b"bench-client-state-key"
        subscription = str(uuid.uuid4())

        async def load(folder_key: str) -> str | None:
            return subscription

        async def measure() -> float:
            rt = runtime.build_runtime(settings)
            rt._client_state_key = key
            rt.subscriptions = KnownSubscriptions(load)
            runtime._runtimes[asyncio.get_running_loop()] = rt
            item = {
                "subscriptionId": subscription, "subscriptionExpirationDateTime": "2026-11-29T08:00:00Z",
                "changeType": "created", "tenantId": settings.tenant_id,
                "clientState": make_client_state(key, folder.key),
            }  # fmt: skip
            bodies = [
                json.dumps({"value": [
                    {**item, "resource": f"Users/u/Messages/AAMk{c}-{i}=", "resourceData": {"id": f"AAMk{c}-{i}="}}
                    for i in range(items)]}).encode()
                for c in range(calls)
            ]  # fmt: skip

            class Out(func.Out[list[str]]):
                def set(self, val: list[str]) -> None:
                    self.value = val

                def get(self) -> list[str]:
                    return self.value

            def request(body: bytes) -> func.HttpRequest:
                return func.HttpRequest("POST", "http://h/api/notifications", body=body)

            for body in bodies[:50]:  # warm-up
                await workers.notifications(request(body), Out())
            started = time.process_time()
            for body in bodies:
                answer = await workers.notifications(request(body), Out())
                assert answer.status_code == 202
            cpu = time.process_time() - started
            await rt.aclose()
            return cpu

        cpu = asyncio.run(measure())
    finally:
        logging.getLogger().removeHandler(handler)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        get_settings.cache_clear()
    return {"calls": calls, "items": items, "us_per_item": cpu / (calls * items) * 1e6,
            "us_per_call": cpu / calls * 1e6}  # fmt: skip


def print_throughput(backlog: list[dict[str, Any]], latency: dict[str, Any], large: dict[str, Any],
                     cpu: list[dict[str, Any]]) -> None:  # fmt: skip
    print("Backlog drain: small mails (two PDFs, 60 kB) waiting, their notifications released at once")
    print(f"  {'mails':>6} {'mailboxes':>9} {'hosts':>5} {'seconds':>8} {'mails/s':>8} {'MB/s':>6} "
          f"{'requests/mail':>13} {'Graph bound':>11} {'ratio':>6}")  # fmt: skip
    for row in backlog:
        print(f"  {row['mails']:>6} {row['mailboxes']:>9} {row['hosts']:>5} {row['seconds']:>8.1f} "
              f"{row['mails_per_s']:>8.1f} {row['mb_per_s']:>6.2f} {row['requests_per_mail']:>13.2f} "
              f"{row['bound_mails_per_s']:>9.1f}/s {row['ratio']:>6.2f}")  # fmt: skip
    print(f"  (Graph's bound: {MAILBOX_REQUESTS_PER_S:.1f} requests/s per mailbox, 10,000 per 10 minutes, "
          "divided by the requests a mail costs)")  # fmt: skip
    print()
    print(f"Notification to blob at a steady {latency['rate']:g} mails/s ({latency['mails']} mails, "
          "polled every 50 ms)")  # fmt: skip
    p50, p99, top = (latency[k] * 1000 for k in ("p50", "p99", "max"))
    print(f"  p50 {p50:.0f} ms, p99 {p99:.0f} ms, max {top:.0f} ms")
    print()
    print(f"One {large['mb']:.0f} MB file: notification to blob {large['app_seconds']:.1f} s; bare copy "
          f"(httpx stream of /$value into upload_blob, same block size) {large['bare_seconds']:.1f} s; "
          f"ratio {large['ratio']:.2f}")  # fmt: skip
    print()
    print("Webhook CPU in process (workers.notifications, warm instance, log lines formatted)")
    for row in cpu:
        print(f"  {row['items']:>2} item(s) a call: {row['us_per_item']:.0f} µs CPU per item, "
              f"{row['us_per_call']:.0f} µs per call")  # fmt: skip


def run_throughput(args: argparse.Namespace) -> None:
    cpu = [bench_webhook_cpu(2000, 1), bench_webhook_cpu(500, 10)]
    backlog = [bench_backlog(args.backlog, boxes, hosts) for boxes in (1, 10) for hosts in (1, 2)]
    latency = bench_latency(5, 60)
    large = bench_large_file(100 * MB)
    print_throughput(backlog, latency, large, cpu)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--import-runs", type=int, default=7)
    parser.add_argument(
        "--only",
        choices=("import", "webhook", "ingest", "imap", "maintain", "throughput", "delivery", "headers", "duplicates"),
        help="run one part",
    )
    parser.add_argument("--backlog", type=int, default=1000, help="throughput and delivery: mails in the backlog")
    parser.add_argument("--folders", type=int, nargs="*", default=[1, 100, 1000], help="maintain: folder counts")
    args = parser.parse_args(argv)
    if args.only in (None, "duplicates"):
        from local.bench_duplicates import bench_duplicates, print_duplicates

        print_duplicates(bench_duplicates())
        print()
        if args.only:
            return 0
    if args.only in (None, "imap"):
        from local.bench_sources import bench_imap, print_imap

        print_imap(bench_imap())
        print()
        if args.only:
            return 0
    if args.only in (None, "delivery"):
        from local.bench_delivery import run as run_delivery

        run_delivery(args.backlog)
        print()
        if args.only:
            return 0
    if args.only in (None, "headers"):
        from local.bench_headers import bench_headers, print_headers

        print_headers(bench_headers())
        print()
        if args.only:
            return 0
    if args.only in (None, "throughput"):
        run_throughput(args)
        print()
        if args.only:
            return 0
    if args.only in (None, "maintain"):
        print_maintain([bench_maintain(n) for n in args.folders])
        print()
        if args.only:
            return 0
    if args.only in (None, "ingest"):
        rows = bench_ingest()
        print("Ingest through the dev host: peak RSS of the dev host process during each mail, Graph requests")
        print(f"  {'':26} {'peak RSS':>9} {'(before)':>9} {'requests':>9} {'seconds':>8}  sha256")
        for row in rows:
            print(f"  {row['label']:26} {row['peak_mib']:>6.0f}MiB {row['rss_before_mib']:>6.0f}MiB "
                  f"{row['graph_requests']:>9} {row['seconds']:>8.1f}  {'ok' if row['sha256_ok'] else 'MISMATCH'}"
                  + ("" if row["peak_reset"] else "  (peak not reset: cumulative)"))  # fmt: skip
        by = {row["label"]: row for row in rows}
        for label in ("one 100 MB file", "zip holding a 100 MB file", "signed, a 100 MB file"):
            extra = by[label]["peak_mib"] - by["one 1 MB file"]["peak_mib"]
            print(f"  {label} peak minus 1 MB file peak: {extra:.0f} MiB (target: within 64 MiB)")
        print()
        if args.only:
            return 0

    if args.only == "webhook":
        return bench_webhook_table(args)
    imp = bench_import(args.import_runs)
    print("Cold start: import of function_app (fresh interpreter)")
    print(f"  runs {imp['runs']}, median {imp['median_ms']:.0f} ms, max {imp['max_ms']:.0f} ms, "
          f"heavy SDKs loaded at import: {'yes' if imp['heavy_sdks_loaded'] else 'no'}")  # fmt: skip
    print()
    if args.only == "import":
        return 0
    return bench_webhook_table(args)


def bench_webhook_table(args: argparse.Namespace) -> int:
    print(f"Webhook acknowledgement through the dev host ({args.calls} notifications, "
          f"{args.concurrency} concurrent callers; each call enqueues before it answers)")  # fmt: skip
    print(f"  {'':34} {'p50':>8} {'p99':>8} {'max':>8} {'calls/s':>9}  statuses")
    for with_ingest in (False, True):
        for row in bench_webhook(args.calls, args.concurrency, with_ingest):
            print(f"  {row['label']:34} {row['p50_ms']:>6.1f}ms {row['p99_ms']:>6.1f}ms {row['max_ms']:>6.1f}ms "
                  f"{row['calls_per_s']:>9.0f}  {row['statuses']}", flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
