"""A deployment with only an IMAP account in MAILBOXES and no Graph setting at all (no GRAPH_*, no
WEBHOOK_BASE_URL), end to end through the dev host: mail comes in, the maintain timer is idle, `check` and
`/api/health` show no Graph error, and the webhooks refuse cleanly with nothing queued."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from azure.storage.queue import QueueClient

from local.dovecot import Dovecot
from local.mailcheck import BlobReader
from local.stack import Stack, StackConfig
from shared.pipeline.poison import CHANGES_QUEUE, LIFECYCLE_QUEUE
from shared.settings import parse_account
from tests.e2e.conftest import trusted_dovecot, wait_until
from tests.e2e.test_cli import cli, health
from tests.e2e.test_mail_accounts import (
    PDF,
    checked,
    cursor_of,
    mail_with_attached_mail,
    manifests,
    sha,
    store_secret,
)

USER, PASSWORD, SECRET = "ap@example.org", "only-Passw0rd", "imap-only-password"


@pytest.fixture(scope="module")
def accounts_only(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, Dovecot, str]]:
    directory = tmp_path_factory.mktemp("accounts-only")
    with trusted_dovecot(directory, USER, PASSWORD) as server:
        url = f"imaps://{quote(USER, safe='')}@127.0.0.1:{server.ports['imaps']}?secret={SECRET}"
        config = StackConfig(
            mailboxes=(url,),
            data_dir=directory / "stack",
            graph=False,
            app_settings={
                "MAIL_POLL_SCHEDULE": "*/2 * * * * *",
                "AzureFunctionsJobHost__extensions__queues__maxPollingInterval": "00:00:00.500",
            },
        )
        with Stack(config) as stack:
            assert not [name for name in stack.env if name.startswith("GRAPH_") or name == "WEBHOOK_BASE_URL"]
            store_secret(stack, SECRET, PASSWORD)
            yield stack, server, url


def queue_length(stack: Stack, name: str) -> int:
    with QueueClient.from_connection_string(stack.storage_connection_string, name) as queue:
        try:
            return int(queue.get_queue_properties().approximate_message_count or 0)
        except Exception:  # never made: nothing was ever queued
            return 0


def test_mail_comes_in_and_graph_stays_quiet(accounts_only: tuple[Stack, Dovecot, str]):
    stack, server, url = accounts_only
    account = parse_account(url)
    # The maintain timer's pass: idle, recorded.
    assert stack.run_function("maintain").status_code == 200
    # The first poll starts from its own time: mail is delivered once it has run.
    wait_until(lambda: (cursor_of(stack, url) or {}).get("last_poll_at"), 60, "a first poll")
    server.deliver(USER, mail_with_attached_mail("without Graph"))
    reader = BlobReader(stack)
    try:
        (manifest,) = wait_until(lambda: manifests(reader, f"{USER}/"), 60, "the IMAP mail's manifest")
        assert manifest["status"] == "complete" and checked(reader, manifest)["invoice.pdf"] == sha(PDF)
    finally:
        reader.close()
    report = health(stack)
    assert report.status_code == 200, report.text
    body = report.json()
    assert body["healthy"] and body["folders"] == [] and body["maintain"]["idle"].startswith("no Microsoft 365")
    assert [a["account"] for a in body["accounts"]] == [str(account)]
    status = cli(stack, "status")
    assert status.returncode == 0 and "idle: no Microsoft 365 mailbox in MAILBOXES" in status.stdout
    check = cli(stack, "check")
    assert check.returncode == 0, check.stdout + check.stderr
    assert "Microsoft Graph: skipped: no Microsoft 365 mailbox in MAILBOXES" in check.stdout
    assert f"account {account}: signed in" in check.stdout and "webhook (" not in check.stdout
    maintain = cli(stack, "maintain")
    assert maintain.returncode == 0 and "nothing for Graph to maintain" in maintain.stdout


@pytest.mark.parametrize(("route", "queue"), [("notifications", CHANGES_QUEUE), ("lifecycle", LIFECYCLE_QUEUE)])
def test_the_webhooks_refuse_cleanly_and_queue_nothing(accounts_only: tuple[Stack, Dovecot, str], route, queue):
    stack, _, _ = accounts_only
    url = stack.webhook_url(route)
    handshake = httpx.post(f"{url}&validationToken=Validation%3A%20token", timeout=30)
    item = {"subscriptionId": "s", "tenantId": "t", "changeType": "created", "clientState": "x"}
    call = httpx.post(url, json={"value": [item]}, timeout=30)
    for answer in (handshake, call):
        assert answer.status_code == 403 and "no Microsoft 365 mailbox in MAILBOXES" in answer.text
    assert queue_length(stack, queue) == 0


def test_no_graph_setting_is_in_the_apps_environment(accounts_only: tuple[Stack, Dovecot, str]):
    stack, _, _ = accounts_only
    assert stack.devhost is not None
    environ = Path(f"/proc/{stack.devhost.pid}/environ").read_bytes().split(b"\0")
    assert not [v for v in environ if v.startswith((b"GRAPH_", b"WEBHOOK_BASE_URL="))]
