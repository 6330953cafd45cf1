"""The soak, short: every fault of `make soak` once, on 60 mails, judged by what landed (under two minutes)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from local.soak import IMAP_USER, KINDS, MB, Report, Sent, Soak, SoakConfig, run
from shared.pipeline.poison import CHANGES_QUEUE, poison_queue


# About 90 s; up to 8 minutes when the host is killed in the middle of an IMAP poll (its claim lapses after 6).
@pytest.mark.timeout(600)
def test_a_short_soak_loses_nothing_doubles_nothing_leaks_nothing(tmp_path: Path) -> None:
    config = SoakConfig(
        minutes=0.5,
        mails=60,
        large_files=1,
        large_bytes=20 * MB,
        unprocessable=1,
        webhook_down=8,
        vault_down=5,
        storage_down=2,
        lease_seconds=10,
        burst=12,
        # Beyond a poll claim's expiry (6 minutes): a host killed in the middle of an IMAP poll holds the
        # account's claim until then, and the mails that came meanwhile must still land.
        drain_timeout=420,
        data_dir=tmp_path / "soak",
    )
    report = run(config)
    assert report.ok, "\n".join([*report.problems, *report.leaks, *report.errors])
    assert report.mails == 60 + 12 and report.files > 72
    for fault in ("webhook stopped (s)", "subscription removed", "host killed mid-file", "Azurite restarted"):
        assert report.faults[fault] >= 1, fault
    assert report.faults["Key Vault 503"] >= 1 and report.faults["duplicate notifications"] >= 1
    assert report.recoveries["hosts restarted"] == 1 and report.recoveries["subscriptions recreated"] >= 1
    # Every kind of mail went through, its documents stored and checked: signed, zipped, IMAP (a large one too).
    for kind in {*KINDS.values(), "IMAP, large", "large file", "burst to one mailbox"}:
        mails, files = report.kinds[kind]
        assert mails >= 1 and files >= mails, kind
    # The burst at a slow mailbox: the two hosts together had more than four requests for it, a fifth was
    # refused (429 ApplicationThrottled) and retried; never more than four got in.
    assert report.faults["mailbox concurrency"] >= 1
    assert report.faults["(most requests in flight on one mailbox)"] == 4


def test_the_secret_scan_finds_what_it_looks_for() -> None:
    """The scan is only worth its PASS if it can fail: each kind of secret, planted, is found."""
    soak = Soak(SoakConfig())
    soak.report = Report()
    planted = {
        "state/folders/x.json": '{"error": "token endpoint said: client_secret=s3cr3t-value"}',
        "queue mail-changes-poison": '{"reason": "Authorization: Bearer eyJhbGciOiJSUzI1.eyJzdWIiOiIxMjM0.sig"}',
        "devhost.log": "-----BEGIN PRIVATE KEY-----\nMIIE...",
        "mail-attachments/a/manifest.json": '{"subject": "nothing secret here"}',
        "sources/imaps-x/cursor.json": '{"last_error": "LOGIN failed for imap-Passw0rd"}',
    }
    fake: Any = soak
    fake.secrets = lambda: {"client secret": "s3cr3t-value", "IMAP password": "imap-Passw0rd"}
    fake._scanned = lambda: iter(planted.items())
    soak._scan()
    assert sorted(soak.report.leaks) == [
        "IMAP password in sources/imaps-x/cursor.json",
        "a private key in devhost.log",
        "a token (JWT) in queue mail-changes-poison",
        "client secret in state/folders/x.json",
    ]


def test_an_imap_mail_is_matched_to_its_one_message_folder_and_a_double_is_seen() -> None:
    """IMAP mails have no id the soak knows: each is found by its subject, and one found twice has no folder
    (the verdict then reports it stored twice, and the second folder's blobs as outside any mail)."""
    soak = Soak(SoakConfig())
    once, twice, missing = (Sent("IMAP", f"soak {n} via IMAP", []) for n in (1, 2, 3))
    soak.sent = [once, twice, missing]
    manifests = {
        f"{IMAP_USER}/2026/11/29/a/manifest.json": {"subject": "soak 1 via IMAP"},
        f"{IMAP_USER}/2026/11/29/b/manifest.json": {"subject": "soak 2 via IMAP"},
        f"{IMAP_USER}/2026/11/29/c/manifest.json": {"subject": "soak 2 via IMAP"},
    }
    read: list[str] = []

    class Reader:
        def names(self, prefix: str) -> list[str]:
            return [*manifests, f"{IMAP_USER}/2026/11/29/a/imap-1-0.pdf"]

        def json(self, name: str) -> dict[str, Any]:
            read.append(name)
            return manifests[name]

    reader: Any = Reader()
    folders = soak._match_imap(reader)
    assert once.prefix == f"{IMAP_USER}/2026/11/29/a" and twice.prefix is None and missing.prefix is None
    assert sorted(folders["soak 2 via IMAP"]) == [f"{IMAP_USER}/2026/11/29/b", f"{IMAP_USER}/2026/11/29/c"]
    soak._match_imap(reader)
    assert sorted(read) == sorted(manifests)  # each manifest read once


def test_looking_at_the_poison_queue_leaves_its_messages_visible(azurite: str) -> None:
    """The drain looks at the poison queue every second and the verdict once more just after: a look that
    received the messages (hiding them for a while) made the verdict miss a mail parked moments before."""
    from azure.storage.queue import QueueClient

    queue = poison_queue(CHANGES_QUEUE)
    with QueueClient.from_connection_string(azurite, queue) as client:
        client.create_queue()
        parked = {"type": "poisoned", "message": {"message_id": "parked-1"}, "reason": "GraphError: 500"}
        client.send_message(base64.b64encode(json.dumps(parked).encode()).decode())
    soak = Soak(SoakConfig())
    soak.report = Report()
    fake: Any = soak
    fake.stack = SimpleNamespace(storage_connection_string=azurite)
    assert soak._poisoned() == {"parked-1"}
    assert soak._poisoned() == {"parked-1"}  # at once, again: still there
    assert soak.report.problems == []
