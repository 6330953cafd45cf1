"""A real Dovecot for the source tests: TLS from a test CA the app trusts through SSL_CERT_FILE (as it
trusts the Azure simulator), a plain instance without STARTTLS, users made per test."""

from __future__ import annotations

import itertools
import os
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from urllib.parse import quote

import pytest
import trustme

from local.dovecot import Dovecot
from local.stack import write_ca_bundle
from shared.settings import MailAccount, parse_account
from shared.sources.common import Login

_users = itertools.count(1)


@dataclass
class MailUser:
    server: Dovecot
    name: str
    password: str

    def account(self, scheme: str = "imaps", folder: str = "") -> MailAccount:
        port = self.server.ports[scheme]
        path = f"/{quote(folder)}" if folder else ""
        return parse_account(f"{scheme}://{quote(self.name, safe='')}@127.0.0.1:{port}{path}?secret=pw")

    @property
    def login(self) -> Login:
        return Login(self.name, password=self.password)

    def deliver(self, message: bytes, folder: str = "INBOX") -> None:
        self.server.deliver(self.name, message, folder)


@pytest.fixture(scope="session")
def mail_ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="session")
def mail_ca_bundle(mail_ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("mail-ca")
    own = directory / "ca.pem"
    mail_ca.cert_pem.write_to_path(str(own))
    return write_ca_bundle(directory / "bundle.pem", own, os.environ)


@pytest.fixture(autouse=True)
def trust_mail_ca(mail_ca_bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The app trusts the test CA as it would a corporate one: through SSL_CERT_FILE."""
    monkeypatch.setenv("SSL_CERT_FILE", str(mail_ca_bundle))


@pytest.fixture(scope="session")
def dovecot(mail_ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dovecot]:
    with Dovecot(tmp_path_factory.mktemp("dovecot"), mail_ca) as server:
        yield server


@pytest.fixture(scope="session")
def plain_dovecot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dovecot]:
    """A server without TLS, so without STARTTLS or STLS: one a client must refuse."""
    with Dovecot(tmp_path_factory.mktemp("dovecot-plain"), tls=False) as server:
        yield server


def make_user(server: Dovecot) -> MailUser:
    user = MailUser(server, f"user{next(_users)}@example.org", f"pw-{os.urandom(6).hex()}")
    server.add_user(user.name, user.password)
    return user


@pytest.fixture
def mail_user(dovecot: Dovecot) -> MailUser:
    """A fresh mailbox on the shared Dovecot."""
    return make_user(dovecot)


def client_context(bundle: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(bundle))


def message(subject: str = "Invoice", body: bytes = b"Please find the invoice attached.", **headers: str) -> bytes:
    """A small MIME message with CRLF line ends, as servers store and serve it."""
    mail = EmailMessage()
    mail["From"] = headers.get("sender", "Supplier <billing@supplier.example>")
    mail["To"] = "ap@example.org"
    mail["Subject"] = subject
    mail["Date"] = headers.get("date", format_datetime(datetime(2026, 11, 20, 9, 30, tzinfo=UTC)))
    mail["Message-ID"] = headers.get("message_id", make_msgid(domain="supplier.example"))
    mail.set_content(body.decode())
    mail.add_attachment(b"%PDF-1.7 test\n", maintype="application", subtype="pdf", filename="invoice.pdf")
    return bytes(mail).replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
