"""The poll timer's fan-out and the poll worker: plain async code the function app's triggers call."""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING

from ..clock import now
from ..errors import QueueMessageError
from ..logs import log_event
from ..settings import MailAccount, Settings
from .common import Login, password_login
from .cursor import CursorStore
from .poll import PollResult, poll_account

if TYPE_CHECKING:
    from ..runtime import Runtime

logger = logging.getLogger(__name__)


def poll_requests(settings: Settings) -> list[str]:
    """One `mail-poll` message per account folder, so one slow server never delays the others."""
    return [json.dumps({"type": "poll", "account": a.key}, separators=(",", ":")) for a in settings.accounts]


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
