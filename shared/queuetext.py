"""Queue message text as this app writes and reads it, whatever host.json's `messageEncoding` says.

The app writes base64 of UTF-8 JSON to every queue (what a Functions queue trigger with the default
`messageEncoding: base64` reads; the hand-off queue's consumers rely on it), through the Storage SDK
(runtime.send_queue_message) and through the host's output bindings (`for_output`). It reads with host.json
at `messageEncoding: none`, so a message another writer put in plain JSON reaches the function instead of
being moved to the poison queue by the host before any code runs (the extension does that at once with a
message that is not base64: azure-sdk-for-net#18326). Every queue worker then reads through `decode`: a
JSON object or array as it is, else strict base64 of one. The two cannot be confused: `{` and `[` are not
in base64's alphabet. A message that is neither is refused with UnreadableQueueMessage (retrying will not
help). Written here rather than taken from the Storage SDK, whose decode policies take one encoding only.
"""

from __future__ import annotations

import base64
import binascii

from .errors import UnreadableQueueMessage
from .hostqueues import message_encoding

_JSON_START = (b"{", b"[")


def decode(body: bytes) -> bytes:
    """The message's JSON: the body itself when it is a JSON object or array, else the body base64-decoded
    when that is one; else UnreadableQueueMessage."""
    text = body.strip()
    if text[:1] in _JSON_START:
        return text
    try:
        decoded = base64.b64decode(text, validate=True).strip() if text else None
    except (binascii.Error, ValueError):
        decoded = None
    if decoded is None:
        raise UnreadableQueueMessage("queue message is neither JSON nor base64 of JSON")
    if decoded[:1] not in _JSON_START:
        raise UnreadableQueueMessage("queue message is base64, but not of JSON")
    return decoded


def encode(text: str) -> str:
    """What the app writes to a queue: base64 of the UTF-8 text."""
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def for_output(texts: list[str]) -> list[str]:
    """What a queue output binding is given, so that the queue holds `encode(text)` as the SDK writes it:
    the texts themselves when the host encodes (`base64`), encoded here when it writes as is (`none`)."""
    if message_encoding() == "base64":
        return texts
    return [encode(text) for text in texts]
