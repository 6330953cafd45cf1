"""The bounded reader of `$expand=attachments` responses."""

from __future__ import annotations

import base64
import json
import os
from typing import Any

import pytest

from shared.sources.graph.contentbytes import ContentBytesReader, ExpandedMessage


def read(payload: bytes, chunk: int, per_value: int = 1000, budget: int = 1500) -> ExpandedMessage:
    reader = ContentBytesReader(per_value, budget)
    for start in range(0, len(payload), chunk):
        reader.feed(payload[start : start + chunk])
    return reader.result()


def attachment(name: str, data: bytes | None, **extra: Any) -> dict[str, Any]:
    item: dict[str, Any] = {"@odata.type": "#microsoft.graph.fileAttachment", "id": name, "name": name, **extra}
    if data is not None:
        item["contentBytes"] = base64.b64encode(data).decode()
    return item


@pytest.mark.parametrize("chunk", [1, 3, 7, 64, 1 << 20])
def test_small_values_are_kept_large_ones_dropped_whatever_the_chunking(chunk: int):
    small, large = os.urandom(700), os.urandom(5000)
    message = {
        "id": "m1",
        "subject": 'a "contentBytes": "QUJD" inside a subject',
        "attachments": [
            attachment("a.pdf", small, size=700),
            attachment("big.pdf", large),
            attachment("none.pdf", None),
            {"@odata.type": "#microsoft.graph.referenceAttachment", "id": "r", "sourceUrl": "https://x/y"},
        ],
    }
    got = read(json.dumps(message).encode(), chunk)
    a, big, none, ref = got.body["attachments"]
    assert got.content_of(a) == small
    assert got.content_of(big) is None  # over the per-value limit: fetched from /$value instead
    assert got.content_of(none) is None and "contentBytes" not in none
    assert ref["sourceUrl"] == "https://x/y" and got.content_of(ref) is None
    assert got.body["subject"] == message["subject"]
    assert a["size"] == 700 and a["name"] == "a.pdf"


def test_the_budget_is_shared_by_the_message():
    first, second, third = os.urandom(900), os.urandom(900), os.urandom(500)
    message = {"attachments": [attachment(n, d) for n, d in (("1", first), ("2", second), ("3", third))]}
    got = read(json.dumps(message).encode(), 100)
    contents = [got.content_of(a) for a in got.body["attachments"]]
    assert contents == [first, None, third]  # the second would pass the 1500-byte budget


def test_escaped_solidus_and_compact_or_spaced_members():
    data = bytes(range(256)) * 2
    text = base64.b64encode(data).decode().replace("/", "\\/")
    payload = '{"attachments":[{"name":"x","contentBytes" :\t"' + text + '"}]}'
    got = read(payload.encode(), 5)
    assert got.content_of(got.body["attachments"][0]) == data


@pytest.mark.parametrize("value", ["not base64!", "QUJ", "QUJD\\u0041"])
def test_malformed_values_are_not_trusted(value: str):
    payload = '{"attachments":[{"name":"x","contentBytes":"' + value + '"}]}'
    got = read(payload.encode(), 4)
    assert got.content_of(got.body["attachments"][0]) is None


def test_an_empty_value_reads_as_empty_for_the_caller_to_distrust():
    got = read(b'{"attachments":[{"contentBytes":""}]}', 2)
    assert got.content_of(got.body["attachments"][0]) == b""


def test_a_string_value_equal_to_the_key_is_not_a_key():
    payload = b'{"a":["contentBytes","QUJD"],"contentBytes":"QUJD"}'
    got = read(payload, 3)
    assert got.body["a"] == ["contentBytes", "QUJD"]
    assert got.contents == [b"ABC"]
