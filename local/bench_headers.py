"""`make bench`, sender authentication: what selecting `internetMessageHeaders` adds to the one Graph request that
reads a mail (`$select=...,internetMessageHeaders&$expand=attachments`, as `sources/graph/ingest.py` asks).

Both variants of the request are sent alternately to the simulator over HTTPS, for a mail with a 60 kB PDF:
requests per mail (one either way: the headers ride on the request already made), the response's bytes, and
its latency. Twice: with the simulator's header block (Exchange's trace and the mail's own fields, 14 fields),
and with one the size of a real inbound Exchange Online mail's (ARC and DKIM signatures, X-MS-Exchange-* and
X-Forefront fields: about 40 fields, 10 kB), whose bytes, not whose contents, matter here.
"""

from __future__ import annotations

import ssl
import statistics
import time
from typing import Any

from local.mailcheck import deliver, generated_attachment
from local.stack import Stack, StackConfig
from shared.sources.graph.ingest import MESSAGE_SELECT

MAILBOX = "headers@contoso.com"
HEADERS = ",internetMessageHeaders"


def _exchange_sized() -> list[dict[str, str]]:
    """Fields as many and as long as a real inbound Exchange Online mail carries beyond the simulator's."""
    signed = "a=rsa-sha256; c=relaxed/relaxed; d=microsoft.com; b="
    fields = [
        {"name": "DKIM-Signature", "value": f"v=1; {signed}{'b' * 344}"},
        {"name": "ARC-Seal", "value": f"i=1; cv=none; {signed}{'s' * 344}"},
        {"name": "ARC-Message-Signature", "value": f"i=1; {signed}{'m' * 700}"},
        {"name": "ARC-Authentication-Results", "value": "i=1; mx.microsoft.com 1; spf=pass; dmarc=pass; dkim=pass"},
    ]
    fields += [{"name": f"X-MS-Exchange-Field-{i}", "value": "x" * 200} for i in range(34)]
    return fields


def _measure(stack: Stack, message_id: str, rounds: int) -> dict[str, Any]:
    import httpx

    env = stack.env
    url = f"{env['GRAPH_API_URL']}/users/{MAILBOX}/messages/{message_id}"
    auth = {"Authorization": f"Bearer {stack.graph_token()}", "Prefer": 'IdType="ImmutableId"'}
    base = MESSAGE_SELECT.replace(HEADERS, "")
    seen: dict[str, dict[str, list[float]]] = {"without": {"s": [], "b": []}, "with": {"s": [], "b": []}}
    verify = ssl.create_default_context(cafile=env["SSL_CERT_FILE"])
    with httpx.Client(verify=verify, timeout=60) as client:
        for _ in range(rounds):
            for label, select in (("without", base), ("with", base + HEADERS)):
                started = time.perf_counter()
                response = client.get(url, headers=auth, params={"$select": select, "$expand": "attachments"})
                seconds = time.perf_counter() - started
                response.raise_for_status()
                seen[label]["s"].append(seconds)
                seen[label]["b"].append(len(response.content))
    out: dict[str, Any] = {}
    for label, values in seen.items():
        ordered = sorted(values["s"])
        out[label] = {
            "bytes": statistics.median(values["b"]),
            "p50_ms": statistics.median(ordered) * 1000,
            "p90_ms": ordered[int(len(ordered) * 0.9) - 1] * 1000,
        }
    return out


def bench_headers(rounds: int = 200) -> list[dict[str, Any]]:
    rows = []
    with Stack(StackConfig(mailboxes=(MAILBOX,), devhost=False)) as stack:
        for label, extra in (
            ("simulator's headers (14 fields)", []),
            ("Exchange-sized (~40 fields)", _exchange_sized()),
        ):
            pdf = generated_attachment("scan.pdf", 60_000, 3, "application/pdf")
            mail = deliver(stack, MAILBOX, "Inbox", "headers", [pdf], headers=extra)
            rows.append({"label": label, **_measure(stack, mail.message_id, rounds)})
    return rows


def print_headers(rows: list[dict[str, Any]]) -> None:
    print(
        "Sender authentication: internetMessageHeaders selected in the request that reads a mail (1 request either way)"
    )
    print(f"  {'':32} {'bytes':>9} {'added':>8} {'p50':>8} {'p90':>8} {'p50 added':>10}")
    for row in rows:
        without, with_ = row["without"], row["with"]
        added = with_["p50_ms"] - without["p50_ms"]
        print(f"  {row['label']:32} {with_['bytes']:>9.0f} {with_['bytes'] - without['bytes']:>+8.0f} "
              f"{with_['p50_ms']:>6.1f}ms {with_['p90_ms']:>6.1f}ms {added:>+8.1f}ms")  # fmt: skip
