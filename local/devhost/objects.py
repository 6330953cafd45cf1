"""Concrete versions of the azure.functions objects the Python worker hands to a function."""

from __future__ import annotations

import datetime
import threading
from typing import Any, Generic, TypeVar, cast

import azure.functions as func

T = TypeVar("T")


class Out(func.Out[T], Generic[T]):
    """What the worker passes for an output binding parameter: a holder the function ``set``s."""

    def __init__(self) -> None:
        self._value: T | None = None
        self._set = False

    def set(self, val: T) -> None:
        self._value = val
        self._set = True

    def get(self) -> T:
        return cast(T, self._value)

    @property
    def is_set(self) -> bool:
        return self._set


class TraceContext(func._abc.TraceContext):
    """Empty W3C trace context: the dev host does no distributed tracing."""

    @property
    def trace_state(self) -> str:
        return ""

    @property
    def trace_parent(self) -> str:
        return ""

    @property
    def attributes(self) -> dict[str, str]:
        return {}


class RetryContext(func._abc.RetryContext):
    """No retry policies in the dev host: always the first (and only) try."""

    @property
    def retry_count(self) -> int:
        return 0

    @property
    def max_retry_count(self) -> int:
        return 0

    @property
    def exception(self) -> func._abc.RpcException:
        raise AttributeError("no retry exception: the dev host runs no retry policies")


class Context(func.Context):
    def __init__(self, invocation_id: str, function_name: str, function_directory: str) -> None:
        self._invocation_id = invocation_id
        self._function_name = function_name
        self._function_directory = function_directory
        # The worker hands out a threading.local holding the invocation id so user threads can log.
        self._tls = threading.local()
        self._tls.invocation_id = invocation_id

    @property
    def invocation_id(self) -> str:
        return self._invocation_id

    @property
    def thread_local_storage(self) -> type[threading.local]:
        return cast(type[threading.local], self._tls)

    @property
    def function_name(self) -> str:
        return self._function_name

    @property
    def function_directory(self) -> str:
        return self._function_directory

    @property
    def trace_context(self) -> func._abc.TraceContext:
        return TraceContext()

    @property
    def retry_context(self) -> func._abc.RetryContext:
        return RetryContext()


class QueueMessage(func.QueueMessage):
    """``func.QueueMessage`` with the trigger metadata the host sends (as azure.functions.queue's has)."""

    def __init__(
        self,
        *,
        id: str | None = None,
        body: str | bytes | None = None,
        pop_receipt: str | None = None,
        dequeue_count: int | None = None,
        expiration_time: datetime.datetime | None = None,
        insertion_time: datetime.datetime | None = None,
        time_next_visible: datetime.datetime | None = None,
    ) -> None:
        super().__init__(id=id, body=body, pop_receipt=pop_receipt)
        self._dequeue_count = dequeue_count
        self._expiration_time = expiration_time
        self._insertion_time = insertion_time
        self._time_next_visible = time_next_visible

    @property
    def dequeue_count(self) -> int | None:
        return self._dequeue_count

    @property
    def expiration_time(self) -> datetime.datetime | None:
        return self._expiration_time

    @property
    def insertion_time(self) -> datetime.datetime | None:
        return self._insertion_time

    @property
    def time_next_visible(self) -> datetime.datetime | None:
        return self._time_next_visible

    def __repr__(self) -> str:
        return f"<QueueMessage id={self.id} dequeue_count={self.dequeue_count}>"


def timer_request(
    *, past_due: bool, last: datetime.datetime | None, next_: datetime.datetime | None
) -> func.TimerRequest:
    """The worker's TimerRequest, with ScheduleStatus as the host sends it."""
    from azure.functions.timer import TimerRequest

    status: dict[str, Any] = {
        "Last": last.isoformat() if last else datetime.datetime.min.isoformat(),
        "Next": next_.isoformat() if next_ else None,
        "LastUpdated": datetime.datetime.now(datetime.UTC).isoformat(),
    }
    return TimerRequest(past_due=past_due, schedule_status=status, schedule={"AdjustForDST": True})
