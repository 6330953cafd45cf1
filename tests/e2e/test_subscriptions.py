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
from shared.sources.graph.state import FolderState

from .conftest import MAILBOXES

# One run of the timer's work in its own process: a second instance of the app.
MAINTAIN_ONCE = "import asyncio, json; from shared.workers import maintain; print(json.dumps(asyncio.run(maintain())))"
# The same, for a race: it loads the app, takes a token and reads storage (the slow first steps), says so, and
# starts when told, so two instances race even on a busy machine, where one would otherwise finish first.
RACING_MAINTAIN = """
import asyncio, json, sys
from shared.runtime import get_runtime
from shared.workers import maintain

async def main():
    rt = get_runtime()
    await rt.tokens.token(None)
    await rt.state.read_json("warm-up.json")
    print("ready", flush=True)
    await asyncio.to_thread(sys.stdin.readline)
    print(json.dumps(await maintain()))

asyncio.run(main())
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
    instances = [
        subprocess.Popen(
            [sys.executable, "-c", RACING_MAINTAIN],
            cwd=ROOT,
            env=stack.env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    for p in instances:
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    for p in instances:  # both told before either is waited for
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
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
