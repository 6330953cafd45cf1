"""host.json's queue options as the Functions host applies them: the file's `extensions.queues`, each
overridden by the app setting `AzureFunctionsJobHost__extensions__queues__{option}` (the host's own
override), else the Storage Queues extension's default."""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

HOST_JSON = Path(__file__).resolve().parent.parent / "host.json"
OVERRIDE = "AzureFunctionsJobHost__extensions__queues__"
DEFAULT_MAX_DEQUEUE_COUNT = 5
DEFAULT_MESSAGE_ENCODING = "base64"


@lru_cache(maxsize=1)
def _queues_section() -> dict[str, Any]:
    try:
        section = json.loads(HOST_JSON.read_text())["extensions"]["queues"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    return section if isinstance(section, dict) else {}


def _option(name: str) -> str:
    raw = os.environ.get(OVERRIDE + name, "").strip()
    return raw or str(_queues_section().get(name, "")).strip()


@lru_cache(maxsize=1)
def max_dequeue_count() -> int:
    """The delivery after which the host gives a message up."""
    raw = _option("maxDequeueCount")
    return int(raw) if raw.isdigit() else DEFAULT_MAX_DEQUEUE_COUNT


@lru_cache(maxsize=1)
def message_encoding() -> str:
    """`base64` (the host decodes each message before the function runs, and encodes what an output
    binding writes) or `none` (the text goes through as it is)."""
    raw = _option("messageEncoding").lower()
    return raw if raw in ("base64", "none") else DEFAULT_MESSAGE_ENCODING
