"""Assembly: one aiohttp application serving identity, Graph, Key Vault and the control API by
path, with the middleware that injects faults, renders service errors and records requests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web
from aiohttp.typedefs import Middleware

from .arm import ResourceManager
from .clock import Clock
from .consent import Authorize
from .control import Control
from .defender import Defender
from .delegated import UserGrants
from .delivery import Delivery
from .directory import Directory
from .errors import (
    GRAPH_STATUS_CODES,
    IDENTITY_STATUS_CODES,
    GraphError,
    IdentityError,
    KeyVaultError,
    ServiceError,
)
from .eventgrid import EventGrid
from .faults import Fault, Faults
from .graph import LATENCY, GraphRouter, message_key
from .graph_delta import Delta
from .graph_mail import Mail
from .graph_subscriptions import Subscriptions
from .identity import Authority
from .identity_control import IdentityControl
from .keyvault import KeyVault
from .keyvault_certificates import Certificates
from .notifications import Notifier
from .requestlog import RequestLog, RequestRecord, log_line, route_label
from .store import Store
from .throttling import MailboxConcurrency

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Simulator:
    store: Store
    clock: Clock
    authority: Authority
    delivery: Delivery
    notifier: Notifier
    faults: Faults
    log: RequestLog
    app: web.Application
    concurrency: MailboxConcurrency


def _fault_error(path: str, fault: Fault) -> ServiceError:
    assert fault.status is not None
    headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else None
    if path.startswith("/v1.0/"):
        code, message = GRAPH_STATUS_CODES.get(fault.status, ("UnknownError", "Injected fault."))
        return GraphError(fault.status, code, message, headers)
    if path.startswith(("/secrets", "/deletedsecrets", "/certificates")):
        code, message = GRAPH_STATUS_CODES.get(fault.status, ("UnknownError", "Injected fault."))
        return KeyVaultError(fault.status, code, message, headers)
    oauth, aadsts = IDENTITY_STATUS_CODES.get(fault.status, ("server_error", 90033))
    error = IdentityError(fault.status, oauth, aadsts, "Injected fault: the service is unavailable.")
    error.headers = headers or {}
    return error


def _route(request: web.Request, router: GraphRouter) -> str:
    if request.path.startswith("/v1.0/"):
        return route_label(router.label(request.method, request.path))
    resource = request.match_info.route.resource
    return route_label(resource.canonical) if resource is not None else request.path


def _message_id(request: web.Request, store: Store) -> str | None:
    """The immutable id of the message a Graph request names (any id it ever had), else None."""
    if not request.path.startswith("/v1.0/"):
        return None
    key = message_key(request.path.removeprefix("/v1.0"))
    return store.message_id_of(key) if key is not None else None


def make_middleware(faults: Faults, log: RequestLog, router: GraphRouter, store: Store) -> Middleware:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        control = request.path.startswith("/_sim/")
        status = 500
        try:
            fault = None if control else faults.take(request.method, request.path)
            if fault is not None and fault.latency_ms and fault.status is None and request.path.startswith("/v1.0/"):
                # A slow answer from Graph is spent inside the request: it counts against the mailbox's
                # four concurrent requests, as a slow mailbox's requests do (graph.py).
                request[LATENCY] = fault.latency_ms / 1000
            elif fault is not None and fault.latency_ms:
                await asyncio.sleep(fault.latency_ms / 1000)
            if fault is not None and fault.status is not None:
                raise _fault_error(request.path, fault)
            response = await handler(request)
            status = response.status
            return response
        except ServiceError as error:
            status = error.status
            return error.response(request)
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            ms = (time.perf_counter() - started) * 1000
            log_line(request.method, request.path, status, ms)
            if not control:
                route = _route(request, router)
                log.add(RequestRecord(request.method, request.path, route, status, ms, _message_id(request, store)))

    return middleware


def build(tenant_id: str, client_id: str, client_secret: str) -> Simulator:
    store = Store(tenant_id, client_id, client_secret)
    clock = Clock()
    directory = Directory(store, clock)
    authority = Authority(store, directory)
    UserGrants(authority, directory, clock)
    notifier_ref: list[Notifier] = []
    delivery = Delivery(clock, lambda sub_id: notifier_ref[0].is_live(sub_id))
    eventgrid = EventGrid(clock)
    notifier = Notifier(store, clock, delivery, eventgrid)
    notifier_ref.append(notifier)
    faults, log = Faults(), RequestLog()

    concurrency = MailboxConcurrency()
    router = GraphRouter(authority, concurrency)
    mail = Mail(store, clock, notifier)
    mail.register(router)
    Delta(store, mail).register(router)
    subscriptions = Subscriptions(store, clock, delivery, notifier)
    subscriptions.register(router)
    control = Control(store, clock, delivery, notifier, subscriptions, faults, log, mail, concurrency)

    # Large enough for any JSON a test posts; attachments are generated, not uploaded.
    app = web.Application(middlewares=[make_middleware(faults, log, router, store)], client_max_size=64 * 1024 * 1024)
    app.add_routes(control.routes())
    app.add_routes(eventgrid.routes())
    defender = Defender(clock, eventgrid)
    app.add_routes(defender.routes())
    app.add_routes(IdentityControl(store, directory).routes())
    vault = KeyVault(store, clock, authority)
    app.add_routes(vault.routes())
    app.add_routes(Certificates(store, clock, vault).routes())
    app.add_routes(authority.routes())
    app.add_routes(ResourceManager(authority, eventgrid, defender).routes())
    app.add_routes(Authorize(store, clock, directory).routes())
    app.add_routes([web.route("*", "/v1.0/{tail:.*}", router.handle)])

    async def lifecycle(_app: web.Application) -> AsyncIterator[None]:
        await delivery.start()
        yield
        await defender.close()
        await eventgrid.close()
        await delivery.close()

    app.cleanup_ctx.append(lifecycle)
    return Simulator(store, clock, authority, delivery, notifier, faults, log, app, concurrency)
