"""One sign-in per account, not per message: the fetch worker's connections (`sources/pool.py`) against a real
Dovecot, counted from outside the app, by a TCP relay in front of the server (connections open at once, and
in all: each one signs in once) and by the server's own log of sign-ins."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from shared.settings import parse_settings
from shared.sources.accounts import ingest_fetched
from shared.sources.fetch import FetchRequest
from tests.shared.sources.conftest import MailUser, message
from tests.shared.sources.imap.test_session import flags_of
from tests.shared.sources.test_accounts import Rt, queued


class Relay:
    """A TCP relay to one Dovecot port (TLS passes through untouched): how many connections are open now, at
    most, and in all."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.port = 0
        self.open = self.peak = self.total = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> Relay:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.open += 1
        self.total += 1
        self.peak = max(self.peak, self.open)
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.target)
        self._writers |= {writer, upstream_writer}
        try:
            await asyncio.gather(_pipe(reader, upstream_writer), _pipe(upstream_reader, writer))
        finally:
            self.open -= 1
            for end in (writer, upstream_writer):
                self._writers.discard(end)
                end.close()

    def cut(self) -> None:
        """Drop every connection, as a server's autologout or a NAT's idle timeout does."""
        for writer in list(self._writers):
            writer.transport.abort()

    async def reset(self, held: int = 0) -> None:
        """Count afresh once only the `held` connections (the app's pooled ones) are open: the poll's own
        connection has closed by then."""
        for _ in range(200):
            if self.open <= held:
                break
            await asyncio.sleep(0.05)
        self.peak, self.total = self.open, 0

    async def closed(self) -> int:
        """The connections still open once the app has closed its own (a closed one takes a moment to reach the
        relay); waits up to 10 s for none."""
        for _ in range(200):
            if not self.open:
                break
            await asyncio.sleep(0.05)
        return self.open

    async def stop(self) -> None:
        assert self._server is not None
        self.cut()
        self._server.close()
        await self._server.wait_closed()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    with contextlib.suppress(OSError):
        writer.write_eof()


@pytest.fixture
async def relays() -> AsyncIterator[list[Relay]]:
    made: list[Relay] = []
    yield made
    for relay in made:
        await relay.stop()


async def relayed(
    relays: list[Relay],
    env: dict[str, str],
    service: Any,
    user: MailUser,
    scheme: str,
    **settings: str,
) -> tuple[Any, Relay]:
    """A runtime whose one account reaches Dovecot through a relay."""
    relay = await Relay(user.server.ports[scheme]).start()
    relays.append(relay)
    url = f"{scheme}://{quote(user.name, safe='')}@127.0.0.1:{relay.port}?secret=pw"
    return Rt(
        parse_settings({**env, "MAILBOXES": f"invoices@contoso.com, {url}", **settings}), service, user.password
    ), relay


def server_logins(user: MailUser, protocol: str) -> int:
    """Sign-ins the server logged for the user."""
    text = user.server.log_file.read_text(errors="replace")
    return text.count(f"{protocol}-login: Info: Login: user=<{user.name}>")


async def logged_logins(user: MailUser, protocol: str, expected: int) -> int:
    """The server's count, once its log process has written `expected` lines (or after 10 s, whatever it says)."""
    for _ in range(200):
        if server_logins(user, protocol) >= expected:
            break
        await asyncio.sleep(0.05)
    return server_logins(user, protocol)


async def drain(rt: Any, requests: list[FetchRequest], workers: int) -> list[str]:
    """The requests ingested by `workers` concurrent workers, as the Functions host runs queue messages."""
    queue: asyncio.Queue[FetchRequest] = asyncio.Queue()
    for request in requests:
        queue.put_nowait(request)
    statuses: list[str] = []

    async def worker() -> None:
        while not queue.empty():
            request = queue.get_nowait()
            statuses.append((await ingest_fetched(request, rt)).status)

    await asyncio.gather(*(worker() for _ in range(workers)))
    return statuses


@pytest.mark.parametrize("scheme", ["imaps", "pop3s"])
async def test_a_backlog_fetched_by_many_workers_never_has_more_than_the_bound_signed_in(
    env: dict[str, str], service: Any, mail_user: MailUser, relays: list[Relay], scheme: str
):
    bound, messages, workers = 3, 60, 30
    rt, relay = await relayed(relays, env, service, mail_user, scheme, MAIL_CONNECTIONS_PER_ACCOUNT=str(bound))
    (account,) = rt.settings.accounts
    for n in range(messages):
        mail_user.deliver(message(f"backlog {n}"))
    requests = await queued(rt, account)
    assert len(requests) == messages
    protocol = account.protocol
    before = server_logins(mail_user, protocol)  # the poll's
    await relay.reset()

    assert await drain(rt, requests, workers) == ["ingested"] * messages
    assert relay.peak == bound  # never more at once than the bound, though 30 workers wanted one each
    assert relay.total == bound  # each signed in once, and served 20 messages
    assert await logged_logins(mail_user, protocol, before + relay.total) - before == bound
    assert relay.open == bound  # kept for the next messages ...
    await rt.mail_sessions.aclose()
    assert await relay.closed() == 0  # ... until the runtime closes


async def test_a_pooled_pop3_session_does_not_call_mail_gone_that_arrived_after_it_signed_in(
    env: dict[str, str], service: Any, mail_user: MailUser, relays: list[Relay]
):
    rt, relay = await relayed(relays, env, service, mail_user, "pop3s", MAIL_CONNECTIONS_PER_ACCOUNT="1")
    (account,) = rt.settings.accounts
    mail_user.deliver(message("before"))
    (first,) = await queued(rt, account)
    await relay.reset()
    assert (await ingest_fetched(first, rt)).status == "ingested"
    mail_user.deliver(message("after the session signed in"))
    (second,) = [r for r in await queued(rt, account) if r.uidl != first.uidl]
    await relay.reset()
    # The pooled session's maildrop view predates the mail: a new session fetches it.
    assert (await ingest_fetched(second, rt)).status == "ingested"
    assert relay.total == 1  # (the relay may see the new connection before the old one's end: no peak here)
    mail_user.deliver(message("third"))
    (third,) = [r for r in await queued(rt, account) if r.uidl not in (first.uidl, second.uidl)]
    # Mail that really is gone is still found gone (by a session that signed in after it was queued).
    (path,) = [p for p in mail_user.server.folder_path(mail_user.name).glob("*/*") if b"third" in p.read_bytes()]
    path.unlink()
    await relay.reset(1)
    assert (await ingest_fetched(third, rt)).status == "gone"
    assert relay.total == 1


async def test_a_pop3_session_that_deleted_quits_before_the_next_message(
    env: dict[str, str], service: Any, mail_user: MailUser, relays: list[Relay]
):
    rt, relay = await relayed(
        relays,
        env,
        service,
        mail_user,
        "pop3s",
        MAIL_CONNECTIONS_PER_ACCOUNT="2",
        AFTER_INGEST_BY_MAILBOX=f"{mail_user.name}=delete",
    )
    (account,) = rt.settings.accounts
    for n in range(3):
        mail_user.deliver(message(f"deleted {n}"))
    requests = await queued(rt, account)
    await relay.reset()
    for left, request in zip((2, 1, 0), requests, strict=True):
        assert (await ingest_fetched(request, rt)).status == "ingested"
        assert len(list(mail_user.server.folder_path(mail_user.name).glob("*/*"))) == left  # QUIT applied it
    assert relay.total == 3  # a session that sent DELE is never reused
    assert await relay.closed() == 0


async def test_a_reused_imap_connection_sees_new_mail_a_new_uidvalidity_and_a_dropped_connection(
    env: dict[str, str], service: Any, mail_user: MailUser, relays: list[Relay], mail_ca_bundle: Path
):
    rt, relay = await relayed(
        relays, env, service, mail_user, "imaps", MAIL_CONNECTIONS_PER_ACCOUNT="1", AFTER_INGEST="mark-read"
    )
    (account,) = rt.settings.accounts
    mail_user.deliver(message("first"))
    (first,) = await queued(rt, account)
    await relay.reset()
    assert (await ingest_fetched(first, rt)).status == "ingested"  # and SELECTed the folder to set \Seen
    mail_user.deliver(message("second"))
    mail_user.deliver(message("third"))
    second, third = await queued(rt, account)
    await relay.reset(1)
    assert (await ingest_fetched(second, rt)).status == "ingested"  # the same connection sees new mail
    assert relay.total == 0 and flags_of(mail_user, mail_ca_bundle) == {1: {b"\\Seen"}, 2: {b"\\Seen"}, 3: set()}

    relay.cut()  # the server (or a NAT) dropped the idle connection: NOOP finds out, a new one serves
    assert (await ingest_fetched(third, rt)).status == "ingested"
    assert relay.total == 1

    mail_user.deliver(message("fourth"))
    (fourth,) = await queued(rt, account)
    raw = next(p for p in mail_user.server.folder_path(mail_user.name).glob("*/*") if b"fourth" in p.read_bytes())
    kept = raw.read_bytes()
    time.sleep(1.1)  # Dovecot's UIDVALIDITY is the time in seconds a folder is made
    mail_user.server.remove_folder(mail_user.name, "INBOX")
    mail_user.deliver(kept)  # a new UIDVALIDITY; the pooled connection had the old one
    outcome = await ingest_fetched(fourth, rt)
    assert outcome.status == "ingested" and outcome.key == account.message_key(fourth.fingerprint)
    assert flags_of(mail_user, mail_ca_bundle) == {1: {b"\\Seen"}}  # found by fingerprint, acted on


def test_the_bound_is_a_setting_with_a_one_line_error(env: dict[str, str]):
    from shared.errors import SettingsError
    from shared.settings import parse_settings

    assert parse_settings(env).mail_connections_per_account == 4
    assert parse_settings({**env, "MAIL_CONNECTIONS_PER_ACCOUNT": "10"}).mail_connections_per_account == 10
    with pytest.raises(SettingsError) as caught:
        parse_settings({**env, "MAIL_CONNECTIONS_PER_ACCOUNT": "0"})
    assert str(caught.value) == "setting MAIL_CONNECTIONS_PER_ACCOUNT: must be between 1 and 50, got 0"
