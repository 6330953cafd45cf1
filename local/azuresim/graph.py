"""Microsoft Graph front door: bearer-token check, path routing and the shared OData helpers.

Graph paths are case-insensitive (notifications even say ``Users/.../Messages/...``) and accept
key syntax (``mailFolders('inbox')``), which aiohttp's router cannot express, so ``/v1.0/...`` is one
aiohttp route and this module matches the rest against templates itself.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

from aiohttp import web
from multidict import MultiMapping

from .content import Content, base64_chunks, base64_length
from .errors import GraphError
from .identity import GRAPH_RESOURCE, Authority, TokenError, bearer_token, origin
from .throttling import MailboxConcurrency, is_mail_api

GRAPH_JSON = "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8"
_KEY_SEGMENT = re.compile(r"^([^()]+)\('?([^')]*)'?\)$")
_IMMUTABLE = re.compile(r'idtype\s*=\s*"?immutableid"?', re.IGNORECASE)
# Seconds an injected latency fault adds to a Graph request, spent in it (set by the fault middleware).
LATENCY = "azuresim.latency"


@dataclass
class GraphRequest:
    request: web.Request
    params: dict[str, str]
    claims: dict[str, Any]
    immutable: bool

    @property
    def base(self) -> str:
        return f"{origin(self.request)}/v1.0"

    @property
    def query(self) -> MultiMapping[str]:
        return self.request.query

    @property
    def app_id(self) -> str:
        return str(self.claims.get("appid") or self.claims.get("azp"))

    @property
    def delegated(self) -> bool:
        """A user's token (``scp``) rather than the app's own (``roles``)."""
        return is_delegated(self.claims)

    def own_resource(self, path: str) -> str:
        """``me/...`` as ``users/{signed-in user}/...`` for a delegated caller; other paths unchanged."""
        segments = path.strip().lstrip("/").split("/", 1)
        if self.delegated and segments[0].lower() == "me":
            return "/".join(["users", str(self.claims["oid"]), *segments[1:]])
        return path

    def option(self, name: str) -> str | None:
        """An OData system query option, with or without ``$``, case-insensitively."""
        wanted = name.lower().lstrip("$")
        for key, value in self.request.query.items():
            if key.lower().lstrip("$") == wanted:
                return value
        return None

    async def json_object(self) -> dict[str, Any]:
        try:
            body = json.loads(await self.request.read() or b"null")
        except ValueError as exc:
            raise GraphError(400, "BadRequest", "Invalid JSON in the request body.") from exc
        if not isinstance(body, dict):
            raise GraphError(400, "BadRequest", "The request body must be a JSON object.")
        return body

    def require_role(self, *roles: str) -> None:
        """Application permissions (``roles``) or delegated ones (``scp``) of the same names."""
        granted = set(self.claims.get("roles", [])) | set(str(self.claims.get("scp", "")).split())
        if not granted.intersection(roles):
            raise GraphError(403, "ErrorAccessDenied", "Access is denied. Check credentials and try again.")

    def headers(self) -> dict[str, str]:
        return {"Preference-Applied": 'IdType="ImmutableId"'} if self.immutable else {}


Handler = Callable[[GraphRequest], Awaitable[web.StreamResponse]]
# Delegated permissions to read the signed-in user's profile, and anyone's.
OWN_USER_SCOPES = {"User.Read", "User.ReadWrite"}
ALL_USERS_SCOPES = {"User.ReadBasic.All", "User.Read.All"}


def is_delegated(claims: dict[str, Any]) -> bool:
    return "scp" in claims


@dataclass
class _Route:
    method: str
    segments: list[str]
    template: str
    handler: Handler


def split_path(path: str) -> list[str]:
    """``users/x/mailFolders('inbox')/messages`` -> ``[users, x, mailFolders, inbox, messages]``."""
    segments: list[str] = []
    for segment in path.strip("/").split("/"):
        match = _KEY_SEGMENT.match(segment)
        if match:
            segments.extend([match.group(1), match.group(2)])
        elif segment:
            segments.append(segment)
    return segments


def message_key(path: str) -> str | None:
    """The message id segment of a Graph path (``.../messages/{id}/...``), else None."""
    segments = split_path(path)
    for index, segment in enumerate(segments[:-1]):
        following = segments[index + 1]
        if segment.lower() == "messages" and following.lower() != "delta":
            return following
    return None


class GraphRouter:
    def __init__(self, authority: Authority, concurrency: MailboxConcurrency | None = None) -> None:
        self.authority = authority
        self.concurrency = concurrency or MailboxConcurrency()
        self._routes: list[_Route] = []

    def add(self, method: str, template: str, handler: Handler) -> None:
        self._routes.append(_Route(method, template.split("/"), template, handler))

    def _match(self, segments: list[str]) -> list[tuple[_Route, dict[str, str]]]:
        """Routes matching the path with their parameters, most literal segments first
        (``messages/delta`` beats ``messages/{message}``)."""
        found: list[tuple[_Route, dict[str, str]]] = []
        for route in self._routes:
            if len(route.segments) != len(segments):
                continue
            candidate: dict[str, str] = {}
            for pattern, actual in zip(route.segments, segments, strict=True):
                if pattern.startswith("{"):
                    candidate[pattern[1:-1]] = actual
                elif pattern.lower() != actual.lower():
                    break
            else:
                found.append((route, candidate))
        found.sort(key=lambda pair: -sum(not s.startswith("{") for s in pair[0].segments))
        return found

    def _claims(self, request: web.Request) -> dict[str, Any]:
        challenge = {
            "WWW-Authenticate": 'Bearer realm="", '
            f'authorization_uri="{origin(request)}/common/oauth2/authorize", '
            'client_id="00000003-0000-0000-c000-000000000000"'
        }
        token = bearer_token(request)
        if token is None:
            raise GraphError(401, "InvalidAuthenticationToken", "Access token is empty.", challenge)
        audiences = {GRAPH_RESOURCE, f"{GRAPH_RESOURCE}/"}
        try:
            return self.authority.verify(token, audiences)
        except TokenError as exc:
            raise GraphError(401, "InvalidAuthenticationToken", str(exc), challenge) from exc

    def label(self, method: str, path: str) -> str:
        """The route template a ``/v1.0/...`` request matches (the path itself when none does)."""
        segments = split_path(path.removeprefix("/v1.0"))
        routes = [r for r, _ in self._match(segments)]
        route = next((r for r in routes if r.method == method), routes[0] if routes else None)
        return "/v1.0/" + (route.template if route else "/".join(segments))

    def _check_delegated(self, claims: dict[str, Any], route: _Route, params: dict[str, str]) -> None:
        """A delegated caller reaches only the signed-in user's own mailbox, as Graph answers
        (other mailboxes need application permissions or shared-folder scopes this simulator leaves out)."""
        if "user" not in params:
            return
        mailbox = self.authority.store.find_mailbox(params["user"])
        own = mailbox is not None and mailbox.id == claims.get("oid")
        if route.template == "users/{user}":
            scopes = set(str(claims.get("scp", "")).split())
            allowed = scopes & ALL_USERS_SCOPES or (own and scopes & OWN_USER_SCOPES)
            if not allowed:
                raise GraphError(
                    403, "Authorization_RequestDenied", "Insufficient privileges to complete the operation."
                )
        elif mailbox is not None and not own:
            raise GraphError(403, "ErrorAccessDenied", "Access is denied. Check credentials and try again.")

    async def handle(self, request: web.Request) -> web.StreamResponse:
        segments = split_path(request.match_info["tail"])
        claims = self._claims(request)
        if segments and segments[0].lower() == "me":
            if not is_delegated(claims):
                raise GraphError(400, "BadRequest", "/me request is only valid with delegated authentication flow.")
            segments = ["users", str(claims["oid"]), *segments[1:]]
        routes = self._match(segments)
        if not routes:
            raise GraphError(
                400, "BadRequest", f"Resource not found for the segment '{segments[-1] if segments else ''}'."
            )
        chosen = next(((r, p) for r, p in routes if r.method == request.method), None)
        if chosen is None:
            raise GraphError(405, "Request_BadRequest", "Specified HTTP method is not allowed for the request uri.")
        immutable = any(_IMMUTABLE.search(value) for value in request.headers.getall("Prefer", []))
        route, params = chosen
        if is_delegated(claims):
            self._check_delegated(claims, route, params)
        g = GraphRequest(request, params, claims, immutable)

        async def answer() -> web.StreamResponse:
            await asyncio.sleep(request.get(LATENCY, 0))
            return await route.handler(g)

        mailbox = self.authority.store.find_mailbox(params["user"]) if "user" in params else None
        if mailbox is None or not is_mail_api(route.template):
            return await answer()
        # Outlook's four concurrent requests per app and mailbox (an unknown mailbox is the handler's 404).
        return await self.concurrency.run(g.app_id, mailbox.id, answer)


# -- OData helpers --------------------------------------------------------------------------------
def parse_list(text: str | None) -> list[str]:
    return [part.strip() for part in (text or "").split(",") if part.strip()]


def select_fields(
    entity: dict[str, Any], select: list[str] | None, type_name: str, always: Iterable[str] = ("id",)
) -> dict[str, Any]:
    """Apply ``$select`` case-insensitively; ``@odata.*`` annotations and ``always`` stay.

    An unknown property is a 400, as Graph answers."""
    if not select:
        return entity
    by_lower = {key.lower(): key for key in entity if not key.startswith("@")}
    chosen = set(always)
    for name in select:
        key = by_lower.get(name.lower())
        if key is None:
            raise GraphError(
                400,
                "RequestBroker--ParseUri",
                f"Could not find a property named '{name}' on type '{type_name}'.",
            )
        chosen.add(key)
    return {k: v for k, v in entity.items() if k.startswith("@") or k in chosen}


def parse_top(value: str | None, default: int, maximum: int = 1000) -> int:
    if value is None:
        return default
    try:
        top = int(value)
    except ValueError as exc:
        raise GraphError(400, "BadRequest", f"Invalid value '{value}' for $top query option.") from exc
    if top < 1:
        raise GraphError(400, "BadRequest", f"Invalid value '{value}' for $top query option.")
    return min(top, maximum)


def parse_skip(value: str | None) -> int:
    try:
        skip = int(value) if value is not None else 0
    except ValueError as exc:
        raise GraphError(400, "BadRequest", f"Invalid value '{value}' for $skip query option.") from exc
    return max(skip, 0)


def page(g: GraphRequest, items: list[Any], default_top: int) -> tuple[list[Any], str | None]:
    """One page by ``$top``/``$skip`` and the ``@odata.nextLink`` for the rest (other options kept)."""
    top = parse_top(g.option("top"), default_top)
    skip = parse_skip(g.option("skip"))
    chunk = items[skip : skip + top]
    if skip + top >= len(items):
        return chunk, None
    query: Mapping[str, str] = {
        **{k: v for k, v in g.query.items() if k.lower().lstrip("$") != "skip"},
        "$skip": str(skip + top),
    }
    path = quote(g.request.path)
    return chunk, f"{origin(g.request)}{path}?{urlencode(query, quote_via=quote)}"


# -- responses ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Base64Of:
    """Placeholder for a JSON string holding base64 of ``content``: streamed, never built whole."""

    content: Content


async def send_json(
    request: web.Request, payload: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.StreamResponse:
    """JSON response; ``Base64Of`` values are encoded while being sent, with an exact Content-Length."""
    marker = f"@@b64-{secrets.token_hex(8)}-"
    contents: list[Content] = []

    def swap(value: Any) -> Any:
        if isinstance(value, Base64Of):
            contents.append(value.content)
            return f"{marker}{len(contents) - 1}@@"
        if isinstance(value, dict):
            return {k: swap(v) for k, v in value.items()}
        if isinstance(value, list):
            return [swap(v) for v in value]
        return value

    text = json.dumps(swap(payload))
    if not contents:
        return web.Response(body=text.encode(), status=status, headers={**(headers or {}), "Content-Type": GRAPH_JSON})
    pieces = re.split(f'"{re.escape(marker)}(\\d+)@@"', text)
    texts = [p.encode() for p in pieces[0::2]]
    refs = [contents[int(i)] for i in pieces[1::2]]
    response = web.StreamResponse(status=status, headers={**(headers or {}), "Content-Type": GRAPH_JSON})
    response.content_length = sum(map(len, texts)) + sum(base64_length(c.size) + 2 for c in refs)
    await response.prepare(request)
    for index, piece in enumerate(texts):
        await response.write(piece)
        if index < len(refs):
            await response.write(b'"')
            for chunk in base64_chunks(refs[index]):
                await response.write(chunk)
            await response.write(b'"')
    await response.write_eof()
    return response


async def send_content(
    request: web.Request, content: Content, content_type: str, headers: Mapping[str, str] | None = None
) -> web.StreamResponse:
    """Raw bytes in chunks with Content-Length; generated content is produced as it is sent."""
    response = web.StreamResponse(headers={**(headers or {}), "Content-Type": content_type})
    response.content_length = content.size
    await response.prepare(request)
    for chunk in content.chunks():
        await response.write(chunk)
    await response.write_eof()
    return response
