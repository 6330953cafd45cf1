"""The IMAP session against a real Dovecot: TLS, login, finding new mail, streaming, after-ingest actions."""

from __future__ import annotations

import hashlib
import imaplib
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from local.dovecot import Dovecot
from shared.errors import MailAuthFailed, MailMessageGone, MailServerBusy, MailServerError, MailTlsRefused
from shared.pipeline.rules import AfterIngest
from shared.sources.common import CHUNK_BYTES, Login
from shared.sources.imap.session import ImapSession, imap_keyword
from tests.shared.sources.conftest import MailUser, client_context, make_user, message


async def collect(session: ImapSession, uid: int, **kwargs) -> list[bytes]:
    return [piece async for piece in session.stream(uid, **kwargs)]


def flags_of(user: MailUser, bundle: Path, folder: str = "INBOX") -> dict[int, set[bytes]]:
    """FLAGS as another client sees them (read-only)."""
    client = imaplib.IMAP4_SSL("127.0.0.1", user.server.ports["imaps"], ssl_context=client_context(bundle))
    try:
        client.login(user.name, user.password)
        client.select(f'"{folder}"', readonly=True)
        _, data = client.uid("FETCH", "1:*", "(FLAGS)")
    finally:
        client.logout()
    found: dict[int, set[bytes]] = {}
    for line in data:
        if not isinstance(line, bytes):
            continue
        uid = int(line.split(b"UID ")[1].split()[0])
        # \Recent is a session flag, not the message's: the first session to see a message takes it.
        found[uid] = set(line.split(b"FLAGS (")[1].split(b")")[0].split()) - {b"\\Recent"}
    return found


async def test_imaps_lists_and_streams_new_mail_without_touching_flags(mail_user: MailUser, mail_ca_bundle: Path):
    first, second = message("one"), message("two")
    mail_user.deliver(first)
    mail_user.deliver(second)
    async with await ImapSession.open(mail_user.account("imaps"), mail_user.login) as session:
        assert session.secure
        status = await session.examine()
        assert status.exists == 2 and status.uidnext == 3
        assert await session.new_uids(0) == [1, 2]
        infos = await session.describe([1, 2])
        assert [i.size for i in infos] == [len(first), len(second)]
        assert infos[0].fingerprint != infos[1].fingerprint
        assert infos[0].internaldate is not None and infos[0].internaldate.tzinfo is not None
        assert b"".join(await collect(session, 1)) == first
        pieces = await collect(session, 2, chunk=100)
        assert b"".join(pieces) == second
        assert all(len(p) <= 100 for p in pieces) and len(pieces) == -(-len(second) // 100)
    assert flags_of(mail_user, mail_ca_bundle) == {1: set(), 2: set()}  # no \Seen from the import


async def test_search_past_the_last_uid_returns_nothing(mail_user: MailUser):
    mail_user.deliver(message("one"))
    async with await ImapSession.open(mail_user.account("imaps"), mail_user.login) as session:
        await session.examine()
        # `UID SEARCH UID 2:*` answers 1 (the last message, RFC 3501 6.4.8): dropped.
        assert await session.new_uids(1) == []
        mail_user.deliver(message("two"))
        await session.examine()
        assert await session.new_uids(1) == [2]


async def test_imap_with_starttls(mail_user: MailUser):
    mail_user.deliver(message())
    account = mail_user.account("imap")
    assert not account.implicit_tls
    async with await ImapSession.open(account, mail_user.login) as session:
        assert session.secure
        assert (await session.examine()).exists == 1


async def test_a_server_without_starttls_is_refused_before_login(plain_dovecot: Dovecot):
    user = make_user(plain_dovecot)
    with pytest.raises(MailTlsRefused, match="offers no STARTTLS"):
        await ImapSession.open(user.account("imap"), user.login)
    assert f"user=<{user.name}>" not in plain_dovecot.log_file.read_text()  # no login was tried


async def test_an_untrusted_certificate_is_refused(mail_user: MailUser, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("SSL_CERT_FILE")
    with pytest.raises(MailTlsRefused, match="TLS failed"):
        await ImapSession.open(mail_user.account("imaps"), mail_user.login)
    with pytest.raises(MailTlsRefused):
        await ImapSession.open(mail_user.account("imap"), mail_user.login)


async def test_a_wrong_password_is_reported_as_refused_credentials(mail_user: MailUser):
    with pytest.raises(MailAuthFailed) as caught:
        await ImapSession.open(mail_user.account("imaps"), Login(mail_user.name, password="wrong-Pa55word"))
    assert "wrong-Pa55word" not in str(caught.value)
    assert str(mail_user.account("imaps")) in str(caught.value)


async def test_a_folder_path_and_a_message_gone(mail_user: MailUser):
    mail_user.deliver(message("in a subfolder"), folder="Scans/2026")
    account = mail_user.account("imaps", "Scans/2026")
    async with await ImapSession.open(account, mail_user.login) as session:
        assert (await session.examine()).exists == 1
        with pytest.raises(MailMessageGone):
            await collect(session, 99)


async def test_a_recreated_folder_keeps_its_fingerprints(mail_user: MailUser, dovecot: Dovecot):
    mail = message("kept")
    mail_user.deliver(mail, folder="Scans")
    account = mail_user.account("imaps", "Scans")
    async with await ImapSession.open(account, mail_user.login) as session:
        before = await session.examine()
        (info,) = await session.describe([1])
    dovecot.remove_folder(mail_user.name, "Scans")
    mail_user.deliver(message("new one"), folder="Scans")
    mail_user.deliver(mail, folder="Scans")
    async with await ImapSession.open(account, mail_user.login) as session:
        after = await session.examine()
        infos = await session.describe(await session.new_uids(0))
    assert after.uidvalidity != before.uidvalidity
    assert [i.fingerprint == info.fingerprint for i in infos] == [False, True]


def big_message(size: int) -> Iterator[bytes]:
    yield b"From: scanner@example.org\r\nSubject: big scan\r\nMessage-ID: <big@example.org>\r\n"
    yield b"Content-Type: application/octet-stream\r\n\r\n"
    line = b"0123456789abcdef" * 4 + b"\r\n"
    for _ in range(size // len(line)):
        yield line


async def test_a_60_mb_message_streams_in_bounded_memory(mail_user: MailUser):
    expected = hashlib.sha256()
    size = 0
    for piece in big_message(60 * 1024 * 1024):
        expected.update(piece)
        size += len(piece)
    mail_user.server.deliver_file(mail_user.name, big_message(60 * 1024 * 1024))
    async with await ImapSession.open(mail_user.account("imaps"), mail_user.login) as session:
        await session.examine()
        (info,) = await session.describe([1])
        assert info.size == size
        digest, largest, count = hashlib.sha256(), 0, 0
        tracemalloc.start()
        try:
            async for piece in session.stream(1):
                digest.update(piece)
                largest = max(largest, len(piece))
                count += 1
                del piece
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert digest.hexdigest() == expected.hexdigest()
    assert largest == CHUNK_BYTES and count == -(-size // CHUNK_BYTES)
    # What the process held at most while streaming 60 MB: a few chunks (the response being parsed), not the mail.
    assert peak < 8 * CHUNK_BYTES, f"peak {peak} bytes"


async def test_after_ingest_marks_read_sets_a_keyword_and_moves(mail_user: MailUser, mail_ca_bundle: Path):
    for n in range(3):
        mail_user.deliver(message(f"mail {n}"))
    async with await ImapSession.open(mail_user.account("imaps"), mail_user.login) as session:
        status = await session.examine()
        assert await session.after_ingest(status.uidvalidity, 1, AfterIngest(mark_read=True)) == ["mark-read"]
        assert await session.after_ingest(status.uidvalidity, 1, AfterIngest(mark_read=True)) == []  # already read
        done = await session.after_ingest(status.uidvalidity, 2, AfterIngest(category="Captured by AP"))
        assert done == ["category:Captured by AP"]
        done = await session.after_ingest(status.uidvalidity, 3, AfterIngest(move_to="Archive/Processed"))
        assert done == ["move:Archive/Processed"]
        with pytest.raises(MailMessageGone, match="UIDVALIDITY"):
            await session.after_ingest(status.uidvalidity + 1, 1, AfterIngest(mark_read=True))
    flags = flags_of(mail_user, mail_ca_bundle)
    assert flags == {1: {b"\\Seen"}, 2: {imap_keyword("Captured by AP").encode()}}
    assert flags_of(mail_user, mail_ca_bundle, "Archive/Processed") == {1: set()}


def test_keywords_are_atoms():
    assert imap_keyword("Captured by AP") == "Captured_by_AP"
    assert imap_keyword('a(b)"c"\\d]') == "a_b__c__d_"
    assert imap_keyword("\\Seen") == "_Seen"


@pytest.fixture(scope="module")
def dovecot_uidplus_only(mail_ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dovecot]:
    """A server with UIDPLUS but no MOVE (as many older servers): a move is COPY + UID EXPUNGE."""
    caps = "IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ UIDPLUS"
    with Dovecot(tmp_path_factory.mktemp("dovecot-uidplus"), mail_ca, extra_config=f"imap_capability = {caps}\n") as s:
        yield s


@pytest.fixture(scope="module")
def dovecot_neither(mail_ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dovecot]:
    caps = "IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+"
    with Dovecot(tmp_path_factory.mktemp("dovecot-bare"), mail_ca, extra_config=f"imap_capability = {caps}\n") as s:
        yield s


async def test_move_without_move_is_copy_and_uid_expunge(dovecot_uidplus_only: Dovecot, mail_ca_bundle: Path):
    user = make_user(dovecot_uidplus_only)
    for n in range(2):
        user.deliver(message(f"mail {n}"))
    other = imaplib.IMAP4_SSL("127.0.0.1", user.server.ports["imaps"], ssl_context=client_context(mail_ca_bundle))
    other.login(user.name, user.password)
    other.select("INBOX")
    other.uid("STORE", "2", "+FLAGS.SILENT", "(\\Deleted)")  # another client's deletion, not ours to expunge
    other.logout()
    async with await ImapSession.open(user.account("imaps"), user.login) as session:
        status = await session.examine()
        assert await session.after_ingest(status.uidvalidity, 1, AfterIngest(move_to="Done")) == ["move:Done"]
    assert flags_of(user, mail_ca_bundle) == {2: {b"\\Deleted"}}  # only UID 1 was expunged
    assert flags_of(user, mail_ca_bundle, "Done") == {1: set()}


async def test_move_is_refused_without_move_or_uidplus(dovecot_neither: Dovecot, mail_ca_bundle: Path):
    user = make_user(dovecot_neither)
    user.deliver(message())
    async with await ImapSession.open(user.account("imaps"), user.login) as session:
        status = await session.examine()
        with pytest.raises(MailServerError, match="neither MOVE nor UIDPLUS"):
            await session.after_ingest(status.uidvalidity, 1, AfterIngest(move_to="Done"))
    assert flags_of(user, mail_ca_bundle) == {1: set()}


@pytest.fixture(scope="module")
def dovecot_one_connection(mail_ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dovecot]:
    extra = "protocol imap {\n  mail_max_userip_connections = 1\n}\n"
    with Dovecot(tmp_path_factory.mktemp("dovecot-limit"), mail_ca, extra_config=extra) as s:
        yield s


async def test_too_many_connections_is_reported_as_busy(dovecot_one_connection: Dovecot):
    user = make_user(dovecot_one_connection)
    async with await ImapSession.open(user.account("imaps"), user.login):
        with pytest.raises(MailServerBusy, match=r"(?i)maximum number of connections"):
            await ImapSession.open(user.account("imaps"), user.login)


async def test_non_ascii_folders_and_8bit_headers(mail_user: MailUser, mail_ca_bundle: Path):
    from imapclient import IMAPClient

    from shared.sources.common import fingerprint

    header = (
        b"From: =?utf-8?q?M=C3=BCller?= <m@lieferant.example>\r\nSubject: Rechnung f\xfcr M\xe4rz\r\n"
        b"Message-ID: <8bit@lieferant.example>\r\nContent-Type: text/plain; charset=latin-1\r\n"
        b"Content-Disposition: attachment; filename*=iso-8859-1''Rechnung%20M%E4rz.txt\r\n\r\n"
    )
    raw = header + b"K\xe4se\r\n"
    # Created and filled over IMAP: the server names the folder in modified UTF-7 (RFC 3501 5.1.3).
    with IMAPClient("127.0.0.1", mail_user.server.ports["imaps"], ssl_context=client_context(mail_ca_bundle)) as c:
        c.login(mail_user.name, mail_user.password)
        c.create_folder("Café/Übersicht")
        c.append("Café/Übersicht", raw)
    account = mail_user.account("imaps", "Café/Übersicht")
    assert account.folder == "Café/Übersicht"
    async with await ImapSession.open(account, mail_user.login) as session:
        assert (await session.examine()).exists == 1
        (info,) = await session.describe([1])
        assert info.fingerprint == fingerprint(header, len(raw))
        assert info.message_id == "<8bit@lieferant.example>"
        assert b"".join(await collect(session, 1)) == raw
