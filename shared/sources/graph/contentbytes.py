"""A message with `$expand=attachments`, read as a stream without holding large `contentBytes`.

Graph returns each file attachment's bytes as base64 `contentBytes` inside the message's JSON, for
large files too (graph_facts §8: no documented limit). Parsing that with `json.loads` would hold the
whole file, base64 and decoded, in memory. This reader scans the response as it arrives, keeps the
JSON around the `contentBytes` values (small), and decodes each value into memory only while it stays
within a per-value limit and a per-message budget; a value beyond either is dropped, and the caller
streams that file from `/$value` instead. Memory stays bounded whatever the attachments' sizes.
"""

from __future__ import annotations

import binascii
import json
import re
from dataclasses import dataclass, field
from typing import Any

_QUOTE = re.compile(rb'"')
_STRING_STOP = re.compile(rb'["\\]')
_KEY = b"contentBytes"
# Base64 is decoded in runs of this many characters (a multiple of 4).
_DECODE_RUN = 64 * 1024


@dataclass
class _Capture:
    limit: int
    data: bytearray | None = field(default_factory=bytearray)
    text: bytearray = field(default_factory=bytearray)

    def drop(self) -> None:
        self.data = None
        self.text.clear()

    @property
    def held(self) -> int:
        return len(self.data) if self.data is not None else 0

    def add(self, text: bytes, room: int) -> None:
        """Take base64 text; decode it in whole runs while it fits `room` and the limit."""
        if self.data is None:
            return
        self.text += text
        whole = len(self.text) - len(self.text) % 4
        if whole >= _DECODE_RUN:
            self._decode(whole, room)

    def finish(self, room: int) -> None:
        if self.data is None:
            return
        if len(self.text) % 4:
            self.drop()  # truncated base64 is not trusted
            return
        self._decode(len(self.text), room)

    def _decode(self, upto: int, room: int) -> None:
        assert self.data is not None
        # Each 4 characters decode to at most 3 bytes: stop before decoding what cannot be kept.
        if len(self.data) + upto // 4 * 3 - 2 > min(self.limit, len(self.data) + room):
            self.drop()
            return
        try:
            decoded = binascii.a2b_base64(bytes(self.text[:upto]), strict_mode=True)
        except binascii.Error:
            self.drop()
            return
        del self.text[:upto]
        if len(self.data) + len(decoded) > min(self.limit, len(self.data) + room):
            self.drop()
            return
        self.data += decoded


@dataclass
class ExpandedMessage:
    """The message's JSON with each `contentBytes` replaced by an index into `contents`.

    `contents[i]` is the decoded value, or None where it was too large, over budget or malformed.
    """

    body: dict[str, Any]
    contents: list[bytes | None]

    def content_of(self, attachment: dict[str, Any]) -> bytes | None:
        index = attachment.get("contentBytes")
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(self.contents):
            return None
        return self.contents[index]


class ContentBytesReader:
    """Feed the response body chunk by chunk, then call `result()`."""

    def __init__(self, per_value: int, budget: int) -> None:
        self._per_value = per_value
        self._budget = budget
        self._out = bytearray()
        self._captures: list[_Capture] = []
        self._state = "out"  # "out" | "string" | "capture"
        self._tail = b""  # a trailing backslash whose escaped byte has not arrived yet
        self._last_string = bytearray()  # the current string's text, kept only while it could be the key
        self._after_key: bytearray | None = None  # text between `"contentBytes"` and the next quote

    def feed(self, chunk: bytes) -> None:
        buf = self._tail + chunk
        self._tail = b""
        pos = 0
        while pos < len(buf):
            pos = self._scan_out(buf, pos) if self._state == "out" else self._scan_string(buf, pos)

    def _scan_out(self, buf: bytes, pos: int) -> int:
        match = _QUOTE.search(buf, pos)
        end = match.start() if match else len(buf)
        between = buf[pos:end]
        if self._after_key is not None:
            self._after_key += between
            if len(self._after_key) > 64:
                self._after_key = None
        if match is None:
            self._out += between
            return end
        if self._after_key is not None and self._after_key.strip() == b":":
            # The value of a contentBytes member: replaced by its capture index.
            self._out += between + str(len(self._captures)).encode()
            self._captures.append(_Capture(self._per_value))
            self._state = "capture"
        else:
            self._out += buf[pos : end + 1]
            self._state = "string"
            self._last_string.clear()
        self._after_key = None
        return end + 1

    def _scan_string(self, buf: bytes, pos: int) -> int:
        capture = self._captures[-1] if self._state == "capture" else None
        match = _STRING_STOP.search(buf, pos)
        end = match.start() if match else len(buf)
        self._take(capture, buf[pos:end])
        if match is None:
            return end
        if buf[end] == 0x5C:  # backslash: the escaped byte decides
            if end + 1 >= len(buf):
                self._tail = buf[end:]
                return len(buf)
            escaped = buf[end : end + 2]
            if capture is None:
                self._take(None, escaped)
            elif escaped == b"\\/":
                self._take(capture, b"/")  # some serialisers escape the solidus; base64 contains it
            else:
                capture.drop()
            return end + 2
        # The closing quote.
        if capture is None:
            self._out += b'"'
            if self._last_string == _KEY:
                self._after_key = bytearray()
        else:
            capture.finish(self._room())
        self._state = "out"
        return end + 1

    def _take(self, capture: _Capture | None, text: bytes) -> None:
        if capture is not None:
            capture.add(text, self._room())
            return
        self._out += text
        if len(self._last_string) <= len(_KEY):
            self._last_string += text[: len(_KEY) + 1]

    def _room(self) -> int:
        return self._budget - sum(c.held for c in self._captures)

    def result(self) -> ExpandedMessage:
        body = json.loads(self._out)
        if not isinstance(body, dict):
            raise ValueError("the message response is not a JSON object")
        contents = [bytes(c.data) if c.data is not None else None for c in self._captures]
        return ExpandedMessage(body, contents)
