"""Fault injection: the next ``count`` requests whose method and path match get an error status
(with ``Retry-After``) and/or added latency. Control routes are never faulted."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass


@dataclass
class Fault:
    id: str
    method: str | None
    path: re.Pattern[str] | None
    status: int | None
    retry_after: int | None
    latency_ms: int
    remaining: int

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
        count: int,
    ) -> Fault:
        fault = Fault(
            id=str(uuid.uuid4()),
            method=method.upper() if method else None,
            path=re.compile(path) if path else None,
            status=status,
            retry_after=retry_after,
            latency_ms=latency_ms,
            remaining=count,
        )
        self._faults.append(fault)
        return fault

    def clear(self) -> None:
        self._faults.clear()

    def active(self) -> list[Fault]:
        return [f for f in self._faults if f.remaining > 0]

    def take(self, method: str, path: str) -> Fault | None:
        """The first matching fault with uses left, used up by one."""
        for fault in self._faults:
            if fault.remaining > 0 and fault.matches(method, path):
                fault.remaining -= 1
                return fault
        return None
