"""The simulator's message delta with Graph's query options: ``changeType``, ``$filter`` on
receivedDateTime, ``$orderby=receivedDateTime desc``, all carried in the tokens across rounds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from local.azuresim.graph_delta import FILTER_LIMIT, DeltaQuery, round_entries
from local.azuresim.store import EmailAddress, Message, Store, change_key, exchange_id
from tests.local.simclient import IMMUTABLE, deliver, new_mailbox

Page = list[dict[str, Any]]


async def run_round(
    http: httpx.AsyncClient, link: str, headers: dict[str, str], params: dict[str, str] | None = None
) -> tuple[list[Page], str]:
    """Every page of one round and the round's deltaLink."""
    pages: list[Page] = []
    while True:
        response = await http.get(link, headers=headers, params=params)
        assert response.status_code == 200, response.text
        body = response.json()
        pages.append(body["value"])
        if "@odata.deltaLink" in body:
            assert "@odata.nextLink" not in body
            return pages, str(body["@odata.deltaLink"])
        link, params = str(body["@odata.nextLink"]), None


def flat(pages: list[Page]) -> Page:
    return [item for page in pages for item in page]


def ids(pages: list[Page]) -> list[str]:
    return [str(item["id"]) for item in flat(pages)]


def removed(pages: list[Page]) -> dict[str, bool]:
    return {str(item["id"]): "@removed" in item for item in flat(pages)}


async def advance(http: httpx.AsyncClient, seconds: float) -> None:
    response = await http.post("/_sim/clock", json={"advanceSeconds": seconds})
    assert response.status_code == 200, response.text


def delta_url(box: dict[str, str], folder: str = "inbox") -> str:
    return f"/v1.0/users/{box['id']}/mailFolders/{folder}/messages/delta"


async def test_filter_by_received_time_kept_across_rounds(http: httpx.AsyncClient, graph: dict[str, str]) -> None:
    box = await new_mailbox(http)
    old = await deliver(http, box["address"], subject="old")
    await advance(http, 3600)
    mid = await deliver(http, box["address"], subject="mid")
    await advance(http, 60)
    new = await deliver(http, box["address"], subject="new")
    headers = {**graph, **IMMUTABLE}

    since_mid = f"receivedDateTime ge {mid['receivedDateTime']}"
    pages, delta_link = await run_round(http, delta_url(box), headers, {"$filter": since_mid})
    assert ids(pages) == [mid["id"], new["id"]]
    assert "filter" not in delta_link.lower()  # carried inside the token
    after_mid, _ = await run_round(
        http, delta_url(box), headers, {"$filter": f"receivedDateTime gt {mid['receivedDateTime']}"}
    )
    assert ids(after_mid) == [new["id"]]
    # The docs write the filter with '+' for spaces.
    plus = await http.get(f"{delta_url(box)}?$filter=receivedDateTime+ge+{new['receivedDateTime']}", headers=headers)
    assert plus.status_code == 200 and [m["id"] for m in plus.json()["value"]] == [new["id"]]

    # Later rounds report only changes of messages the filter matches.
    for mail in (old, mid):
        patched = await http.patch(
            f"/v1.0/users/{box['id']}/messages/{mail['id']}", json={"isRead": True}, headers=graph
        )
        assert patched.status_code == 200
    assert (await http.delete(f"/_sim/mail/{old['id']}")).status_code in (200, 204)
    assert (await http.delete(f"/v1.0/users/{box['id']}/messages/{new['id']}", headers=graph)).status_code == 204
    newer = await deliver(http, box["address"], subject="newer")
    changes, delta_link = await run_round(http, delta_link, headers)
    assert removed(changes) == {mid["id"]: False, new["id"]: True, newer["id"]: False}
    assert flat(changes)[0]["isRead"] is True
    assert flat((await run_round(http, delta_link, headers))[0]) == []


async def test_change_type_created_reports_only_new_mail(http: httpx.AsyncClient, graph: dict[str, str]) -> None:
    box = await new_mailbox(http)
    a, b, c = [await deliver(http, box["address"], subject=s) for s in "abc"]
    archived = await deliver(http, box["address"], folder="Archive", subject="d")
    headers = {**graph, **IMMUTABLE, "Prefer": 'IdType="ImmutableId", odata.maxpagesize=2'}

    # The first round is a full synchronisation: everything in the folder.
    pages, delta_link = await run_round(http, delta_url(box), headers, {"changeType": "created", "$select": "subject"})
    assert ids(pages) == [a["id"], b["id"], c["id"]]
    assert {k for k in flat(pages)[0] if not k.startswith("@")} == {"id", "subject"}

    patched = await http.patch(f"/v1.0/users/{box['id']}/messages/{a['id']}", json={"isRead": True}, headers=graph)
    assert patched.status_code == 200
    assert (await http.delete(f"/v1.0/users/{box['id']}/messages/{b['id']}", headers=graph)).status_code == 204
    moved = await http.post(
        f"/v1.0/users/{box['id']}/messages/{archived['id']}/move", json={"destinationId": "inbox"}, headers=graph
    )
    assert moved.status_code == 201
    e = await deliver(http, box["address"], subject="e")

    changes, delta_link = await run_round(http, delta_link, headers)
    assert removed(changes) == {archived["id"]: False, e["id"]: False}  # moved in, delivered
    assert [m["subject"] for m in flat(changes)] == ["d", "e"]  # $select kept too
    assert flat((await run_round(http, delta_link, headers))[0]) == []


async def test_change_type_deleted_reports_removals_only(http: httpx.AsyncClient, graph: dict[str, str]) -> None:
    box = await new_mailbox(http)
    a, b, c = [await deliver(http, box["address"], subject=s) for s in "abc"]
    url = delta_url(box)

    first, delta_link = await run_round(http, url, graph, {"changeType": "deleted"})
    assert flat(first) == []

    await deliver(http, box["address"], subject="x")
    assert (await http.delete(f"/v1.0/users/{box['id']}/messages/{a['restId']}", headers=graph)).status_code == 204
    moved = await http.post(
        f"/v1.0/users/{box['id']}/messages/{b['restId']}/move", json={"destinationId": "archive"}, headers=graph
    )
    assert moved.status_code == 201
    patched = await http.patch(f"/v1.0/users/{box['id']}/messages/{c['restId']}", json={"isRead": True}, headers=graph)
    assert patched.status_code == 200

    changes, delta_link = await run_round(http, delta_link, graph)
    # Without the immutable-id preference a removal carries the regular id the message had in the folder.
    assert flat(changes) == [
        {"@odata.type": "#microsoft.graph.message", "id": mail["restId"], "@removed": {"reason": "deleted"}}
        for mail in (a, b)
    ]
    assert flat((await run_round(http, delta_link, graph))[0]) == []


async def test_change_type_updated_reports_changes_in_place(http: httpx.AsyncClient, graph: dict[str, str]) -> None:
    box = await new_mailbox(http)
    a, b = [await deliver(http, box["address"], subject=s) for s in "ab"]
    headers = {**graph, **IMMUTABLE}

    first, delta_link = await run_round(http, delta_url(box), headers, {"changeType": "updated"})
    assert ids(first) == [a["id"], b["id"]]

    patched = await http.patch(
        f"/v1.0/users/{box['id']}/messages/{a['id']}", json={"categories": ["Paid"]}, headers=graph
    )
    assert patched.status_code == 200
    await deliver(http, box["address"], subject="c")
    assert (await http.delete(f"/v1.0/users/{box['id']}/messages/{b['id']}", headers=graph)).status_code == 204

    changes, _ = await run_round(http, delta_link, headers)
    assert removed(changes) == {a["id"]: False}
    assert flat(changes)[0]["categories"] == ["Paid"]


async def test_unsupported_options_are_rejected(http: httpx.AsyncClient, graph: dict[str, str]) -> None:
    box = await new_mailbox(http)
    await deliver(http, box["address"])
    url = delta_url(box)
    for text in (
        "subject eq 'Invoice'",
        "isRead eq false",
        "receivedDateTime le 2024-01-01T00:00:00Z",
        "receivedDateTime ge 2024-01-01T00:00:00Z and isRead eq false",
        "receivedDateTime ge yesterday",
        "receivedDateTime ge '2024-01-01T00:00:00Z'",
    ):
        response = await http.get(url, params={"$filter": text}, headers=graph)
        assert response.status_code == 400, text
        error = response.json()["error"]
        assert error["code"] == "ErrorInvalidUrlQuery"
        assert "only a value of 'receivedDateTime ge value' is supported" in error["message"]
    for params in (
        {"$orderby": "receivedDateTime asc"},
        {"$orderby": "subject desc"},
        {"changeType": "moved"},
        {"changeType": "created,updated"},
    ):
        response = await http.get(url, params=params, headers=graph)
        assert response.status_code == 400, params
        assert response.json()["error"]["code"] == "ErrorInvalidUrlQuery"
    accepted = {"$filter": "receivedDateTime gt 2024-01-01T00:00:00Z", "$orderby": "receivedDateTime desc"}
    assert (await http.get(url, params=accepted, headers=graph)).status_code == 200


async def test_paging_with_filter_newest_first(http: httpx.AsyncClient, graph: dict[str, str]) -> None:
    box = await new_mailbox(http)
    for _ in range(2):
        await deliver(http, box["address"], subject="before")
    await advance(http, 3600)
    recent = []
    for index in range(5):
        recent.append(await deliver(http, box["address"], subject=f"r{index}"))
        await advance(http, 1)
    headers = {**graph, **IMMUTABLE, "Prefer": 'IdType="ImmutableId", odata.maxpagesize=2'}
    params = {"$filter": f"receivedDateTime ge {recent[0]['receivedDateTime']}", "$orderby": "receivedDateTime desc"}

    first = await http.get(delta_url(box), headers=headers, params=params)
    assert "odata.maxpagesize=2" in first.headers["Preference-Applied"]
    pages, delta_link = await run_round(http, delta_url(box), headers, params)
    assert [len(page) for page in pages] == [2, 2, 1]
    assert ids(pages) == [m["id"] for m in reversed(recent)]
    times = [m["receivedDateTime"] for m in flat(pages)]
    assert times == sorted(times, reverse=True)

    # Later rounds keep the filter while paging: 3 matching changes in pages of 2.
    for mail in recent[:3]:
        patched = await http.patch(
            f"/v1.0/users/{box['id']}/messages/{mail['id']}", json={"isRead": True}, headers=graph
        )
        assert patched.status_code == 200
    changes, _ = await run_round(http, delta_link, headers)
    assert [len(page) for page in changes] == [2, 1]
    assert ids(changes) == [m["id"] for m in recent[:3]]


async def test_mail_changing_mid_round_is_neither_skipped_nor_shifted(
    http: httpx.AsyncClient, graph: dict[str, str]
) -> None:
    box = await new_mailbox(http)
    mails = []
    for index in range(5):
        mails.append(await deliver(http, box["address"], subject=f"m{index}"))
        await advance(http, 1)
    headers = {**graph, **IMMUTABLE, "Prefer": 'IdType="ImmutableId", odata.maxpagesize=2'}

    page = (await http.get(delta_url(box), headers=headers, params={"$orderby": "receivedDateTime desc"})).json()
    assert [m["id"] for m in page["value"]] == [mails[4]["id"], mails[3]["id"]]
    # A seen message leaves and a new one arrives before the next page: the round was fixed when
    # it began, so the rest comes unshifted and the two changes wait for the next round.
    assert (await http.delete(f"/v1.0/users/{box['id']}/messages/{mails[4]['id']}", headers=graph)).status_code == 204
    late = await deliver(http, box["address"], subject="late")
    rest, delta_link = await run_round(http, page["@odata.nextLink"], headers)
    assert ids(rest) == [mails[2]["id"], mails[1]["id"], mails[0]["id"]]
    changes, _ = await run_round(http, delta_link, headers)
    assert removed(changes) == {mails[4]["id"]: True, late["id"]: False}


async def test_token_reset_keeps_410_with_options(http: httpx.AsyncClient, graph: dict[str, str]) -> None:
    box = await new_mailbox(http)
    await deliver(http, box["address"])
    _, delta_link = await run_round(http, delta_url(box), graph, {"changeType": "created"})
    assert (await http.delete("/_sim/deltatokens")).status_code in (200, 204)
    gone = await http.get(delta_link, headers=graph)
    assert gone.status_code == 410 and gone.json()["error"]["code"] == "SyncStateNotFound"
    assert gone.headers["Location"].endswith("$deltatoken=")


def test_filter_caps_first_round_at_newest_5000() -> None:
    # In process: 5,000+ deliveries over HTTPS would make this the slowest test of the suite.
    store = Store("tenant", "client", "secret")
    mailbox = store.add_mailbox("bulk@contoso.com", "Bulk")
    inbox = mailbox.find_folder("inbox")
    assert inbox is not None
    start = datetime(2024, 5, 1, tzinfo=UTC)
    sender = EmailAddress("Supplier", "ap@supplier.example")
    for index in range(FILTER_LIMIT + 3):
        mailbox.add_message(
            Message(
                immutable_id=exchange_id("AAkALg"),
                rest_id=exchange_id(),
                mailbox_id=mailbox.id,
                folder_id=inbox.id,
                subject=f"m{index}",
                body="",
                body_type="text",
                sender=sender,
                to=[],
                received=start + timedelta(seconds=index),
                internet_message_id=f"<{index}@sim>",
                change_key=change_key(),
            )
        )
    newest = [m.immutable_id for m in sorted(mailbox.all_messages(), key=lambda m: m.received)][-FILTER_LIMIT:]
    upto = mailbox.change_seq

    unfiltered = round_entries(mailbox, inbox.id, DeltaQuery(), None, upto)
    assert len(unfiltered) == FILTER_LIMIT + 3  # the cap is for $filter only
    filtered = round_entries(mailbox, inbox.id, DeltaQuery(filter_op="ge", filter_at=start), None, upto)
    assert [e.message_id for e in filtered] == newest
    ordered = round_entries(
        mailbox, inbox.id, DeltaQuery(filter_op="ge", filter_at=start, newest_first=True), None, upto
    )
    assert [e.message_id for e in ordered] == newest[::-1]
    # gt at a message's second excludes it, ge includes it.
    last_second = start + timedelta(seconds=FILTER_LIMIT + 2)
    assert len(round_entries(mailbox, inbox.id, DeltaQuery(filter_op="gt", filter_at=last_second), None, upto)) == 0
    assert len(round_entries(mailbox, inbox.id, DeltaQuery(filter_op="ge", filter_at=last_second), None, upto)) == 1
