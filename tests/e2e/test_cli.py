"""The operator CLI as a subprocess against the running stack, and GET /api/health through the dev host."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict
from datetime import timedelta
from typing import Any

import httpx
import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob import BlobServiceClient
from azure.storage.queue import QueueClient, TextBase64DecodePolicy

from local.mailcheck import (
    BlobReader,
    check_files,
    deliver,
    file_attachment,
    generated_attachment,
    subscriptions,
    wait_for_manifests,
)
from local.stack import ROOT, Stack, free_port
from shared.pipeline.layout import message_key, parse_graph_time
from shared.settings import MailboxFolder
from shared.sources.graph.state import FolderState

from .conftest import MAILBOXES, wait_until

PDF = "application/pdf"
INBOX = MailboxFolder("invoices@contoso.com", "Inbox")
SCANS = MailboxFolder("scans@contoso.com", "Inbox/Delivery notes")
AP = MailboxFolder("ap@contoso.com", "Inbox")


def cli(stack: Stack, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m shared.cli ...` with the app's settings, run outside the project folder so that no
    local.settings.json is picked up."""
    run_env = {**(env or stack.env), "PYTHONPATH": str(ROOT), "PYTHONIOENCODING": "utf-8"}
    return subprocess.run(
        [sys.executable, "-m", "shared.cli", *args],
        cwd=stack.data_dir,
        env=run_env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def status(stack: Stack) -> dict[str, Any]:
    done = cli(stack, "status", "--json")
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def of(report: dict[str, Any], folder: MailboxFolder) -> dict[str, Any]:
    (found,) = [f for f in report["folders"] if f["folder_key"] == folder.key]
    return dict(found)


def health(stack: Stack) -> httpx.Response:
    # A function-level route: the host key the stack gave the dev host (the app's WEBHOOK_FUNCTION_KEY).
    key = stack.env["WEBHOOK_FUNCTION_KEY"]
    return httpx.get(f"{stack.app_url}/api/health", headers={"x-functions-key": key}, timeout=60)


def test_status_and_health_show_the_last_notification_and_ingest(stack: Stack, reader: BlobReader):
    mail = deliver(stack, SCANS.mailbox, SCANS.folder, "status", [file_attachment("note.pdf", b"%PDF note", PDF)])
    wait_for_manifests(reader, [mail], timeout=60)
    key = message_key(mail.message_id)
    # The activity record is written right after the manifest.
    folder = wait_until(
        lambda: (f := of(status(stack), SCANS))["ingest"]["last_message_key"] == key and f, 30, "the activity record"
    )
    received = parse_graph_time(mail.received)
    notified = parse_graph_time(folder["notification"]["last_at"])
    ingested = parse_graph_time(folder["ingest"]["last_at"])
    assert notified <= ingested and abs(ingested - received) < timedelta(seconds=30)
    assert folder["ingest"]["last_files"] == 1 and 0 <= folder["ingest"]["lag_seconds"] < 30
    assert folder["subscription"]["id"] and folder["subscription"]["expires_in_seconds"] > 0
    assert folder["resync"]["delta_link"] is True and folder["configured"] is True
    report = status(stack)
    assert len(report["folders"]) == len(MAILBOXES) and "hmac-sha256" in report["client_state"]
    assert report["queues"]["mail-changes-poison"] >= 0
    text = cli(stack, "status")
    assert text.returncode == 0 and f"{SCANS}" in text.stdout and key in text.stdout

    assert httpx.get(f"{stack.app_url}/api/health", timeout=60).status_code == 401  # no key, no status
    answer = health(stack)
    body = answer.json()
    assert answer.status_code == (200 if body["healthy"] else 503)
    assert of(body, SCANS)["ingest"]["last_message_key"] == key
    # A healthy report names no folder; an unhealthy one says why, per folder.
    for entry in body["folders"]:
        assert entry["healthy"] == (not entry["problems"])
    assert body["unhealthy"] == [f"{f['mailbox']}/{f['folder']}" for f in body["folders"] if not f["healthy"]]


def test_check_passes_on_the_healthy_stack(stack: Stack):
    done = cli(stack, "check")
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert not [line for line in lines if line.startswith("✗")]
    names = " | ".join(lines)
    for expected in ("token (client credentials)", f"mailbox folder {SCANS}", "webhook (notification URL)"):
        assert expected in names
    assert "webhook (lifecycle URL)" in names and "blob write, read, delete" in names and "Key Vault" in names


def test_check_fails_with_a_hint_per_failure(stack: Stack):
    env = {
        **stack.env,
        "WEBHOOK_BASE_URL": f"http://127.0.0.1:{free_port()}",  # nothing listens there
        "MAILBOXES": ",".join([*MAILBOXES, f"{INBOX.mailbox}/No such folder"]),
    }
    done = cli(stack, "check", env=env)
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    failed = [i for i, line in enumerate(lines) if line.startswith("✗")]
    assert [lines[i].split(":")[0] for i in failed] == [
        f"✗ mailbox folder {INBOX.mailbox}/No such folder",
        "✗ webhook (notification URL)",
        "✗ webhook (lifecycle URL)",
    ]
    for i in failed:
        assert lines[i + 1].startswith("    fix: ")
    assert "MAILBOXES" in lines[failed[0] + 1] and "WEBHOOK_BASE_URL" in lines[failed[1] + 1]
    assert any(line.startswith("✓ token") for line in lines) and "Traceback" not in done.stderr


@pytest.mark.usefixtures("notifications_held")
def test_resync_since_enqueues_mail_no_notification_announced(stack: Stack, reader: BlobReader):
    mail = deliver(stack, INBOX.mailbox, "Inbox", "held back", [file_attachment("held.pdf", b"%PDF held", PDF)])
    since = (parse_graph_time(mail.received) - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%S")
    done = cli(stack, "resync", INBOX.mailbox, "--since", since)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"{INBOX}: ") and f"received since {since}Z" in done.stdout
    assert int(done.stdout.split(": ")[1].split()[0]) >= 1
    manifest, seconds = wait_for_manifests(reader, [mail], timeout=60)[mail.message_id]
    assert all(c.ok for c in check_files(reader, mail, manifest, seconds))
    unknown = cli(stack, "resync", "nobody@contoso.com")
    assert unknown.returncode == 2 and unknown.stderr.startswith("error: mailbox nobody@contoso.com is not in")
    assert len(unknown.stderr.splitlines()) == 1


def test_replay_poison_brings_a_parked_mail_back(stack: Stack, reader: BlobReader):
    poison = QueueClient.from_connection_string(
        stack.storage_connection_string, "mail-changes-poison", message_decode_policy=TextBase64DecodePolicy()
    )
    stack.control("POST", "/_sim/faults", {"method": "GET", "path": r"/\$value$", "status": 500, "count": 1000})
    try:
        mail = deliver(stack, INBOX.mailbox, "Inbox", "parked", [generated_attachment("big.pdf", 5 << 20, 41, PDF)])

        def parked() -> bool:
            try:
                return any(mail.message_id in m.content for m in poison.peek_messages(max_messages=32))
            except ResourceNotFoundError:
                return False  # nothing parked yet

        wait_until(parked, 90, "the poison message")
    finally:
        stack.control("DELETE", "/_sim/faults")
    folder = of(status(stack), INBOX)
    assert folder["ingest"]["last_error"].startswith("poisoned after 5 deliveries: ")
    assert not folder["healthy"] and folder["problems"][-1].startswith("ingest failed at ")

    key = message_key(mail.message_id)
    dry = cli(stack, "replay-poison", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert f"{INBOX} message {key}" in dry.stdout and "big.pdf" in dry.stdout and "dry run" in dry.stdout
    assert parked()
    done = cli(stack, "replay-poison")
    assert done.returncode == 0, done.stderr
    assert f"replayed: {INBOX} message {key}" in done.stdout
    assert not parked()
    manifest = wait_until(
        lambda: (m := reader.manifest(mail.prefix)) and m["status"] == "complete" and m, 60, "a complete manifest"
    )
    assert all(c.ok for c in check_files(reader, mail, manifest, 0))
    # A later successful ingest ends the folder's error.
    assert wait_until(lambda: of(status(stack), INBOX)["healthy"], 30, "the folder to be healthy again")


def test_unsubscribe_deletes_the_subscription_and_the_record(stack: Stack):
    state = BlobServiceClient.from_connection_string(stack.storage_connection_string).get_container_client(
        "mail-ingest-state"
    )
    record = state.get_blob_client(f"folders/{AP.key}.json")
    (sub,) = [s for s in subscriptions(stack) if s["resource"].lower().startswith(f"users/{AP.mailbox}/")]
    try:
        done = cli(stack, "unsubscribe", AP.mailbox)
        assert done.returncode == 0, done.stderr
        assert f"{AP}: subscription {sub['id']} deleted, record removed" in done.stdout
        assert "maintain timer creates subscriptions again" in done.stdout
        assert sub["id"] not in {s["id"] for s in subscriptions(stack)} and not record.exists()
        answer = health(stack)
        assert answer.status_code == 503
        assert of(answer.json(), AP)["problems"] == ["no subscription (the maintain timer creates it)"]
        unknown = cli(stack, "unsubscribe", "nobody@contoso.com")
        assert unknown.returncode == 2 and "not in MAILBOXES" in unknown.stderr
    finally:
        # The shared stack as the other tests expect it: every folder subscribed again.
        assert stack.run_function("maintain").status_code == 200
    assert record.exists() and len(subscriptions(stack)) == len(MAILBOXES)
    assert of(status(stack), AP)["subscription"]["id"] not in (None, sub["id"])


def test_without_settings_the_cli_says_which_is_missing(stack: Stack):
    env = {k: v for k, v in stack.env.items() if k != "KEY_VAULT_URL"}
    done = cli(stack, "status", env=env)
    assert done.returncode == 1 and done.stderr == "error: setting KEY_VAULT_URL: required but not set\n"


def test_a_folder_no_longer_configured_is_shown_and_can_be_unsubscribed(stack: Stack):
    gone = MailboxFolder(INBOX.mailbox, "Archive")
    record = FolderState(gone.key, gone.mailbox, gone.folder, subscription_id="00000000-0000-0000-0000-000000000000")
    state = BlobServiceClient.from_connection_string(stack.storage_connection_string).get_container_client(
        "mail-ingest-state"
    )
    state.upload_blob(f"folders/{gone.key}.json", json.dumps(asdict(record)))
    leftover = of(status(stack), gone)
    assert leftover["configured"] is False and leftover["healthy"] and "MAILBOXES" in leftover["note"]
    assert f"{gone}  not configured" in cli(stack, "status").stdout
    done = cli(stack, "unsubscribe", f"{gone.mailbox}/archive")
    assert done.returncode == 0, done.stderr
    assert f"{gone}: subscription {record.subscription_id} deleted, record removed" in done.stdout
    assert not state.get_blob_client(f"folders/{gone.key}.json").exists()
    assert gone.key not in {f["folder_key"] for f in status(stack)["folders"]}
