"""Entry points the function app calls: one per trigger, each taking plain values."""

from __future__ import annotations

import logging
from collections.abc import Awaitable

import azure.functions as func

from .logs import log_event
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


async def _queued(msg: func.QueueMessage, event: str, work: Awaitable[object]) -> None:
    try:
        await work
    except Exception as exc:
        # The queue retries, then parks the message in the poison queue; the reason is logged here.
        reason = f"{type(exc).__name__}: {exc}"
        log_event(logger, event, logging.ERROR, message=msg.id, dequeue_count=msg.dequeue_count, reason=reason)
        raise


async def ingest(msg: func.QueueMessage) -> None:
    from .ingest import ingest_change
    from .messages import parse_change
    from .runtime import get_runtime

    async def work() -> None:
        await ingest_change(parse_change(msg.get_body()), get_runtime())

    await _queued(msg, "ingest.failed", work())


async def lifecycle_event(msg: func.QueueMessage) -> None:
    from .messages import parse_lifecycle
    from .runtime import get_runtime
    from .subscriptions import handle_lifecycle

    async def work() -> None:
        await handle_lifecycle(parse_lifecycle(msg.get_body()), get_runtime())

    await _queued(msg, "lifecycle.failed", work())


async def maintain() -> dict[str, str]:
    from .runtime import get_runtime
    from .subscriptions import maintain_all

    return await maintain_all(get_runtime())
