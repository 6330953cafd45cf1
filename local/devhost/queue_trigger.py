"""Queue trigger listener, following the Storage Queues extension's QueueListener and QueueProcessor.

- Receive up to ``batchSize`` messages, invisible for 10 minutes (renewed every 5 while the function
  runs), process them concurrently; fetch the next batch once in-flight drops to
  ``newBatchThreshold``.
- Empty queue: poll again after a randomised exponential backoff from 100 ms up to
  ``maxPollingInterval``; a message written by this host to the queue wakes the listener at once.
- Success: delete. Failure: when ``dequeueCount >= maxDequeueCount`` copy the message text to
  ``{queue}-poison`` and delete it, else make it visible again after ``visibilityTimeout``.
- On receipt, ``dequeueCount > maxDequeueCount`` or a body that does not decode: straight to poison.
- A queue whose name ends in ``-poison`` (or is too long for the suffix) has no poison queue; a
  failed message there is left invisible, as the extension does, to avoid a hot loop.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from azure.core.exceptions import AzureError, HttpResponseError, ResourceNotFoundError
from azure.storage.queue import QueueMessage as StorageMessage
from azure.storage.queue.aio import QueueClient

from .config import ConfigError, QueueOptions
from .functions import FunctionSpec
from .invoker import Invoker
from .objects import QueueMessage
from .storage import MessageDecodeError, StorageClients, decode

log = logging.getLogger("devhost.queue")

RECEIVE_VISIBILITY = timedelta(minutes=10)
# Dev host only: a shorter lease than the host's fixed 10 minutes, for tests that kill a host mid-message
# (its messages come back when the lease lapses, as in Azure, only sooner).
LEASE_SETTING = "DEVHOST_QUEUE_LEASE_SECONDS"


def receive_visibility(env: Mapping[str, str]) -> timedelta:
    value = env.get(LEASE_SETTING)
    if not value:
        return RECEIVE_VISIBILITY
    if not value.isdigit() or int(value) < 2:
        raise ConfigError(f"{LEASE_SETTING}: a whole number of seconds, at least 2")
    return timedelta(seconds=int(value))


MIN_POLLING_INTERVAL = timedelta(milliseconds=100)
MAX_QUEUE_NAME = 63


def poison_queue_name(queue_name: str) -> str | None:
    if queue_name.endswith("-poison") or len(queue_name) + len("-poison") > MAX_QUEUE_NAME:
        return None
    return f"{queue_name}-poison"


def trigger_value(spec: FunctionSpec, message: QueueMessage) -> Any:
    """What the trigger parameter receives: a QueueMessage, or its body for ``str``/``bytes`` annotations."""
    annotation = spec.annotations.get(spec.trigger["name"])
    if annotation is str:
        return message.get_body().decode("utf-8")
    if annotation is bytes:
        return message.get_body()
    return message


class QueueListener:
    def __init__(
        self,
        spec: FunctionSpec,
        connection_string: str,
        options: QueueOptions,
        storage: StorageClients,
        invoker: Invoker,
        lease: timedelta = RECEIVE_VISIBILITY,
    ) -> None:
        self.spec = spec
        self.lease = lease
        self.queue_name: str = spec.trigger["queueName"]
        self.poison_name = poison_queue_name(self.queue_name)
        self.connection_string = connection_string
        self.options = options
        self.storage = storage
        self.invoker = invoker
        self.client: QueueClient = storage.queue(connection_string, self.queue_name)
        self._wake = asyncio.Event()
        self._slot_freed = asyncio.Event()
        self._active: set[asyncio.Task[None]] = set()
        self._poller: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.storage.ensure_queue(self.connection_string, self.queue_name)
        self._poller = asyncio.create_task(self._poll(), name=f"poll-{self.spec.name}")

    def wake(self) -> None:
        self._wake.set()

    async def stop(self) -> None:
        """Stop polling; messages already received keep running (the host drains them)."""
        if self._poller is not None:
            self._poller.cancel()
            await asyncio.gather(self._poller, return_exceptions=True)
            self._poller = None

    async def drain(self, seconds: float) -> bool:
        """Wait for received messages to be finished (deleted, released or poisoned)."""
        if not self._active:
            return True
        _, pending = await asyncio.wait(set(self._active), timeout=seconds)
        return not pending

    async def _poll(self) -> None:
        delay = MIN_POLLING_INTERVAL.total_seconds()
        maximum = self.options.max_polling_interval.total_seconds()
        while True:
            while len(self._active) > self.options.new_batch_threshold:
                self._slot_freed.clear()
                await self._slot_freed.wait()
            # Cleared before receiving, so a wake-up that arrives during the receive is not lost.
            self._wake.clear()
            try:
                messages = await self._receive()
            except (AzureError, OSError) as exc:
                log.warning("Polling queue '%s' failed: %s", self.queue_name, exc)
                messages = []
            if messages:
                delay = MIN_POLLING_INTERVAL.total_seconds()
                for message in messages:
                    task = asyncio.create_task(self._process(message), name=f"msg-{message.id}")
                    self._active.add(task)
                    task.add_done_callback(self._done)
                continue
            try:
                await asyncio.wait_for(self._wake.wait(), delay)
                delay = MIN_POLLING_INTERVAL.total_seconds()
            except TimeoutError:
                # Randomised exponential backoff, as the host's RandomizedExponentialBackoffStrategy.
                delay = min(maximum, delay * 2 * random.uniform(0.8, 1.2))

    def _done(self, task: asyncio.Task[None]) -> None:
        self._active.discard(task)
        self._slot_freed.set()
        if not task.cancelled() and task.exception() is not None:
            log.error("Queue message handling crashed", exc_info=task.exception())

    async def _receive(self) -> list[StorageMessage]:
        pages = self.client.receive_messages(
            messages_per_page=self.options.batch_size,
            max_messages=self.options.batch_size,
            visibility_timeout=int(self.lease.total_seconds()),
        )
        return [message async for message in pages]

    async def _process(self, message: StorageMessage) -> None:
        handle = _Handle(message)
        dequeue_count = message.dequeue_count or 1
        if dequeue_count > self.options.max_dequeue_count:
            await self._poison(handle, "it was dequeued more than maxDequeueCount times")
            return
        try:
            body = decode(str(message.content), self.options.message_encoding)
        except MessageDecodeError as exc:
            await self._poison(handle, str(exc))
            return
        trigger = QueueMessage(
            id=message.id,
            body=body,
            pop_receipt=message.pop_receipt,
            dequeue_count=dequeue_count,
            expiration_time=message.expires_on,
            insertion_time=message.inserted_on,
            time_next_visible=message.next_visible_on,
        )
        renewer = asyncio.create_task(self._keep_invisible(handle))
        try:
            result = await self.invoker.invoke(
                self.spec,
                trigger_value(self.spec, trigger),
                reason=f"New queue message detected on '{self.queue_name}'.",
            )
        finally:
            renewer.cancel()
            await asyncio.gather(renewer, return_exceptions=True)
        if result.succeeded:
            await self._delete(handle)
        elif self.poison_name is None:
            pass  # no poison queue: leave it invisible rather than retry in a hot loop
        elif dequeue_count >= self.options.max_dequeue_count:
            await self._poison(handle, f"it failed {dequeue_count} times (maxDequeueCount)")
        else:
            await self._release(handle)

    async def _keep_invisible(self, handle: _Handle) -> None:
        # The host's UpdateQueueMessageVisibilityCommand: renew at half the visibility window.
        interval = self.lease.total_seconds() / 2
        while True:
            await asyncio.sleep(interval)
            try:
                updated = await self.client.update_message(
                    handle.id, handle.pop_receipt, visibility_timeout=int(self.lease.total_seconds())
                )
                handle.pop_receipt = updated.pop_receipt
            except (AzureError, OSError) as exc:
                log.warning("Renewing visibility of message %s failed: %s", handle.id, exc)

    async def _delete(self, handle: _Handle) -> None:
        try:
            await self.client.delete_message(handle.id, handle.pop_receipt)
        except ResourceNotFoundError:
            log.debug("Message %s already gone", handle.id)
        except HttpResponseError as exc:
            # 400 pop receipt mismatch: someone else took the message over; let them delete it.
            log.warning("Deleting message %s failed: %s", handle.id, exc.message)

    async def _release(self, handle: _Handle) -> None:
        seconds = int(self.options.visibility_timeout.total_seconds())
        try:
            await self.client.update_message(handle.id, handle.pop_receipt, visibility_timeout=seconds)
        except HttpResponseError as exc:
            log.warning("Releasing message %s failed: %s", handle.id, exc.message)

    async def _poison(self, handle: _Handle, why: str) -> None:
        if self.poison_name is None:
            log.warning(
                "Message %s on '%s' is poison (%s); no poison queue, left invisible",
                handle.id,
                self.queue_name,
                why,
            )
            return
        log.warning("Moving message %s to queue '%s': %s", handle.id, self.poison_name, why)
        try:
            # The original text, so the poison message has the same encoding as the source.
            await self.storage.send(self.connection_string, self.poison_name, handle.text)
        except (AzureError, OSError) as exc:
            log.error("Moving message %s to '%s' failed: %s", handle.id, self.poison_name, exc)
            return
        await self._delete(handle)


class _Handle:
    """Message id and its current pop receipt (each visibility update issues a new one)."""

    def __init__(self, message: StorageMessage) -> None:
        self.id: str = message.id
        self.pop_receipt: str | None = message.pop_receipt
        self.text: str = str(message.content)
