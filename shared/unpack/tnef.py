"""winmail.dat (TNEF, `application/ms-tnef`): the files Outlook packed inside, with `tnefparse`.

`tnefparse` decodes from bytes held whole, so a winmail.dat is held in memory up to `MAX_TNEF_BYTES`
(32 MiB; Exchange's default message limit is 35 MB, so a real one fits). A larger one is stored as it
is and recorded as not opened. Every TNEF object carries a checksum. One that does not match means the
file is damaged, yet Outlook-compatible readers (and `tnefparse`) still open it, with a warning: what can
be read is extracted, and the container and each file found in it are marked `damaged`, so that a person
checks them rather than a document being silently lost or silently trusted.

Names: the long file name (a MAPI property, UTF-16 when the sender wrote Unicode, else in the
message's code page) wins over the 8.3 title, which is in the OEM code page the TNEF names
(`attOemCodepage`, cp1252 when absent).
"""

from __future__ import annotations

import mimetypes
from typing import Any

from .base import Damaged, Found, Problem, Scope, UnpackError

MAX_TNEF_BYTES = 32 * 1024 * 1024


def _text(value: Any, codepage: str) -> str:
    if isinstance(value, list):  # a MAPI string property's values
        value = value[0] if value else ""
    if isinstance(value, bytes):
        try:
            value = value.decode(codepage)
        except (LookupError, UnicodeDecodeError):
            value = value.decode("cp1252", "replace")
    return str(value).strip("\x00").strip()


def _codepage(tnef: Any) -> str:
    page = tnef.codepage or "cp1252"
    try:
        "".encode(page)
    except LookupError:
        return "cp1252"
    return str(page)


def _attachments(tnef: Any) -> list[tuple[str, str, bytes]]:
    """(name, content type, bytes) of each attachment, those of embedded messages after their own."""
    from tnefparse import properties

    codepage = _codepage(tnef)
    out: list[tuple[str, str, bytes]] = []
    for attachment in tnef.attachments:
        embedded = getattr(attachment, "embed", None)
        if embedded is not None:
            out += _attachments(embedded)
            continue
        props = {a.name: a.data for a in attachment.mapi_attrs}
        name = _text(props.get(properties.MAPI_ATTACH_LONG_FILENAME) or attachment._name, codepage)
        name = name or "attachment"
        mime = _text(props.get(properties.MAPI_ATTACH_MIME_TAG) or b"", codepage).lower()
        mime = mime or mimetypes.guess_type(name)[0] or "application/octet-stream"
        data = attachment.data if isinstance(attachment.data, bytes) else bytes(attachment.data or b"")
        out.append((name, mime, data))
    return out


def _truncated(data: bytes) -> bool:
    """Whether an object's declared length runs past the end: a cut file, not a damaged one (`tnefparse`
    would hand over the part that is there as if it were whole). Each object: level (1 byte), id (4),
    length (4), the data, a checksum (2); the file starts with a 6-byte header."""
    offset = 6
    while offset + 9 <= len(data):
        offset += 11 + int.from_bytes(data[offset + 5 : offset + 9], "little")
    return offset > len(data)


class TnefReader:
    """Collects the winmail.dat (bounded), then hands each file inside to the scope."""

    def __init__(self, scope: Scope) -> None:
        self._scope = scope
        self._data = bytearray()
        self._too_large = False

    async def write(self, data: bytes) -> None:
        if self._too_large:
            return
        if len(self._data) + len(data) > MAX_TNEF_BYTES:
            self._too_large = True
            self._data = bytearray()
            return
        self._data += data

    async def close(self) -> None:
        if self._too_large:
            self._scope.note(Problem(f"winmail.dat larger than {MAX_TNEF_BYTES} bytes: stored, not opened"))
            return
        data, self._data = bytes(self._data), bytearray()
        found, damaged = self._parse(data)
        del data
        if damaged:
            self._scope.note(Damaged(damaged))
        for name, content_type, content in found:
            sink = await self._scope.found(Found(name, content_type, damaged=damaged))
            if sink is not None:
                for start in range(0, len(content), 1024 * 1024):
                    await sink.write(content[start : start + 1024 * 1024])
                await sink.close()

    @staticmethod
    def _parse(data: bytes) -> tuple[list[tuple[str, str, bytes]], str | None]:
        """The files inside, and why the winmail.dat is damaged (None: its checksums hold)."""
        from tnefparse.tnef import TNEF

        try:
            tnef = TNEF(data, do_checksum=True)
        except Exception as exc:  # tnefparse raises ValueError, struct.error, IndexError... on bad input
            raise UnpackError(f"not a readable winmail.dat (TNEF): {type(exc).__name__}: {exc}") from None
        if _truncated(data):
            raise UnpackError("winmail.dat ends inside a TNEF object (truncated)")
        bad = [o for o in tnef.objects if not o.good_checksum]
        damaged = f"winmail.dat is damaged: {len(bad)} TNEF object(s) fail their checksum" if bad else None
        try:
            return _attachments(tnef), damaged
        except Exception as exc:
            raise UnpackError(f"not a readable winmail.dat (TNEF): {type(exc).__name__}: {exc}") from None
