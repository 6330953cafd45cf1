"""The dev host: loads the app, starts its triggers and HTTP server, shuts down cleanly."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from azure.core.exceptions import AzureError

from .config import (
    ConfigError,
    QueueOptions,
    function_timeout,
    load_host_json,
    load_local_settings,
    log_levels,
    route_prefix,
    storage_connection,
)
from .functions import FunctionSpec, describe, find_app, import_app_module
from .http_server import HttpServer
from .invoker import InvocationResult, Invoker
from .keys import load_keys, with_host_key
from .objects import QueueMessage
from .queue_trigger import QueueListener, receive_visibility, trigger_value
from .storage import StorageClients
from .timer_trigger import ScheduleMonitor, TimerListener

WEBHOOK_HOST_KEY = "graphwebhook"  # the host key infra/ creates for Graph's calls
log = logging.getLogger("devhost")


@dataclass
class Options:
    app_dir: Path
    host: str = "127.0.0.1"
    port: int = 7071
    ready_file: Path | None = None
    script: str = "function_app.py"
    shutdown_timeout: float = 30.0
    keys_file: Path | None = None  # default: .devhost/keys.json in the app folder


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true")


def configure_logging(levels: dict[str, int]) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(levels.get("", logging.INFO))
    # The Azure SDK logs every storage request at INFO: noise next to the app's own lines.
    for noisy in ("azure", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    for name, level in levels.items():
        if name:
            logging.getLogger(name).setLevel(level)


class DevHost:
    def __init__(self, options: Options) -> None:
        self.options = options
        self.app_dir = options.app_dir.resolve()
        self.storage = StorageClients()
        self.specs: list[FunctionSpec] = []
        self.disabled: list[str] = []
        self.queue_listeners: dict[str, QueueListener] = {}
        self.timer_listeners: dict[str, TimerListener] = {}
        self.runner: web.AppRunner | None = None
        self.url = ""
        self.invoker: Invoker | None = None
        self.server: HttpServer | None = None

    def load(self) -> None:
        """Everything that can fail on configuration, before anything listens. Raises ConfigError."""
        os.chdir(self.app_dir)
        load_local_settings(self.app_dir, os.environ)
        host_json = load_host_json(self.app_dir, os.environ)
        configure_logging(log_levels(host_json))
        self.queue_options = QueueOptions.from_host_json(host_json)
        self.route_prefix = route_prefix(host_json)
        timeout = function_timeout(host_json)
        script = os.environ.get("PYTHON_SCRIPT_FILE_NAME") or self.options.script
        module = import_app_module(self.app_dir, script)
        described = describe(find_app(module), os.environ)
        # The host's own switch: app setting `AzureWebJobs.<name>.Disabled` = true leaves a function out.
        self.disabled = [s.name for s in described if _truthy(os.environ.get(f"AzureWebJobs.{s.name}.Disabled"))]
        self.specs = [s for s in described if s.name not in self.disabled]
        self.invoker = Invoker(
            self.app_dir,
            self.storage,
            message_encoding=self.queue_options.message_encoding,
            function_timeout=timeout,
        )
        for spec in self.specs:
            where = f"function '{spec.name}'"
            if spec.trigger_type == "queueTrigger":
                connection = storage_connection(spec.trigger.get("connection"), os.environ, where=where)
                self.queue_listeners[spec.name] = QueueListener(
                    spec, connection, self.queue_options, self.storage, self.invoker, receive_visibility(os.environ)
                )
            elif spec.trigger_type == "timerTrigger":
                # The host id names the schedule status blobs; the host takes it from this setting too.
                host_id = os.environ.get("AzureFunctionsWebHost__hostid") or "devhost"  # noqa: SIM112 (the host's name)
                monitor = ScheduleMonitor(storage_connection(None, os.environ, where=where), host_id, spec.name)
                self.timer_listeners[spec.name] = TimerListener(spec, self.invoker, monitor)
            for binding in spec.outputs:
                if binding["type"] == "queue":
                    storage_connection(
                        binding.get("connection"), os.environ, where=f"{where}, binding '{binding['name']}'"
                    )
        self.storage.on_enqueued = self._wake_listeners
        keys_file = self.options.keys_file or self.app_dir / ".devhost" / "keys.json"
        self.keys_file = keys_file if keys_file.is_absolute() else self.app_dir / keys_file
        # As infra/ does in Azure: the host key the webhooks need is the one the app's settings name.
        webhook_key = os.environ.get("WEBHOOK_FUNCTION_KEY", "").strip()
        keys = with_host_key(self.keys_file, load_keys(self.keys_file), WEBHOOK_HOST_KEY, webhook_key)
        self.server = HttpServer(self.specs, self.invoker, self.route_prefix, self._admin_run, keys)

    def _wake_listeners(self, connection_string: str, queue_name: str) -> None:
        for listener in self.queue_listeners.values():
            if listener.queue_name == queue_name and listener.connection_string == connection_string:
                listener.wake()

    async def _admin_run(self, spec: FunctionSpec, text: str) -> InvocationResult:
        assert self.invoker is not None
        reason = "This function was programmatically called via the host APIs."
        if spec.trigger_type == "timerTrigger":
            return await self.timer_listeners[spec.name].run(past_due=False, reason=reason)
        message = QueueMessage(body=text.encode("utf-8"))
        return await self.invoker.invoke(spec, trigger_value(spec, message), reason=reason)

    async def start(self) -> None:
        assert self.server is not None
        self.runner = web.AppRunner(self.server.app, access_log=None, shutdown_timeout=self.options.shutdown_timeout)
        await self.runner.setup()
        site = web.TCPSite(self.runner, self.options.host, self.options.port)
        await site.start()
        address: Any = self.runner.addresses[0]
        self.url = f"http://{self.options.host}:{address[1]}"
        for queue_listener in self.queue_listeners.values():
            await queue_listener.start()
        for timer_listener in self.timer_listeners.values():
            await timer_listener.start()
        for spec in self.specs:
            log.info("Function '%s' (%s)", spec.name, spec.trigger_type)
        for name in self.disabled:
            log.info("Function '%s' is disabled", name)
        for line in self.server.route_urls(self.url):
            log.info("HTTP %s", line)
        log.info("Function keys in %s", self.keys_file)
        log.info("Dev host listening on %s (pid %d)", self.url, os.getpid())
        if self.options.ready_file:
            self._write_ready_file(self.options.ready_file)

    def _write_ready_file(self, path: Path) -> None:
        path = path if path.is_absolute() else Path(self.options.app_dir).resolve() / path
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps({"url": self.url, "pid": os.getpid()}), encoding="utf-8")
        # Atomic: a reader never sees a half-written file.
        tmp.replace(path)

    async def stop(self) -> None:
        log.info("Dev host stopping")
        for queue_listener in self.queue_listeners.values():
            await queue_listener.stop()
        for timer_listener in self.timer_listeners.values():
            await timer_listener.stop()
        if self.runner is not None:
            # Stops accepting connections, then waits (bounded) for requests in progress.
            await self.runner.cleanup()
        # Queue messages first: their delete or release must happen before the clients close.
        drained = await asyncio.gather(
            *(listener.drain(self.options.shutdown_timeout) for listener in self.queue_listeners.values())
        )
        if not all(drained):
            log.warning("Queue messages still in progress after %.0fs", self.options.shutdown_timeout)
        if self.invoker is not None and not await self.invoker.drain(self.options.shutdown_timeout):
            log.warning("Invocations still running after %.0fs; cancelling them", self.options.shutdown_timeout)
            self.invoker.cancel_all()
            await self.invoker.drain(5)
        await self.storage.close()
        if self.invoker is not None:
            self.invoker.close()
        log.info("Dev host stopped")


async def run(options: Options) -> int:
    host = DevHost(options)
    try:
        host.load()
    except ConfigError as exc:
        print(f"devhost: error: {exc}", file=sys.stderr, flush=True)
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await host.start()
    except (OSError, ConfigError, AzureError) as exc:
        print(f"devhost: error: {exc}", file=sys.stderr, flush=True)
        await host.stop()
        return 1
    await stop.wait()
    await host.stop()
    return 0
