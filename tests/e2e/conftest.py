from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import trustme

from local.dovecot import Dovecot
from local.mailcheck import BlobReader
from local.stack import Stack, StackConfig, write_ca_bundle

MAILBOXES = ("invoices@contoso.com", "scans@contoso.com/Inbox/Delivery notes", "ap@contoso.com")
# Files above this are recorded as skipped; small enough that a test can send one.
MAX_BYTES = 24 * 1024 * 1024
# Routes for senders only tests/e2e/test_routes.py uses: every other test's mail takes route `default`.
ROUTES = [
    {
        "name": "fabrikam-invoices",
        "match": {"from": ["*@fabrikam-ap.example", "*@*.fabrikam-ap.example"]},
        "container": "ap-fabrikam",
        "path": "{senderDomain}/{yyyy}-{MM}/{messageKey}",
        "tags": {"docType": "invoice"},
    },
    {
        "name": "northwind-payables",
        "match": {"from": "*@northwind.example", "to": "payables@contoso.com"},
        "container": "ap-northwind",
        "path": "{route}/{yyyy}/{MM}/{dd}/{sender}/{messageKey}",
    },
    {"name": "junk", "match": {"from": "*@lottery.example"}, "skip": True},
]


def wait_until(check: Callable[[], Any], timeout: float = 60, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    data_dir = Path(tmp_path_factory.mktemp("stack"))
    config = StackConfig(
        mailboxes=MAILBOXES,
        data_dir=data_dir,
        app_settings={
            # Failed queue messages come back after a second, not thirty, so poison handling is quick.
            "AzureFunctionsJobHost__extensions__queues__visibilityTimeout": "00:00:01",
            "AzureFunctionsJobHost__extensions__queues__maxPollingInterval": "00:00:00.500",
            "GRAPH_MAX_RETRY_AFTER_SECONDS": "5",
            "ATTACHMENT_MAX_BYTES": str(MAX_BYTES),
            "AFTER_INGEST_BY_MAILBOX": "ap@contoso.com=mark-read,category:Captured,move:Inbox/Captured",
            # Read only when an encrypted mail arrives; tests/e2e/test_unpack.py imports it into Key Vault.
            "SMIME_CERTIFICATES": "invoices-smime",
            "ROUTES": json.dumps(ROUTES),
        },
    )
    with Stack(config) as running:
        response = running.run_function("maintain")
        assert response.status_code == 200, (data_dir / "devhost.log").read_text()[-3000:]
        yield running


@pytest.fixture
def reader(stack: Stack) -> Iterator[BlobReader]:
    blob_reader = BlobReader(stack)
    yield blob_reader
    blob_reader.close()


@pytest.fixture
def notifications_held(stack: Stack) -> Iterator[None]:
    """Graph's notifications are held back (as when the webhook is down) until the test ends."""
    stack.control("POST", "/_sim/delivery", {"paused": True})
    try:
        yield
    finally:
        stack.control("POST", "/_sim/delivery", {"paused": False})


@contextmanager
def trusted_dovecot(directory: Path, user: str, password: str) -> Iterator[Dovecot]:
    """Dovecot with `user`, its TLS from a test CA that the stack started inside trusts: SSL_CERT_FILE is a bundle
    of the machine's CAs and that one while this lasts."""
    ca = trustme.CA()
    with Dovecot(directory / "dovecot", ca) as server, pytest.MonkeyPatch.context() as patch:
        server.add_user(user, password)
        own = directory / "mail-ca.pem"
        ca.cert_pem.write_to_path(str(own))
        patch.setenv("SSL_CERT_FILE", str(write_ca_bundle(directory / "bundle.pem", own, os.environ)))
        yield server
