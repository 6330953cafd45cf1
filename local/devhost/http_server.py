"""The dev host's HTTP side: HTTP triggers under the route prefix, and the admin API.

Admin API (the master key in ``x-functions-key`` or ``?code=``, as on the real host):
- ``POST /admin/functions/{name}`` with ``{"input": "..."}`` runs a non-HTTP function now and answers
  202 at once, like the host. Dev host extension: ``?wait=true`` answers only when the invocation has
  finished, 200 on success, 500 on failure, with ``{"invocationId", "status"}``.
- ``GET /admin/host/status`` → ``{"state": "Running"}``; ``GET /admin/functions`` lists the functions.

HTTP triggers with authLevel ``function`` or ``admin`` need a key (``?code=`` or ``x-functions-key``), as
in Azure (Core Tools checks none locally; the dev host does, so tests see what Azure does): see keys.py.
A missing or wrong key is a bare 401 and the function is not invoked.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Coroutine
from typing import Any

import azure.functions as func
from aiohttp import web
from multidict import CIMultiDict

from .functions import FunctionSpec
from .invoker import InvocationResult, Invoker
from .keys import HostKeys
from .routes import RouteTable

log = logging.getLogger("devhost.http")

# The host's default maxRequestBodySize (100 MB); aiohttp's own default is 1 MB.
MAX_BODY = 100 * 1024 * 1024

AdminRunner = Callable[[FunctionSpec, str], Coroutine[Any, Any, InvocationResult]]


def _joined(pairs: Any) -> dict[str, str]:
    # The host hands the worker one string per name; repeated names are joined with commas.
    result: dict[str, str] = {}
    for key, value in pairs.items():
        result[key] = f"{result[key]},{value}" if key in result else value
    return result


def _methods(spec: FunctionSpec) -> set[str] | None:
    methods = spec.trigger.get("methods")
    return {str(m).upper() for m in methods} if methods else None


def to_response(value: Any) -> web.Response:
    """The function's http output as an aiohttp response (mirrors the worker's HttpResponseConverter)."""
    if value is None:
        # The worker cannot encode None for an http output ("unable to encode outgoing TypedData"),
        # so the invocation fails and the caller gets a 500.
        raise TypeError("an HTTP function returned None; return func.HttpResponse")
    if isinstance(value, str):
        return web.Response(status=200, body=value.encode("utf-8"), content_type="text/plain", charset="utf-8")
    if isinstance(value, bytes):
        return web.Response(status=200, body=value, content_type="application/octet-stream")
    if not isinstance(value, func.HttpResponse):
        raise TypeError(f"an HTTP function must return func.HttpResponse or str, not {type(value).__name__}")
    headers: CIMultiDict[str] = CIMultiDict()
    for key, header_value in value.headers.items():
        headers.add(key, header_value)
    if "content-type" not in headers:
        mimetype = value.mimetype
        headers["Content-Type"] = f"{mimetype}; charset={value.charset}" if mimetype.startswith("text/") else mimetype
    status = int(value.status_code)
    body = value.get_body()
    if status in (204, 304) or 100 <= status < 200:
        headers.popall("Content-Type", None)
        body = b""
    return web.Response(status=status, body=body, headers=headers)


class HttpServer:
    def __init__(
        self,
        specs: list[FunctionSpec],
        invoker: Invoker,
        route_prefix: str,
        admin_runner: AdminRunner,
        keys: HostKeys,
    ) -> None:
        self.keys = keys
        self.specs = {spec.name.lower(): spec for spec in specs}
        self.invoker = invoker
        self.route_prefix = route_prefix
        self.admin_runner = admin_runner
        self.routes: RouteTable[FunctionSpec] = RouteTable()
        for spec in specs:
            if spec.trigger_type == "httpTrigger":
                self.routes.add(str(spec.trigger.get("route") or spec.name), spec)
        self.background: set[asyncio.Task[Any]] = set()
        self.app = web.Application(client_max_size=MAX_BODY, middlewares=[self._admin_auth])
        self.app.router.add_get("/admin/host/status", self.host_status)
        self.app.router.add_get("/admin/functions", self.list_functions)
        self.app.router.add_post("/admin/functions/{name}", self.admin_invoke)
        self.app.router.add_route("*", "/{tail:.*}", self.dispatch)

    def route_urls(self, base_url: str) -> list[str]:
        prefix = f"/{self.route_prefix}" if self.route_prefix else ""
        return [
            f"{spec.name}: [{','.join(sorted(_methods(spec) or {'*'}))}] {base_url}{prefix}/"
            f"{str(spec.trigger.get('route') or spec.name).strip('/')}"
            for spec in self.specs.values()
            if spec.trigger_type == "httpTrigger"
        ]

    @staticmethod
    def _given_key(request: web.Request) -> str:
        return request.query.get("code") or request.headers.get("x-functions-key") or ""

    @web.middleware
    async def _admin_auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path.lower().startswith("/admin/") and not self.keys.allows("admin", self._given_key(request)):
            return web.Response(status=401)
        response: web.StreamResponse = await handler(request)
        return response

    async def host_status(self, request: web.Request) -> web.Response:
        return web.json_response({"state": "Running", "processUptime": None, "version": "devhost"})

    async def list_functions(self, request: web.Request) -> web.Response:
        return web.json_response([{"name": spec.name, "trigger": spec.trigger_type} for spec in self.specs.values()])

    async def admin_invoke(self, request: web.Request) -> web.Response:
        spec = self.specs.get(request.match_info["name"].lower())
        if spec is None:
            return web.json_response({"error": "function not found"}, status=404)
        if spec.trigger_type == "httpTrigger":
            return web.json_response({"error": "HTTP functions are called on their route"}, status=400)
        try:
            payload = json.loads(await request.read() or b"null")
        except ValueError:
            payload = None
        if not isinstance(payload, dict):
            # The host answers 400 when the body is not a FunctionInvocation.
            return web.json_response({"error": 'body must be {"input": "..."}'}, status=400)
        raw_input = payload.get("input")
        text = raw_input if isinstance(raw_input, str) else "" if raw_input is None else json.dumps(raw_input)
        task = asyncio.create_task(self.admin_runner(spec, text), name=f"admin-{spec.name}")
        self.background.add(task)
        task.add_done_callback(self.background.discard)
        if request.query.get("wait", "").lower() not in ("1", "true", "yes"):
            return web.Response(status=202)
        result = await asyncio.shield(task)
        return web.json_response(
            {"invocationId": result.invocation_id, "status": "Succeeded" if result.succeeded else "Failed"},
            status=200 if result.succeeded else 500,
        )

    def _authorised(self, request: web.Request, spec: FunctionSpec) -> bool:
        level = str(spec.trigger.get("authLevel", "function")).lower()
        return self.keys.allows(level, self._given_key(request))

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        if self.route_prefix:
            prefix = f"/{self.route_prefix}"
            if path.lower() != prefix.lower() and not path.lower().startswith(prefix.lower() + "/"):
                if path == "/":
                    return web.Response(text="Azure Functions dev host is running.\n")
                raise web.HTTPNotFound()
            path = path[len(prefix) :]
        matches = self.routes.match(path)
        if not matches:
            raise web.HTTPNotFound()
        for spec, params in matches:
            methods = _methods(spec)
            if methods is None or request.method.upper() in methods:
                return await self._call(request, spec, params)
        # The host answers 404, not 405, when the route exists but the method is not allowed
        # (azure-functions-host issue 10098); the dev host does the same so tests see what Azure does.
        log.info("%s %s: no function accepts method %s on this route", request.method, request.path, request.method)
        raise web.HTTPNotFound()

    async def _call(self, request: web.Request, spec: FunctionSpec, params: dict[str, str]) -> web.StreamResponse:
        if not self._authorised(request, spec):
            return web.Response(status=401)
        body = await request.read()
        http_request = func.HttpRequest(
            method=request.method,
            url=str(request.url),
            headers=_joined(request.headers),
            params=_joined(request.query),
            route_params=params,
            body=body,
        )
        result = await self.invoker.invoke(spec, http_request, reason=f"HTTP {request.method} {request.path}")
        if not result.succeeded:
            return web.Response(status=500)
        output = next((b["name"] for b in spec.outputs if b["type"] == "http"), None)
        try:
            return to_response(result.outputs.get(output) if output else None)
        except TypeError as exc:
            log.error("Function 'Functions.%s' (Id=%s): %s", spec.name, result.invocation_id, exc)
            return web.Response(status=500)
