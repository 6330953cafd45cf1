"""Fingerprints, header fields and the classification of server refusals."""

from __future__ import annotations

import pytest

from shared.errors import MailAuthFailed, MailServerBusy, MailServerError
from shared.settings import parse_account
from shared.sources.common import classify, fingerprint, header_fields, password_login

ACCOUNT = parse_account("imaps://ap%40example.org@imap.example.org?secret=ap-pw")


def test_header_fields_are_raw_unfolded_and_first_wins():
    header = (
        b"Received: from x\r\nMessage-ID:\r\n <a@b>\r\nFrom: =?utf-8?q?M=C3=BCller?= <m@x>\r\n"
        b"Subject: Rechnung f\xfcr M\xe4rz\r\nsubject: second\r\nDate: Fri, 20 Nov 2026 09:30:00 +0000\r\n\r\n"
        b"Message-ID: <in the body>\r\n"
    )
    assert header_fields(header) == {
        "message-id": b"<a@b>",
        "from": b"=?utf-8?q?M=C3=BCller?= <m@x>",
        "subject": b"Rechnung f\xfcr M\xe4rz",
        "date": b"Fri, 20 Nov 2026 09:30:00 +0000",
    }


def test_fingerprint_ignores_folding_and_line_ends_but_not_size_or_ids():
    a = b"Message-ID: <a@b>\r\nFrom: x@y\r\nDate: Fri, 20 Nov 2026 09:30:00 +0000\r\n\r\n"
    folded = b"Message-ID:\n  <a@b>\nFrom: x@y\nDate: Fri, 20 Nov 2026\n 09:30:00 +0000\n\n"
    assert fingerprint(a, 100) == fingerprint(folded, 100)
    assert fingerprint(a, 100) != fingerprint(a, 101)
    assert fingerprint(a, 100) != fingerprint(a.replace(b"<a@b>", b"<c@b>"), 100)
    assert len(fingerprint(b"", 0)) == 32


@pytest.mark.parametrize(
    ("text", "kind", "retry"),
    [
        ("LOGIN: [AUTHENTICATIONFAILED] Authentication failed.", MailAuthFailed, None),
        ("[ALERT] Too many simultaneous connections. (Failure)", MailServerBusy, None),
        ("[UNAVAILABLE] Temporary authentication failure.", MailServerBusy, None),
        ("NO [LIMIT] Rate limit hit. Suggested Backoff Time: 250 msec", MailServerBusy, 0.25),
        ("NO [LIMIT] Suggested backoff time: 30 seconds", MailServerBusy, 30.0),
        ("-ERR [IN-USE] Mailbox locked by another session", MailServerBusy, None),
        ("UID FETCH: unexpected response", MailServerError, None),
    ],
)
def test_refusals_are_classified(text, kind, retry):
    error = classify(ACCOUNT, text)
    assert type(error) is kind
    assert str(ACCOUNT) in str(error)
    if isinstance(error, MailServerBusy):
        assert error.retry_after == retry


def test_any_other_refusal_at_login_is_refused_credentials():
    assert type(classify(ACCOUNT, "NO Invalid login", login=True)) is MailAuthFailed


class Secrets:
    def __init__(self, values: dict[str, str]) -> None:
        self.values = values

    async def get(self, name: str) -> str | None:
        return self.values.get(name)


async def test_the_password_comes_from_the_named_secret():
    login = await password_login(ACCOUNT, Secrets({"ap-pw": "s3cret"}))
    assert (login.user, login.password) == ("ap@example.org", "s3cret")
    assert "s3cret" not in repr(login)
    with pytest.raises(MailAuthFailed, match="ap-pw does not exist"):
        await password_login(ACCOUNT, Secrets({}))
