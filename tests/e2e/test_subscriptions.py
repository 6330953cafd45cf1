"""Subscriptions kept by the timer: two instances racing create one subscription per folder."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import asdict
from datetime import UTC, datetime, timedelta

from azure.storage.blob import BlobServiceClient

from local.mailcheck import subscriptions
from local.stack import ROOT, Stack
from shared.settings import MailboxFolder
from shared.state import FolderState

from .conftest import MAILBOXES

# One run of the timer's work in its own process: a second instance of the app. It imports what the pass
# uses, then waits for the wall-clock time in argv[1] (if given), so that two instances start it together even when
# one process starts later on a busy machine.
MAINTAIN_ONCE = """
import asyncio, json, sys, time
import azure.identity.aio, azure.storage.blob.aio, azure.storage.queue.aio, httpx, msal
from shared import maintain as _, runtime as _r, subscriptions as _s
from shared.workers import maintain
time.sleep(max(0.0, float(sys.argv[1]) - time.time()) if len(sys.argv) > 1 else 0.0)
print(json.dumps(asyncio.run(maintain())))
"""

SCANS = MailboxFolder("scans@contoso.com", "Inbox/Delivery notes")


def test_two_timer_instances_racing_create_one_subscription(stack: Stack):
    # The folder starts over: no state record, no subscription at Graph.
    state = BlobServiceClient.from_connection_string(stack.storage_connection_string).get_container_client(
        "mail-ingest-state"
    )
    state.delete_blob(f"folders/{SCANS.key}.json")
    for sub in subscriptions(stack):
        if sub["resource"].lower().startswith(f"users/{SCANS.mailbox}/"):
            stack.graph("DELETE", f"subscriptions/{sub['id']}")
    stack.control("DELETE", "/_sim/requests")
    start = str(time.time() + 8)
    instances = [
        subprocess.Popen([sys.executable, "-c", MAINTAIN_ONCE, start], cwd=ROOT, env=stack.env, stdout=subprocess.PIPE)
        for _ in range(2)
    ]
    reports = [json.loads(p.communicate(timeout=120)[0]) for p in instances]
    assert sorted(r[str(SCANS)] for r in reports) == ["created", "left to another instance"]
    mine = [s for s in subscriptions(stack) if s["resource"].lower().startswith(f"users/{SCANS.mailbox}/")]
    assert len(mine) == 1 and len(subscriptions(stack)) == len(MAILBOXES)
    log = stack.control("GET", "/_sim/requests")["requests"]
    assert len([r for r in log if r["method"] == "POST" and r["route"].endswith("/subscriptions")]) == 1
    record = state.get_blob_client(f"folders/{SCANS.key}.json").download_blob().readall()
    assert mine[0]["id"].encode() in record and b'"delta_link": "https://' in record


def test_a_folder_removed_from_mailboxes_is_unsubscribed(stack: Stack):
    # A subscription the app made for a folder an earlier MAILBOXES listed, and its state record.
    gone = MailboxFolder("invoices@contoso.com", "Archive")
    expires = (datetime.now(UTC) + timedelta(days=2)).isoformat().replace("+00:00", "Z")
    sub = stack.graph("POST", "subscriptions", {
        "changeType": "created",
        "notificationUrl": stack.webhook_url("notifications"),
        "resource": "users/invoices@contoso.com/mailFolders/archive/messages",
        "expirationDateTime": expires,
        "clientState": "an earlier deployment's",
    })  # fmt: skip
    record = FolderState(gone.key, gone.mailbox, gone.folder, subscription_id=sub["id"])
    state = BlobServiceClient.from_connection_string(stack.storage_connection_string).get_container_client(
        "mail-ingest-state"
    )
    state.upload_blob(f"folders/{gone.key}.json", json.dumps(asdict(record)))
    answer = stack.run_function("maintain")
    assert answer.status_code == 200
    assert sub["id"] not in {s["id"] for s in subscriptions(stack)}
    assert not state.get_blob_client(f"folders/{gone.key}.json").exists()
    assert len(subscriptions(stack)) == len(MAILBOXES)


def test_an_unreachable_mailbox_is_reported_and_retried_without_stopping_the_others(stack: Stack):
    ghost = MailboxFolder("ghost@contoso.com", "Inbox")  # no such mailbox, yet
    lost = MailboxFolder("invoices@contoso.com", "No such folder")
    env = {**stack.env, "MAILBOXES": ",".join([*MAILBOXES, str(ghost), str(lost)])}
    run = subprocess.run([sys.executable, "-c", MAINTAIN_ONCE], cwd=ROOT, env=env, capture_output=True, text=True)
    assert run.returncode != 0  # the run fails, so the failure shows in the host's logs and alerts ...
    assert f"2 of {len(MAILBOXES) + 2} mailbox folders failed" in run.stderr
    assert str(ghost) in run.stderr and str(lost) in run.stderr
    state = BlobServiceClient.from_connection_string(stack.storage_connection_string).get_container_client(
        "mail-ingest-state"
    )

    def record(folder: MailboxFolder) -> FolderState:
        blob = state.get_blob_client(f"folders/{folder.key}.json")
        return FolderState.from_dict(json.loads(blob.download_blob().readall()))

    # ... after every other folder had its turn: they are subscribed as before.
    assert len(subscriptions(stack)) == len(MAILBOXES)
    assert "404" in (record(ghost).last_error or "") and "404" in (record(lost).last_error or "")
    # The next run tries again: once the mailbox exists, it is subscribed.
    stack.control("POST", "/_sim/mailboxes", {"address": ghost.mailbox, "folders": []})
    env["MAILBOXES"] = ",".join([*MAILBOXES, str(ghost)])
    report = json.loads(
        subprocess.run([sys.executable, "-c", MAINTAIN_ONCE], cwd=ROOT, env=env, capture_output=True, check=True).stdout
    )
    assert report[str(ghost)] == "created" and record(ghost).last_error is None
    # Back to the stack's own MAILBOXES: the extra folders are unsubscribed again.
    assert stack.run_function("maintain").status_code == 200
    assert len(subscriptions(stack)) == len(MAILBOXES)
