"""The process's long-lived clients, made on first use (never at import) and kept per event loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .pipeline.malware.options import check_tag_room
from .pipeline.routes import Route, check_route_actions, checked_routes
from .pipeline.routes_blob import BlobRoutes
from .pipeline.storage import BlobStore, blob_service, queue_service
from .retry import RetryPolicy
from .settings import MailAccount, MailboxFolder, Settings, get_settings
from .sources.graph.auth import AppTokens, ClientCredential, Tokens
from .sources.graph.client import GraphClient
from .sources.graph.clientstate import new_secret
from .sources.graph.known_subscriptions import KnownSubscriptions
from .sources.graph.state import StateStore
from .sources.pool import SessionPools
from .unpack.smimekeys import SmimeKeys
from .vault import CLIENT_STATE_SECRET, Vault

if TYPE_CHECKING:
    from azure.identity.aio import DefaultAzureCredential
    from azure.storage.blob.aio import BlobServiceClient
    from azure.storage.queue.aio import QueueServiceClient


@dataclass
class Runtime:
    settings: Settings
    graph: GraphClient
    credential: DefaultAzureCredential
    vault: Vault
    blobs: BlobServiceClient
    attachments: BlobStore
    state: BlobStore
    queues: QueueServiceClient
    tokens: Tokens  # AppTokens, or DelegatedTokens in delegated mode
    smime_keys: SmimeKeys
    subscriptions: KnownSubscriptions  # the webhook's view of which subscription each folder has
    mail_sessions: SessionPools  # signed-in IMAP and POP3 connections, per account, for the fetch worker
    folder_ids: dict[tuple[str, str], str] = field(default_factory=dict)  # (mailbox, path) → id, for moves
    routes_blob: BlobRoutes | None = None  # ROUTES_BLOB's routes, re-read while the app runs
    _containers: dict[str, BlobStore] = field(default_factory=dict)
    _queues_ready: set[str] = field(default_factory=set)
    _client_state_key: bytes | None = None
    _key_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def client_state_key(self) -> bytes:
        """The clientState HMAC key, read (or first created) in Key Vault once per process."""
        if self._client_state_key is None:
            async with self._key_lock:
                if self._client_state_key is None:
                    value = await self.vault.get_or_create(CLIENT_STATE_SECRET, new_secret)
                    self._client_state_key = value.encode()
        return self._client_state_key

    async def routes(self) -> tuple[Route, ...]:
        """The routes in force: ROUTES_BLOB's as last read, else ROUTES or ROUTES_FILE's from start-up."""
        return await self.routes_blob.current() if self.routes_blob is not None else self.settings.routes

    def container(self, name: str | None) -> BlobStore:
        """A route's container (None: ATTACHMENTS_CONTAINER), one store per container, made on first use."""
        if name is None or name == self.settings.attachments_container:
            return self.attachments
        if name not in self._containers:
            self._containers[name] = BlobStore(self.blobs, name)
        return self._containers[name]

    async def send_queue_message(self, queue: str, text: str) -> None:
        """Send base64 of the text, as every writer in this app does (queuetext.py); the queue is made if new."""
        from azure.core.exceptions import ResourceExistsError
        from azure.storage.queue import TextBase64EncodePolicy

        client = self.queues.get_queue_client(queue, message_encode_policy=TextBase64EncodePolicy())
        if queue not in self._queues_ready:
            with contextlib.suppress(ResourceExistsError):
                await client.create_queue()
            self._queues_ready.add(queue)
        await client.send_message(text)

    async def aclose(self) -> None:
        await self.mail_sessions.aclose()
        await self.queues.close()
        await self.graph.aclose()
        await self.vault.aclose()
        await self.blobs.close()
        await self.credential.close()


# httpx logs every request's full URL at INFO, and the Azure SDK every request's headers: the app's
# own events say what happened, with URLs redacted, so these stay at WARNING.
_QUIET_LOGGERS = ("httpx", "httpcore", "azure.core.pipeline.policies.http_logging_policy", "azure.identity")


def build_runtime(settings: Settings) -> Runtime:
    from azure.identity.aio import DefaultAzureCredential

    from .ops.telemetry import configure_telemetry

    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    # The first work that needs the clients is the first that needs telemetry: never the handshake.
    configure_telemetry()

    credential = DefaultAzureCredential()
    vault = Vault(settings, credential)
    blobs = blob_service(settings.storage, credential)
    state = BlobStore(blobs, settings.state_container)
    client_credential = ClientCredential(settings, vault)
    tokens: Tokens
    if settings.auth_mode == "delegated":
        from .sources.graph.delegated import DelegatedTokens

        tokens = DelegatedTokens(settings, client_credential, vault, state)
    else:
        tokens = AppTokens(settings, client_credential)

    async def subscription_of(folder_key: str) -> str | None:
        record, _ = await StateStore(state).load(folder_key)
        return record.subscription_id if record else None

    policy = RetryPolicy(max_retries=settings.graph_max_retries, max_retry_after=settings.graph_max_retry_after_seconds)
    return Runtime(
        settings=settings,
        graph=GraphClient(settings.graph_api_url, tokens.token, policy=policy, on_denied=tokens.denied),
        credential=credential,
        vault=vault,
        blobs=blobs,
        attachments=BlobStore(blobs, settings.attachments_container),
        state=state,
        queues=queue_service(settings.storage, credential),
        tokens=tokens,
        smime_keys=SmimeKeys(settings, vault),
        subscriptions=KnownSubscriptions(subscription_of),
        mail_sessions=SessionPools(settings.mail_connections_per_account),
        routes_blob=_routes_blob(settings, state),
    )


def _routes_blob(settings: Settings, state: BlobStore) -> BlobRoutes | None:
    if settings.routes_blob is None:
        return None
    places: tuple[MailboxFolder | MailAccount, ...] = (*settings.mailboxes, *settings.accounts)

    def validate(text: str) -> tuple[Route, ...]:
        routes = checked_routes("ROUTES_BLOB", text, settings.state_container)
        check_route_actions(routes, places, "ROUTES_BLOB")
        check_tag_room(routes, settings.malware, "ROUTES_BLOB")
        return routes

    return BlobRoutes(state, settings.routes_blob, validate)


_runtimes: dict[asyncio.AbstractEventLoop, Runtime] = {}


def get_runtime() -> Runtime:
    """This event loop's runtime: aiohttp and httpx connections belong to the loop that made them."""
    loop = asyncio.get_running_loop()
    runtime = _runtimes.get(loop)
    if runtime is None:
        runtime = _runtimes[loop] = build_runtime(get_settings())
    return runtime
