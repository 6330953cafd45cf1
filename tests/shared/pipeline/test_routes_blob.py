"""ROUTES_BLOB on Azurite: read with ETags, a change taken within the refresh interval and not downloaded again
while unchanged, a broken version rejected with the last good routes kept, and mail held before any good version."""

from __future__ import annotations

import json
import logging

import pytest

from shared.errors import RoutesUnavailable, SettingsError
from shared.pipeline.routes import checked_routes, routes_blob_from_env
from shared.pipeline.routes_blob import REFRESH_SECONDS, BlobRoutes
from shared.pipeline.storage import BlobStore

NAME = "config/routes.json"


class Clock:
    def __init__(self) -> None:
        self.at = 0.0

    def __call__(self) -> float:
        return self.at


async def put(store: BlobStore, text: str) -> None:
    await store._ensure()
    await store._container.get_blob_client(NAME).upload_blob(text.encode(), overwrite=True)


def routes(*names: str) -> str:
    return json.dumps([{"name": n, "container": "ap-invoices"} for n in names])


def blob_routes(store: BlobStore, clock: Clock) -> BlobRoutes:
    return BlobRoutes(store, NAME, lambda text: checked_routes("ROUTES_BLOB", text, "mail-ingest-state"), clock)


async def test_a_change_is_taken_within_the_interval_and_an_unchanged_blob_is_not_downloaded(store: BlobStore):
    clock, reads = Clock(), []
    await put(store, routes("a"))
    source = blob_routes(store, clock)
    original = store.read_if_changed

    async def counted(path: str, etag: str | None) -> tuple[bytes, str] | None:
        found = await original(path, etag)
        reads.append("body" if found else "304")
        return found

    store.read_if_changed = counted  # type: ignore[method-assign]
    assert [r.name for r in await source.current()] == ["a"]
    await put(store, routes("b"))
    assert [r.name for r in await source.current()] == ["a"]  # within the interval: not asked again
    clock.at += REFRESH_SECONDS
    assert [r.name for r in await source.current()] == ["b"]
    clock.at += REFRESH_SECONDS
    assert [r.name for r in await source.current()] == ["b"]
    assert reads == ["body", "body", "304"]


async def test_a_broken_version_keeps_the_last_good_routes_and_says_why(
    store: BlobStore, caplog: pytest.LogCaptureFixture
):
    clock = Clock()
    await put(store, routes("a"))
    source = blob_routes(store, clock)
    await source.current()
    await put(store, json.dumps([{"name": "x", "path": "{year}/{messageKey}"}]))
    clock.at += REFRESH_SECONDS
    with caplog.at_level(logging.ERROR):
        assert [r.name for r in await source.current()] == ["a"]
        clock.at += REFRESH_SECONDS
        await source.current()  # the same broken version: no second log line
    assert str(source.problem).startswith("route 'x': path has an unknown token {year} (known: mailbox, folder")
    (record,) = [r for r in caplog.records if "routes.invalid" in r.getMessage()]
    assert "the last good routes stay" in record.getMessage()
    await put(store, routes("c"))
    clock.at += REFRESH_SECONDS
    assert [r.name for r in await source.current()] == ["c"] and source.problem is None


async def test_without_good_routes_the_mail_waits(store: BlobStore):
    source = blob_routes(store, Clock())
    with pytest.raises(RoutesUnavailable, match=f"^setting ROUTES_BLOB: {NAME} does not exist in container"):
        await source.current()
    await put(store, "not json")
    await source.refresh(now=True)
    with pytest.raises(RoutesUnavailable, match=r"^setting ROUTES_BLOB: not valid JSON"):
        await source.current()


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        ({"ROUTES_BLOB": NAME, "ROUTES": "[]"}, "is set, and so is ROUTES"),
        ({"ROUTES_BLOB": NAME, "ROUTES_FILE": "routes.json"}, "is set, and so is ROUTES_FILE"),
        ({"ROUTES_BLOB": "/routes.json"}, "is not a blob name"),
    ],
)
def test_routes_blob_setting_is_checked(env: dict[str, str], problem: str) -> None:
    with pytest.raises(SettingsError, match=f"^setting ROUTES_BLOB: .*{problem}"):
        routes_blob_from_env(env)
    assert routes_blob_from_env({"ROUTES_BLOB": f" {NAME} "}) == NAME
