"""A new IMAP and POP3 account's first mail, end to end through the dev host: the app is started, a mail
is appended at once, before the poll timer's first tick, and it is ingested, because an account's start is
when the app first knew it (that tick records it, less the clock margin), not the first poll's own time.

The poll timer's schedule never comes round during the test: its first tick is run through the admin API,
so it surely comes after the mail (as it does in Azure when a user sends a test mail within the minute)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from urllib.parse import quote

import pytest

from local.dovecot import Dovecot
from local.mailcheck import BlobReader
from local.stack import Stack, StackConfig
from shared.pipeline.layout import parse_graph_time
from tests.e2e.conftest import trusted_dovecot, wait_until
from tests.e2e.test_mail_accounts import PDF, checked, cursor_of, mail_with_attached_mail, manifests, sha, store_secret

IMAP_USER, IMAP_PASSWORD, IMAP_SECRET = "new-ap@example.org", "start-Passw0rd", "imap-new-password"
POP_USER, POP_PASSWORD, POP_SECRET = "new-scans@example.org", "start-pop-Passw0rd", "pop3-new-password"
NEVER = "0 0 0 1 1 *"  # midnight on 1 January: not within a test


@dataclass
class Fresh:
    stack: Stack
    server: Dovecot
    imap_url: str
    pop_url: str


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fresh]:
    directory = tmp_path_factory.mktemp("account-start")
    with trusted_dovecot(directory, IMAP_USER, IMAP_PASSWORD) as server:
        server.add_user(POP_USER, POP_PASSWORD)
        imap = f"imaps://{quote(IMAP_USER, safe='')}@127.0.0.1:{server.ports['imaps']}?secret={IMAP_SECRET}"
        pop = f"pop3s://{quote(POP_USER, safe='')}@127.0.0.1:{server.ports['pop3s']}?secret={POP_SECRET}"
        config = StackConfig(
            mailboxes=(imap, pop),
            data_dir=directory / "stack",
            graph=False,
            app_settings={
                "MAIL_POLL_SCHEDULE": NEVER,
                "MAINTAIN_SCHEDULE": NEVER,
                "AzureFunctionsJobHost__extensions__queues__maxPollingInterval": "00:00:00.500",
            },
        )
        with Stack(config) as stack:
            yield Fresh(stack, server, imap, pop)


def test_a_mail_appended_right_after_the_app_starts_is_ingested(fresh: Fresh):
    stack, server = fresh.stack, fresh.server
    assert cursor_of(stack, fresh.imap_url) is None and cursor_of(stack, fresh.pop_url) is None  # a new account
    server.deliver(IMAP_USER, mail_with_attached_mail("first test mail over IMAP"))
    server.deliver(POP_USER, mail_with_attached_mail("first test mail over POP3"))
    store_secret(stack, IMAP_SECRET, IMAP_PASSWORD)
    store_secret(stack, POP_SECRET, POP_PASSWORD)
    # The poll timer's first tick: it records both accounts' starts, then fans out their polls.
    assert stack.run_function("poll_accounts").status_code == 200
    reader = BlobReader(stack)
    try:
        for user, subject, source in (
            (IMAP_USER, "first test mail over IMAP", "imap"),
            (POP_USER, "first test mail over POP3", "pop3"),
        ):
            prefix = f"{user}/"
            (manifest,) = wait_until(partial(manifests, reader, prefix), 60, f"{user}'s first mail")
            assert (manifest["status"], manifest["source"], manifest["subject"]) == ("complete", source, subject)
            assert checked(reader, manifest)["invoice.pdf"] == sha(PDF)
    finally:
        reader.close()
    for url in (fresh.imap_url, fresh.pop_url):
        cursor = cursor_of(stack, url) or {}
        assert cursor.get("last_poll_at") and cursor.get("queued") == 1 and cursor.get("last_error") is None
        # The tick's time, less the clock margin: the window that took the mail appended before the tick.
        assert parse_graph_time(cursor["window_start"]) < parse_graph_time(cursor["started_at"])
