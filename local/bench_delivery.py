"""`make bench` part `delivery`: Graph's two delivery channels side by side (GRAPH_DELIVERY=webhook, eventgrid).

For each: notification-to-blob latency (p50/p99) of mails at a steady rate, and a backlog of small mails drained.
The backlog builds up as each channel builds one in Azure: with the webhook, Graph holds the notifications (the
webhook was unreachable) and releases them at once; with Event Grid, the events wait in the app's queue while
the app is stopped (Event Grid delivers to the queue, not to the app), and the app starts with them there.
"""

from __future__ import annotations

import time
from typing import Any

from local.bench import _deliver_small, drained_after, percentile, steady_latencies
from local.stack import Stack, StackConfig

MAILBOX = "steady@contoso.com"


def _config(mode: str) -> StackConfig:
    return StackConfig(mailboxes=(MAILBOX,), app_settings={"GRAPH_DELIVERY": mode})


def _started(stack: Stack, mode: str) -> Stack:
    if stack.run_function("maintain").status_code != 200:
        raise SystemExit("maintain failed; see .stack/devhost.log")
    if mode == "eventgrid":
        stack.connect_eventgrid()
    return stack


def latency(mode: str, rate: float, seconds: float) -> dict[str, Any]:
    """Mails at a steady `rate` for `seconds`; each one's delivery to manifest."""
    with Stack(_config(mode)) as stack:
        latencies = steady_latencies(_started(stack, mode), MAILBOX, rate, seconds)
    return {"mode": mode, "mails": len(latencies), "p50": percentile(latencies, 50), "p99": percentile(latencies, 99)}


def backlog(mode: str, mails: int) -> dict[str, Any]:
    """`mails` held back (see the module's docstring), then released: seconds until the last manifest."""
    from azure.storage.blob import BlobServiceClient

    with Stack(_config(mode)) as stack:
        _started(stack, mode)
        assert stack.devhost is not None
        if mode == "webhook":
            stack.control("POST", "/_sim/delivery", {"paused": True})
        else:
            stack.devhost.stop()
        for index in range(mails):
            _deliver_small(stack, MAILBOX, index)
        if mode == "eventgrid":
            # Every event in the queue before the app comes back.
            while stack.control("GET", "/_sim/eventgrid/records")["pending"]:
                time.sleep(0.2)
        service = BlobServiceClient.from_connection_string(stack.storage_connection_string)
        if mode == "webhook":
            started = time.time()
            stack.control("POST", "/_sim/delivery", {"paused": False})
        else:
            stack.devhost.start()
            started = time.time()  # from when the app is up again, as the webhook's clock starts with it up
        seconds = drained_after(service, mails, started, f"{mode} backlog")
    return {"mode": mode, "mails": mails, "seconds": seconds, "mails_per_s": mails / seconds}


def run(mails: int, rate: float = 5, seconds: float = 30) -> None:
    rows = [(latency(mode, rate, seconds), backlog(mode, mails)) for mode in ("webhook", "eventgrid")]
    print(f"Graph delivery: webhook beside Event Grid (steady {rate:g} mails/s for {seconds:g} s; backlog {mails})")
    print(f"  {'':10} {'p50':>8} {'p99':>8} {'backlog s':>10} {'mails/s':>8}")
    for steady, drained in rows:
        print(
            f"  {steady['mode']:10} {steady['p50'] * 1000:>6.0f}ms {steady['p99'] * 1000:>6.0f}ms "
            f"{drained['seconds']:>10.1f} {drained['mails_per_s']:>8.1f}"
        )
