"""`check` for an IMAP or POP3 account: sign in as the poll would, open its folder, say what is there."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import MailAuthFailed, MailServerBusy, MailTlsRefused
from ..settings import MailAccount
from .imap.session import ImapSession
from .jobs import account_login
from .pop3.session import Pop3Session

if TYPE_CHECKING:
    from ..runtime import Runtime


async def check_account(rt: Runtime, account: MailAccount) -> str:
    login = await account_login(rt, account)
    if account.protocol == "imap":
        async with await ImapSession.open(account, login) as imap:
            status = await imap.examine()
            return f"signed in; {account.folder}: {status.exists} message(s), UIDVALIDITY {status.uidvalidity}"
    async with await Pop3Session.open(account, login) as pop3:
        return f"signed in; {len(await pop3.listing())} message(s) in the maildrop"


def account_hint(account: MailAccount, exc: Exception) -> str:
    if isinstance(exc, MailAuthFailed):
        if account.auth == "xoauth2" and account.secret is None:
            return (
                "the app's token was refused: grant it IMAP.AccessAsApp or POP.AccessAsApp (Office 365 Exchange "
                "Online), register its service principal in Exchange and give it the mailbox (docs/setup.md)"
            )
        return f"check the password (for Gmail an app password) in Key Vault secret {account.secret}"
    if isinstance(exc, MailTlsRefused):
        return (
            "the server must offer TLS (imaps://, pop3s://, or STARTTLS/STLS) with a certificate the app trusts "
            "(the system's CAs, or a bundle named by SSL_CERT_FILE)"
        )
    if isinstance(exc, MailServerBusy):
        return "the server limits connections: close other clients of the account, or try again later"
    return f"check the host and port ({account.host}:{account.port}) and that the server is reachable from the app"
