"""Parked messages read back for replay: the original unwrapped, in either encoding."""

from __future__ import annotations

import base64
import json

from shared.pipeline.poison import poisoned, unwrap


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_a_parked_record_gives_back_its_original():
    original = '{"type":"change","v":1,"folder_key":"k"}'
    record = json.dumps(poisoned("mail-changes", original.encode(), "GraphError: 500", 5))
    for content in (b64(record), record):
        parked = unwrap("id1", "pop", content, None)
        assert json.loads(parked.original) == json.loads(original)
        assert parked.reason == "GraphError: 500" and parked.failed_at


def test_a_text_original_stays_text_and_a_bare_message_is_its_own_original():
    record = json.dumps(poisoned("mail-changes", b"not json at all", "QueueMessageError: x", 5))
    assert unwrap("id1", None, b64(record), None).original == "not json at all"
    bare = '{"type":"change","v":1}'
    parked = unwrap("id2", None, b64(bare), None)
    assert parked.original == bare and parked.reason is None
