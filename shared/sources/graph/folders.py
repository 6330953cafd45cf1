"""Mail folders by path: well-known names (`Inbox`) and nested display names, found or created."""

from __future__ import annotations

from urllib.parse import quote

from ...errors import GraphConflict, GraphError, GraphNotFound
from .client import GraphClient

WELL_KNOWN_FOLDERS = frozenset(
    {
        "inbox",
        "archive",
        "clutter",
        "conversationhistory",
        "deleteditems",
        "drafts",
        "junkemail",
        "outbox",
        "sentitems",
        "scheduled",
        "searchfolders",
        "msgfolderroot",
    }
)


def user_path(mailbox: str) -> str:
    return f"users/{quote(mailbox, safe='@')}"


def _odata_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


async def resolve_folder(graph: GraphClient, mailbox: str, path: str, *, create: bool = False) -> str:
    """The id of the folder at `path`: first segment a well-known name or a top-level folder, then
    child folders by display name. With `create`, missing folders are made (Mail.ReadWrite)."""
    user = user_path(mailbox)
    first, *rest = path.split("/")
    if first.lower() in WELL_KNOWN_FOLDERS:
        found = await graph.request("GET", f"{user}/mailFolders/{first.lower()}", mailbox=mailbox)
        current = str(found["id"])
        names = rest
    else:
        current, names = "msgfolderroot", [first, *rest]
    for name in names:
        current = await _child(graph, mailbox, current, name, create)
    return current


async def _child(graph: GraphClient, mailbox: str, parent: str, name: str, create: bool) -> str:
    children = f"{user_path(mailbox)}/mailFolders/{quote(parent, safe='')}/childFolders"
    found = await _find_child(graph, mailbox, children, name)
    if found is not None:
        return found
    if not create:
        raise GraphNotFound(404, "ErrorFolderNotFound", f"folder {name!r} not found in {mailbox}", f"GET {children}")
    try:
        made = await graph.request("POST", children, mailbox=mailbox, json={"displayName": name})
        return str(made["id"])
    except GraphError as exc:
        # Another worker created it a moment ago (Exchange's ErrorFolderExists, reported as 409 or 400).
        if not isinstance(exc, GraphConflict) and exc.code != "ErrorFolderExists":
            raise
        found = await _find_child(graph, mailbox, children, name)
        if found is None:
            raise
        return found


async def _find_child(graph: GraphClient, mailbox: str, children: str, name: str) -> str | None:
    listing = await graph.request(
        "GET",
        children,
        mailbox=mailbox,
        params={"$filter": f"displayName eq {_odata_string(name)}", "$select": "id,displayName"},
    )
    for item in listing.get("value", []):
        if str(item.get("displayName", "")).lower() == name.lower():
            return str(item["id"])
    return None
