"""Microsoft Graph over httpx: immutable IDs, at most 4 requests in flight per mailbox, retries.

Outlook throttles per app and mailbox at four concurrent requests (graph_facts §9); the limit is
kept here, once, for every call the app makes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import httpx

from ...errors import GraphAuthError, GraphConflict, GraphError, GraphNotFound, GraphThrottled
from ...logs import log_event
from ...retry import RETRY_STATUSES, RetryPolicy

logger = logging.getLogger(__name__)

IMMUTABLE_IDS = 'IdType="ImmutableId"'
PER_MAILBOX_CONCURRENCY = 4

# A token for a call on this mailbox (delegated mode: its owner's; application mode ignores it).
TokenSource = Callable[[str | None], Awaitable[str]]
# Told when Graph answers 401/403 for a mailbox, so the mailbox's missing consent is reported.
DeniedHook = Callable[[str, GraphError], Awaitable[None]]


def _error(response: httpx.Response, request: str) -> GraphError:
    code, message = "unknown", response.reason_phrase
    try:
        body = response.json()
        err = body.get("error", {}) if isinstance(body, dict) else {}
        if isinstance(err, dict):
            code = str(err.get("code") or code)
            message = str(err.get("message") or message)
    except ValueError:
        pass
    status = response.status_code
    kind: type[GraphError] = GraphError
    if status == 404:
        kind = GraphNotFound
    elif status == 409:
        kind = GraphConflict
    elif status in (401, 403):
        kind = GraphAuthError
    elif status in RETRY_STATUSES:
        kind = GraphThrottled
    return kind(status, code, message, request)


class GraphClient:
    """One per process and event loop; `mailbox` scopes the concurrency limit of a call."""

    def __init__(
        self,
        base_url: str,
        token: TokenSource,
        *,
        policy: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        on_denied: DeniedHook | None = None,
    ) -> None:
        self._base = base_url.rstrip("/")
        self._token = token
        self._on_denied = on_denied
        self._policy = policy or RetryPolicy()
        self._sleep = sleep
        self._slots: dict[str, asyncio.Semaphore] = {}
        self._http = httpx.AsyncClient(
            transport=transport,
            timeout=httpx.Timeout(30.0, connect=10.0),
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=16),
            headers={"Prefer": IMMUTABLE_IDS, "Accept": "application/json"},
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    def _slot(self, mailbox: str | None) -> asyncio.Semaphore:
        key = (mailbox or "").lower()
        slot = self._slots.get(key)
        if slot is None:
            slot = self._slots[key] = asyncio.Semaphore(PER_MAILBOX_CONCURRENCY)
        return slot

    def url(self, path: str) -> str:
        return path if path.startswith("https://") else f"{self._base}/{path.lstrip('/')}"

    @asynccontextmanager
    async def stream(
        self,
        method: str,
        path: str,
        *,
        mailbox: str | None = None,
        params: Mapping[str, str] | None = None,
        json: Any = None,
    ) -> AsyncIterator[httpx.Response]:
        """A successful response whose body is not read yet; retries happen before it is yielded.

        The mailbox slot is held while the caller reads the body: a download counts against the
        four concurrent requests Outlook allows.
        """
        label = f"{method} {path.split('?', 1)[0]}"
        attempt = 0
        async with self._slot(mailbox):
            while True:
                attempt += 1
                headers = {"Authorization": f"Bearer {await self._token(mailbox)}"}
                request = self._http.build_request(method, self.url(path), params=params, json=json, headers=headers)
                try:
                    response = await self._http.send(request, stream=True)
                except httpx.TransportError as exc:
                    delay = self._policy.delay(attempt, None)
                    if delay is None:
                        raise GraphThrottled(0, type(exc).__name__, str(exc) or "transport error", label) from exc
                    log_event(
                        logger,
                        "graph.retry",
                        logging.WARNING,
                        request=label,
                        reason=type(exc).__name__,
                        attempt=attempt,
                        wait=round(delay, 2),
                    )
                    await self._sleep(delay)
                    continue
                if response.is_success:
                    try:
                        yield response
                    finally:
                        await response.aclose()
                    return
                await response.aread()
                await response.aclose()
                if response.status_code in RETRY_STATUSES:
                    delay = self._policy.delay(attempt, response.headers.get("Retry-After"))
                    if delay is not None:
                        log_event(
                            logger,
                            "graph.retry",
                            logging.WARNING,
                            request=label,
                            status=response.status_code,
                            attempt=attempt,
                            wait=round(delay, 2),
                        )
                        await self._sleep(delay)
                        continue
                error = _error(response, label)
                if isinstance(error, GraphAuthError) and mailbox and self._on_denied is not None:
                    await self._on_denied(mailbox, error)
                raise error

    async def request(
        self,
        method: str,
        path: str,
        *,
        mailbox: str | None = None,
        params: Mapping[str, str] | None = None,
        json: Any = None,
    ) -> dict[str, Any]:
        """Send, retry as the policy says, and return the JSON body ({} for 204)."""
        async with self.stream(method, path, mailbox=mailbox, params=params, json=json) as response:
            body = await response.aread()
        if not body:
            return {}
        data = response.json()
        return data if isinstance(data, dict) else {"value": data}
