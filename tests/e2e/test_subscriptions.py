"""Subscriptions kept by the timer: two instances racing create one subscription per folder."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict
from datetime import UTC, datetime, timedelta

from azure.storage.blob import BlobServiceClient

from local.mailcheck import subscriptions
from local.stack import ROOT, Stack
from shared.settings import MailboxFolder
from shared.state import FolderState

from .conftest import MAILBOXES

# One run of the timer's work in its own process: a second instance of the app.
MAINTAIN_ONCE = "import asyncio, json; from shared.workers import maintain; print(json.dumps(asyncio.run(maintain())))"

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
    instances = [
        subprocess.Popen([sys.executable, "-c", MAINTAIN_ONCE], cwd=ROOT, env=stack.env, stdout=subprocess.PIPE)
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
