"""Fault injection: the next ``count`` requests whose method and path match get an error status
(with ``Retry-After``) and/or added latency. With a ``rate``, each matching request is hit with that
probability instead (a soak's steady 10 % of throttling), ``count`` times at most (by default without
end, until the fault is deleted). Control routes are never faulted."""

from __future__ import annotations

import random
import re
import uuid
from dataclasses import dataclass, field


@dataclass
class Fault:
    id: str
    method: str | None
    path: re.Pattern[str] | None
    status: int | None
    retry_after: int | None
    latency_ms: int
    remaining: int | None  # None: no limit (rate faults only)
    rate: float | None = None
    hits: int = 0
    seen: int = 0  # matching requests it was drawn for (rate faults), hit or not
    _random: random.Random = field(default_factory=random.Random, repr=False)

    @property
    def active(self) -> bool:
        return self.remaining is None or self.remaining > 0

    def matches(self, method: str, path: str) -> bool:
        if self.method is not None and self.method != method.upper():
            return False
        return self.path is None or self.path.search(path) is not None

    def describe(self) -> dict[str, object]:
        return {
            "id": self.id,
            "method": self.method,
            "path": self.path.pattern if self.path else None,
            "status": self.status,
            "retryAfter": self.retry_after,
            "latencyMs": self.latency_ms,
            "remaining": self.remaining,
            "rate": self.rate,
            "hits": self.hits,
            "seen": self.seen,
        }


class Faults:
    def __init__(self) -> None:
        self._faults: list[Fault] = []

    def add(
        self,
        *,
        method: str | None,
        path: str | None,
        status: int | None,
        retry_after: int | None,
        latency_ms: int,
        count: int | None,
        rate: float | None = None,
        seed: int | None = None,
    ) -> Fault:
        fault = Fault(
            id=str(uuid.uuid4()),
            method=method.upper() if method else None,
            path=re.compile(path) if path else None,
            status=status,
            retry_after=retry_after,
            latency_ms=latency_ms,
            remaining=count,
            rate=rate,
            _random=random.Random(seed),
        )
        self._faults.append(fault)
        return fault

    def clear(self) -> None:
        self._faults.clear()

    def remove(self, fault_id: str) -> Fault | None:
        """Take one fault away; it, with its hits, or None if unknown."""
        for fault in self._faults:
            if fault.id == fault_id:
                self._faults.remove(fault)
                return fault
        return None

    def active(self) -> list[Fault]:
        return [f for f in self._faults if f.active]

    def take(self, method: str, path: str) -> Fault | None:
        """The first matching fault with uses left that hits (a rate fault hits by chance), used up by one."""
        for fault in self._faults:
            if not fault.active or not fault.matches(method, path):
                continue
            fault.seen += 1
            if fault.rate is not None and fault._random.random() >= fault.rate:
                continue
            if fault.remaining is not None:
                fault.remaining -= 1
            fault.hits += 1
            return fault
        return None
