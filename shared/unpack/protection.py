"""Whether a file can be read at all: password-protected PDFs, encrypted Office files (OOXML in an OLE
envelope, legacy .doc/.xls/.ppt) and rights-protected (Purview / IRM) mail, told apart by their bytes.

The format is known from the first bytes: `%PDF-` (ISO 32000 allows it anywhere in the first 1,024 bytes),
the OLE compound file signature `D0 CF 11 E0 A1 B1 1A E1` ([MS-CFB] 2.2), or the `message.rpmsg` prefix
([MS-OXORMMS] 2.2.4.5). Only PDFs and OLE files are kept for the check, in a spooled temporary file (in
memory up to `SPOOL_BYTES`, on disk beyond), because their tell-tale sits where the format puts it: a
PDF's `/Encrypt` in its trailer at the end, an OLE file's `EncryptionInfo` stream (or a legacy file's
encryption flag) wherever its directory says. `pypdf` and `msoffcrypto-tool` then read only the
structures they need (the trailer and cross-reference; the OLE directory and the first records), not the
whole document. Every other file passes untouched, its bytes not kept.

Encrypted zip entries and S/MIME envelopes no key opens are known to their readers (`archive.py`,
`cms.py`), not here.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
from typing import IO

PDF_MAGIC = b"%PDF-"
OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
RPMSG_MAGIC = b"\x76\xe8\x04\x60\xc4\x11\xe3\x86"
RPMSG_TYPES = frozenset({"application/x-microsoft-rpmsg-message"})
HEAD_BYTES = 1024  # where a PDF's header may be (ISO 32000-1 7.5.2, as readers accept it)
SPOOL_BYTES = 1024 * 1024

RIGHTS_PROTECTED = "rights-protected mail (Purview / IRM): its content is in message.rpmsg, for its recipients only"
PDF_PASSWORD = "password-protected PDF: an encryption dictionary, and no empty user password opens it"  # noqa: S105 (a reason, no password)
PDF_PERMISSIONS = "encrypted PDF (an encryption dictionary); it opens without a password, its permissions restrict it"
OFFICE_ENCRYPTED = "encrypted Office document (password)"
ZIP_ENTRY = "encrypted zip entry (no password)"
SMIME_PREFIX = "S/MIME encrypted, not opened"


def smime_not_opened(reason: str | None) -> str:
    """An envelope no key in SMIME_CERTIFICATES opened (or one this app cannot open: AES-GCM)."""
    return f"{SMIME_PREFIX}: {reason or 'no key'}"


def rights_protected(name: str, content_type: str | None) -> bool:
    """Outlook's rights-protected mail, as Graph lists it and as its MIME carries it: an attachment
    `message.rpmsg` of type `application/x-microsoft-rpmsg-message` ([MS-OXORMMS] 2.2.3.1)."""
    ctype = (content_type or "").split(";", 1)[0].strip().lower()
    return ctype in RPMSG_TYPES or name.lower().endswith(".rpmsg")


class ProtectionCheck:
    """Fed a file's bytes as they stream; `result()` is the reason it cannot be read, or None."""

    def __init__(self, name: str, content_type: str | None) -> None:
        self._head = bytearray()
        self._kind: str | None = "rpmsg" if rights_protected(name, content_type) else None
        self._decided = self._kind is not None
        self._spool: IO[bytes] | None = None

    async def write(self, data: bytes) -> None:
        if not self._decided:
            self._head += data
            if len(self._head) < HEAD_BYTES:
                return
            self._decide()
            data = bytes(self._head)
            self._head.clear()
        if self._spool is not None:
            await asyncio.to_thread(self._spool.write, data)

    def _decide(self) -> None:
        self._decided = True
        head = bytes(self._head[:HEAD_BYTES])
        if head.startswith(RPMSG_MAGIC):
            self._kind = "rpmsg"
        elif head.startswith(OLE_MAGIC):
            self._kind = "ole"
        elif PDF_MAGIC in head:
            self._kind = "pdf"
        if self._kind in ("ole", "pdf"):
            self._spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)  # noqa: SIM115 (closed in result)

    async def result(self) -> str | None:
        if not self._decided:
            self._decide()
            if self._spool is not None:
                self._spool.write(bytes(self._head))
            self._head.clear()
        if self._kind == "rpmsg":
            return RIGHTS_PROTECTED
        if self._spool is None:
            return None
        spool, self._spool = self._spool, None
        try:
            check = _pdf if self._kind == "pdf" else _office
            return await asyncio.to_thread(check, spool)
        finally:
            spool.close()

    def close(self) -> None:
        """Drop what was kept (a file that was not finished)."""
        if self._spool is not None:
            self._spool.close()
            self._spool = None


def _pdf(file: IO[bytes]) -> str | None:
    """pypdf reads the trailer (or cross-reference stream) and says whether it names an /Encrypt dictionary;
    an unreadable PDF is not protected but damaged, which is the OCR's to find."""
    from pypdf import PasswordType, PdfReader
    from pypdf.errors import PyPdfError

    # pypdf warns of every flaw it reads past (a missing %EOF): the check's answer is all that matters here.
    logging.getLogger("pypdf").setLevel(logging.ERROR)
    file.seek(0)
    try:
        reader = PdfReader(file)
        if not reader.is_encrypted:
            return None
        opened = reader.decrypt("")
    except (PyPdfError, ValueError, KeyError, TypeError, OSError, NotImplementedError):
        return None
    return PDF_PERMISSIONS if opened != PasswordType.NOT_DECRYPTED else PDF_PASSWORD


def _office(file: IO[bytes]) -> str | None:
    """msoffcrypto-tool knows each format's flag: OOXML's `EncryptionInfo` stream, the .doc FIB's fEncrypted,
    the .xls FILEPASS record, the .ppt CryptSession10Container."""
    import msoffcrypto
    from msoffcrypto.exceptions import FileFormatError

    file.seek(0)
    try:
        encrypted = bool(msoffcrypto.OfficeFile(file).is_encrypted())
    except (FileFormatError, OSError, ValueError, KeyError, IndexError, AssertionError, TypeError):
        return None  # an OLE file that is no Office document (an .msg, a thumbnail cache), or a damaged one
    return OFFICE_ENCRYPTED if encrypted else None
