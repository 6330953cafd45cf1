"""RFC 5322 MIME of a message, for an item attachment's ``/$value`` (Graph returns an attached mail
as "MIME format"). Built with the ``email`` package, attachments included, nested mails as
``message/rfc822`` parts."""

from __future__ import annotations

from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime

from .content import read_all
from .store import EmailAddress, Message


def _address(value: EmailAddress) -> Address:
    username, _, domain = value.address.partition("@")
    return Address(display_name=value.name, username=username, domain=domain)


def build_message(message: Message) -> EmailMessage:
    mail = EmailMessage(policy=policy.SMTP)
    mail["From"] = _address(message.sender)
    if message.to:
        mail["To"] = [_address(a) for a in message.to]
    mail["Subject"] = message.subject
    mail["Date"] = format_datetime(message.received)
    mail["Message-ID"] = message.internet_message_id
    mail.set_content(message.body, subtype="html" if message.body_type == "html" else "plain")
    for attachment in message.attachments:
        if attachment.kind == "item" and attachment.item is not None:
            mail.add_attachment(build_message(attachment.item), filename=attachment.name)
        elif attachment.kind == "file" and attachment.content is not None:
            maintype, _, subtype = (attachment.content_type or "application/octet-stream").partition("/")
            mail.add_attachment(
                read_all(attachment.content),
                maintype=maintype,
                subtype=subtype or "octet-stream",
                filename=attachment.name,
                disposition="inline" if attachment.is_inline else "attachment",
                cid=f"<{attachment.content_id}>" if attachment.content_id else None,
            )
    return mail


def message_mime(message: Message) -> bytes:
    return build_message(message).as_bytes()
