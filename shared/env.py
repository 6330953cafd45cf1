"""Readers of single settings from the environment mapping, typed and checked, for every role's section.

Each raises SettingsError, one line naming the setting. The patterns are Azure's names the settings are checked
against (containers, queues, Key Vault objects, NCRONTAB). It imports none of the app's roles, so that each
role can parse its own section with it (unpack/options.py, pipeline/rules.py, pipeline/routes.py) and
settings.py composes them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from typing import TypeVar
from urllib.parse import urlsplit

from .errors import SettingsError

# Container names: 3 to 63 lower-case letters, digits and hyphens, starting and ending with a letter or
# digit, no two hyphens in a row (Naming and Referencing Containers, Blobs, and Metadata). Queue names
# follow the same rule.
CONTAINER_NAME = re.compile(r"^(?!.*--)[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")
# Key Vault object names: 1 to 127 letters, digits and dashes.
VAULT_NAME = re.compile(r"^[0-9A-Za-z-]{1,127}$")
_NCRONTAB_FIELD = re.compile(r"^[0-9*/,\-A-Za-z]+$")


# How App Service writes a Key Vault reference; the platform puts the secret in its place when it can read it.
KEY_VAULT_REFERENCE = "@Microsoft.KeyVault("


class ResolvedEnv(Mapping[str, str]):
    """The environment as the app reads it: a value that is still a Key Vault reference is refused, naming the
    setting. In Azure that means the platform could not read the secret (the identity's role, the vault's
    firewall); elsewhere, settings copied from a deployment (`azd env get-values`) without resolving them.
    Either way, using the reference's text as the value (a webhook URL carrying it as its key, a client
    secret that is not one) would fail far from the cause, or subscribe Graph to a URL nobody answers."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env

    def __getitem__(self, name: str) -> str:
        value = self._env[name]
        if value.lstrip().startswith(KEY_VAULT_REFERENCE):
            raise SettingsError(name, "is a Key Vault reference that was not resolved to its secret's value")
        return value

    def __iter__(self) -> Iterator[str]:
        return iter(self._env)

    def __len__(self) -> int:
        return len(self._env)


def read_required(env: Mapping[str, str], name: str) -> str:
    value = env.get(name, "").strip()
    if not value:
        raise SettingsError(name, "required but not set")
    return value


def read_url(env: Mapping[str, str], name: str, default: str | None, *, https: bool = True) -> str:
    value = env.get(name, "").strip() or default
    if value is None:
        raise SettingsError(name, "required but not set")
    parts = urlsplit(value)
    schemes = ("https",) if https else ("https", "http")
    if parts.scheme not in schemes or not parts.netloc:
        raise SettingsError(name, f"must be an absolute {' or '.join(schemes)} URL")
    return value.rstrip("/")


_N = TypeVar("_N", int, float)


def _read_bounded(
    env: Mapping[str, str], name: str, default: _N, low: _N, high: _N, parse: Callable[[str], _N], what: str
) -> _N:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = parse(raw)
    except ValueError:
        raise SettingsError(name, f"must be {what}, got {raw!r}") from None
    if not low <= value <= high:
        raise SettingsError(name, f"must be between {low} and {high}, got {value}")
    return value


def read_int(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    return _read_bounded(env, name, default, low, high, int, "a whole number")


def read_number(env: Mapping[str, str], name: str, default: float, low: float, high: float) -> float:
    """A decimal number (`0.5`), within bounds; tests set minutes as fractions."""
    return _read_bounded(env, name, default, low, high, float, "a number")


def read_bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise SettingsError(name, f"must be true or false, got {raw!r}")


def read_choice(env: Mapping[str, str], name: str, choices: tuple[str, str]) -> str:
    """One of two words (any case), the first when unset: a mode such as GRAPH_DELIVERY."""
    raw = env.get(name, "").strip().lower() or choices[0]
    if raw in choices:
        return raw
    raise SettingsError(name, f"must be {choices[0]} or {choices[1]}, got {raw!r}")


def read_list(env: Mapping[str, str], name: str, pattern: re.Pattern[str]) -> tuple[str, ...]:
    """A comma list, lower case; `*` (or nothing) means any."""
    items: list[str] = []
    for raw in env.get(name, "").split(","):
        item = raw.strip().lower()
        if not item:
            continue
        if item != "*" and not pattern.match(item):
            raise SettingsError(name, f"{raw.strip()!r} is not valid here")
        items.append(item)
    return () if "*" in items else tuple(items)


def read_container(env: Mapping[str, str], name: str, default: str) -> str:
    value = env.get(name, "").strip() or default
    if not CONTAINER_NAME.match(value):
        raise SettingsError(name, f"{value!r} is not a valid blob container name")
    return value


def read_queue_name(env: Mapping[str, str], name: str, default: str) -> str | None:
    """A queue name (3 to 63 lower-case letters, digits and single hyphens); set but empty: off."""
    if name not in env:
        return default
    value = env[name].strip()
    if value and not CONTAINER_NAME.match(value):
        raise SettingsError(name, f"{value!r} is not a valid queue name")
    return value or None


def read_schedule(env: Mapping[str, str], name: str, default: str) -> str:
    """An NCRONTAB expression as the Functions host takes it: six fields, seconds first."""
    value = " ".join(env.get(name, "").split()) or default
    parts = value.split(" ")
    if len(parts) != 6 or not all(_NCRONTAB_FIELD.match(p) for p in parts):
        raise SettingsError(name, f"{value!r} is not an NCRONTAB schedule (six fields, seconds first)")
    return value


def read_vault_names(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    """A comma list of Key Vault certificate names, each once, in order."""
    names = tuple(dict.fromkeys(n.strip() for n in env.get(name, "").split(",") if n.strip()))
    for value in names:
        if not VAULT_NAME.match(value):
            raise SettingsError(name, f"{value!r} is not a Key Vault certificate name")
    return names
