"""RFC 5322 MIME of a message, for an item attachment's ``/$value`` (Graph returns an attached mail
as "MIME format").

The MIME is assembled once as a list of segments: small byte strings (headers, text bodies,
boundaries) and streamed pieces (base64 of file content, nested attached mails). Its length is
known without producing it and its bytes are produced chunk by chunk, so an attached mail carrying
a 150 MB file costs no more memory than its headers.

Layout, as Outlook writes it: a mail without attachments is its text part alone; otherwise
``multipart/mixed`` holding the body (``multipart/related`` with the inline parts when there are
any) and then each attachment; attached mails nest as ``message/rfc822`` parts. Reference
attachments have no MIME form and are left out. Everything is 7-bit: text bodies that are not
short-lined ASCII and all file content are base64 with 76-character lines.

File names keep whatever the sender gave (hostile ones included): printable ASCII names are quoted
strings; any other name goes into ``filename*`` (RFC 2231, with continuations) and into the
``Content-Type`` ``name`` as RFC 2047 encoded words, the form Outlook writes and most clients read.
"""

from __future__ import annotations

import base64
import re
import secrets
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime
from urllib.parse import quote

from .content import CHUNK_SIZE, Content
from .store import Attachment, EmailAddress, Message

CRLF = b"\r\n"
LINE_BYTES = 57  # raw bytes per 76-character base64 line
BLOCK_BYTES = LINE_BYTES * 1150  # about 64 KiB of input per encoded block
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_TOKEN_SAFE = "!#$&+-.^_`|~"  # attribute-char of RFC 2231 besides alphanumerics
_CONTINUATION_CHARS = 60


@dataclass(frozen=True)
class Base64Lines:
    """Base64 of ``content`` in CRLF-terminated 76-character lines (RFC 2045), streamed."""

    content: Content

    @property
    def size(self) -> int:
        encoded = 4 * ((self.content.size + 2) // 3)
        return encoded + 2 * ((encoded + 75) // 76)

    def chunks(self) -> Iterator[bytes]:
        carry = b""
        for chunk in self.content.chunks():
            carry += chunk
            while len(carry) >= BLOCK_BYTES:
                yield base64.encodebytes(carry[:BLOCK_BYTES]).replace(b"\n", CRLF)
                carry = carry[BLOCK_BYTES:]
        if carry:
            yield base64.encodebytes(carry).replace(b"\n", CRLF)


Segment = bytes | Content


class Joined:
    """Segments (bytes and ``Content``) as one ``Content``: size known up front, bytes produced piecewise."""

    def __init__(self, segments: list[Segment]) -> None:
        self.segments = segments
        self._size = sum(len(s) if isinstance(s, bytes) else s.size for s in self.segments)

    @property
    def size(self) -> int:
        return self._size

    def chunks(self) -> Iterator[bytes]:
        pending = bytearray()
        for segment in self.segments:
            if isinstance(segment, bytes):
                pending += segment
            else:
                for chunk in segment.chunks():
                    # Small pieces (nested headers) are gathered; large ones pass straight through.
                    if pending and len(pending) + len(chunk) > CHUNK_SIZE:
                        yield bytes(pending)
                        pending.clear()
                    if len(chunk) >= CHUNK_SIZE:
                        yield chunk
                    else:
                        pending += chunk
            if len(pending) >= CHUNK_SIZE:
                yield bytes(pending)
                pending.clear()
        if pending:
            yield bytes(pending)


# -- headers ----------------------------------------------------------------------------------------
def _clean(text: str) -> str:
    """Header text may not carry line breaks or control characters (RFC 5322)."""
    return _CONTROL.sub(" ", text)


def _address(value: EmailAddress) -> Address:
    username, _, domain = value.address.partition("@")
    return Address(display_name=_clean(value.name), username=username, domain=domain)


def _envelope(message: Message) -> bytes:
    """From, To, Subject, Date, Message-ID, encoded (RFC 2047) and folded by the email package."""
    mail = EmailMessage(policy=policy.SMTP)
    mail["From"] = _address(message.sender)
    if message.to:
        mail["To"] = [_address(a) for a in message.to]
    if message.cc:
        mail["Cc"] = [_address(a) for a in message.cc]
    mail["Subject"] = _clean(message.subject)
    mail["Date"] = format_datetime(message.received)
    mail["Message-ID"] = message.internet_message_id
    mail["MIME-Version"] = "1.0"
    return "".join(policy.SMTP.fold(name, value) for name, value in mail.items()).encode("ascii")


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _is_plain(value: str) -> bool:
    return all(" " <= ch <= "~" for ch in value)


def _rfc2231(name: str, value: str) -> list[str]:
    """``name*=utf-8''...`` percent-encoded, split into ``name*0*``, ``name*1*`` ... when long."""
    encoded = quote(value.encode("utf-8"), safe=_TOKEN_SAFE)
    pieces: list[str] = []
    while encoded:
        cut = min(_CONTINUATION_CHARS, len(encoded))
        while cut < len(encoded) and "%" in encoded[max(0, cut - 2) : cut]:
            cut -= 1  # never split a %XX escape
        pieces.append(encoded[:cut])
        encoded = encoded[cut:]
    if len(pieces) <= 1:
        return [f"{name}*=utf-8''{pieces[0] if pieces else ''}"]
    charset = "utf-8''"
    return [f"{name}*{i}*={charset if i == 0 else ''}{piece}" for i, piece in enumerate(pieces)]


def _rfc2047(value: str) -> str:
    """Encoded words of at most 45 bytes each (75 characters encoded), whole characters only."""
    words: list[bytes] = [b""]
    for ch in value:
        data = ch.encode("utf-8")
        if len(words[-1]) + len(data) > 45:
            words.append(b"")
        words[-1] += data
    return "\r\n ".join(f"=?utf-8?B?{base64.b64encode(w).decode()}?=" for w in words)


def _filename_params(name: str) -> tuple[list[str], list[str]]:
    """(Content-Type ``name`` params, Content-Disposition ``filename`` params)."""
    if _is_plain(name) and len(name) <= _CONTINUATION_CHARS:
        return [f"name={_quoted(name)}"], [f"filename={_quoted(name)}"]
    if _is_plain(name):
        return [f"name={_quoted(name)}"], _rfc2231("filename", name)
    return [f'name="{_rfc2047(name)}"'], _rfc2231("filename", name)


def _media_type(value: str | None) -> str:
    """The attachment's content type when it is a usable ``type/subtype``, else octet-stream."""
    if value and value.isascii() and re.fullmatch(r"[\w.+-]+/[\w.+-]+", value.strip()):
        return value.strip()
    return "application/octet-stream"


def _header(name: str, value: str, params: Sequence[str] = ()) -> bytes:
    """``Name: value;`` with each parameter on its own folded line."""
    text = f"{name}: {value}" + "".join(f";\r\n {p}" for p in params)
    return text.encode("ascii") + CRLF


# -- parts ------------------------------------------------------------------------------------------
def _text_part(message: Message) -> list[Segment]:
    subtype = "html" if message.body_type == "html" else "plain"
    text = message.body.replace("\r\n", "\n").replace("\r", "\n")
    lines = text.split("\n")
    # 7bit only for plain ASCII text with short lines; anything else travels as base64 of UTF-8.
    seven_bit = text.isascii() and not _CONTROL.search(text.replace("\n", "")) and all(len(x) <= 998 for x in lines)
    charset = "us-ascii" if seven_bit else "utf-8"
    head = _header("Content-Type", f"text/{subtype}", [f'charset="{charset}"'])
    if seven_bit:
        body = "\r\n".join(lines).encode("ascii")
        return [head + _header("Content-Transfer-Encoding", "7bit") + CRLF + body]
    encoded = base64.encodebytes("\r\n".join(lines).encode("utf-8")).replace(b"\n", CRLF)
    return [head + _header("Content-Transfer-Encoding", "base64") + CRLF + encoded]


def _file_part(attachment: Attachment) -> list[Segment]:
    assert attachment.content is not None
    type_params, disposition_params = _filename_params(attachment.name)
    head = _header("Content-Type", _media_type(attachment.content_type), type_params)
    head += _header("Content-Disposition", "inline" if attachment.is_inline else "attachment", disposition_params)
    if attachment.content_id:
        head += _header("Content-ID", f"<{_clean(attachment.content_id)}>")
    head += _header("Content-Transfer-Encoding", "base64") + CRLF
    return [head, Base64Lines(attachment.content)]


def _item_part(attachment: Attachment) -> list[Segment]:
    assert attachment.content is not None
    _, disposition_params = _filename_params(attachment.name)
    head = _header("Content-Type", "message/rfc822")
    head += _header("Content-Disposition", "attachment", disposition_params) + CRLF
    return [head, attachment.content]


def _multipart(subtype: str, parts: list[list[Segment]]) -> list[Segment]:
    boundary = f"----=_Part_{secrets.token_hex(12)}"
    out: list[Segment] = [_header("Content-Type", f"multipart/{subtype}", [f'boundary="{boundary}"']) + CRLF]
    for part in parts:
        out.append(f"--{boundary}\r\n".encode())
        out.extend(part)
        out.append(CRLF)
    out.append(f"--{boundary}--\r\n".encode())
    return out


def mime_parts(message: Message) -> list[Attachment]:
    """The attachments that appear in the message's MIME (reference attachments have no MIME form)."""
    return [
        a
        for a in message.attachments
        if a.content is not None and (a.kind == "file" or (a.kind == "item" and a.item is not None))
    ]


class MimeContent(Joined):
    """A mail's MIME (an attached mail's ``/$value``); with ``envelope=False`` only its body entity, the
    part S/MIME signs or encrypts."""

    def __init__(self, message: Message, envelope: bool = True) -> None:
        segments = _message_segments(message)
        super().__init__(segments if envelope else segments[1:])


def message_mime(message: Message) -> Content:
    """A message's own ``/$value``: its MIME; for a signed or encrypted mail the MIME it arrived as (the
    mail's headers and the multipart/signed, or an application/pkcs7-mime entity of the CMS)."""
    sealed = next((a for a in message.attachments if a.sealed is not None and a.content is not None), None)
    if sealed is None or sealed.content is None or sealed.sealed is None:
        return MimeContent(message)
    if sealed.content_type == "multipart/signed":
        return sealed.content  # the whole signed MIME already
    smime_type = "enveloped-data" if _is_enveloped(sealed.content) else "signed-data"
    head = _envelope(sealed.sealed) + _header(
        "Content-Type", "application/pkcs7-mime", [f"smime-type={smime_type}", 'name="smime.p7m"']
    )
    head += _header("Content-Disposition", "attachment", ['filename="smime.p7m"'])
    head += _header("Content-Transfer-Encoding", "base64") + CRLF
    return Joined([head, Base64Lines(sealed.content)])


def _is_enveloped(content: Content) -> bool:
    first = next(iter(content.chunks()), b"")
    return b"\x2a\x86\x48\x86\xf7\x0d\x01\x07\x03" in first[:32]  # id-envelopedData's OID


def envelope_headers(message: Message) -> bytes:
    """From, To, Subject, Date, Message-ID and MIME-Version of the mail."""
    return _envelope(message)


def _message_segments(message: Message) -> list[Segment]:
    parts = mime_parts(message)
    inline = [a for a in parts if a.kind == "file" and a.is_inline]
    others = [a for a in parts if a not in inline]
    body = _text_part(message)
    if inline:
        body = _multipart("related", [body, *(_file_part(a) for a in inline)])
    if others:
        rendered = [_file_part(a) if a.kind == "file" else _item_part(a) for a in others]
        body = _multipart("mixed", [body, *rendered])
    return [_envelope(message), *body]
