"""Routes from a blob in the state container (`ROUTES_BLOB`), changed without a redeployment: upload a new
`routes.json` (Storage Explorer, `az storage blob upload --auth-mode login`) and every instance takes it within a
minute.

The rule. Each process reads the blob with the app's identity and keeps the routes; at most once a minute it asks
again with the ETag it holds (If-None-Match: an unchanged blob answers 304 and nothing is downloaded), never once
per mail. A version that is not valid routes (the same checks as ROUTES at start-up, MAILBOXES included) is never
used: the last good routes stay, `routes.invalid` is logged at ERROR once per version, and `check` and `status` show
the problem. A process that has no good routes yet (the blob missing or broken since it started) fails each mail
with that problem, so the mail is retried and then parked with the reason, and `replay-poison` brings it back once
the blob is fixed: a mail stored by the wrong routes could not be taken back.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from ..errors import RoutesUnavailable, SettingsError
from ..logs import log_event
from .routes import Route
from .storage import BlobStore

logger = logging.getLogger(__name__)

REFRESH_SECONDS = 60.0
Validate = Callable[[str], tuple[Route, ...]]  # SettingsError naming the problem


class BlobRoutes:
    def __init__(
        self, store: BlobStore, name: str, validate: Validate, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.store = store
        self.name = name
        self._validate = validate
        self._clock = clock
        self._good: tuple[Route, ...] | None = None
        self._etag: str | None = None  # of the version read last, good or not
        self._checked: float | None = None
        self._lock = asyncio.Lock()
        self.problem: str | None = None  # why the version read last is not in use; None when it is

    async def current(self) -> tuple[Route, ...]:
        """The routes in force; RoutesUnavailable before any good version was read."""
        await self.refresh()
        if self._good is None:
            raise RoutesUnavailable(f"setting ROUTES_BLOB: {self.problem or 'not read yet'}")
        return self._good

    async def refresh(self, *, now: bool = False) -> None:
        """Ask the blob again if a minute has passed since the last time (`now`: at once, for check and status)."""
        async with self._lock:
            at = self._clock()
            if not now and self._checked is not None and at - self._checked < REFRESH_SECONDS:
                return
            self._checked = at
            from azure.core.exceptions import ResourceNotFoundError

            try:
                changed = await self.store.read_if_changed(self.name, self._etag)
            except ResourceNotFoundError:
                self._etag = None
                self._reject(f"{self.name} does not exist in container {self.store.name}")
                return
            if changed is None:
                return  # 304: the version held
            data, self._etag = changed
            try:
                routes = self._validate(data.decode("utf-8"))
            except (SettingsError, UnicodeError) as exc:
                self._reject(str(exc).removeprefix("setting ROUTES_BLOB: "))
                return
            self._good, self.problem = routes, None
            log_event(logger, "routes.loaded", blob=self.name, routes=len(routes), etag=self._etag)

    def _reject(self, problem: str) -> None:
        if problem != self.problem:
            kept = "the last good routes stay" if self._good is not None else "mail waits: no good routes yet"
            log_event(logger, "routes.invalid", logging.ERROR, blob=self.name, problem=problem, kept=kept)
        self.problem = problem
