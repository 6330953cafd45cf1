"""Zip archives read as a stream: nested folders and zips, hostile names, bombs, encrypted entries."""

from __future__ import annotations

import io
import os
import struct
import zipfile
import zlib

import pytest

from shared.unpack.archive import fold_path
from shared.unpack.base import Problem
from shared.unpack.options import ArchiveLimits, UnpackOptions
from tests.shared.unpack.tree import unpack_attachment

PDF = b"%PDF-1.7 " + os.urandom(300_000)
XML = b"<invoice>" + b"<line>42</line>" * 5000 + b"</invoice>"


class Unseekable(io.RawIOBase):
    """What a zip written to a pipe looks like: sizes and CRC after each entry (data descriptors)."""

    def __init__(self) -> None:
        self.data = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, b: bytes) -> int:  # type: ignore[override]
        self.data += b
        return len(b)


def make_zip(entries: dict[str, bytes], *, streamed: bool = False, method: int = zipfile.ZIP_DEFLATED) -> bytes:
    target = Unseekable() if streamed else io.BytesIO()
    with zipfile.ZipFile(target, "w", compression=method) as archive:
        for name, data in entries.items():
            if streamed:
                info = zipfile.ZipInfo(name)
                info.compress_type = method
                with archive.open(info, "w") as handle:
                    handle.write(data)
            else:
                archive.writestr(name, data)
    return bytes(target.data) if isinstance(target, Unseekable) else bytes(target.getbuffer())


def zip_options(**limits: int) -> UnpackOptions:
    return UnpackOptions(archive=ArchiveLimits(**limits))


@pytest.mark.parametrize(
    ("streamed", "method"),
    [(False, zipfile.ZIP_DEFLATED), (False, zipfile.ZIP_STORED), (False, zipfile.ZIP_BZIP2),
     (True, zipfile.ZIP_DEFLATED), (True, zipfile.ZIP_BZIP2)],
)  # fmt: skip
async def test_files_in_nested_folders_come_out_with_their_path_folded(streamed: bool, method: int):
    raw = make_zip(
        {"scans/2026/März/invoice.pdf": PDF, "lines.xml": XML, "empty/": b""}, streamed=streamed, method=method
    )
    top = await unpack_attachment(raw, "scans.zip", "application/zip", chunk=3000)
    assert top.kept() == {"scans_2026_März_invoice.pdf": PDF, "lines.xml": XML}
    found = top.by_name()["scans_2026_März_invoice.pdf"].found
    assert found and found.path == "scans/2026/März/invoice.pdf" and found.content_type == "application/pdf"
    assert top.notes == []


async def test_nested_zips_are_opened_to_the_depth_limit():
    inner = make_zip({"deep.pdf": PDF})
    middle = make_zip({"inner.zip": inner, "m.xml": XML})
    raw = make_zip({"middle.zip": middle})
    top = await unpack_attachment(raw, "outer.zip", "application/zip")
    assert top.kept() == {"middle.zip": middle, "inner.zip": inner, "m.xml": XML, "deep.pdf": PDF}
    assert top.by_name()["deep.pdf"].parent is top.by_name()["inner.zip"]
    top = await unpack_attachment(raw, "outer.zip", "application/zip", options=UnpackOptions(max_depth=2))
    assert set(top.kept()) == {"middle.zip", "inner.zip", "m.xml"}  # inner.zip is at depth 3: kept, not opened


def test_hostile_paths_fold_into_names_inside_the_folder():
    assert fold_path("../../etc/passwd") == "etc_passwd"
    assert fold_path("/abs/x.pdf") == "abs_x.pdf"
    assert fold_path("C:\\Windows\\..\\evil.exe") == "C:_Windows_evil.exe"
    assert fold_path("./../") == "entry"


async def test_dot_dot_and_absolute_names_stay_in_the_message_folder():
    raw = make_zip({"../../outside.pdf": PDF, "/etc/cron.d/job": b"* * * * * root", "a/../../b.xml": XML})
    top = await unpack_attachment(raw, "x.zip", "application/zip")
    assert top.kept() == {"outside.pdf": PDF, "etc_cron.d_job": b"* * * * * root", "a_b.xml": XML}
    assert {n.found.path for n in top.walk() if n.found} == {"../../outside.pdf", "/etc/cron.d/job", "a/../../b.xml"}


def encrypt_first_entry(raw: bytes) -> bytes:
    """Marks the first entry encrypted (flag bit 0), as traditional PKWARE encryption does."""
    data = bytearray(raw)
    (flags,) = struct.unpack("<H", data[6:8])
    data[6:8] = struct.pack("<H", flags | 1)
    return bytes(data)


async def test_an_encrypted_entry_is_skipped_with_its_reason_and_the_rest_extracted():
    raw = encrypt_first_entry(make_zip({"secret.pdf": PDF, "open.xml": XML}))
    top = await unpack_attachment(raw, "x.zip", "application/zip")
    assert top.kept() == {"open.xml": XML}
    secret = top.by_name()["secret.pdf"]
    assert secret.found and secret.found.skipped == "encrypted zip entry (no password)" and not secret.data


async def test_an_unsupported_method_is_skipped_and_an_unknown_end_stops_the_reading():
    raw = bytearray(make_zip({"a.pdf": PDF, "b.xml": XML}, method=zipfile.ZIP_STORED))
    raw[8:10] = struct.pack("<H", 14)  # LZMA
    top = await unpack_attachment(bytes(raw), "x.zip", "application/zip")
    assert top.kept() == {"b.xml": XML}
    assert top.by_name()["a.pdf"].found.skipped == "zip compression method 14 is not supported"  # type: ignore[union-attr]
    streamed = encrypt_first_entry(make_zip({"secret.pdf": PDF, "open.xml": XML}, streamed=True))
    top = await unpack_attachment(streamed, "x.zip", "application/zip")
    (note,) = top.notes
    assert top.kept() == {} and isinstance(note, Problem) and "rest is not extracted" in note.reason


def bomb(size: int) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    body = b"".join(compressor.compress(bytes(1 << 20)) for _ in range(size >> 20)) + compressor.flush()
    name = b"bomb.pdf"
    header = struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0, 0, len(body), size, len(name), 0)
    return header + name + body


@pytest.mark.parametrize("streamed", [False, True])
async def test_a_zip_bomb_is_refused_and_nothing_of_it_is_kept(streamed: bool):
    raw = make_zip({"first.pdf": PDF, "bomb.bin": bytes(40 << 20)}, streamed=streamed)
    top = await unpack_attachment(raw, "bomb.zip", "application/zip")
    assert top.discarded and "ARCHIVE_MAX_RATIO" in top.discarded
    assert top.kept() == {}  # first.pdf, written before the bomb showed, is discarded too
    top = await unpack_attachment(raw, "bomb.zip", "application/zip", options=zip_options(max_ratio=10_000))
    assert top.discarded is None and set(top.kept()) == {"first.pdf", "bomb.bin"}


async def test_a_declared_size_above_the_limit_is_refused_before_reading():
    top = await unpack_attachment(bomb(8 << 20), "b.zip", "application/zip", options=zip_options(max_bytes=4 << 20))
    assert top.discarded and "ARCHIVE_MAX_BYTES" in top.discarded


async def test_the_total_of_all_archives_of_a_mail_is_bounded():
    raw = make_zip({"a.pdf": PDF, "b.pdf": PDF, "c.pdf": PDF})
    top = await unpack_attachment(raw, "x.zip", "application/zip", options=zip_options(max_bytes=700_000))
    assert top.discarded and "ARCHIVE_MAX_BYTES" in top.discarded and top.kept() == {}


async def test_the_number_of_files_is_bounded():
    raw = make_zip({f"{i}.xml": XML for i in range(5)})
    top = await unpack_attachment(raw, "x.zip", "application/zip", options=zip_options(max_files=3))
    assert sorted(top.kept()) == ["0.xml", "1.xml", "2.xml"]
    (note,) = top.notes
    assert isinstance(note, Problem) and "ARCHIVE_MAX_FILES" in note.reason


@pytest.mark.parametrize("damage", ["truncate", "crc", "garbage"])
async def test_a_damaged_zip_keeps_what_was_whole_and_says_why(damage: str):
    raw = make_zip({"a.xml": XML, "b.pdf": PDF}, method=zipfile.ZIP_STORED if damage == "crc" else zipfile.ZIP_DEFLATED)
    if damage == "truncate":
        raw = raw[: len(raw) // 2]
    elif damage == "crc":
        at = raw.index(b"%PDF")
        raw = raw[:at] + b"%PDX" + raw[at + 4 :]
    else:
        raw = os.urandom(5000)
    top = await unpack_attachment(raw, "x.zip", "application/zip")
    assert [type(n) for n in top.notes] == [Problem]
    if damage != "garbage":
        assert top.kept() == {"a.xml": XML}
