"""One log line per event, with its fields; URLs redacted, no secrets."""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit, urlunsplit


def redact_url(url: str) -> str:
    """Keep scheme, host and path; drop the query (tokens, SAS signatures, function keys) and userinfo."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    query = "redacted" if parts.query else ""
    return urlunsplit((parts.scheme, host, parts.path, query, ""))


def _text(value: Any) -> str:
    text = str(value)
    return f'"{text}"' if (" " in text or not text) else text


def log_event(logger: logging.Logger, event: str, level: int = logging.INFO, **fields: Any) -> None:
    """`event key=value ...` as the message, the same fields as `custom_dimensions` for App Insights."""
    shown = " ".join(f"{k}={_text(v)}" for k, v in fields.items() if v is not None)
    logger.log(level, "%s %s", event, shown, extra={"custom_dimensions": {"event": event, **fields}})
