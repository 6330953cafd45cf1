"""Entry points the function app calls: one per trigger, each taking plain values."""

from __future__ import annotations

import logging
from collections.abc import Awaitable

import azure.functions as func

from .errors import one_line
from .logs import log_event
from .poison import CHANGES_QUEUE, LIFECYCLE_QUEUE
from .settings import get_settings
from .webhook import receive, verify_changes, verify_lifecycle

logger = logging.getLogger(__name__)


async def _secret() -> bytes:
    from .runtime import get_runtime

    return await get_runtime().client_state_key()


async def notifications(req: func.HttpRequest, out: func.Out[list[str]]) -> func.HttpResponse:
    return await receive(req, out, verify_changes, get_settings(), _secret, "notifications")


async def lifecycle(req: func.HttpRequest, out: func.Out[list[str]]) -> func.HttpResponse:
    return await receive(req, out, verify_lifecycle, get_settings(), _secret, "lifecycle")


async def _queued(msg: func.QueueMessage, queue: str, event: str, work: Awaitable[object]) -> None:
    from .poison import max_dequeue_count, park
    from .runtime import get_runtime

    try:
        await work
    except Exception as exc:
        reason = one_line(exc)
        count = msg.dequeue_count or 0
        log_event(logger, event, logging.ERROR, message=msg.id, dequeue_count=count, reason=reason)
        if count < max_dequeue_count():
            raise  # the queue delivers it again after the visibility timeout
        # The last delivery: park it with its reason and let the host delete the original. Should
        # parking fail, the error propagates and the host moves the bare message to poison itself.
        await park(get_runtime(), queue, msg.get_body(), reason, count)
        log_event(logger, f"{event.split('.')[0]}.poisoned", logging.ERROR, message=msg.id, reason=reason)


async def ingest(msg: func.QueueMessage) -> None:
    from .ingest import ingest_change
    from .messages import parse_change
    from .runtime import get_runtime

    async def work() -> None:
        await ingest_change(parse_change(msg.get_body()), get_runtime())

    await _queued(msg, CHANGES_QUEUE, "ingest.failed", work())


async def lifecycle_event(msg: func.QueueMessage) -> None:
    from .messages import parse_lifecycle
    from .runtime import get_runtime
    from .subscriptions import handle_lifecycle

    async def work() -> None:
        await handle_lifecycle(parse_lifecycle(msg.get_body()), get_runtime())

    await _queued(msg, LIFECYCLE_QUEUE, "lifecycle.failed", work())


async def maintain() -> dict[str, str]:
    from .runtime import get_runtime
    from .subscriptions import maintain_all

    rt = get_runtime()
    if rt.settings.auth_mode == "delegated":
        from .delegated import DelegatedTokens, keep_alive

        assert isinstance(rt.tokens, DelegatedTokens)
        # Tokens first: a mailbox whose refresh token lapsed is reported before its subscription fails.
        await keep_alive(rt.settings, rt.tokens, rt.state)
    return await maintain_all(rt)
