"""Fuzzing both webhooks in process, wired as shared/workers.py wires them (settings from the environment,
the clientState key and the per-process subscription ids from the runtime).

Hypothesis generates bodies: bytes and JSON of any shape, and collections of Graph-shaped items that are
valid or mutated (a field removed, of a wrong type, huge, with control characters or lone surrogates, an
extra field, another tenant, subscription or clientState), duplicate JSON names and deep nesting. The
properties: no exception escapes and nothing answers 5xx (each call meets a new process, whose record
reads all begin after the call arrived, so every subscription id is decided: no 503); exactly the valid,
authentic items are queued (as the oracle below decides, from Graph's changeNotification reference);
every refusal is one line, in the response and in the log.

`make test` runs the `ci` profile (1,000 examples per property), `make soak` the `soak` profile (10,000).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import azure.functions as func
import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared import queuetext, workers
from shared.settings import Settings, get_settings, parse_settings
from shared.sources.graph.clientstate import make_client_state
from shared.sources.graph.known_subscriptions import KnownSubscriptions
from shared.sources.graph.messages import LIFECYCLE_EVENTS, parse_change, parse_lifecycle
from shared.sources.graph.webhook import MAX_BODY_BYTES
from tests.shared.conftest import BASE_ENV
from tests.shared.inprocess import Events, loop_with_events, place

SECRET = b"fuzz-client-state-key-0123456789abcdef"
OTHER_SECRET = b"someone-elses-key"
# Storage refuses a queue message beyond 64 KiB; the app writes every message base64-encoded (queuetext.py).
QUEUE_MESSAGE_LIMIT = 64 * 1024
SETTINGS = parse_settings(BASE_ENV)
FOLDERS = [folder.key for folder in SETTINGS.mailboxes]
# The subscription each folder's state record names.
HELD = {key: str(uuid.UUID(int=index + 1)) for index, key in enumerate(FOLDERS)}
UNSAFE = {chr(c) for c in [*range(0x20), *range(0x7F, 0xA0), 0x2028, 0x2029]}


class Out(func.Out[list[str]]):
    def __init__(self) -> None:
        self.value: list[str] | None = None

    def set(self, val: list[str]) -> None:
        self.value = val

    def get(self) -> list[str]:
        return list(self.value or [])


@dataclass
class FakeRuntime:
    """What workers.py reaches through get_runtime(): the clientState key and the subscription ids, each
    folder's id read from its 'record' as the real runtime reads it from storage."""

    subscriptions: KnownSubscriptions = field(init=False)
    reads: int = 0

    def __post_init__(self) -> None:
        self.fresh()

    def fresh(self) -> None:
        """A new process: nothing known yet (the app's clock: a call takes far less than the refresh window)."""

        async def load(folder_key: str) -> str | None:
            self.reads += 1
            return HELD.get(folder_key)

        self.subscriptions = KnownSubscriptions(load)

    async def client_state_key(self) -> bytes:
        return SECRET


@dataclass
class Harness:
    loop: asyncio.AbstractEventLoop
    rt: FakeRuntime
    events: Events

    def call(self, kind: str, body: bytes) -> tuple[func.HttpResponse, list[str], list[logging.LogRecord]]:
        self.rt.fresh()
        self.events.records.clear()
        out = Out()
        req = func.HttpRequest("POST", f"http://h/api/{kind}", params={"code": "k"}, body=body)
        entry = workers.notifications if kind == "notifications" else workers.lifecycle
        response = self.loop.run_until_complete(entry(req, out))
        return response, out.get(), list(self.events.records)


@pytest.fixture(scope="module")
def harness() -> Iterator[Harness]:
    with pytest.MonkeyPatch.context() as mp, loop_with_events() as (loop, events):
        for name in list(BASE_ENV):
            mp.setenv(name, BASE_ENV[name])
        get_settings.cache_clear()
        rt = FakeRuntime()
        place(loop, rt)
        try:
            yield Harness(loop, rt, events)
        finally:
            get_settings.cache_clear()


# -- strategies -----------------------------------------------------------------------------------
# Any Unicode, lone surrogates included (JSON can carry them as \ud800 escapes).
any_text = st.text(st.characters(exclude_categories=()), max_size=40)
huge_text = st.sampled_from([2048, 2049, 70_000, 1_000_000]).map(lambda n: "A" * n)
json_scalar = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | any_text
json_value = st.recursive(
    json_scalar, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(any_text, inner, max_size=4), max_leaves=12
)
deep = st.integers(min_value=1, max_value=200_000).map(lambda n: json.loads("[" * min(n, 500) + "]" * min(n, 500)))
wrong = json_value | huge_text | deep | st.sampled_from(["", "\n", "a\r\nb", "\u2028", "x\x00", "\ud800"])


def item_for(kind: str, folder: str, message_id: str) -> dict[str, Any]:
    item: dict[str, Any] = {
        "subscriptionId": HELD[folder],
        "subscriptionExpirationDateTime": "2026-11-29T08:00:00Z",
        "tenantId": SETTINGS.tenant_id,
        "clientState": make_client_state(SECRET, folder),
    }
    if kind == "notifications":
        item.update(
            changeType="created",
            resource=f"Users/u/Messages/{message_id}",
            resourceData={"@odata.type": "#Microsoft.Graph.Message", "id": message_id},
        )
    else:
        item["lifecycleEvent"] = "missed"
    return item


FIELDS = [
    "subscriptionId",
    "tenantId",
    "clientState",
    "changeType",
    "resource",
    "resourceData",
    "lifecycleEvent",
    "subscriptionExpirationDateTime",
]


@st.composite
def mutated_item(draw: st.DrawFn, kind: str) -> dict[str, Any]:
    folder = draw(st.sampled_from(FOLDERS))
    message_id = draw(st.sampled_from(["AAMkAD=", "AAMkADk0ZjA1LTQ5Zg-AAA=", "id/with/slashes"]) | any_text)
    item = item_for(kind, folder, message_id)
    for _ in range(draw(st.integers(0, 3))):
        how = draw(
            st.sampled_from(
                ["delete", "wrong", "extra", "tenant", "subscription", "clientstate", "resourcedata", "event", "case"]
            )
        )
        name = draw(st.sampled_from(FIELDS))
        if how == "delete":
            item.pop(name, None)
        elif how == "wrong":
            item[name] = draw(wrong)
        elif how == "extra":
            item[draw(any_text)] = draw(json_value)
        elif how == "tenant":
            item["tenantId"] = draw(st.sampled_from([str(uuid.uuid4()), SETTINGS.tenant_id.upper(), ""]) | any_text)
        elif how == "subscription":
            other = HELD[draw(st.sampled_from(FOLDERS))]
            item["subscriptionId"] = draw(st.sampled_from([str(uuid.uuid4()), other, other.upper()]) | any_text)
        elif how == "clientstate":
            item["clientState"] = draw(
                st.sampled_from(
                    [
                        make_client_state(OTHER_SECRET, folder),
                        make_client_state(SECRET, "f" * 16),  # a folder no longer configured
                        make_client_state(SECRET, draw(st.sampled_from(FOLDERS))),
                        make_client_state(SECRET, folder)[:-1],
                        make_client_state(SECRET, folder) + "x" * 100,
                    ]
                )
                | any_text
            )
        elif how == "resourcedata":
            data = item.get("resourceData")
            data = dict(data) if isinstance(data, dict) else {}
            choice = draw(st.sampled_from(["del", "wrong", "extra"]))
            if choice == "del":
                data.pop("id", None)
            elif choice == "wrong":
                data["id"] = draw(wrong)
            else:
                data[draw(any_text)] = draw(json_value)
            item["resourceData"] = data
        elif how == "event":
            item["lifecycleEvent"] = draw(st.sampled_from(sorted(LIFECYCLE_EVENTS)) | any_text)
            item["changeType"] = draw(st.sampled_from(["created", "CREATED", "updated", "deleted"]) | any_text)
        else:
            item["subscriptionId"] = str(item.get("subscriptionId")).upper()
    return item


def collection(kind: str) -> st.SearchStrategy[dict[str, Any]]:
    items = st.lists(mutated_item(kind), min_size=1, max_size=6)
    extra = st.dictionaries(st.sampled_from(["validationTokens", "@odata.context", "x"]), json_value, max_size=2)
    return st.builds(lambda value, more: {**more, "value": value}, items, extra)


@st.composite
def duplicated(draw: st.DrawFn, kind: str) -> bytes:
    """A valid collection's text with one name given twice, in an item or at the top."""
    body = draw(collection(kind))
    texts = [json.dumps(item) for item in body["value"]]
    at = draw(st.integers(-1, len(texts) - 1))
    if at < 0:
        return ('{"value": [' + ", ".join(texts) + '], "value": []}').encode()
    name = draw(st.sampled_from(sorted(body["value"][at]) or ["k"]))
    if name not in body["value"][at]:
        texts[at] = texts[at][:-1] + (", " if body["value"][at] else "") + '"k": 1}'
    texts[at] = texts[at][:-1] + (", " if texts[at] != "{" else "") + f"{json.dumps(name)}: {json.dumps(draw(wrong))}}}"
    return ('{"value": [' + ", ".join(texts) + "]}").encode()


raw_bodies = (
    st.binary(max_size=200)
    | json_value.map(lambda v: json.dumps(v).encode())
    | st.integers(1, 2_000_000).map(lambda n: ('{"value": ' + "[" * n + "]" * n + "}").encode())
    | st.sampled_from([b"", b"{}", b'{"value": null}', b'{"value": [[]]}', b"\xff\xfe{", b" " * (4 * 1024 * 1024 + 1)])
)


# -- oracle: what Graph's reference says a valid item is -------------------------------------------
def text_ok(value: Any) -> bool:
    return (
        isinstance(value, str)
        and 0 < len(value) <= 2048
        and not any(c in UNSAFE or 0xD800 <= ord(c) <= 0xDFFF for c in value)
    )


def well_formed(kind: str, item: dict[str, Any]) -> bool:
    if not (text_ok(item.get("tenantId")) and text_ok(item.get("subscriptionId"))):
        return False
    if kind == "lifecycle":
        return text_ok(item.get("lifecycleEvent")) and item["lifecycleEvent"] in LIFECYCLE_EVENTS
    data = item.get("resourceData")
    return (
        text_ok(item.get("changeType"))
        and item["changeType"].lower() in ("created", "updated", "deleted")
        and text_ok(item.get("resource"))
        and isinstance(data, dict)
        and text_ok(data.get("id"))
    )


def minted_folder(client_state: Any) -> str | None:
    """The folder a clientState was minted for with the app's key (recomputed, not the app's verifier)."""
    if not isinstance(client_state, str):
        return None
    for folder in [*FOLDERS, "f" * 16]:
        prefix = f"v1.{folder}."
        if client_state.startswith(prefix) and len(client_state.split(".")) == 4:
            nonce = client_state.split(".")[2]
            payload = b"mail-attachment-ingest/clientState/v1|" + f"{folder}.{nonce}".encode()
            mac = hmac.new(SECRET, payload, hashlib.sha256).digest()
            if client_state == f"{prefix}{nonce}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}":
                return folder
    return None


def expected(kind: str, items: list[dict[str, Any]]) -> tuple[int, list[dict[str, Any]]]:
    """(status, the items that must be queued, in order)."""
    if not all(well_formed(kind, item) for item in items):
        return 400, []
    accepted = []
    for item in items:
        if item["tenantId"].lower() != SETTINGS.tenant_id.lower():
            continue
        folder = minted_folder(item.get("clientState"))
        if folder not in FOLDERS:
            continue
        if item["subscriptionId"].lower() == HELD[folder]:
            accepted.append(item)
    return 202, accepted


# -- properties ------------------------------------------------------------------------------------
def check_refusals(response: func.HttpResponse, records: list[logging.LogRecord]) -> None:
    assert response.status_code in (202, 400)
    if response.status_code != 202:
        text = response.get_body().decode()
        assert text and len(text.splitlines()) == 1 and len(text) < 300, text[:300]
    for record in records:
        assert len(record.getMessage().splitlines()) == 1, record.getMessage()[:300]
        if record.msg and getattr(record, "event", "") in ("notification.refused", "notification.deferred"):
            reason = str(getattr(record, "reason", ""))
            assert reason and len(reason.splitlines()) == 1 and len(reason) < 300


def check_queued(kind: str, queued: list[str], want: list[dict[str, Any]]) -> None:
    assert len(queued) == len(want)
    for stored, item in zip(queued, want, strict=True):
        # As the queue holds it (base64: queuetext.for_output under host.json's messageEncoding none).
        assert len(stored.encode()) <= QUEUE_MESSAGE_LIMIT
        text = queuetext.decode(stored.encode())
        if kind == "notifications":
            change = parse_change(text)
            assert (change.message_id, change.subscription_id) == (item["resourceData"]["id"], item["subscriptionId"])
            assert change.folder_key == minted_folder(item["clientState"])
        else:
            event = parse_lifecycle(text)
            assert (event.event, event.subscription_id) == (item["lifecycleEvent"], item["subscriptionId"])


@pytest.mark.parametrize("kind", ["notifications", "lifecycle"])
@given(data=st.data())
def test_graph_shaped_bodies(harness: Harness, kind: str, data: st.DataObject) -> None:
    body = data.draw(collection(kind))
    raw = json.dumps(body).encode()
    response, queued, records = harness.call(kind, raw)
    check_refusals(response, records)
    status, want = (400, []) if len(raw) > MAX_BODY_BYTES else expected(kind, body["value"])
    assert response.status_code == status
    check_queued(kind, queued, want)


@pytest.mark.parametrize("kind", ["notifications", "lifecycle"])
@given(data=st.data())
def test_duplicate_names_refuse_the_whole_body(harness: Harness, kind: str, data: st.DataObject) -> None:
    body = data.draw(duplicated(kind))
    response, queued, records = harness.call(kind, body)
    check_refusals(response, records)
    assert (response.status_code, queued) == (400, [])
    # (A body made of several huge values is refused for its size first.)
    why = "body is too large" if len(body) > MAX_BODY_BYTES else "duplicate key"
    assert why in response.get_body().decode()


@pytest.mark.parametrize("kind", ["notifications", "lifecycle"])
@given(body=raw_bodies)
def test_any_bytes(harness: Harness, kind: str, body: bytes) -> None:
    response, queued, records = harness.call(kind, body)
    check_refusals(response, records)
    assert queued == []  # nothing here carries a clientState minted with the app's key


def test_the_oracle_accepts_a_valid_item(harness: Harness) -> None:
    """The properties above are only as good as their oracle: a plain valid item is queued."""
    for kind in ("notifications", "lifecycle"):
        items = [item_for(kind, FOLDERS[0], "AAMkAD=")]
        assert expected(kind, items) == (202, items)
        response, queued, _ = harness.call(kind, json.dumps({"value": items}).encode())
        assert (response.status_code, len(queued)) == (202, 1)


# -- the defects the fuzzing found, each pinned -----------------------------------------------------
@pytest.mark.parametrize(
    ("body", "reason"),
    [
        # RecursionError escaped json.loads: a 500 instead of a 400.
        (b'{"value": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "body is nested too deeply"),
        # With a name twice, the last value counted: refused whole now.
        (b'{"value": [], "value": [{"a": 1}]}', "body has a duplicate key 'value'"),
    ],
)
def test_found_body_defects(harness: Harness, body: bytes, reason: str) -> None:
    response, queued, _ = harness.call("notifications", body)
    assert (response.status_code, response.get_body().decode(), queued) == (400, reason, [])


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        # A lone surrogate in the id: message_key() raised UnicodeEncodeError, a 500.
        ({"resourceData": {"id": "\ud800"}}, "notification 0 has control characters in resourceData.id"),
        # A 1 MB id was queued: beyond Storage's 64 KiB, the host's output binding fails (a 500, retried 4 h).
        ({"resource": "A" * 1_000_000}, "notification 0 has a resource longer than 2048 characters"),
        # A newline in a verified item's subscription id split the 503's body and the log line.
        ({"subscriptionId": "a\nb"}, "notification 0 has control characters in subscriptionId"),
        # A tenantId of the wrong type (or none) was taken as ours; Graph's reference marks it required.
        ({"tenantId": 5}, "notification 0 lacks tenantId"),
        ({"changeType": "sideways"}, "notification 0 has unknown changeType 'sideways'"),
    ],
)
def test_found_item_defects(harness: Harness, change: dict[str, Any], reason: str) -> None:
    item = {**item_for("notifications", FOLDERS[0], "AAMkAD="), **change}
    response, queued, _ = harness.call("notifications", json.dumps({"value": [item]}).encode())
    assert (response.status_code, response.get_body().decode(), queued) == (400, reason, [])


def test_settings_are_those_of_the_environment(harness: Harness) -> None:
    assert isinstance(get_settings(), Settings) and get_settings().tenant_id == SETTINGS.tenant_id
