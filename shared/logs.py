"""One log line per event, with its fields; URLs redacted, no secrets.

Each event is one record: the message reads `event key=value ...` for a person, and the same fields
travel as flat record attributes (`extra`), which the OpenTelemetry logging handler exports as log
attributes: Application Insights shows them as `customDimensions.event`, `customDimensions.mailbox`...
"""

from __future__ import annotations

import logging
import re
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

# Names a LogRecord already has (or that `makeRecord` refuses in `extra`): a field of that name gets a
# trailing underscore, so `message=` is exported as `message_`. The app's own fields avoid them.
RESERVED = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}

_URL = re.compile(r"https?://[^\s'\"<>]+")
# What would split an event's line (a forged field with a newline could fake a second event), or fail to
# encode (a lone surrogate from JSON's \ud800): shown escaped.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
# Query parameters that never carry a secret and that a reader needs: the consent page's mailbox and prompt
# (an error says which page the mailbox's owner must open).
_PLAIN_PARAMETERS = frozenset({"mailbox", "prompt"})


def redact_url(url: str) -> str:
    """Keep scheme, host and path; drop userinfo and the query (tokens, SAS signatures, function keys), all
    but the parameters known to be plain."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    kept = [(k, v) for k, v in pairs if k in _PLAIN_PARAMETERS]
    dropped = len(kept) < len(pairs) or (parts.query and not pairs)
    query = "&".join(part for part in (urlencode(kept), "redacted" if dropped else "") if part)
    return urlunsplit((parts.scheme, host, parts.path, query, ""))


def redact_text(text: str) -> str:
    """Every URL in a free text (an error message that quotes a request URL) redacted."""
    return _URL.sub(lambda m: redact_url(m.group(0)), text) if "://" in text else text


def _value(value: Any) -> str | int | float | bool:
    # OpenTelemetry attributes take str, bool, int and float; anything else is sent as its text.
    if isinstance(value, bool | int | float):
        return value
    text = redact_text(str(value))
    return _UNSAFE.sub(lambda m: m.group(0).encode("unicode_escape").decode("ascii"), text) if text else text


def _text(value: str | int | float | bool) -> str:
    text = str(value)
    return f'"{text}"' if (" " in text or not text) else text


def event_fields(event: str, fields: dict[str, Any]) -> dict[str, str | int | float | bool]:
    """The record attributes of one event: `event` plus the fields that have a value, flat."""
    attributes: dict[str, str | int | float | bool] = {"event": event}
    for key, value in fields.items():
        if value is not None:
            attributes[f"{key}_" if key in RESERVED else key] = _value(value)
    return attributes


def log_event(logger: logging.Logger, event: str, level: int = logging.INFO, **fields: Any) -> None:
    """`event key=value ...` as the message, the same fields as flat attributes for App Insights."""
    if not logger.isEnabledFor(level):
        return
    attributes = event_fields(event, fields)
    shown = " ".join(f"{k}={_text(v)}" for k, v in attributes.items() if k != "event")
    logger.log(level, "%s %s", event, shown, extra=attributes)
