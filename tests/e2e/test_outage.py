"""The app is down long enough for Graph to give up on its notifications: the timer, past due when the app
comes back, resyncs every folder and the mail lands."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from local.mailcheck import (
    BlobReader,
    Delivered,
    check_files,
    deliver,
    deliver_while_app_is_down,
    file_attachment,
    wait_for_manifests,
)
from local.stack import Stack, StackConfig

INVOICES = "billing@contoso.com"
YARD, NOTES_FOLDER = "yard@contoso.com", "Inbox/Delivery notes"
TICK = 3  # seconds between the timer's occurrences in this stack


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    config = StackConfig(
        mailboxes=(INVOICES, f"{YARD}/{NOTES_FOLDER}"),
        data_dir=Path(tmp_path_factory.mktemp("outage")),
        app_settings={"MAINTAIN_SCHEDULE": f"*/{TICK} * * * * *", "RECONCILE_MINUTES": "0"},
    )
    with Stack(config) as running:
        assert running.run_function("maintain").status_code == 200
        yield running


def test_mail_sent_while_the_app_was_down_is_resynced_when_it_is_back(stack: Stack):
    def send() -> list[Delivered]:
        pdf = "application/pdf"
        return [
            deliver(stack, INVOICES, "Inbox", "Invoice while down", [file_attachment("down.pdf", b"%PDF down", pdf)]),
            deliver(stack, YARD, NOTES_FOLDER, "Note while down", [file_attachment("note.pdf", b"%PDF note", pdf)]),
        ]

    mails, dropped = deliver_while_app_is_down(stack, send, down_at_least=2 * TICK)
    assert dropped == 2  # Graph gave up on both notifications: only a resync can find the mail
    reader = BlobReader(stack)
    try:
        found = wait_for_manifests(reader, mails, timeout=60)
        assert len(found) == 2, (stack.data_dir / "devhost.log").read_text()[-3000:]
        for mail in mails:
            assert all(c.ok for c in check_files(reader, mail, *found[mail.message_id]))
    finally:
        reader.close()
    log = (stack.data_dir / "devhost.log").read_text()
    assert "past due" in log and "after an outage" in log
