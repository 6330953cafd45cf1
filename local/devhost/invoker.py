"""Run one function invocation as the Python worker does, then flush its output bindings.

Async functions run on the event loop, sync ones in a thread pool (the worker's behaviour). Each
invocation logs one line: function, trigger, outcome, id, duration.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from .config import storage_connection
from .functions import FunctionSpec
from .objects import Context, Out
from .storage import StorageClients

log = logging.getLogger("devhost")


@dataclass
class InvocationResult:
    invocation_id: str
    succeeded: bool
    # Output binding name ("$return" included) -> the value the function produced.
    outputs: dict[str, Any] = field(default_factory=dict)
    error: BaseException | None = None


def _thread_count() -> int | None:
    # The worker reads PYTHON_THREADPOOL_THREAD_COUNT; unset means the executor's default.
    value = os.environ.get("PYTHON_THREADPOOL_THREAD_COUNT", "")
    return int(value) if value.isdigit() and int(value) > 0 else None


class Invoker:
    def __init__(
        self,
        app_dir: Path,
        storage: StorageClients,
        *,
        message_encoding: str,
        function_timeout: timedelta | None,
    ) -> None:
        self.app_dir = app_dir
        self.storage = storage
        self.message_encoding = message_encoding
        self.timeout = function_timeout.total_seconds() if function_timeout else None
        self.executor = ThreadPoolExecutor(max_workers=_thread_count(), thread_name_prefix="devhost-sync")
        self._in_flight: set[asyncio.Task[Any]] = set()
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    async def invoke(self, spec: FunctionSpec, trigger_value: Any, *, reason: str) -> InvocationResult:
        """Run the function; never raises for the function's own failures (see ``result.error``)."""
        task = asyncio.current_task()
        if task is not None:
            self._in_flight.add(task)
            self._idle.clear()
        invocation_id = str(uuid.uuid4())
        started = time.perf_counter()
        log.debug("Executing 'Functions.%s' (Reason='%s', Id=%s)", spec.name, reason, invocation_id)
        result = InvocationResult(invocation_id, succeeded=False)
        try:
            result.outputs = await self._call(spec, trigger_value, invocation_id)
            await self._write_queue_outputs(spec, result.outputs)
            result.succeeded = True
        except asyncio.CancelledError:
            result.error = TimeoutError("invocation cancelled (host shutting down)")
            raise
        except Exception as exc:
            result.error = exc
            # Full details go to the log only; HTTP callers get a bare 500.
            log.error("Function 'Functions.%s' failed (Id=%s)", spec.name, invocation_id, exc_info=exc)
        finally:
            duration_ms = (time.perf_counter() - started) * 1000
            log.info(
                "Executed 'Functions.%s' (%s, trigger=%s, Id=%s, Duration=%.0fms)",
                spec.name,
                "Succeeded" if result.succeeded else "Failed",
                spec.trigger_type,
                invocation_id,
                duration_ms,
            )
            if task is not None:
                self._in_flight.discard(task)
                if not self._in_flight:
                    self._idle.set()
        return result

    async def _call(self, spec: FunctionSpec, trigger_value: Any, invocation_id: str) -> dict[str, Any]:
        kwargs: dict[str, Any] = {}
        outs: dict[str, Out[Any]] = {}
        for name in spec.parameters:
            if name == spec.trigger["name"]:
                kwargs[name] = trigger_value
            elif name == "context":
                kwargs[name] = Context(invocation_id, spec.name, str(self.app_dir))
            else:
                outs[name] = kwargs[name] = Out()
        if spec.is_async:
            returned = await asyncio.wait_for(spec.user_function(**kwargs), self.timeout)
        else:
            call = functools.partial(contextvars.copy_context().run, spec.user_function, **kwargs)
            loop = asyncio.get_running_loop()
            # A sync function that times out keeps its thread (threads cannot be killed); the real
            # host would recycle the worker process instead.
            returned = await asyncio.wait_for(loop.run_in_executor(self.executor, call), self.timeout)
        outputs = {name: out.get() for name, out in outs.items() if out.is_set}
        has_return = any(b["name"] == "$return" for b in spec.outputs)
        if has_return:
            outputs["$return"] = returned
        elif returned is not None:
            # The worker fails such an invocation too.
            raise RuntimeError(f"function {spec.name!r} has no $return binding but returned {type(returned).__name__}")
        return outputs

    async def _write_queue_outputs(self, spec: FunctionSpec, outputs: dict[str, Any]) -> None:
        writes = []
        for binding in spec.outputs:
            if binding["type"] != "queue" or outputs.get(binding["name"]) is None:
                continue
            connection = storage_connection(
                binding.get("connection"),
                os.environ,
                where=f"function '{spec.name}', binding '{binding['name']}'",
            )
            writes.append(
                self.storage.write_output(
                    connection, binding["queueName"], outputs[binding["name"]], self.message_encoding
                )
            )
        # Bindings are flushed together; any failure fails the invocation (and so the HTTP call: 500).
        await asyncio.gather(*writes)

    async def drain(self, seconds: float) -> bool:
        """Wait for in-flight invocations; True when all finished within ``seconds``."""
        try:
            await asyncio.wait_for(self._idle.wait(), seconds)
            return True
        except TimeoutError:
            return False

    def cancel_all(self) -> None:
        for task in list(self._in_flight):
            task.cancel()

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
