"""Storage queue clients, message encoding and queue output bindings."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
from collections.abc import Callable, Iterable
from typing import Any

import azure.functions as func
from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.queue.aio import QueueClient, QueueServiceClient

log = logging.getLogger("devhost.storage")

# Bound on concurrent writes of one invocation's output messages.
OUTPUT_CONCURRENCY = 8


class MessageDecodeError(ValueError):
    pass


def encode(body: bytes, encoding: str) -> str:
    """Message text as stored: base64 of the bytes (the extension's default), or the text itself."""
    if encoding == "base64":
        return base64.b64encode(body).decode("ascii")
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError("messageEncoding 'none' cannot carry bytes that are not UTF-8") from exc


def decode(text: str, encoding: str) -> bytes:
    if encoding == "base64":
        try:
            return base64.b64decode(text.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError) as exc:
            raise MessageDecodeError(f"message is not valid base64: {exc}") from exc
    return text.encode("utf-8")


def message_bodies(value: Any) -> list[bytes]:
    """The messages one output value makes.

    ``str`` and ``bytes`` are one message each (as the worker's queue converter sends them); a
    ``QueueMessage`` contributes its body; a list makes one message per item, as the host does with a
    JSON array; dicts (alone or in a list) are JSON-serialised, as the host does with JSON objects.
    """
    if value is None:
        return []
    if isinstance(value, str):
        return [value.encode("utf-8")]
    if isinstance(value, bytes | bytearray):
        return [bytes(value)]
    if isinstance(value, func.QueueMessage):
        return [value.get_body()]
    if isinstance(value, dict):
        return [json.dumps(value).encode("utf-8")]
    if isinstance(value, Iterable):
        bodies: list[bytes] = []
        for item in value:
            if isinstance(item, list | tuple):
                raise TypeError("nested lists are not valid queue output")
            bodies.extend(message_bodies(item))
        return bodies
    raise TypeError(f"unsupported queue output type: {type(value).__name__}")


class StorageClients:
    """One QueueServiceClient per connection string, and queue creation done once per queue."""

    def __init__(self) -> None:
        self._services: dict[str, QueueServiceClient] = {}
        self._created: set[tuple[str, str]] = set()
        self._lock = asyncio.Lock()
        # Called after messages are written to a queue, so a trigger on it in this host polls at once
        # (the host's SharedQueueWatcher does the same).
        self.on_enqueued: Callable[[str, str], None] | None = None

    def service(self, connection_string: str) -> QueueServiceClient:
        client = self._services.get(connection_string)
        if client is None:
            client = QueueServiceClient.from_connection_string(connection_string)
            self._services[connection_string] = client
        return client

    def queue(self, connection_string: str, queue_name: str) -> QueueClient:
        return self.service(connection_string).get_queue_client(queue_name)

    async def ensure_queue(self, connection_string: str, queue_name: str) -> None:
        key = (connection_string, queue_name)
        if key in self._created:
            return
        async with self._lock:
            if key in self._created:
                return
            with contextlib.suppress(ResourceExistsError):
                await self.queue(connection_string, queue_name).create_queue()
            self._created.add(key)

    async def send(self, connection_string: str, queue_name: str, text: str) -> None:
        client = self.queue(connection_string, queue_name)
        try:
            await client.send_message(text)
        except ResourceNotFoundError:
            # Created on first use, as the host's queue binding does.
            self._created.discard((connection_string, queue_name))
            await self.ensure_queue(connection_string, queue_name)
            await client.send_message(text)

    async def write_output(self, connection_string: str, queue_name: str, value: Any, encoding: str) -> int:
        """Write every message of one output value, concurrently (bounded); returns how many."""
        texts = [encode(body, encoding) for body in message_bodies(value)]
        if not texts:
            return 0
        await self.ensure_queue(connection_string, queue_name)
        limit = asyncio.Semaphore(OUTPUT_CONCURRENCY)

        async def one(text: str) -> None:
            async with limit:
                await self.send(connection_string, queue_name, text)

        await asyncio.gather(*(one(t) for t in texts))
        if self.on_enqueued is not None:
            self.on_enqueued(connection_string, queue_name)
        return len(texts)

    async def close(self) -> None:
        services, self._services = self._services, {}
        for client in services.values():
            await client.close()
