"""winmail.dat: the files inside, their names in Unicode or the sender's code page, and damaged ones."""

from __future__ import annotations

import os

import pytest

from local.azuresim.tnef import TnefFile, encode_tnef
from shared.unpack import tnef as tnef_module
from shared.unpack.base import Damaged, Problem
from tests.shared.unpack.tree import unpack_attachment

PDF = b"%PDF-1.4 " + os.urandom(100_000)
XLSX = b"PK\x03\x04 sheet" + os.urandom(3000)


@pytest.mark.parametrize(("name", "content_type"), [("winmail.dat", "application/ms-tnef"), ("WIN.DAT", None)])
async def test_the_files_inside_come_out_with_unicode_names(name: str, content_type: str | None):
    raw = encode_tnef([
        TnefFile("Rechnung März 2026.pdf", "application/pdf", PDF),
        TnefFile("Αναφορά.xlsx", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", XLSX),
    ])  # fmt: skip
    top = await unpack_attachment(raw, name, content_type or "application/octet-stream", chunk=999)
    assert top.kept() == {"Rechnung März 2026.pdf": PDF, "Αναφορά.xlsx": XLSX}
    assert top.by_name()["Rechnung März 2026.pdf"].found.content_type == "application/pdf"  # type: ignore[union-attr]
    assert top.notes == []


@pytest.mark.parametrize(("codepage", "name"), [(1252, "März.pdf"), (1251, "Счет.pdf"), (932, "請求書.pdf")])
async def test_a_title_without_a_long_name_is_read_in_the_tnef_code_page(codepage: int, name: str):
    raw = encode_tnef([TnefFile(name, "application/pdf", PDF)], codepage=codepage, long_names=False)
    top = await unpack_attachment(raw, "winmail.dat", "application/ms-tnef")
    assert top.kept() == {name: PDF}


async def test_a_bad_checksum_extracts_what_can_be_read_and_marks_it_damaged():
    """Outlook-compatible readers open a winmail.dat whose checksums fail, with a warning: so does this one,
    and says so on the container and on every file found in it."""
    raw = bytearray(encode_tnef([TnefFile("a.pdf", "application/pdf", PDF), TnefFile("b.xlsx", "x/y", XLSX)]))
    raw[raw.index(b"%PDF") + 20] ^= 0xFF
    top = await unpack_attachment(bytes(raw), "winmail.dat", "application/ms-tnef")
    damaged = bytearray(PDF)
    damaged[20] ^= 0xFF
    assert top.kept() == {"a.pdf": bytes(damaged), "b.xlsx": XLSX}
    (note,) = top.notes
    assert isinstance(note, Damaged) and "1 TNEF object(s) fail their checksum" in note.reason
    assert {n.found.damaged for n in top.walk() if n.found} == {note.reason}


@pytest.mark.parametrize("raw", [b"", b"not tnef at all", encode_tnef([TnefFile("a.pdf", "x/y", PDF)])[:5000]])
async def test_what_is_not_a_whole_tnef_is_a_problem(raw: bytes):
    top = await unpack_attachment(raw, "winmail.dat", "application/ms-tnef")
    assert top.kept() == {}
    assert [type(n) for n in top.notes] == [Problem]


async def test_a_winmail_dat_above_the_memory_bound_is_stored_not_opened(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(tnef_module, "MAX_TNEF_BYTES", 50_000)
    top = await unpack_attachment(encode_tnef([TnefFile("a.pdf", "application/pdf", PDF)]), "winmail.dat", "")
    assert top.kept() == {}
    (note,) = top.notes
    assert isinstance(note, Problem) and "not opened" in note.reason
