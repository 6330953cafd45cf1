"""The poll timer's fan-out and the poll worker: plain async code the function app's triggers call."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import datetime
from typing import TYPE_CHECKING

from ..clock import now
from ..errors import QueueMessageError
from ..logs import log_event
from ..pipeline.storage import BlobStore
from ..settings import MailAccount, Settings
from .common import Login, password_login
from .cursor import CursorStore, SourceCursor
from .poll import PollResult, poll_account

if TYPE_CHECKING:
    from ..runtime import Runtime

logger = logging.getLogger(__name__)


def poll_requests(settings: Settings) -> list[str]:
    """One `mail-poll` message per account folder, so one slow server never delays the others."""
    return [json.dumps({"type": "poll", "account": a.key}, separators=(",", ":")) for a in settings.accounts]


async def record_starts(state: BlobStore, settings: Settings, at: datetime) -> list[SourceCursor]:
    """Every account's start, for those that have none (the maintain pass and the poll timer's fan-out both
    call this, so mail that arrives before an account's first poll is the app's); the cursors made now."""
    store = CursorStore(state)
    made = await asyncio.gather(*(store.record_start(a, at, settings.backfill_hours) for a in settings.accounts))
    started = [cursor for cursor in made if cursor is not None]
    for cursor in started:
        log_event(logger, "source.started", account=cursor.account, window_start=cursor.window_start)
    return started


async def fan_out(state: BlobStore, settings: Settings, at: datetime) -> list[str]:
    """The poll timer's tick: the starts not yet recorded, then one poll request per account."""
    await record_starts(state, settings, at)
    return poll_requests(settings)


def _account(settings: Settings, body: bytes | str) -> MailAccount | None:
    try:
        data = json.loads(body)
        key = str(data["account"]) if data.get("type") == "poll" else None
    except (ValueError, KeyError, TypeError, AttributeError):
        key = None
    if key is None:
        raise QueueMessageError("not a poll request")
    return settings.account_by_key(key)


async def account_login(rt: Runtime, account: MailAccount) -> Login:
    """The account's credentials: its password from Key Vault, or an OAuth 2.0 access token."""
    if account.auth == "xoauth2":
        from .oauth import access_token

        return Login(account.user, token=await access_token(rt, account))
    return await password_login(account, rt.vault)


async def run_poll(rt: Runtime, body: bytes | str) -> PollResult | None:
    """Poll the account a `mail-poll` message names; None when it is no longer configured."""
    account = _account(rt.settings, body)
    if account is None:
        log_event(logger, "source.poll_skipped", reason="the account is no longer in MAILBOXES")
        return None

    async def login() -> Login:
        return await account_login(rt, account)

    return await poll_account(
        CursorStore(rt.state), rt.send_queue_message, account, login, now(), backfill_hours=rt.settings.backfill_hours
    )
