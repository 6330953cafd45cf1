"""An IMAP account in MAILBOXES, end to end through the dev host: the poll timer fans out, the poll
worker reads the password from Key Vault, and each new mail in Dovecot becomes one `mail-fetch` request."""

from __future__ import annotations

import asyncio
import base64
import json
import os
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
import trustme
from azure.storage.queue import QueueClient

from local.dovecot import Dovecot
from local.stack import Stack, StackConfig, write_ca_bundle
from shared.poison import FETCH_QUEUE
from shared.settings import parse_account
from shared.sources.cursor import CursorStore
from tests.e2e.conftest import wait_until
from tests.e2e.test_cli import cli, health
from tests.local.simclient import secret_client
from tests.shared.sources.conftest import message

USER, PASSWORD, SECRET = "ap@example.org", "app-Passw0rd", "imap-ap-password"


@pytest.fixture(scope="module")
def imap_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, Dovecot, str]]:
    ca = trustme.CA()
    directory = tmp_path_factory.mktemp("imap-e2e")
    with Dovecot(directory / "dovecot", ca) as server, pytest.MonkeyPatch.context() as patch:
        server.add_user(USER, PASSWORD)
        own = directory / "mail-ca.pem"
        ca.cert_pem.write_to_path(str(own))
        # The stack's bundle takes the CAs the machine trusts: here, the mail server's too.
        patch.setenv("SSL_CERT_FILE", str(write_ca_bundle(directory / "bundle.pem", own, os.environ)))
        url = f"imaps://{quote(USER, safe='')}@127.0.0.1:{server.ports['imaps']}?secret={SECRET}"
        config = StackConfig(
            mailboxes=("invoices@contoso.com", url),
            data_dir=directory / "stack",
            app_settings={
                "MAIL_POLL_SCHEDULE": "*/2 * * * * *",
                "AzureFunctionsJobHost__extensions__queues__maxPollingInterval": "00:00:00.500",
            },
        )
        with Stack(config) as stack:
            yield stack, server, url


def fetch_requests(stack: Stack) -> list[dict[str, Any]]:
    queue = QueueClient.from_connection_string(stack.storage_connection_string, FETCH_QUEUE)
    try:
        found = [json.loads(base64.b64decode(m.content)) for m in queue.peek_messages(max_messages=32)]
    except Exception:  # the queue is made by the first request
        found = []
    finally:
        queue.close()
    return found


def cursor_of(stack: Stack, url: str) -> dict[str, Any] | None:
    from shared.settings import StorageSettings
    from shared.storage import BlobStore, blob_service

    async def load() -> dict[str, Any] | None:
        service = blob_service(StorageSettings(connection_string=stack.storage_connection_string), None)
        try:
            cursor, _ = await CursorStore(BlobStore(service, "mail-ingest-state")).load(parse_account(url).key)
        finally:
            await service.close()
        return cursor.__dict__ if cursor else None

    return asyncio.run(load())


def test_a_new_mail_in_an_imap_account_is_queued_once(imap_stack: tuple[Stack, Dovecot, str]):
    stack, server, url = imap_stack
    # No password in Key Vault yet: the account's polls fail, and say why, while the app goes on.
    failed = wait_until(lambda: (cursor_of(stack, url) or {}).get("last_error"), 60, "a failed poll")
    assert f"secret {SECRET} does not exist" in failed
    report = health(stack)
    assert report.status_code == 503
    (account,) = report.json()["accounts"]
    assert account["account"] in report.json()["unhealthy"]
    assert account["problems"] and f"secret {SECRET} does not exist" in account["problems"][0]

    async def store_password() -> None:
        assert stack.sim is not None
        async with secret_client(stack.sim) as client:
            await client.set_secret(SECRET, PASSWORD)

    refused = cli(stack, "check")
    assert refused.returncode != 0
    assert f"secret {SECRET} does not exist" in refused.stdout and "Key Vault secret imap-ap-password" in refused.stdout
    asyncio.run(store_password())
    checked = cli(stack, "check")
    line = next(line for line in checked.stdout.splitlines() if str(parse_account(url)) in line)
    assert "signed in; INBOX: 0 message(s)" in line
    wait_until(lambda: (cursor_of(stack, url) or {}).get("last_poll_at"), 60, "a successful poll")
    assert (cursor_of(stack, url) or {}).get("last_error") is None
    mail = message("scanned invoice")
    server.deliver(USER, mail)
    (request,) = wait_until(lambda: fetch_requests(stack), 60, "a mail-fetch request")
    assert (request["protocol"], request["uid"], request["size"]) == ("imap", 1, len(mail))
    assert (cursor_of(stack, url) or {}).get("last_uid") == 1
    # Later polls find nothing new.
    polled = (cursor_of(stack, url) or {})["last_poll_at"]
    wait_until(lambda: (cursor_of(stack, url) or {}).get("last_poll_at") != polled, 60, "another poll")
    assert len(fetch_requests(stack)) == 1
    (account,) = health(stack).json()["accounts"]
    assert account["healthy"] and account["cursor"]["last_uid"] == 1 and account["queued"] == 1
