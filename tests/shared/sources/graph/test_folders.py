"""Folder paths found or created, including the race where another worker creates it first."""

from __future__ import annotations

import httpx
import pytest

from shared.errors import GraphError, GraphNotFound
from shared.sources.graph.folders import resolve_folder
from tests.shared.sources.graph.test_client import client, graph_error


class Mailbox:
    """Just enough of Graph's folder API; `racing` makes the next create lose to another worker."""

    def __init__(self, exists_status: int = 409) -> None:
        self.children: dict[str, dict[str, str]] = {"inbox": {}, "msgfolderroot": {"Inbox": "inbox"}}
        self.exists_status = exists_status
        self.racing = False
        self.creates = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        parts = request.url.path.split("/")
        if request.method == "GET" and parts[-2] == "mailFolders":
            return httpx.Response(200, json={"id": parts[-1], "displayName": parts[-1]})
        parent = parts[-2]
        if request.method == "GET":
            wanted = request.url.params["$filter"].split("'")[1]
            found = [{"id": i, "displayName": n} for n, i in self.children[parent].items() if n == wanted]
            return httpx.Response(200, json={"value": found})
        name = httpx.Response(200, content=request.content).json()["displayName"]
        self.creates += 1
        new_id = f"{parent}.{name}"
        self.children[parent][name] = new_id
        self.children.setdefault(new_id, {})
        if self.racing:
            self.racing = False
            return graph_error(
                self.exists_status, "ErrorFolderExists", "A folder with the specified name already exists."
            )
        return httpx.Response(201, json={"id": new_id, "displayName": name})


async def test_well_known_first_then_children_by_name():
    box = Mailbox()
    box.children["inbox"]["Invoices"] = "inv"
    graph = client(box)
    assert await resolve_folder(graph, "a@x.com", "Inbox/Invoices") == "inv"
    with pytest.raises(GraphNotFound):
        await resolve_folder(graph, "a@x.com", "Inbox/Missing")
    assert box.creates == 0


@pytest.mark.parametrize("status", [409, 400])
async def test_missing_folders_are_created_and_a_lost_race_adopts_the_winner(status: int):
    box = Mailbox(status)
    graph = client(box)
    assert await resolve_folder(graph, "a@x.com", "Processed/2026", create=True) == "msgfolderroot.Processed.2026"
    box.racing = True
    assert await resolve_folder(graph, "a@x.com", "Inbox/Captured", create=True) == "inbox.Captured"
    assert box.creates == 3


async def test_other_create_errors_are_not_swallowed():
    def refuse(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            return graph_error(403, "ErrorAccessDenied", "Access is denied.")
        return httpx.Response(200, json={"value": []})

    with pytest.raises(GraphError, match="403"):
        await resolve_folder(client(refuse), "a@x.com", "Processed", create=True)
