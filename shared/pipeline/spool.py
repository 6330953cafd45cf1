"""Bytes kept to be read twice (a first reading for routes, then the store): a temporary file, in memory up
to one chunk, so memory stays bounded whatever the size."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator
from typing import IO

# Held in memory up to this size, and read back in pieces of it.
SPOOL_CHUNK = 1024 * 1024


class Spool:
    def __init__(self) -> None:
        self._file: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=SPOOL_CHUNK)  # noqa: SIM115 (closed in close)

    async def fill(self, chunks: AsyncIterator[bytes]) -> None:
        async for chunk in chunks:
            await asyncio.to_thread(self._file.write, chunk)

    async def read(self) -> AsyncIterator[bytes]:
        await asyncio.to_thread(self._file.seek, 0)
        while piece := await asyncio.to_thread(self._file.read, SPOOL_CHUNK):
            yield piece

    def close(self) -> None:
        self._file.close()
