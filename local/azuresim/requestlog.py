"""Record of every non-control request (for tests and benchmarks) and the one-line stderr log.

The stderr line has the method, the path without its query, the status and the time taken; query
strings, headers and bodies (which may carry secrets or tokens) are never written."""

from __future__ import annotations

import re
import sys
from collections import Counter
from dataclasses import dataclass

_PLACEHOLDER = re.compile(r"\{[^}]+\}")


@dataclass
class RequestRecord:
    method: str
    path: str
    route: str
    status: int
    ms: float
    message_id: str | None = None  # immutable id of the message the path names, if any


def route_label(template: str) -> str:
    """``/v1.0/users/{user}/messages/{message}`` -> ``/v1.0/users/{id}/messages/{id}``."""
    return _PLACEHOLDER.sub("{id}", template)


class RequestLog:
    def __init__(self) -> None:
        self.records: list[RequestRecord] = []

    def add(self, record: RequestRecord) -> None:
        self.records.append(record)

    def clear(self) -> None:
        self.records.clear()

    def counts(self, records: list[RequestRecord] | None = None) -> dict[str, int]:
        return dict(Counter(f"{r.method} {r.route}" for r in (self.records if records is None else records)))


def log_line(method: str, path: str, status: int, ms: float) -> None:
    print(f"azuresim {method} {path} {status} {ms:.1f}ms", file=sys.stderr, flush=True)
