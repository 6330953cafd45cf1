"""The simulator's mail behaviours that the ingest path leans on: folder creation, deletion,
duplicate and concurrent deliveries, contentBytes in listings, streamed item-attachment MIME, the
control API's attachment spec and per-message request counts. Each test runs against a separate
simulator process through httpx, as a client of the app would see it."""

from __future__ import annotations

import asyncio
import base64
import email
import email.policy
import hashlib
import os
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any

import httpx
import pytest

from local.azuresim.content import CHUNK_SIZE, GeneratedContent, sha256_hex
from local.azuresim.mime import MimeContent
from local.azuresim.runner import SimulatorProcess
from local.azuresim.store import Attachment, EmailAddress, Message
from tests.local.simclient import IMMUTABLE, Receiver, deliver, get_token, new_mailbox, subscribe

MB = 1024 * 1024
HOSTILE_NAMES = [
    "../../etc/passwd",
    "CON.pdf",
    "evil\r\nContent-Type: text/html\x00\x07.txt",
    "x" * 296 + ".pdf",
    "",
    'quote"and\\backslash.txt',
    "Счёт №1 (копия).pdf",
    "請求書.pdf",
    "😀 photo.png",
]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def roles(http: httpx.AsyncClient, granted: list[str]) -> None:
    assert (await http.post("/_sim/roles", json={"roles": granted})).status_code == 200


@pytest.fixture
async def read_only(http: httpx.AsyncClient, sim: SimulatorProcess) -> AsyncIterator[dict[str, str]]:
    """Graph headers with a token granted Mail.Read only."""
    await roles(http, ["Mail.Read"])
    try:
        yield {"Authorization": f"Bearer {await get_token(http, sim)}"}
    finally:
        await roles(http, ["Mail.Read", "Mail.ReadWrite"])


@pytest.fixture
async def options(http: httpx.AsyncClient) -> AsyncIterator[httpx.AsyncClient]:
    """The control client; simulator options and delivery settings are put back afterwards."""
    yield http
    defaults = {"contentBytesLimit": None, "contentBytesOverLimit": "include", "folderExistsStatus": 409}
    assert (await http.post("/_sim/options", json=defaults)).status_code == 200
    assert (await http.post("/_sim/delivery", json={"duplicates": 1, "paused": False})).status_code == 200


async def delivered(http: httpx.AsyncClient, path: str, count: int) -> list[dict[str, Any]]:
    """The delivery records for notification URLs ending in ``path``, once there are ``count``."""
    deadline = time.monotonic() + 15
    while True:
        rows = (await http.get("/_sim/deliveries")).json()["deliveries"]
        records = [r for r in rows if r["url"].endswith(path)]
        if len(records) >= count:
            return records
        assert time.monotonic() < deadline, f"only {len(records)} deliveries to {path}"
        await asyncio.sleep(0.05)


def parsed(raw: bytes) -> EmailMessage:
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def extracted(message: EmailMessage) -> list[dict[str, Any]]:
    """What a client finds in a MIME message: files with their sha256, attached mails recursively,
    in the shape of the control API's ``parts``."""
    found: list[dict[str, Any]] = []

    def visit(part: EmailMessage) -> None:
        if part.get_content_type() == "message/rfc822":
            inner = part.get_content()
            assert isinstance(inner, EmailMessage)
            found.append({"name": part.get_filename(), "kind": "item", "parts": extracted(inner)})
        elif part.is_multipart():
            for sub in part.iter_parts():
                assert isinstance(sub, EmailMessage)
                visit(sub)
        elif part.get_content_disposition() is not None:
            data = part.get_content()
            assert isinstance(data, bytes)
            found.append(
                {
                    "name": part.get_filename(),
                    "kind": "file",
                    "size": len(data),
                    "sha256": hashlib.sha256(data).hexdigest(),
                    "inline": part.get_content_disposition() == "inline",
                    "contentId": (part["Content-ID"] or "").strip("<>") or None,
                }
            )

    visit(message)
    return found


def reported(parts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The control API's ``parts`` reduced to what the MIME can show."""
    out: list[dict[str, Any]] = []
    for part in parts:
        if part["kind"] == "item":
            out.append({"name": part["name"], "kind": "item", "parts": reported(part["parts"])})
        else:
            keys = ("name", "kind", "size", "sha256", "inline", "contentId")
            out.append({key: part[key] for key in keys})
    return out


# -- folders --------------------------------------------------------------------------------------
async def test_create_folders_and_conflicts(
    http: httpx.AsyncClient, graph: dict[str, str], options: httpx.AsyncClient, read_only: dict[str, str]
) -> None:
    box = await new_mailbox(http)
    base = f"/v1.0/users/{box['id']}/mailFolders"
    root = await http.get(f"{base}/msgfolderroot", headers=graph)
    inbox = (await http.get(f"{base}/inbox", headers=graph)).json()

    top = await http.post(base, json={"displayName": "Ingested"}, headers=graph)
    assert top.status_code == 201, top.text
    assert top.json()["displayName"] == "Ingested" and top.json()["isHidden"] is False
    assert top.json()["parentFolderId"] == root.json()["id"] and top.json()["childFolderCount"] == 0
    assert top.json()["@odata.context"].endswith("/mailFolders/$entity")
    fetched = await http.get(f"{base}/{top.json()['id']}", headers=graph)
    assert fetched.status_code == 200 and fetched.json()["displayName"] == "Ingested"

    # A well-known name or an id names the parent.
    child = await http.post(f"{base}/inbox/childFolders", json={"displayName": "Done"}, headers=graph)
    assert child.status_code == 201 and child.json()["parentFolderId"] == inbox["id"]
    by_id = await http.post(f"{base}('{child.json()['id']}')/childFolders", json={"displayName": "2024"}, headers=graph)
    assert by_id.status_code == 201 and by_id.json()["parentFolderId"] == child.json()["id"]
    listed = (await http.get(f"{base}/inbox/childFolders", headers=graph)).json()["value"]
    assert [f["displayName"] for f in listed] == ["Done"]

    # Names are unique per parent, case-insensitively; the same name elsewhere is fine.
    again = await http.post(f"{base}/inbox/childFolders", json={"displayName": "DONE"}, headers=graph)
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "ErrorFolderExists" and "DONE" in again.json()["error"]["message"]
    assert (await http.post(base, json={"displayName": "Done"}, headers=graph)).status_code == 201
    await options.post("/_sim/options", json={"folderExistsStatus": 400})
    other = await http.post(f"{base}/inbox/childFolders", json={"displayName": "Done"}, headers=graph)
    assert other.status_code == 400 and other.json()["error"]["code"] == "ErrorFolderExists"

    # Hidden folders: set only on creation, listed only with includeHiddenFolders, names still taken.
    hidden = await http.post(base, json={"displayName": "Shadow", "isHidden": True}, headers=graph)
    assert hidden.status_code == 201 and hidden.json()["isHidden"] is True
    names = {f["displayName"] for f in (await http.get(f"{base}?$top=50", headers=graph)).json()["value"]}
    assert "Shadow" not in names and "Ingested" in names
    everything = await http.get(base, params={"includeHiddenFolders": "true", "$top": "50"}, headers=graph)
    assert "Shadow" in {f["displayName"] for f in everything.json()["value"]}
    assert (await http.post(base, json={"displayName": "shadow"}, headers=graph)).status_code == 400

    for bad in ({}, {"displayName": ""}, {"displayName": "X", "isHidden": "yes"}, {"displayName": "X", "id": "1"}):
        assert (await http.post(base, json=bad, headers=graph)).status_code == 400, bad
    assert (
        await http.post(f"{base}/nosuchfolder/childFolders", json={"displayName": "X"}, headers=graph)
    ).status_code == 404
    denied = await http.post(base, json={"displayName": "Nope"}, headers=read_only)
    assert denied.status_code == 403 and denied.json()["error"]["code"] == "ErrorAccessDenied"


# -- deletion -------------------------------------------------------------------------------------
async def test_graph_delete_message(
    http: httpx.AsyncClient, graph: dict[str, str], receiver: Receiver, read_only: dict[str, str]
) -> None:
    box = await new_mailbox(http)
    sub = await subscribe(
        http, graph, f"users/{box['id']}/messages", f"{receiver.url}/del", changeType="deleted", headers=IMMUTABLE
    )
    assert sub.status_code == 201
    mail = await deliver(http, box["address"], attachments=[{"name": "a.pdf", "contentBase64": b64(b"%PDF")}])
    [attachment] = mail["attachments"]
    message = f"/v1.0/users/{box['id']}/messages/{mail['id']}"
    delta = f"/v1.0/users/{box['id']}/mailFolders/inbox/messages/delta"
    first = (await http.get(delta, headers={**graph, **IMMUTABLE})).json()
    assert [m["id"] for m in first["value"]] == [mail["id"]]

    assert (await http.delete(message, headers=read_only)).status_code == 403
    in_folder = f"/v1.0/users/{box['id']}/mailFolders/inbox/messages/{mail['restId']}"
    deleted = await http.delete(in_folder, headers=graph)
    assert deleted.status_code == 204 and deleted.content == b""
    for path in (
        message,
        in_folder,
        f"{message}/attachments",
        f"{message}/attachments/{attachment['id']}",
        f"{message}/attachments/{attachment['id']}/$value",
    ):
        gone = await http.get(path, headers=graph)
        assert gone.status_code == 404 and gone.json()["error"]["code"] == "ErrorItemNotFound", path
    assert (await http.delete(message, headers=graph)).status_code == 404

    await receiver.wait(lambda: len(receiver.items("/del")) == 1)
    [note] = receiver.items("/del")
    assert note["changeType"] == "deleted" and note["resourceData"]["id"] == mail["id"]
    later = (await http.get(first["@odata.deltaLink"], headers={**graph, **IMMUTABLE})).json()
    assert later["value"] == [
        {"@odata.type": "#microsoft.graph.message", "id": mail["id"], "@removed": {"reason": "deleted"}}
    ]


async def test_delete_between_notification_and_fetch(
    http: httpx.AsyncClient, graph: dict[str, str], receiver: Receiver, options: httpx.AsyncClient
) -> None:
    box = await new_mailbox(http)
    sub = await subscribe(http, graph, f"users/{box['id']}/mailFolders/inbox/messages", f"{receiver.url}/race")
    assert sub.status_code == 201
    await options.post("/_sim/delivery", json={"paused": True})
    mail = await deliver(http, box["address"])
    removed = await http.delete(f"/_sim/mail/{mail['restId']}")
    assert removed.status_code == 200 and removed.json() == {"id": mail["id"], "notifications": 0}
    assert (await http.delete(f"/_sim/mail/{mail['id']}")).status_code == 404
    await options.post("/_sim/delivery", json={"paused": False})

    # The notification queued before the delete still arrives; the fetch it leads to finds nothing.
    await receiver.wait(lambda: len(receiver.items("/race")) == 1)
    [note] = receiver.items("/race")
    assert note["changeType"] == "created" and note["resourceData"]["id"] == mail["restId"]
    fetch = await http.get(f"/v1.0/{note['resource']}", params={"$expand": "attachments"}, headers=graph)
    assert fetch.status_code == 404 and fetch.json()["error"]["code"] == "ErrorItemNotFound"


# -- duplicate and concurrent deliveries ----------------------------------------------------------
async def test_duplicates_arrive_as_concurrent_identical_posts(
    http: httpx.AsyncClient, graph: dict[str, str], receiver: Receiver, options: httpx.AsyncClient
) -> None:
    box = await new_mailbox(http)
    sub = await subscribe(http, graph, f"users/{box['id']}/messages", f"{receiver.url}/dup")
    assert sub.status_code == 201
    receiver.delay["/dup"] = 0.5  # long enough for the copies to overlap at the receiver
    setting = await options.post("/_sim/delivery", json={"duplicates": 3})
    assert setting.json()["duplicates"] == 3
    mail = await deliver(http, box["address"])
    assert mail["notifications"] == 3
    await receiver.wait(lambda: len(receiver.posts("/dup")) == 3)
    posts = receiver.posts("/dup")
    assert len({p["raw"] for p in posts}) == 1  # the same payload, byte for byte
    assert [item["resourceData"]["id"] for item in receiver.items("/dup")] == [mail["restId"]] * 3
    assert receiver.max_in_flight["/dup"] == 3
    records = await delivered(http, "/dup", 3)
    assert sorted(r["copy"] for r in records) == [0, 1, 2] and {r["outcome"] for r in records} == {"delivered"}

    # A failed copy is retried on its own; the others are not sent again.
    await options.post("/_sim/delivery", json={"duplicates": 2, "retryBaseSeconds": 0.2})
    receiver.delay.pop("/dup")
    receiver.fail["/dup"] = 1
    await deliver(http, box["address"])
    await receiver.wait(lambda: len(receiver.posts("/dup")) == 6)
    await options.post("/_sim/delivery", json={"retryBaseSeconds": 2})
    assert len(receiver.items("/dup")) == 6
    for bad in (0, 101, "2", True):
        assert (await http.post("/_sim/delivery", json={"duplicates": bad})).status_code == 400


async def test_renotify_redelivers_now(
    http: httpx.AsyncClient, graph: dict[str, str], receiver: Receiver, options: httpx.AsyncClient
) -> None:
    box = await new_mailbox(http)
    sub = await subscribe(http, graph, f"users/{box['id']}/messages", f"{receiver.url}/again", headers=IMMUTABLE)
    assert sub.status_code == 201
    mail = await deliver(http, box["address"])
    await receiver.wait(lambda: len(receiver.posts("/again")) == 1)
    original = receiver.posts("/again")[0]["raw"]

    receiver.delay["/again"] = 0.5
    again = await http.post(f"/_sim/mail/{mail['id']}/renotify", json={"times": 2})
    assert again.status_code == 202 and again.json() == {"id": mail["id"], "notifications": 2}
    await receiver.wait(lambda: len(receiver.posts("/again")) == 3)
    assert {p["raw"] for p in receiver.posts("/again")} == {original}
    assert receiver.max_in_flight["/again"] == 2
    receiver.delay.pop("/again")

    # A deleted mail can still be renotified (a late duplicate); the fetch then finds nothing.
    await http.delete(f"/_sim/mail/{mail['id']}")
    late = await http.post(f"/_sim/mail/{mail['restId']}/renotify", json={})
    assert late.json()["notifications"] == 1
    await receiver.wait(lambda: len(receiver.posts("/again")) == 4)
    assert (await http.get(f"/v1.0/{receiver.items('/again')[-1]['resource']}", headers=graph)).status_code == 404
    assert (await http.post("/_sim/mail/AAkALgnothere=/renotify", json={})).status_code == 404
    assert (await http.post(f"/_sim/mail/{mail['id']}/renotify", json={"times": 0})).status_code == 400
    assert (await http.post(f"/_sim/mail/{mail['id']}/renotify", json={"changeType": "x"})).status_code == 400


# -- contentBytes in listings ---------------------------------------------------------------------
async def test_content_bytes_limit_in_listings(
    http: httpx.AsyncClient, graph: dict[str, str], options: httpx.AsyncClient
) -> None:
    box = await new_mailbox(http)
    small, big = b"s" * 100, os.urandom(5000)
    files = [{"name": "small.txt", "contentBase64": b64(small)}, {"name": "big.bin", "contentBase64": b64(big)}]
    mail = await deliver(http, box["address"], attachments=files)
    message = f"/v1.0/users/{box['id']}/messages/{mail['id']}"
    big_id = mail["attachments"][1]["id"]

    async def listings() -> list[list[dict[str, Any]]]:
        expanded = await http.get(message, params={"$expand": "attachments"}, headers=graph)
        listed = await http.get(f"{message}/attachments", headers=graph)
        in_list = await http.get(f"/v1.0/users/{box['id']}/messages", params={"$expand": "attachments"}, headers=graph)
        return [expanded.json()["attachments"], listed.json()["value"], in_list.json()["value"][0]["attachments"]]

    # Default: everything included, as the docs show.
    for rows in await listings():
        assert [base64.b64decode(a["contentBytes"]) for a in rows] == [small, big]

    await options.post("/_sim/options", json={"contentBytesLimit": 1000})
    for rows in await listings():  # a limit alone changes nothing: the mode says what happens
        assert base64.b64decode(rows[1]["contentBytes"]) == big
    current = await options.post("/_sim/options", json={"contentBytesOverLimit": "omit"})
    assert current.json() == {
        "contentBytesLimit": 1000,
        "contentBytesOverLimit": "omit",
        "folderExistsStatus": 409,
        "subscriptionMaxMinutes": None,
        "subscriptionWritesPer20Seconds": 500,
    }
    for rows in await listings():
        assert base64.b64decode(rows[0]["contentBytes"]) == small and "contentBytes" not in rows[1]
        assert rows[1]["size"] == 5000 and rows[1]["name"] == "big.bin"
    await options.post("/_sim/options", json={"contentBytesOverLimit": "empty"})
    for rows in await listings():
        assert rows[1]["contentBytes"] == ""
    # A single attachment GET always carries the bytes.
    one = await http.get(f"{message}/attachments/{big_id}", headers=graph)
    assert base64.b64decode(one.json()["contentBytes"]) == big

    # Per message, overriding the global options.
    await options.post("/_sim/options", json={"contentBytesLimit": None, "contentBytesOverLimit": "include"})
    own = await deliver(http, box["address"], attachments=files, contentBytesLimit=50, contentBytesOverLimit="omit")
    rows = (await http.get(f"/v1.0/users/{box['id']}/messages/{own['id']}/attachments", headers=graph)).json()["value"]
    assert all("contentBytes" not in a for a in rows)
    for bad in ({"contentBytesLimit": -1}, {"contentBytesOverLimit": "drop"}, {"folderExistsStatus": 500}, {"x": 1}):
        assert (await http.post("/_sim/options", json=bad)).status_code == 400, bad


# -- item attachments: streamed MIME --------------------------------------------------------------
async def test_nested_item_mime_parses_to_the_reported_parts(http: httpx.AsyncClient, graph: dict[str, str]) -> None:
    box = await new_mailbox(http)
    logo, report = os.urandom(700), os.urandom(3000)
    innermost = {
        "subject": "Level 3",
        "from": "deep@example.com",
        "body": "Ünïcödé body\nsecond line",
        "attachments": [{"name": "deep.bin", "size": 200_000, "seed": "deep"}],
    }
    level2 = {
        "subject": "Level 2",
        "from": "Jürgen Müller <jm@example.com>",
        "attachments": [
            {"name": "Level 3 mail", "kind": "item", "item": innermost},
            {"name": "rapport €.pdf", "contentType": "application/pdf", "contentBase64": b64(report)},
        ],
    }
    level1 = {
        "subject": "Fwd: Счёт",
        "from": "boss@example.com",
        "bodyContentType": "html",
        "body": '<p>See <img src="cid:logo@x"></p>',
        "attachments": [
            {
                "name": "logo.png",
                "contentType": "image/png",
                "contentBase64": b64(logo),
                "isInline": True,
                "contentId": "logo@x",
            },
            {"name": "Level 2 mail", "kind": "item", "item": level2},
            {"name": "link", "kind": "reference", "url": "https://contoso.sharepoint.com/x.docx"},
        ],
    }
    mail = await deliver(http, box["address"], attachments=[{"name": "Forwarded", "kind": "item", "item": level1}])
    [item] = mail["attachments"]
    assert item["kind"] == "item" and item["contentType"] is None

    url = f"/v1.0/users/{box['id']}/messages/{mail['id']}/attachments/{item['id']}"
    raw = await http.get(f"{url}/$value", headers=graph)
    assert raw.status_code == 200 and raw.headers["Content-Type"].startswith("message/rfc822")
    assert int(raw.headers["Content-Length"]) == len(raw.content) == item["size"]
    assert hashlib.sha256(raw.content).hexdigest() == item["sha256"]
    assert (await http.get(url, headers=graph)).json()["size"] == item["size"]
    assert max(len(line) for line in raw.content.split(b"\r\n")) <= 998  # RFC 5322 line limit
    assert raw.content.isascii()

    top = parsed(raw.content)
    assert top["Subject"] == "Fwd: Счёт" and top.get_content_type() == "multipart/mixed"
    assert extracted(top) == reported(item["parts"])
    # The reference attachment has no MIME form; the inline image is inline with its Content-ID.
    assert [p["name"] for p in item["parts"]] == ["logo.png", "Level 2 mail"]
    inline = next(p for p in top.walk() if p.get_content_disposition() == "inline")
    assert inline["Content-ID"] == "<logo@x>" and top.get_body(("related", "html")) is not None
    level3 = item["parts"][1]["parts"][0]
    assert level3["parts"][0]["sha256"] == sha256_hex(GeneratedContent(200_000, "deep"))
    texts = [p.get_content().replace("\r\n", "\n") for p in top.walk() if p.get_content_type() == "text/plain"]
    assert "Ünïcödé body\nsecond line" in texts
    # Unicode names: RFC 2231 in Content-Disposition, RFC 2047 in Content-Type's name.
    assert b"filename*=utf-8''rapport%20%E2%82%AC.pdf" in raw.content
    assert b'name="=?utf-8?B?' in raw.content


async def test_hostile_names_pass_through(http: httpx.AsyncClient, graph: dict[str, str]) -> None:
    box = await new_mailbox(http)
    files = [{"name": name, "contentBase64": b64(name.encode() + b"!")} for name in HOSTILE_NAMES]
    mail = await deliver(
        http,
        box["address"],
        attachments=[
            *files,
            {"name": "Attached \r\n../mail", "kind": "item", "item": {"from": "a@b.c", "attachments": files}},
        ],
    )
    assert [a["name"] for a in mail["attachments"]] == [*HOSTILE_NAMES, "Attached \r\n../mail"]
    base = f"/v1.0/users/{box['id']}/messages/{mail['id']}"
    listed = (await http.get(f"{base}/attachments", headers=graph)).json()["value"]
    assert [a["name"] for a in listed] == [*HOSTILE_NAMES, "Attached \r\n../mail"]
    expanded = (await http.get(base, params={"$expand": "attachments"}, headers=graph)).json()["attachments"]
    assert [base64.b64decode(a["contentBytes"]) for a in expanded[:-1]] == [n.encode() + b"!" for n in HOSTILE_NAMES]

    item = mail["attachments"][-1]
    raw = (await http.get(f"{base}/attachments/{item['id']}/$value", headers=graph)).content
    assert raw.isascii() and b"\r\nContent-Type: text/html" not in raw  # no header injection
    assert [p["name"] for p in extracted(parsed(raw))] == HOSTILE_NAMES
    assert extracted(parsed(raw)) == reported(item["parts"])


async def test_large_item_attachment_streams_in_bounded_memory(
    http: httpx.AsyncClient, graph: dict[str, str], sim: SimulatorProcess
) -> None:
    size = 100 * MB
    box = await new_mailbox(http)
    inner = {
        "from": "scanner@example.com",
        "subject": "Scan",
        "attachments": [{"name": "scan.tif", "size": size, "seed": "big"}],
    }
    mail = await deliver(http, box["address"], attachments=[{"name": "Scan mail", "kind": "item", "item": inner}])
    [item] = mail["attachments"]
    expected = sha256_hex(GeneratedContent(size, "big"))
    assert item["parts"][0]["sha256"] == expected and item["size"] > size * 4 // 3

    def rss() -> int:
        with open(f"/proc/{sim.process.pid}/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    before, peak = rss(), 0
    whole, decoded = hashlib.sha256(), hashlib.sha256()
    received, state, carry = 0, "headers", b""
    url = f"/v1.0/users/{box['id']}/messages/{mail['id']}/attachments/{item['id']}/$value"
    async with http.stream("GET", url, headers=graph) as response:
        assert int(response.headers["Content-Length"]) == item["size"]
        async for chunk in response.aiter_bytes():
            whole.update(chunk)
            received += len(chunk)
            peak = max(peak, rss())
            # Decode the file part's base64 lines as they come, as a streaming MIME reader would.
            lines = (carry + chunk).split(b"\r\n")
            carry = lines.pop()
            for line in lines:
                if state == "headers" and line == b"Content-Transfer-Encoding: base64":
                    state = "blank"
                elif state == "blank" and line == b"":
                    state = "body"
                elif state == "body" and line.startswith(b"--"):
                    state = "done"
                elif state == "body" and line:
                    decoded.update(base64.b64decode(line))
    assert received == item["size"] and whole.hexdigest() == item["sha256"]
    assert state == "done" and decoded.hexdigest() == expected
    assert peak - before < 30 * MB, f"simulator RSS grew by {(peak - before) / MB:.1f} MB"


def test_mime_content_is_produced_chunkwise() -> None:
    """In process: the MIME of a 20 MB attached file is known in size and produced in small chunks."""
    when = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)
    inner = Message(
        immutable_id="AAkALgi",
        rest_id="AAMkAi",
        mailbox_id="",
        folder_id="",
        subject="Scan",
        body="body",
        body_type="text",
        sender=EmailAddress("Scanner", "scanner@example.com"),
        to=[],
        received=when,
        internet_message_id="<scan@example.com>",
        change_key="ck",
    )
    content = GeneratedContent(20 * MB, "chunkwise")
    inner.attachments.append(Attachment("AAkALga", "AAMkAa", "file", "scan.tif", "image/tiff", False, when, content))
    mime = MimeContent(inner)
    sizes = [len(chunk) for chunk in mime.chunks()]
    assert sum(sizes) == mime.size and len(sizes) > 100 and max(sizes) <= 2 * CHUNK_SIZE


# -- control API spec -----------------------------------------------------------------------------
async def test_control_mail_spec_checks(http: httpx.AsyncClient) -> None:
    box = await new_mailbox(http)

    def nested(depth: int) -> dict[str, Any]:
        spec: dict[str, Any] = {"from": "a@b.c", "attachments": [{"name": "leaf.txt", "contentBase64": b64(b"leaf")}]}
        for level in range(depth):
            spec = {"from": "a@b.c", "attachments": [{"name": f"level {level}", "kind": "item", "item": spec}]}
        return spec

    deep = await deliver(http, box["address"], attachments=nested(30)["attachments"])
    part = deep["attachments"][0]
    for _ in range(29):
        part = part["parts"][0]
    assert part["parts"] == [
        {
            "name": "leaf.txt",
            "kind": "file",
            "contentType": "application/octet-stream",
            "size": 4,
            "sha256": hashlib.sha256(b"leaf").hexdigest(),
            "inline": False,
            "contentId": None,
        }
    ]
    big = await deliver(http, box["address"], attachments=[{"name": "max.bin", "size": 150 * MB, "seed": "max"}])
    assert big["attachments"][0]["size"] == 150 * MB

    body = {"mailbox": box["address"], "from": "a@b.c"}
    for attachments in (
        nested(31)["attachments"],
        [{"name": "x", "isInline": "yes", "size": 1}],
        [{"name": "x", "contentId": 5, "size": 1}],
        [{"name": "x", "kind": "item"}],
        [{"name": "x", "size": 2**31}],
        [{"name": None, "size": 1}],
        [{"name": "x", "kind": "reference", "url": "ftp://x"}],
    ):
        assert (await http.post("/_sim/mail", json={**body, "attachments": attachments})).status_code == 400
    assert (await http.post("/_sim/mail", json={**body, "contentBytesOverLimit": "drop"})).status_code == 400


# -- Graph behaviours checked against the docs ----------------------------------------------------
async def test_immutable_id_survives_move_and_categories_are_replaced(
    http: httpx.AsyncClient, graph: dict[str, str]
) -> None:
    box = await new_mailbox(http)
    mail = await deliver(http, box["address"], attachments=[{"name": "a.pdf", "contentBase64": b64(b"%PDF")}])
    base = f"/v1.0/users/{box['id']}/messages/{mail['id']}"
    moved = await http.post(f"{base}/move", json={"destinationId": "archive"}, headers={**graph, **IMMUTABLE})
    assert moved.status_code == 201 and moved.json()["id"] == mail["id"]
    assert moved.headers["Preference-Applied"] == 'IdType="ImmutableId"'
    archived = await http.get(f"/v1.0/users/{box['id']}/mailFolders/archive/messages", headers={**graph, **IMMUTABLE})
    assert [m["id"] for m in archived.json()["value"]] == [mail["id"]]
    listed = (await http.get(f"{base}/attachments", headers={**graph, **IMMUTABLE})).json()["value"]
    assert [a["id"] for a in listed] == [mail["attachments"][0]["id"]]
    regular = (await http.get(base, headers=graph)).json()["id"]
    assert regular not in (mail["id"], mail["restId"])

    for categories in (["Ingested", "Blue"], ["Red"], []):
        patched = await http.patch(base, json={"categories": categories}, headers=graph)
        assert patched.status_code == 200 and patched.json()["categories"] == categories
    assert (await http.get(base, headers=graph)).json()["categories"] == []
    assert (await http.patch(base, json={"categories": [1]}, headers=graph)).status_code == 400
    assert (await http.patch(base, json={"importance": "High"}, headers=graph)).json()["importance"] == "high"


# -- request counts per message -------------------------------------------------------------------
async def test_requests_can_be_counted_per_message(http: httpx.AsyncClient, graph: dict[str, str]) -> None:
    box = await new_mailbox(http)
    mail = await deliver(http, box["address"], attachments=[{"name": "a.pdf", "contentBase64": b64(b"%PDF")}])
    other = await deliver(http, box["address"])
    aid = mail["attachments"][0]["id"]
    base = f"/v1.0/users/{box['id']}/messages"
    await http.delete("/_sim/requests")
    await http.post("/_sim/faults", json={"path": f"/attachments/{aid}/\\$value$", "status": 429, "retryAfter": 1})
    await http.get(f"{base}/{mail['id']}", headers=graph)
    await http.get(f"{base}/{other['id']}", headers=graph)
    for _ in range(2):
        await http.get(f"{base}/{mail['id']}/attachments/{aid}/$value", headers=graph)
    moved = await http.post(f"{base}/{mail['restId']}/move", json={"destinationId": "archive"}, headers=graph)
    await http.get(f"/v1.0/users/{box['id']}/mailFolders/archive/messages/{moved.json()['id']}", headers=graph)
    await http.get(f"/v1.0/users/{box['id']}/mailFolders", headers=graph)

    everything = (await http.get("/_sim/requests")).json()
    assert everything["messages"] == {mail["id"]: 5, other["id"]: 1}
    mine = (await http.get("/_sim/requests", params={"messageId": mail["restId"]})).json()
    assert [(r["method"], r["route"], r["status"]) for r in mine["requests"]] == [
        ("GET", "/v1.0/users/{id}/messages/{id}", 200),
        ("GET", "/v1.0/users/{id}/messages/{id}/attachments/{id}/$value", 429),
        ("GET", "/v1.0/users/{id}/messages/{id}/attachments/{id}/$value", 200),
        ("POST", "/v1.0/users/{id}/messages/{id}/move", 201),
        ("GET", "/v1.0/users/{id}/mailFolders/{id}/messages/{id}", 200),
    ]
    assert all(r["messageId"] == mail["id"] for r in mine["requests"])
    assert mine["counts"]["GET /v1.0/users/{id}/messages/{id}/attachments/{id}/$value"] == 2
    assert mine["messages"] == {mail["id"]: 5}


async def test_internet_message_headers_come_back_only_when_selected(
    http: httpx.AsyncClient, graph: dict[str, str]
) -> None:
    box = await new_mailbox(http)
    forged = {"name": "Authentication-Results", "value": "dmarc=pass;compauth=pass reason=100"}
    mail = await deliver(http, box["address"], authentication="spf=fail; dmarc=fail;compauth=fail reason=000",
                         headers=[forged])  # fmt: skip
    message = f"/v1.0/users/{box['id']}/messages/{mail['id']}"
    plain = (await http.get(message, headers=graph)).json()
    assert "internetMessageHeaders" not in plain  # not without $select, as Graph documents
    picked = (await http.get(message, headers=graph, params={"$select": "subject,internetMessageHeaders"})).json()
    names = [h["name"] for h in picked["internetMessageHeaders"]]
    results = [h["value"] for h in picked["internetMessageHeaders"] if h["name"] == "Authentication-Results"]
    # Exchange's own stamp above the Received: of the mail's arrival, the sender's fields below it.
    assert results == ["spf=fail; dmarc=fail;compauth=fail reason=000", forged["value"]]
    arrival = max(i for i, n in enumerate(names) if n == "Received")
    assert (
        names.index("Authentication-Results") < arrival < len(names) - 1 - names[::-1].index("Authentication-Results")
    )
    assert names[-3:] == ["Message-ID", "MIME-Version", "Content-Type"] and "From" in names
    bad = await http.get(message, headers=graph, params={"$select": "internetMessageHeader"})
    assert bad.status_code == 400
