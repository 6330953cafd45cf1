"""clientState values that the webhook verifies with no storage or Key Vault round trip.

A clientState is `v1.{folderKey}.{nonce}.{mac}`: the mailbox folder it belongs to, a random nonce
(so it differs per subscription) and an HMAC-SHA256 over both with a secret kept in Key Vault.
Only a holder of the secret can mint one, so a valid value proves the subscription is ours and
names its folder. 16 + 16 + 43 characters plus separators stays under Graph's 128-character limit.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

_VERSION = "v1"
_DOMAIN = b"mail-attachment-ingest/clientState/v1|"


def _mac(secret: bytes, payload: str) -> str:
    digest = hmac.new(secret, _DOMAIN + payload.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def new_secret() -> str:
    """A fresh 256-bit secret, URL-safe text, as stored in Key Vault."""
    return secrets.token_urlsafe(32)


def make_client_state(secret: bytes, folder_key: str) -> str:
    nonce = secrets.token_hex(8)
    payload = f"{folder_key}.{nonce}"
    return f"{_VERSION}.{payload}.{_mac(secret, payload)}"


def verify_client_state(secret: bytes, value: object) -> str | None:
    """The folder key if `value` was minted with `secret`, else None. Constant-time compare."""
    if not isinstance(value, str) or len(value) > 128:
        return None
    parts = value.split(".")
    if len(parts) != 4 or parts[0] != _VERSION:
        return None
    _, folder_key, nonce, mac = parts
    expected = _mac(secret, f"{folder_key}.{nonce}")
    if hmac.compare_digest(expected.encode(), mac.encode()):
        return folder_key
    return None
