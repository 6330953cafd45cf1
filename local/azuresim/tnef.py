"""A small TNEF encoder (winmail.dat, MS-OXTNEF), for the attachments Outlook packs into one file.

Written as Outlook writes one: the TNEF version, the OEM code page, the message class, then per
attachment its rendering data (which starts an attachment), its 8.3 title in the OEM code page, its
bytes, and its MAPI properties with the long file name in UTF-16 and the MIME type. Every object
carries its checksum (the sum of its data bytes, modulo 65536). The tests check it with `tnefparse`.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

SIGNATURE = 0x223E9F78
LEVEL_MESSAGE, LEVEL_ATTACHMENT = 1, 2
ATT_TNEF_VERSION = 0x00089006
ATT_OEM_CODEPAGE = 0x00069007
ATT_MESSAGE_CLASS = 0x00078008
ATT_ATTACH_REND_DATA = 0x00069002
ATT_ATTACH_TITLE = 0x00018010
ATT_ATTACH_DATA = 0x0006800F
ATT_ATTACHMENT = 0x00069005
PT_STRING8, PT_UNICODE = 0x001E, 0x001F
PR_ATTACH_LONG_FILENAME, PR_ATTACH_MIME_TAG = 0x3707, 0x370E


@dataclass(frozen=True)
class TnefFile:
    name: str
    content_type: str
    data: bytes


def _object(level: int, attribute: int, data: bytes) -> bytes:
    checksum = sum(data) & 0xFFFF
    return struct.pack("<BII", level, attribute, len(data)) + data + struct.pack("<H", checksum)


def _padded(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)


def _mapi_string(kind: int, tag: int, data: bytes) -> bytes:
    return struct.pack("<HHII", kind, tag, 1, len(data)) + _padded(data)


def _short_name(name: str, codepage: str) -> bytes:
    """The 8.3 title (attAttachTitle) in the OEM code page, as old clients read it."""
    stem, dot, ext = name.rpartition(".")
    stem, ext = (stem, ext) if dot else (name, "")
    short = stem[:8] + (f".{ext[:3]}" if ext else "")
    return short.encode(codepage, "replace") + b"\0"


def encode_tnef(files: Sequence[TnefFile], codepage: int = 1252, key: int = 0x5A17, long_names: bool = True) -> bytes:
    """`long_names=False` leaves the MAPI long file name out, as old clients do: only the title remains."""
    encoding = f"cp{codepage}"
    out = [struct.pack("<IH", SIGNATURE, key)]
    out.append(_object(LEVEL_MESSAGE, ATT_TNEF_VERSION, struct.pack("<I", 0x00010000)))
    out.append(_object(LEVEL_MESSAGE, ATT_OEM_CODEPAGE, struct.pack("<II", codepage, 0)))
    out.append(_object(LEVEL_MESSAGE, ATT_MESSAGE_CLASS, b"IPM.Microsoft Mail.Note\0"))
    for file in files:
        out.append(_object(LEVEL_ATTACHMENT, ATT_ATTACH_REND_DATA, struct.pack("<HIHHI", 1, 0xFFFFFFFF, 0, 0, 0)))
        title = _short_name(file.name, encoding) if long_names else file.name.encode(encoding) + b"\0"
        out.append(_object(LEVEL_ATTACHMENT, ATT_ATTACH_TITLE, title))
        out.append(_object(LEVEL_ATTACHMENT, ATT_ATTACH_DATA, file.data))
        props = _mapi_string(PT_STRING8, PR_ATTACH_MIME_TAG, file.content_type.encode("ascii") + b"\0")
        if long_names:
            props += _mapi_string(PT_UNICODE, PR_ATTACH_LONG_FILENAME, (file.name + "\0").encode("utf-16-le"))
        props = struct.pack("<I", 2 if long_names else 1) + props
        out.append(_object(LEVEL_ATTACHMENT, ATT_ATTACHMENT, props))
    return b"".join(out)
