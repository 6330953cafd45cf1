"""The process's long-lived clients, made on first use (never at import) and kept per event loop."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .auth import TokenProvider
from .clientstate import new_secret
from .graph import GraphClient
from .retry import RetryPolicy
from .settings import Settings, get_settings
from .storage import BlobStore, blob_service
from .vault import CLIENT_STATE_SECRET, Vault

if TYPE_CHECKING:
    from azure.identity.aio import DefaultAzureCredential
    from azure.storage.blob.aio import BlobServiceClient


@dataclass
class Runtime:
    settings: Settings
    graph: GraphClient
    credential: DefaultAzureCredential
    vault: Vault
    blobs: BlobServiceClient
    attachments: BlobStore
    state: BlobStore
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

    async def aclose(self) -> None:
        await self.graph.aclose()
        await self.vault.aclose()
        await self.blobs.close()
        await self.credential.close()


# httpx logs every request's full URL at INFO, and the Azure SDK every request's headers: the app's
# own events say what happened, with URLs redacted, so these stay at WARNING.
_QUIET_LOGGERS = ("httpx", "httpcore", "azure.core.pipeline.policies.http_logging_policy", "azure.identity")


def build_runtime(settings: Settings) -> Runtime:
    from azure.identity.aio import DefaultAzureCredential

    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)

    credential = DefaultAzureCredential()
    tokens = TokenProvider(settings)
    policy = RetryPolicy(max_retries=settings.graph_max_retries, max_retry_after=settings.graph_max_retry_after_seconds)
    blobs = blob_service(settings.storage, credential)
    return Runtime(
        settings=settings,
        graph=GraphClient(settings.graph_api_url, tokens.token, policy=policy),
        credential=credential,
        vault=Vault(settings, credential),
        blobs=blobs,
        attachments=BlobStore(blobs, settings.attachments_container),
        state=BlobStore(blobs, settings.state_container),
    )


_runtimes: dict[asyncio.AbstractEventLoop, Runtime] = {}


def get_runtime() -> Runtime:
    """This event loop's runtime: aiohttp and httpx connections belong to the loop that made them."""
    loop = asyncio.get_running_loop()
    runtime = _runtimes.get(loop)
    if runtime is None:
        runtime = _runtimes[loop] = build_runtime(get_settings())
    return runtime
