"""The POP3 session against a real Dovecot: POP3S, STLS required, UIDL, spooled RETR, DELE only when asked."""

from __future__ import annotations

import tracemalloc

import pytest

from local.dovecot import Dovecot
from shared.errors import MailAuthFailed, MailMessageGone, MailTlsRefused
from shared.sources.common import CHUNK_BYTES, Login
from shared.sources.pop3.session import Pop3Session
from tests.shared.sources.conftest import MailUser, make_user, message


async def collect(session: Pop3Session, uidl: str, **kwargs) -> bytes:
    return b"".join([piece async for piece in session.stream(uidl, **kwargs)])


async def test_pop3s_lists_by_uidl_and_streams(mail_user: MailUser):
    first = message("one")
    # Lines that begin with a dot are dot-stuffed on the wire; a long line is longer than poplib allows.
    second = message("two", body=b".starts with a dot\n..two dots\n" + b"x" * 5000 + b"\n.\nend")
    mail_user.deliver(first)
    mail_user.deliver(second)
    async with await Pop3Session.open(mail_user.account("pop3s"), mail_user.login) as session:
        assert session.secure
        entries = await session.listing()
        assert [e.number for e in entries] == [1, 2]
        assert [e.size for e in entries] == [len(first), len(second)]
        assert len({e.uidl for e in entries}) == 2
        infos = await session.describe(entries)
        assert infos[0].header.startswith(b"From: ") and b"Subject: one" in infos[0].header
        assert infos[0].fingerprint != infos[1].fingerprint
        assert await collect(session, entries[0].uidl) == first
        assert await collect(session, entries[1].uidl, chunk=1000) == second
    async with await Pop3Session.open(mail_user.account("pop3s"), mail_user.login) as session:
        assert [e.uidl for e in await session.listing()] == [e.uidl for e in entries]  # UIDLs last


async def test_pop3_with_stls(mail_user: MailUser):
    mail_user.deliver(message())
    async with await Pop3Session.open(mail_user.account("pop3"), mail_user.login) as session:
        assert session.secure
        assert len(await session.listing()) == 1


async def test_a_server_without_stls_is_refused(plain_dovecot: Dovecot):
    user = make_user(plain_dovecot)
    with pytest.raises(MailTlsRefused, match="offers no STLS"):
        await Pop3Session.open(user.account("pop3"), user.login)


async def test_a_wrong_password_is_reported(mail_user: MailUser):
    with pytest.raises(MailAuthFailed) as caught:
        await Pop3Session.open(mail_user.account("pop3s"), Login(mail_user.name, password="not-It-42"))
    assert "not-It-42" not in str(caught.value)


async def test_mail_stays_unless_deleted(mail_user: MailUser):
    for n in range(3):
        mail_user.deliver(message(f"mail {n}"))
    async with await Pop3Session.open(mail_user.account("pop3s"), mail_user.login) as session:
        entries = await session.listing()
        for entry in entries:
            await collect(session, entry.uidl)
    async with await Pop3Session.open(mail_user.account("pop3s"), mail_user.login) as session:
        assert [e.uidl for e in await session.listing()] == [e.uidl for e in entries]
        await session.delete(entries[1].uidl)
        with pytest.raises(MailMessageGone):
            await session.delete("no-such-uidl")
    async with await Pop3Session.open(mail_user.account("pop3s"), mail_user.login) as session:
        assert [e.uidl for e in await session.listing()] == [entries[0].uidl, entries[2].uidl]


async def test_a_large_message_is_spooled_not_held(mail_user: MailUser):
    line = b"0123456789abcdef" * 4 + b"\r\n"
    body = (b"From: scanner@example.org\r\nSubject: scan\r\n\r\n", *([line] * (20 * 1024 * 1024 // len(line))))
    mail_user.server.deliver_file(mail_user.name, iter(body))
    size = sum(len(p) for p in body)
    async with await Pop3Session.open(mail_user.account("pop3s"), mail_user.login) as session:
        (entry,) = await session.listing()
        total, largest = 0, 0
        tracemalloc.start()
        try:
            async for piece in session.stream(entry.uidl):
                total += len(piece)
                largest = max(largest, len(piece))
                del piece
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert total == size and largest == CHUNK_BYTES
    assert peak < 4 * CHUNK_BYTES, f"peak {peak} bytes"
