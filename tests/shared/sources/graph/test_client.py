from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from shared.errors import GraphAuthError, GraphConflict, GraphNotFound, GraphThrottled
from shared.retry import RetryPolicy
from shared.sources.graph.client import GraphClient


async def token(mailbox: str | None) -> str:
    return "tok"


class Sleeps:
    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


def client(handler, sleeps: Sleeps | None = None, retries: int = 3) -> GraphClient:
    return GraphClient(
        "https://graph.test/v1.0",
        token,
        policy=RetryPolicy(max_retries=retries, backoff_base=0.01, backoff_max=0.05, max_retry_after=30),
        transport=httpx.MockTransport(handler),
        sleep=sleeps or Sleeps(),
    )


def graph_error(status: int, code: str, message: str, **headers: str) -> httpx.Response:
    return httpx.Response(status, json={"error": {"code": code, "message": message}}, headers=headers)


async def test_every_request_asks_for_immutable_ids_and_sends_the_token():
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"id": "x"})

    graph = client(handler)
    assert await graph.request("GET", "users/a@b.c/messages/1", params={"$select": "id"}) == {"id": "x"}
    assert seen[0].headers["Prefer"] == 'IdType="ImmutableId"'
    assert seen[0].headers["Authorization"] == "Bearer tok"
    assert str(seen[0].url) == "https://graph.test/v1.0/users/a@b.c/messages/1?%24select=id"


async def test_honours_retry_after_then_succeeds():
    answers = [
        graph_error(429, "TooManyRequests", "slow down", **{"Retry-After": "7"}),
        httpx.Response(200, json={}),
    ]
    sleeps = Sleeps()
    graph = client(lambda r: answers.pop(0), sleeps)
    assert await graph.request("GET", "me") == {}
    assert sleeps.calls == [7.0]


async def test_backs_off_without_retry_after_and_gives_up_typed():
    sleeps = Sleeps()
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return graph_error(503, "ServiceUnavailable", "busy")

    with pytest.raises(GraphThrottled) as caught:
        await client(handler, sleeps, retries=3).request("GET", "me")
    assert calls == 4
    assert len(sleeps.calls) == 3 and all(0 <= s <= 0.05 for s in sleeps.calls)
    assert caught.value.status == 503 and "ServiceUnavailable" in str(caught.value)


async def test_transport_errors_are_retried():
    answers: list[object] = [httpx.ConnectError("refused"), httpx.Response(200, json={"ok": 1})]

    def handler(request: httpx.Request) -> httpx.Response:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        assert isinstance(answer, httpx.Response)
        return answer

    assert await client(handler).request("GET", "me") == {"ok": 1}


@pytest.mark.parametrize(
    ("status", "kind"),
    [(404, GraphNotFound), (409, GraphConflict), (401, GraphAuthError), (403, GraphAuthError)],
)
async def test_errors_are_typed_and_not_retried(status, kind):
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return graph_error(status, "Code", "text")

    with pytest.raises(kind) as caught:
        await client(handler).request("GET", "me")
    assert calls == 1
    assert caught.value.code == "Code" and caught.value.graph_message == "text"


async def test_at_most_four_in_flight_per_mailbox_but_mailboxes_are_independent():
    in_flight: dict[str, int] = {}
    peak: dict[str, int] = {}

    async def handler(request: httpx.Request) -> httpx.Response:
        mailbox = request.url.path.split("/")[3]
        in_flight[mailbox] = in_flight.get(mailbox, 0) + 1
        peak[mailbox] = max(peak.get(mailbox, 0), in_flight[mailbox])
        await asyncio.sleep(0.01)
        in_flight[mailbox] -= 1
        return httpx.Response(200, json={})

    graph = client(handler)
    calls = [graph.request("GET", f"users/{m}/messages", mailbox=m) for m in ("a", "b") for _ in range(12)]
    await asyncio.gather(*calls)
    assert peak == {"a": 4, "b": 4}


async def test_stream_holds_body_until_read():
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b"x" * 10_000)

    graph = client(handler)
    async with graph.stream("GET", "users/a/messages/1/attachments/2/$value", mailbox="a") as response:
        data = b"".join([c async for c in response.aiter_bytes(1000)])
    assert len(data) == 10_000


async def test_json_body_is_sent():
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(201, json=json.loads(request.content))

    assert await client(handler).request("POST", "subscriptions", json={"a": 1}) == {"a": 1}
