"""One pass of the maintain timer, wherever it is started: the timer itself, `python -m shared.cli maintain`,
or the host's admin endpoint (the azd postdeploy hook, so a new deployment subscribes within a minute).

In delegated mode each mailbox's refresh token is kept alive first (a lapsed one is reported before its
subscription fails) and consent flows nobody finished are purged. Then every configured folder's
subscription is created, renewed or kept, and folders no longer configured are unsubscribed
(subscriptions.py). What the pass did, one line per folder, is kept in the state container
(`maintain/last.json`), where `status`, `/api/health` and the postdeploy hook read it.

A deployment whose MAILBOXES lists only IMAP and POP3 accounts has nothing here to maintain: the pass
records that it was idle, and why, and touches no Graph (whose settings it may not have).

Either way the pass first records the start of each IMAP and POP3 account that has none (as the poll
timer's fan-out does), so that mail arriving before an account's first poll is taken by it.
"""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING, Any

from ...clock import now
from ...errors import StateConflict, one_line
from ...logs import log_event
from ...pipeline.layout import graph_time
from ...settings import NO_MICROSOFT_365
from .subscriptions import MaintainFailed, maintain_folders

if TYPE_CHECKING:
    from ...runtime import Runtime

logger = logging.getLogger(__name__)

RECORD = "maintain/last.json"
IDLE = f"{NO_MICROSOFT_365}: nothing for Graph to maintain (IMAP and POP3 accounts are polled)"


def failed_folders(report: dict[str, str]) -> list[str]:
    return [name for name, result in report.items() if result.startswith("failed")]


async def run_pass(rt: Runtime, *, after_outage: bool = False) -> dict[str, str]:
    """The pass's report: folder → what was done, `failed: ...` for a folder that failed."""
    if rt.settings.accounts:
        from ..jobs import record_starts

        await record_starts(rt.state, rt.settings, now())
    if not rt.settings.uses_graph:
        # Only IMAP and POP3 accounts: no subscription, token or delta link to keep. Recorded, so that
        # `status` shows the timer runs and why it did nothing.
        log_event(logger, "maintain.idle", reason=IDLE)
        await _keep(
            rt, {"at": graph_time(now()), "afterOutage": after_outage, "folders": {}, "failed": 0, "idle": IDLE}
        )
        return {}
    if rt.settings.auth_mode == "delegated":
        from .consent import purge_stale_flows
        from .delegated import DelegatedTokens, keep_alive

        assert isinstance(rt.tokens, DelegatedTokens)
        await keep_alive(rt.settings, rt.tokens, rt.state)
        await purge_stale_flows(rt.state, now())
    started = now()
    report = await maintain_folders(rt, after_outage=after_outage)
    if rt.settings.eventgrid is not None:
        from ...ops.eventgrid import report_dead_letters

        await report_dead_letters(rt)
    failed = failed_folders(report)
    await _keep(rt, {"at": graph_time(started), "afterOutage": after_outage, "folders": report, "failed": len(failed)})
    return report


def raise_if_failed(report: dict[str, str]) -> None:
    """For the timer: fail the invocation, so a failure shows in the host's logs and alerts (after every
    folder had its turn)."""
    failed = failed_folders(report)
    if failed:
        raise MaintainFailed(f"{len(failed)} of {len(report)} mailbox folders failed: {', '.join(failed)}")


async def last_pass(rt: Runtime) -> dict[str, Any] | None:
    found = await rt.state.read_json(RECORD)
    return found[0] if found else None


async def _keep(rt: Runtime, record: dict[str, Any]) -> None:
    """The newest pass's record; one that finds another pass's record written meanwhile leaves it."""
    try:
        found = await rt.state.read_json(RECORD)
        with contextlib.suppress(StateConflict):
            await rt.state.write_json(RECORD, record, found[1] if found else None)
    except Exception as exc:  # the pass itself is done (storage refusing too): a lost record is only logged
        log_event(logger, "maintain.unrecorded", logging.WARNING, reason=one_line(exc))
