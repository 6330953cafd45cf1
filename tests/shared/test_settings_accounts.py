"""IMAP and POP3 accounts as URLs in MAILBOXES, beside the Microsoft 365 entries."""

from __future__ import annotations

import pytest

from shared.errors import SettingsError
from shared.settings import MailAccount, MailboxFolder, parse_account, parse_settings


def test_graph_entries_and_accounts_are_kept_apart(env):
    env["MAILBOXES"] = (
        "invoices@contoso.com, imaps://ap%40example.org@imap.example.org/Scans/2026?secret=ap-password,"
        " scans@contoso.com/Inbox/Delivery notes, pop3://frontdesk@mail.example.net?secret=frontdesk"
    )
    settings = parse_settings(env)
    assert settings.mailboxes == (
        MailboxFolder("invoices@contoso.com", "Inbox"),
        MailboxFolder("scans@contoso.com", "Inbox/Delivery notes"),
    )
    imap, pop3 = settings.accounts
    assert imap == MailAccount("imap", True, "ap@example.org", "imap.example.org", 993, "Scans/2026", "ap-password")
    assert pop3 == MailAccount("pop3", False, "frontdesk", "mail.example.net", 110, "INBOX", "frontdesk")
    assert imap.address == "ap@example.org"
    assert pop3.address == "frontdesk@mail.example.net"
    assert str(imap) == "imaps://ap%40example.org@imap.example.org:993/Scans/2026"
    assert settings.account_by_key(pop3.key) is pop3
    assert settings.folder_by_key(imap.key) is None  # Graph's lookups never see an account


def test_accounts_alone_are_enough(env):
    env["MAILBOXES"] = "imap://scanner@10.0.0.5:1143?secret=scanner-pw"
    settings = parse_settings(env)
    assert settings.mailboxes == ()
    assert settings.accounts[0].port == 1143
    assert settings.accounts[0].implicit_tls is False


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("imaps://a@h?secret=s", ("imap", True, 993, "INBOX")),
        ("imap://a@h/inbox?secret=s", ("imap", False, 143, "INBOX")),
        ("pop3s://a@h?secret=s", ("pop3", True, 995, "INBOX")),
        ("pop3://a@h:2110?secret=s", ("pop3", False, 2110, "INBOX")),
        ("IMAPS://a@H/Caf%C3%A9/Sub%20folder?secret=s", ("imap", True, 993, "Café/Sub folder")),
    ],
)
def test_schemes_ports_and_folders(url, expected):
    account = parse_account(url)
    assert (account.protocol, account.implicit_tls, account.port, account.folder) == expected


def test_authserv_names_whose_authentication_results_are_trusted():
    assert parse_account("imaps://a@h?secret=s&authserv=MX.Example.org").authserv_id == "mx.example.org"
    assert parse_account("imaps://a@h?secret=s").authserv_id is None


def test_xoauth2_needs_no_password_secret():
    account = parse_account("imaps://ap%40contoso.com@outlook.office365.com?auth=xoauth2")
    assert account.auth == "xoauth2"
    assert account.secret is None


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("ftp://a@h?secret=s", "unknown scheme"),
        ("imaps://h?secret=s", "needs a user and a host"),
        ("imaps://a@h", "needs ?secret=NAME"),
        ("imaps://a@h?secret=no_underscores", "not a Key Vault secret name"),
        ("imaps://a@h:99999?secret=s", "invalid port"),
        ("imaps://a@h/Inbox//Sub?secret=s", "empty folder name"),
        ("pop3s://a@h/Archive?secret=s", "POP3 has only the inbox"),
        ("imaps://a@h?secret=s&secret=t", "secret twice"),
        ("imaps://a@h?secret=s&auth=kerberos", "auth other than"),
        ("imaps://a@h?secret=s#x", "fragment"),
        ("imaps://a@h?secret=s&authserv=mx%20one", "not an authserv-id"),
        ("imaps://a@h?secret=s&authserv=", "not an authserv-id"),
        ("imaps://a@h?secret=s&authserv=mx.a&authserv=mx.b", "authserv twice"),
    ],
)
def test_malformed_account_stops_start_up_with_one_line(env, url, needle):
    env["MAILBOXES"] = f"invoices@contoso.com, {url}"
    with pytest.raises(SettingsError) as caught:
        parse_settings(env)
    text = str(caught.value)
    assert text.startswith("setting MAILBOXES: entry ")
    assert needle in text
    assert "\n" not in text


@pytest.mark.parametrize(
    "url",
    [
        "imaps://ap%40example.org:Hunter2Secret@imap.example.org/Scans?secret=s",
        "imaps://ap@imap.example.org?password=Hunter2Secret",
        "imaps://ap@imap.example.org?secret=s&token=Hunter2Secret",
    ],
)
def test_a_password_in_the_url_is_never_echoed(env, url):
    env["MAILBOXES"] = url
    with pytest.raises(SettingsError) as caught:
        parse_settings(env)
    assert "Hunter2Secret" not in str(caught.value)
    assert "imap.example.org" in str(caught.value)


def test_the_same_account_twice_is_refused(env):
    env["MAILBOXES"] = "imaps://a@h?secret=s, imaps://A@H:993/INBOX?secret=t"
    with pytest.raises(SettingsError, match="listed twice"):
        parse_settings(env)


def test_no_entry_at_all_is_still_refused(env):
    env["MAILBOXES"] = " , "
    with pytest.raises(SettingsError, match="lists no mailbox"):
        parse_settings(env)


GRAPH_ONLY = ("GRAPH_TENANT_ID", "GRAPH_CLIENT_ID", "GRAPH_CLIENT_SECRET", "WEBHOOK_BASE_URL")


def without_graph(env: dict[str, str], mailboxes: str, **more: str) -> dict[str, str]:
    return {**{k: v for k, v in env.items() if k not in GRAPH_ONLY}, "MAILBOXES": mailboxes, **more}


def test_accounts_alone_need_no_graph_settings(env):
    for mode in ("application", "delegated"):
        settings = parse_settings(
            without_graph(env, "imaps://ap%40example.org@imap.example.org?secret=ap, pop3s://s@pop.example?secret=s")
            | {"GRAPH_AUTH_MODE": mode}
        )
        assert (settings.tenant_id, settings.client_id, settings.client_secret) == ("", "", None)
        assert not settings.uses_graph and not settings.uses_app and settings.webhook_base_url is None
    # A Gmail-style XOAUTH2 account keeps its own refresh token in its secret: still no app registration.
    gmail = parse_settings(without_graph(env, "imaps://me%40gmail.com@imap.gmail.com?secret=gmail&auth=xoauth2"))
    assert not gmail.uses_app


@pytest.mark.parametrize(
    ("missing", "error"),
    [
        ("GRAPH_TENANT_ID", "setting GRAPH_TENANT_ID: required: imaps://ap%40contoso.com@outlook.office365.com:993"),
        ("GRAPH_CLIENT_ID", "setting GRAPH_CLIENT_ID: required: imaps://ap%40contoso.com@outlook.office365.com:993"),
        ("GRAPH_CLIENT_SECRET", "setting GRAPH_CLIENT_SECRET: required: imaps://ap%40contoso.com@outlook"),
    ],
)
def test_an_account_signing_in_with_the_apps_credential_needs_the_app_registration(env, missing, error):
    """Exchange Online IMAP with the app's Entra credential: tenant, client id and credential; no webhook."""
    exchange = "imaps://ap%40contoso.com@outlook.office365.com?auth=xoauth2"
    app = {k: env[k] for k in ("GRAPH_TENANT_ID", "GRAPH_CLIENT_ID", "GRAPH_CLIENT_SECRET")}
    settings = parse_settings(without_graph(env, exchange, **app))
    assert settings.uses_app and not settings.uses_graph and settings.webhook_base_url is None
    assert settings.client_id == env["GRAPH_CLIENT_ID"]
    with pytest.raises(SettingsError) as caught:
        parse_settings(without_graph(env, exchange, **{k: v for k, v in app.items() if k != missing}))
    assert str(caught.value).startswith(error) and "auth=xoauth2 and the app's Entra credential" in str(caught.value)
    certificate = {**app, "GRAPH_CLIENT_CERTIFICATE": "app-cert"}
    del certificate["GRAPH_CLIENT_SECRET"]
    assert parse_settings(without_graph(env, exchange, **certificate)).client_certificate == "app-cert"


@pytest.mark.parametrize("missing", ["GRAPH_TENANT_ID", "GRAPH_CLIENT_ID", "GRAPH_CLIENT_SECRET"])
def test_a_microsoft_365_mailbox_still_needs_the_app_registration(env, missing):
    env["MAILBOXES"] = "invoices@contoso.com, imaps://ap%40example.org@imap.example.org?secret=ap"
    del env[missing]
    with pytest.raises(SettingsError, match=f"setting {missing}: required"):
        parse_settings(env)
