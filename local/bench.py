"""`make bench`: figures for the README. Prints tables; asserts nothing about time.

1. Cold start of the handshake path: the import time of `function_app` in a fresh interpreter
   (what a cold instance pays before it can answer Graph's validation request).
2. Webhook acknowledgement latency through the dev host: a burst of notifications, each a valid
   change for a configured folder, from concurrent callers; each call enqueues before it answers.
3. Ingest: the dev host's peak memory (RSS high-water mark, reset before each mail) while it ingests
   a mail with one 1 MB file and one with a 100 MB file, and the Graph requests each mail cost, with
   a typical mail (two small PDFs) beside them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from typing import Any

import aiohttp

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
        ]  # fmt: skip
        # Warm up: the first mail pays for the token, the clientState key and the clients.
        warm = deliver(stack, "bench@contoso.com", "Inbox", "warm-up", cases[0][1])
        wait_for_manifests(reader, [warm], timeout=120)
        for label, attachments in cases:
            if "no contentBytes" in label:
                stack.control("POST", "/_sim/options", {"contentBytesLimit": 4 * MB, "contentBytesOverLimit": "omit"})
            time.sleep(1)
            reset = _reset_peak(pid)
            before = _status_kib(pid, "VmRSS")
            mail = deliver(stack, "bench@contoso.com", "Inbox", label, attachments)
            found = wait_for_manifests(reader, [mail], timeout=600)
            if mail.message_id not in found:
                raise SystemExit(f"{label}: no manifest; see .stack/devhost.log")
            manifest, seconds = found[mail.message_id]
            ok = all(c.ok for c in check_files(reader, mail, manifest, seconds))
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
    from shared.layout import parse_graph_time
    from shared.state import FolderState
    from shared.subscriptions import renewal_due

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--import-runs", type=int, default=7)
    parser.add_argument("--only", choices=("import", "webhook", "ingest", "maintain"), help="run one part")
    parser.add_argument("--folders", type=int, nargs="*", default=[1, 100, 1000], help="maintain: folder counts")
    args = parser.parse_args(argv)
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
        extra = by["one 100 MB file"]["peak_mib"] - by["one 1 MB file"]["peak_mib"]
        print(f"  100 MB file peak minus 1 MB file peak: {extra:.0f} MiB (target: within 64 MiB)")
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
