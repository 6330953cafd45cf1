"""Queue message text: the app writes base64 of JSON, and reads JSON in either form (shared/queuetext.py)."""

from __future__ import annotations

import base64
import json

import pytest

from shared import hostqueues, queuetext
from shared.errors import QueueMessageError, UnreadableQueueMessage

EVENT = b'{"specversion":"1.0","id":"e1","data":{"x":"\xc3\xa9"}}'


@pytest.fixture
def host_encoding(monkeypatch: pytest.MonkeyPatch):
    """Set the host's messageEncoding through the app setting the host reads, as in Azure."""

    def use(value: str) -> None:
        monkeypatch.setenv(hostqueues.OVERRIDE + "messageEncoding", value)
        hostqueues.message_encoding.cache_clear()

    yield use
    hostqueues.message_encoding.cache_clear()


@pytest.mark.parametrize("body", [EVENT, b"  " + EVENT + b"\n", b"[1,2]"])
def test_json_is_read_as_it_is(body: bytes):
    assert queuetext.decode(body) == body.strip()


@pytest.mark.parametrize("body", [EVENT, b"[1,2]"])
def test_base64_of_json_is_decoded_once(body: bytes):
    assert queuetext.decode(base64.b64encode(body)) == body
    assert queuetext.decode(base64.b64encode(body) + b"\r\n") == body
    # Encoded twice is not what any writer does: it is refused, not decoded until it looks like JSON.
    with pytest.raises(UnreadableQueueMessage, match="base64, but not of JSON"):
        queuetext.decode(base64.b64encode(base64.b64encode(body)))


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b"%%% not an event", "neither JSON nor base64 of JSON"),
        (b"", "neither JSON nor base64 of JSON"),
        (base64.b64encode(b"plain words"), "base64, but not of JSON"),
        (b"e30", "neither JSON nor base64 of JSON"),  # '{}' without its padding: strict base64 refuses it
        (b"true", "base64, but not of JSON"),  # a JSON scalar is no queue message this app reads
    ],
)
def test_anything_else_is_unreadable_and_not_worth_a_retry(body: bytes, needle: str):
    with pytest.raises(UnreadableQueueMessage, match=needle) as caught:
        queuetext.decode(body)
    assert isinstance(caught.value, QueueMessageError)


def test_what_the_app_writes_reads_back():
    text = json.dumps({"type": "change", "subject": "Rechnung März"}, ensure_ascii=False)
    written = queuetext.encode(text)
    assert written.isascii() and queuetext.decode(written.encode()).decode() == text


def test_output_bindings_hold_base64_under_either_host_encoding(host_encoding):
    texts = ['{"a":1}', '{"b":"ü"}']
    host_encoding("none")  # the host writes what it is given: given base64
    assert queuetext.for_output(texts) == [queuetext.encode(t) for t in texts]
    host_encoding("base64")  # the host encodes what it is given: given the text
    assert queuetext.for_output(texts) == texts


def test_the_repositorys_host_json_lets_plain_messages_through():
    hostqueues.message_encoding.cache_clear()
    assert hostqueues.message_encoding() == "none"
    assert hostqueues.max_dequeue_count() == 5
