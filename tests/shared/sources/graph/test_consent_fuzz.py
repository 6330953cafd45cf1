"""Fuzzing the consent callback (`POST|GET /api/consent/callback`, anonymous) in process, as function_app.py
calls it: `consent.callback(req)` with the runtime it finds for its event loop, in delegated mode.

Hypothesis generates the request (query and form fields of any name and value, duplicated fields, any body
with any content type) and, where the request names a flow the app saved, what the identity platform
answers through MSAL (a token for the mailbox's owner, for someone else, an error, claims of odd types).
The properties: no exception escapes, the answer is 200 or 400; a consent is stored, and the mailbox marked
`ok`, exactly when a fresh flow was answered with a token whose user owns the mailbox; a flow serves one
answer; every refusal is one line, on the page and in the log.

The flow record and the auth status live in a dict here, not Azurite: what is fuzzed is the input, and
10,000 examples stay quick. The host hands the app valid Unicode only (it decodes the request), so field
values have no lone surrogates.
"""

from __future__ import annotations

import asyncio
import html
import logging
import re
import string
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

import azure.functions as func
import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from shared import clock
from shared.errors import StateConflict
from shared.pipeline.layout import graph_time
from shared.settings import Settings, parse_settings
from shared.sources.graph import consent
from shared.sources.graph.delegated import DelegatedTokens
from tests.shared.conftest import BASE_ENV
from tests.shared.inprocess import Events, loop_with_events, place

SETTINGS = parse_settings({**BASE_ENV, "GRAPH_AUTH_MODE": "delegated"})
MAILBOXES = list(SETTINGS.delegated_mailboxes)
STATE_CHARS = string.ascii_letters + string.digits + "-_"


class MemoryStore:
    """BlobStore's JSON records with its ETag rules (create only if absent; replace or delete by ETag)."""

    def __init__(self) -> None:
        self.blobs: dict[str, tuple[dict[str, Any], str]] = {}
        self._n = 0

    async def read_json(self, path: str) -> tuple[dict[str, Any], str] | None:
        return self.blobs.get(path)

    async def write_json(self, path: str, data: dict[str, Any], etag: str | None) -> str:
        current = self.blobs.get(path)
        if (etag is None and current is not None) or (etag is not None and (current is None or current[1] != etag)):
            raise StateConflict(f"{path} was changed by another instance")
        self._n += 1
        self.blobs[path] = (dict(data), f"e{self._n}")
        return f"e{self._n}"

    async def delete(self, path: str, etag: str | None = None) -> None:
        current = self.blobs.get(path)
        if current is None or (etag is not None and current[1] != etag):
            raise StateConflict(f"{path} was changed by another instance")
        del self.blobs[path]


class FakeApp:
    """MSAL's ConfidentialClientApplication as far as the callback uses it: its checks of the answer against
    the flow (as msal's oauth2cli makes them), then the identity platform's answer, drawn by the test."""

    def __init__(self, answer: dict[str, Any]) -> None:
        self.answer = answer
        self.token_cache = type("Cache", (), {"serialize": staticmethod(lambda: '{"cache": 1}')})()

    def acquire_token_by_auth_code_flow(self, flow: dict[str, Any], params: dict[str, str]) -> dict[str, Any]:
        if params.get("state") != flow.get("state"):
            raise ValueError("state mismatch")
        if params.get("code"):
            return self.answer
        if params.get("error"):
            return dict(params)
        raise ValueError("auth_response must contain either 'code' or 'error'")


class Tokens(DelegatedTokens):
    def __init__(self) -> None:
        self.answer: dict[str, Any] = {}
        self.stored: list[str] = []

    async def new_app(self) -> Any:
        return FakeApp(self.answer)

    async def store_consent(self, mailbox: str, state: str) -> None:
        self.stored.append(mailbox)


@dataclass
class FakeRuntime:
    settings: Settings = SETTINGS
    tokens: Tokens = field(default_factory=Tokens)
    state: MemoryStore = field(default_factory=MemoryStore)


@dataclass
class Harness:
    loop: asyncio.AbstractEventLoop
    events: Events

    def call(self, rt: FakeRuntime, req: func.HttpRequest) -> tuple[func.HttpResponse, list[logging.LogRecord]]:
        self.events.records.clear()
        place(self.loop, rt)
        response = self.loop.run_until_complete(consent.callback(req))
        return response, list(self.events.records)


@pytest.fixture(scope="module")
def harness() -> Iterator[Harness]:
    with loop_with_events() as (loop, events):
        yield Harness(loop, events)


# -- strategies -----------------------------------------------------------------------------------
text = st.text(max_size=30) | st.sampled_from(["", "\n", "a\r\nb", "x\u2028y", "<script>", "%00"])
value = text | st.sampled_from([5000, 100_000]).map(lambda n: "A" * n)
names = st.sampled_from(["state", "code", "error", "error_description", "client_info", "session_state"]) | text
json_value = st.recursive(
    st.none() | st.booleans() | st.integers() | text, lambda inner: st.lists(inner, max_size=3), max_leaves=6
)


@st.composite
def claims(draw: st.DrawFn, mailbox: str) -> dict[str, Any]:
    who = st.sampled_from([mailbox, mailbox.upper(), "someone@contoso.com", ""]) | text | json_value
    return draw(st.dictionaries(st.sampled_from(["preferred_username", "upn", "oid", "name"]), who, max_size=3))


@st.composite
def answer(draw: st.DrawFn, mailbox: str) -> dict[str, Any]:
    """What the identity platform answers, through MSAL, for a code."""
    kind = draw(st.sampled_from(["token", "error", "odd"]))
    if kind == "token":
        return {"access_token": "at", "id_token_claims": draw(claims(mailbox))}
    if kind == "error":
        return {"error": draw(text), "error_description": draw(value)}
    return draw(st.dictionaries(text, json_value, max_size=3))


@dataclass
class Case:
    rt: FakeRuntime
    req: func.HttpRequest
    params: dict[str, str] | None  # what the callback reads, when the test can tell (None: an opaque body)
    flow_state: str | None  # a flow saved before the call, fresh and unused
    mailbox: str


@st.composite
def cases(draw: st.DrawFn) -> Case:
    rt = FakeRuntime()
    mailbox = draw(st.sampled_from(MAILBOXES))
    flow_state = None
    if draw(st.booleans()):
        saved = draw(st.text(STATE_CHARS, min_size=8, max_size=128))
        age = draw(st.sampled_from([timedelta(0), timedelta(minutes=9), timedelta(minutes=11)]))
        record: dict[str, Any] = {"mailbox": mailbox, "created_at": graph_time(clock.now() - age), "flow": {}}
        record["flow"]["state"] = saved
        if draw(st.booleans()):
            record = {"used": True}
        rt.state.blobs[consent.flow_path(saved)] = (record, "e0")
        flow_state = saved if "mailbox" in record and age < consent.FLOW_LIFETIME else None
        names_ = st.sampled_from(["state"]) | names
        query = draw(st.dictionaries(names_, st.just(saved) | value, max_size=4))
    else:
        query = draw(st.dictionaries(names, value, max_size=4))
    rt.tokens.answer = draw(answer(mailbox))
    form_pairs = draw(st.lists(st.tuples(names, value), max_size=4))
    body_kind = draw(st.sampled_from(["none", "form", "opaque"]))
    headers: dict[str, str] = {}
    body = b""
    if body_kind == "form":
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        body = urlencode(form_pairs).encode()
    elif body_kind == "opaque":
        headers["Content-Type"] = draw(
            st.sampled_from(["multipart/form-data; boundary=x", "multipart/form-data", "text/plain", "", "a/b; c"])
            | text
        )
        body = draw(st.binary(max_size=300))
    method = draw(st.sampled_from(["GET", "POST"]))
    req = func.HttpRequest(method, "http://h/api/consent/callback", headers=headers, params=query, body=body)
    params: dict[str, str] | None = dict(query)
    if body_kind == "form":
        first: dict[str, str] = {}
        for key, val in form_pairs:
            first.setdefault(key, val)
        params = {**query, **first}
    elif body_kind == "opaque" and body:
        params = None
    return Case(rt, req, params, flow_state, mailbox)


# -- oracle ----------------------------------------------------------------------------------------
def consents(case: Case) -> bool:
    """Whether this request must store a consent: it answers a fresh flow with a code, and the identity
    platform's token is for the mailbox's owner."""
    params = case.params
    if params is None or case.flow_state is None or params.get("state") != case.flow_state:
        return False
    if "error" in params or not params.get("code"):
        return False
    result = case.rt.tokens.answer
    if "access_token" not in result:
        return False
    claims_ = result.get("id_token_claims") or {}
    user = str(claims_.get("preferred_username") or claims_.get("upn") or "").lower()
    return case.mailbox in (user, str(claims_.get("oid", "")).lower())


_OUTCOME = re.compile(r"<p id='outcome' data-outcome='(\w+)'>(.*)</p>")


@given(case=cases())
def test_the_callback_under_any_request(harness: Harness, case: Case) -> None:
    flows_before = {k for k in case.rt.state.blobs if k.startswith(consent.FLOW_PREFIX)}
    response, records = harness.call(case.rt, case.req)
    body = response.get_body().decode()
    assert response.status_code in (200, 400)
    event(f"status {response.status_code}")
    assert len(body.splitlines()) == 1
    match = _OUTCOME.search(body)
    assert match is not None
    line = html.unescape(match.group(2))
    assert line and len(line.splitlines()) == 1
    for record in records:
        assert len(record.getMessage().splitlines()) == 1
        if getattr(record, "event", "") == "auth.consent_failed":
            assert len(str(record.reason).splitlines()) == 1  # type: ignore[attr-defined]
    stored = case.rt.tokens.stored
    status = case.rt.state.blobs.get(f"auth/{case.mailbox}.json")
    if case.params is not None:
        want = consents(case)
        assert (response.status_code == 200) is want, line
        assert stored == ([case.mailbox] if want else [])
        assert (status is not None and status[0]["status"] == "ok") is want
    else:
        assert (response.status_code == 200) is bool(stored) and len(stored) <= 1
    if response.status_code == 200:
        # The answered flow is gone: it serves one answer.
        assert not {k for k in case.rt.state.blobs if k.startswith(consent.FLOW_PREFIX)} & flows_before


def test_found_a_refusal_that_split_the_line(harness: Harness) -> None:
    """Found by the fuzzing: the identity platform's `error` (from the browser, in the form post) went
    into the page and the log as it came, newlines included."""
    rt = FakeRuntime()
    saved = "abcdefgh12"
    record = {"mailbox": MAILBOXES[0], "created_at": graph_time(clock.now()), "flow": {"state": saved}}
    rt.state.blobs[consent.flow_path(saved)] = (record, "e0")
    body = urlencode({"state": saved, "error": "access_denied\n<b>evil</b>\r\nline 3"}).encode()
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    response, records = harness.call(rt, func.HttpRequest("POST", "http://h/cb", headers=headers, body=body))
    assert response.status_code == 400 and rt.tokens.stored == []
    [failed] = [r for r in records if getattr(r, "event", "") == "auth.consent_failed"]
    assert str(failed.reason).startswith("No consent was given (access_denied <b>evil</b> line 3: );")  # type: ignore[attr-defined]
    assert "&lt;b&gt;evil&lt;/b&gt;" in response.get_body().decode()
