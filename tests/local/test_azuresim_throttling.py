"""Outlook's "Four concurrent requests" per app ID and mailbox, as the simulator enforces it: the limiter
on its own, then through a simulator process with downloads held open as a client would hold them."""

from __future__ import annotations

import asyncio
import time
from contextlib import AsyncExitStack

import httpx
import pytest

from local.azuresim.errors import GraphError
from local.azuresim.throttling import MailboxConcurrency, is_mail_api
from tests.local.simclient import deliver, new_mailbox

MB = 1024 * 1024


def test_a_fifth_request_to_one_mailbox_is_refused_until_one_ends() -> None:
    limiter = MailboxConcurrency()
    held = [limiter.slot("app", "Mailbox-1") for _ in range(4)]
    for slot in held:
        slot.__enter__()
    with pytest.raises(GraphError) as refused, limiter.slot("app", "mailbox-1"):  # ids are case-insensitive
        pass
    assert refused.value.status == 429 and refused.value.code == "ApplicationThrottled"
    assert refused.value.message == "Application is over its MailboxConcurrency limit."
    assert refused.value.headers == {"Retry-After": "1"}
    # Another mailbox, or another app on this mailbox, has its own four.
    with limiter.slot("app", "mailbox-2"), limiter.slot("other-app", "mailbox-1"):
        assert limiter.describe()["inFlight"] == 6
    held.pop().__exit__(None, None, None)
    with limiter.slot("app", "mailbox-1"):
        pass
    for slot in held:
        slot.__exit__(None, None, None)
    assert limiter.describe() == {
        "limit": 4,
        "refused": 1,
        "refusedByMailbox": {"app mailbox-1": 1},
        "inFlight": 0,
        "peakInFlight": 4,
    }


async def test_a_slot_is_given_back_when_the_request_fails() -> None:
    limiter = MailboxConcurrency(limit=1)

    async def failing() -> None:
        raise GraphError(404, "ErrorItemNotFound", "gone")

    with pytest.raises(GraphError):
        await limiter.run("app", "mailbox", failing)

    async def fine() -> str:
        return "ok"

    assert await limiter.run("app", "mailbox", fine) == "ok"
    assert limiter.describe()["refused"] == 0


def test_the_limit_covers_the_mail_api_only() -> None:
    covered = [
        "users/{user}/messages",
        "users/{user}/messages/{message}/attachments/{attachment}/$value",
        "users/{user}/mailFolders/{folder}/messages/delta",
        "users/{user}/mailFolders",
    ]
    assert all(is_mail_api(t) for t in covered)
    assert not any(is_mail_api(t) for t in ("users/{user}", "subscriptions", "subscriptions/{subscription}"))


async def test_the_simulator_refuses_the_fifth_download_of_a_mailbox(
    http: httpx.AsyncClient, graph: dict[str, str]
) -> None:
    box, other = (await new_mailbox(http))["address"], (await new_mailbox(http))["address"]
    big = {"name": "scan.tif", "contentType": "image/tiff", "size": 64 * MB, "seed": 7}
    mail = await deliver(http, box, attachments=[big])
    value = f"/v1.0/users/{box}/messages/{mail['id']}/attachments/{mail['attachments'][0]['id']}/$value"
    before = (await http.get("/_sim/throttling")).json()["mailboxConcurrency"]["refused"]
    async with AsyncExitStack() as downloads:
        # Four downloads read one chunk each and then stall: the simulator is still sending them. (Each
        # body iterator is kept: a dropped one would close its connection.)
        streams, bodies = [], []
        for _ in range(4):
            response = await downloads.enter_async_context(http.stream("GET", value, headers=graph))
            assert response.status_code == 200
            bodies.append(response.aiter_raw())
            await anext(bodies[-1])
            streams.append(response)
        fifth = await http.get(f"/v1.0/users/{box}/messages", headers=graph)
        assert fifth.status_code == 429
        assert fifth.headers["Retry-After"] == "1"
        assert fifth.json()["error"]["code"] == "ApplicationThrottled"
        assert fifth.json()["error"]["message"] == "Application is over its MailboxConcurrency limit."
        # Not the Mail API, or another mailbox: answered.
        assert (await http.get(f"/v1.0/users/{box}", headers=graph)).status_code == 200
        assert (await http.get("/v1.0/subscriptions", headers=graph)).status_code == 200
        assert (await http.get(f"/v1.0/users/{other}/messages", headers=graph)).status_code == 200
        await streams[0].aclose()  # one download given up: its slot comes back
        deadline = time.monotonic() + 10
        while (await http.get(f"/v1.0/users/{box}/messages", headers=graph)).status_code == 429:
            assert time.monotonic() < deadline, "the slot of a closed download was never given back"
            await asyncio.sleep(0.1)
    after = (await http.get("/_sim/throttling")).json()["mailboxConcurrency"]
    assert after["refused"] >= before + 1


async def test_a_slow_answer_holds_its_slot(http: httpx.AsyncClient, graph: dict[str, str]) -> None:
    """Injected latency on a Graph request is spent inside it, as a slow mailbox's is: four slow requests
    leave no room for a fifth."""
    box = (await new_mailbox(http))["address"]
    messages = f"/v1.0/users/{box}/messages"
    fault = {"path": f"^{messages}$", "latencyMs": 1500, "count": 4}
    assert (await http.post("/_sim/faults", json=fault)).status_code == 201
    slow = [asyncio.create_task(http.get(messages, headers=graph)) for _ in range(4)]
    deadline = time.monotonic() + 5
    while (await http.get("/_sim/throttling")).json()["mailboxConcurrency"]["inFlight"] < 4:
        assert time.monotonic() < deadline, "the four slow requests never were in flight together"
        await asyncio.sleep(0.02)
    assert (await http.get(messages, headers=graph)).status_code == 429
    assert [r.status_code for r in await asyncio.gather(*slow)] == [200] * 4
    assert (await http.get(messages, headers=graph)).status_code == 200
