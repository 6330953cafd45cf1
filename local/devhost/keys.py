"""Function keys, as the Functions host keeps and checks them.

The file has the shape of the host's own secrets file (`host.json` in its file secret storage):
``{"masterKey": {"name": "_master", "value": "..."}, "functionKeys": [{"name": "default", "value": "..."}]}``.
A missing file is created with fresh keys, as the host creates its secrets on first start.

Auth levels (the host's documented rules): ``anonymous`` needs no key; ``function`` takes any host key
(``functionKeys``) or the master key; ``admin`` and the ``/admin`` API take the master key only. The key
comes in the ``code`` query parameter or the ``x-functions-key`` header.
"""

from __future__ import annotations

import base64
import hmac
import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from .config import ConfigError


def new_key() -> str:
    # The host's keys are 40 random bytes, base64url without padding (as in its generated secrets).
    return base64.urlsafe_b64encode(secrets.token_bytes(40)).decode().rstrip("=")


@dataclass(frozen=True)
class HostKeys:
    master: str
    function_keys: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(
            {
                "masterKey": {"name": "_master", "value": self.master, "encrypted": False},
                "functionKeys": [{"name": n, "value": v, "encrypted": False} for n, v in self.function_keys.items()],
            },
            indent=2,
        )

    def allows(self, level: str, given: str) -> bool:
        """Whether the key given is enough for the auth level; every candidate is compared in constant time."""
        if level == "anonymous":
            return True
        candidates = [self.master] if level == "admin" else [self.master, *self.function_keys.values()]
        supplied = given.encode()
        matched = False
        for candidate in candidates:
            matched |= hmac.compare_digest(supplied, candidate.encode())
        return matched and bool(given)


def write_keys(path: Path, keys: HostKeys) -> None:
    """Readable by the owner only, replaced atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(keys.to_json())
    tmp.replace(path)


def load_keys(path: Path) -> HostKeys:
    if not path.exists():
        keys = HostKeys(master=new_key(), function_keys={"default": new_key()})
        write_keys(path, keys)
        return keys
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        master = data["masterKey"]["value"]
        entries = data.get("functionKeys") or []
        function_keys = {str(e["name"]): str(e["value"]) for e in entries}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path}: not a host keys file ({type(exc).__name__}: {exc})") from exc
    if not isinstance(master, str) or not master or not all(function_keys.values()):
        raise ConfigError(f"{path}: keys must be non-empty strings")
    return HostKeys(master=master, function_keys=function_keys)


def with_host_key(path: Path, keys: HostKeys, name: str, value: str | None) -> HostKeys:
    """`keys` with the host key `name` set to `value` (kept in the file), as a deployment sets a host key
    from its parameters; unchanged when `value` is empty or already that key's."""
    if not value or keys.function_keys.get(name) == value:
        return keys
    updated = HostKeys(master=keys.master, function_keys={**keys.function_keys, name: value})
    write_keys(path, updated)
    return updated
