"""The Dovecot harness itself: its own instance on loopback, TLS from the test CA, and nothing left behind."""

from __future__ import annotations

import imaplib
import os
import poplib
import ssl
from pathlib import Path

import pytest
import trustme

from local.dovecot import Dovecot


@pytest.fixture
def ca(tmp_path: Path) -> tuple[trustme.CA, ssl.SSLContext]:
    authority = trustme.CA()
    context = ssl.create_default_context()
    authority.configure_trust(context)
    return authority, context


def test_tls_instance_serves_imaps_starttls_pop3s_and_stls(tmp_path: Path, ca: tuple[trustme.CA, ssl.SSLContext]):
    authority, context = ca
    with Dovecot(tmp_path / "dovecot", authority) as server:
        server.add_user("ap@example.org", "pw-1")
        server.deliver("ap@example.org", b"From: a@example.com\r\nSubject: one\r\n\r\nbody\r\n")

        imaps = imaplib.IMAP4_SSL("127.0.0.1", server.ports["imaps"], ssl_context=context)
        imaps.login("ap@example.org", "pw-1")
        typ, data = imaps.select("INBOX", readonly=True)
        assert (typ, data) == ("OK", [b"1"])
        imaps.logout()

        plain = imaplib.IMAP4("127.0.0.1", server.ports["imap"])
        assert "STARTTLS" in plain.capabilities
        plain.starttls(context)
        plain.login("ap@example.org", "pw-1")
        plain.logout()

        pop3s = poplib.POP3_SSL("127.0.0.1", server.ports["pop3s"], context=context)
        pop3s.user("ap@example.org")
        pop3s.pass_("pw-1")
        assert pop3s.stat()[0] == 1
        pop3s.quit()

        pop3 = poplib.POP3("127.0.0.1", server.ports["pop3"])
        assert "STLS" in pop3.capa()
        pop3.stls(context)
        pop3.quit()

        with pytest.raises(ssl.SSLCertVerificationError):
            imaplib.IMAP4_SSL("127.0.0.1", server.ports["imaps"], ssl_context=ssl.create_default_context())
        pid = server._process.pid if server._process else 0
        home = server.home
    assert not server.running
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)  # the master and every child it started are gone
    assert not home.exists() or home == server.data_dir


def test_plain_instance_offers_no_starttls(tmp_path: Path):
    with Dovecot(tmp_path / "plain", tls=False) as server:
        server.add_user("ap@example.org", "pw-1")
        client = imaplib.IMAP4("127.0.0.1", server.ports["imap"])
        assert "STARTTLS" not in client.capabilities
        client.logout()
        pop3 = poplib.POP3("127.0.0.1", server.ports["pop3"])
        assert "STLS" not in pop3.capa()
        pop3.quit()


def test_recreated_folder_has_a_new_uidvalidity(tmp_path: Path, ca: tuple[trustme.CA, ssl.SSLContext]):
    authority, context = ca
    with Dovecot(tmp_path / "dovecot", authority) as server:
        server.add_user("ap@example.org", "pw-1")
        server.deliver("ap@example.org", b"Subject: a\r\n\r\nx\r\n", folder="Scans")

        def uidvalidity() -> bytes:
            client = imaplib.IMAP4_SSL("127.0.0.1", server.ports["imaps"], ssl_context=context)
            client.login("ap@example.org", "pw-1")
            client.select("Scans", readonly=True)
            value = client.response("UIDVALIDITY")[1][0]
            client.logout()
            assert isinstance(value, bytes)
            return value

        first = uidvalidity()
        server.remove_folder("ap@example.org", "Scans")
        server.deliver("ap@example.org", b"Subject: a\r\n\r\nx\r\n", folder="Scans")
        assert uidvalidity() != first
