"""GRAPH_DELIVERY=eventgrid in `status`, the health report and the maintain pass: the queue Event Grid delivers to,
the events the app parked, and the events Event Grid gave up on (dead letters, blobs in `{queue}-deadletter`,
which infra/modules/eventgrid.bicep makes). A dead letter is logged as `eventgrid.deadlettered` on every pass
while any remain, which the alert rule of that name watches (infra/modules/alerts.bicep)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from ..logs import log_event
from ..pipeline.poison import poison_queue

if TYPE_CHECKING:
    from ..runtime import Runtime

logger = logging.getLogger(__name__)

DEAD_LETTER_SUFFIX = "-deadletter"
# Enough to say "many": a count beyond it is shown as this many or more.
MAX_COUNTED = 1000


def dead_letter_container(queue: str) -> str:
    return f"{queue}{DEAD_LETTER_SUFFIX}"


async def dead_letters(rt: Runtime) -> int:
    """How many dead-letter blobs Event Grid has written (up to MAX_COUNTED); 0 without the container."""
    from azure.core.exceptions import ResourceNotFoundError

    if rt.settings.eventgrid is None:
        return 0
    container = rt.blobs.get_container_client(dead_letter_container(rt.settings.eventgrid.queue))
    count = 0
    try:
        async for _ in container.list_blobs():
            count += 1
            if count >= MAX_COUNTED:
                break
    except ResourceNotFoundError:
        return 0
    return count


def queues(rt: Runtime) -> tuple[str, ...]:
    """The Event Grid queue and its poison queue, for the queue counts; none in webhook mode."""
    target = rt.settings.eventgrid
    return () if target is None else (target.queue, poison_queue(target.queue))


async def status(rt: Runtime) -> dict[str, Any] | None:
    target = rt.settings.eventgrid
    if target is None:
        return None
    return {
        "partnerTopic": target.partner_topic,
        "resourceGroup": target.resource_group,
        "queue": target.queue,
        "deadLetterContainer": dead_letter_container(target.queue),
        "deadLettered": await dead_letters(rt),
    }


async def report_dead_letters(rt: Runtime) -> int:
    """The maintain pass's look at the dead letters: logged while any remain (the alert's signal)."""
    count = await dead_letters(rt)
    if count and rt.settings.eventgrid is not None:
        log_event(
            logger,
            "eventgrid.deadlettered",
            logging.WARNING,
            count=count,
            container=dead_letter_container(rt.settings.eventgrid.queue),
            reason="Event Grid could not deliver these events to the queue; their mail is caught by the next resync",
        )
    return count
