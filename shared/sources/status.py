"""The status of each IMAP and POP3 account folder, for `/api/health` and `status --json`: its cursor, last
poll and last error, and why it is unhealthy, if it is."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

from ..pipeline.layout import parse_graph_time
from ..pipeline.storage import BlobStore
from ..settings import MailAccount
from .cursor import CursorStore, SourceCursor

# An account not polled for this long is unhealthy: the poll timer (every minute by default) is not running,
# or its polls never finish.
STALE = timedelta(hours=1)


def account_problems(cursor: SourceCursor | None, now: datetime) -> list[str]:
    if cursor is None:
        return []  # not started yet: the next maintain pass or tick of the poll timer records its start
    found: list[str] = []
    if cursor.last_error:
        found.append(f"poll failed at {cursor.last_error_at}: {cursor.last_error}")
    last = cursor.last_poll_at or cursor.started_at or cursor.window_start
    if now - parse_graph_time(last) > STALE:
        found.append(f"no complete poll since {last}")
    return found


def account_status(account: MailAccount, cursor: SourceCursor | None, now: datetime) -> dict[str, Any]:
    found = account_problems(cursor, now)
    report: dict[str, Any] = {
        "account": str(account),
        "address": account.address,
        "folder": account.folder,
        "account_key": account.key,
        "healthy": not found,
        "problems": found,
    }
    if cursor is None or cursor.last_poll_at is None:
        report["note"] = "not polled yet"
    if cursor is None:
        return report
    report["cursor"] = (
        {"uidvalidity": cursor.uidvalidity, "last_uid": cursor.last_uid}
        if account.protocol == "imap"
        else {"uidls_seen": len(cursor.uidls)}
    )
    report["started_at"] = cursor.started_at
    report["window_start"] = cursor.window_start
    report["last_poll_at"] = cursor.last_poll_at
    report["polling_since"] = cursor.polling_at
    report["queued"] = cursor.queued
    report["last_error"] = cursor.last_error
    report["last_error_at"] = cursor.last_error_at
    return report


async def accounts_status(state: BlobStore, accounts: tuple[MailAccount, ...], now: datetime) -> list[dict[str, Any]]:
    store = CursorStore(state)
    cursors = await asyncio.gather(*(store.load(a.key) for a in accounts))
    return [account_status(a, cursor, now) for a, (cursor, _) in zip(accounts, cursors, strict=True)]


def add_accounts(report: dict[str, Any], accounts: list[dict[str, Any]]) -> dict[str, Any]:
    """The health report with the accounts in it: unhealthy accounts make it unhealthy too."""
    report["accounts"] = accounts
    bad = [a["account"] for a in accounts if not a["healthy"]]
    report["unhealthy"] = [*report.get("unhealthy", []), *bad]
    report["healthy"] = bool(report.get("healthy", True)) and not bad
    return report
