"""A message's `internetMessageHeaders`, as Exchange Online leaves them: its own trace on top (the hops inside
Exchange, the `Authentication-Results` it stamped on taking the mail in, `Received-SPF`, the `Received:` of that
arrival from outside), then whatever the sender wrote, then the mail's own fields.

Exchange's `Authentication-Results` has no authserv-id (unlike RFC 8601's form) and ends with its composite
verdict, `compauth=... reason=...`. A test gives the verdict (`authentication` in the control API), or the sender's
own headers (`headers`: a forged `Authentication-Results` among them sits below Exchange's, where a sender's must).
"""

from __future__ import annotations

from datetime import timedelta
from email.utils import format_datetime
from typing import Any

from .store import EmailAddress, Message

SENDER_IP = "203.0.113.25"


def passing(domain: str) -> str:
    """What Exchange Online writes for a mail that passes SPF, DKIM and DMARC."""
    return (
        f"spf=pass (sender IP is {SENDER_IP}) smtp.mailfrom={domain}; dkim=pass (signature was verified) "
        f"header.d={domain};dmarc=pass action=none header.from={domain};compauth=pass reason=100"
    )


def _address(address: EmailAddress) -> str:
    return f'"{address.name}" <{address.address}>' if address.name else address.address


def internet_headers(message: Message) -> list[dict[str, Any]]:
    domain = message.sender.address.rpartition("@")[2] or "example.invalid"
    at = message.received
    date = format_datetime(at)
    arrived = format_datetime(at - timedelta(seconds=1))
    trace = [
        ("Received", f"from AM9PR02MB7745.eurprd02.prod.outlook.com (2603:10a6:20b:3e1::9) by "
         f"DB9PR02MB6681.eurprd02.prod.outlook.com with HTTPS; {date}"),
        ("Received", f"from AM0PEPF00000001.eurprd02.prod.outlook.com (2603:10a6:208:1::4) by "
         f"AM9PR02MB7745.eurprd02.prod.outlook.com (2603:10a6:20b:3e1::9) with Microsoft SMTP Server; {date}"),
        ("Authentication-Results", message.authentication or passing(domain)),
        ("Received-SPF", f"Pass (protection.outlook.com: domain of {domain} designates {SENDER_IP} as permitted "
         f"sender) receiver=protection.outlook.com; client-ip={SENDER_IP}; helo=mail.{domain};"),
        ("Received", f"from mail.{domain} ({SENDER_IP}) by AM0PEPF00000001.mail.protection.outlook.com "
         f"(10.167.16.200) with Microsoft SMTP Server (version=TLS1_3, cipher=TLS_AES_256_GCM_SHA384); {arrived}"),
    ]  # fmt: skip
    own = [("From", _address(message.sender))]
    if message.to:
        own.append(("To", ", ".join(_address(a) for a in message.to)))
    if message.cc:
        own.append(("Cc", ", ".join(_address(a) for a in message.cc)))
    own += [
        ("Subject", message.subject),
        ("Date", format_datetime(at - timedelta(seconds=2))),
        ("Message-ID", message.internet_message_id),
        ("MIME-Version", "1.0"),
        ("Content-Type", "multipart/mixed" if message.attachments else f"text/{message.body_type}"),
    ]
    return [{"name": name, "value": value} for name, value in (*trace, *message.sender_headers, *own)]
