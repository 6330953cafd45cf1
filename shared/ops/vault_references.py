"""Key Vault references in app settings, as App Service writes them, and their values read with the caller's sign-in.

Two forms (App Service, "Use Key Vault references"): `@Microsoft.KeyVault(SecretUri=https://VAULT.vault.azure.net/
secrets/NAME/)`, with or without a version after the name, and `@Microsoft.KeyVault(VaultName=VAULT;SecretName=NAME)`
with an optional `;SecretVersion=VERSION`. Without a version the platform takes the secret's latest version, as the
SDK's `get_secret(name)` does. A `VaultName` is looked up through Azure Resource Manager (`vaultUri`), in the
app's resource group: that gives the vault's URL in any cloud.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from ..env import KEY_VAULT_REFERENCE, VAULT_NAME, read_bool
from ..errors import IngestError, SettingsError, one_line

if TYPE_CHECKING:
    from azure.core.credentials_async import AsyncTokenCredential

_REFERENCE = re.compile(r"^\s*@Microsoft\.KeyVault\((?P<body>.*)\)\s*$", re.DOTALL)
_VERSION = re.compile(r"^[0-9a-fA-F]{32}$")


@dataclass(frozen=True)
class Reference:
    secret: str
    version: str | None = None
    vault_url: str | None = None  # SecretUri's vault
    vault_name: str | None = None  # VaultName's


def parse_reference(setting: str, value: str) -> Reference | None:
    """The reference a setting's value is, None when it is a plain value; SettingsError when it is malformed."""
    if not value.lstrip().startswith(KEY_VAULT_REFERENCE):
        return None
    match = _REFERENCE.match(value)
    if match is None:
        raise SettingsError(setting, "is not a complete Key Vault reference: @Microsoft.KeyVault(...)")
    fields: dict[str, str] = {}
    for part in match["body"].split(";"):
        key, eq, text = part.partition("=")
        if not eq or not key.strip():
            if part.strip():
                raise SettingsError(setting, f"has a Key Vault reference with a part that is not NAME=VALUE: {part!r}")
            continue
        fields[key.strip()] = text.strip()
    if "SecretUri" in fields:
        return _from_uri(setting, fields["SecretUri"])
    name, secret = fields.get("VaultName", ""), fields.get("SecretName", "")
    version = fields.get("SecretVersion") or None
    if not VAULT_NAME.match(name) or not VAULT_NAME.match(secret) or (version and not _VERSION.match(version)):
        raise SettingsError(
            setting, "has a Key Vault reference without SecretUri=..., nor VaultName=...;SecretName=... that are valid"
        )
    return Reference(secret=secret, version=version, vault_name=name)


def _from_uri(setting: str, uri: str) -> Reference:
    parts = urlsplit(uri)
    segments = [s for s in parts.path.split("/") if s]
    valid = parts.scheme == "https" and parts.netloc and len(segments) in (2, 3) and segments[0] == "secrets"
    if not valid or not VAULT_NAME.match(segments[1]) or (len(segments) == 3 and not _VERSION.match(segments[2])):
        raise SettingsError(
            setting, "has a Key Vault reference whose SecretUri is not https://VAULT/secrets/NAME[/VERSION]"
        )
    version = segments[2] if len(segments) == 3 else None
    return Reference(secret=segments[1], version=version, vault_url=f"https://{parts.netloc}/")


VaultLookup = Callable[[str], Awaitable[str]]  # a vault's name → its URL


async def resolve_references(
    settings: Mapping[str, str], credential: AsyncTokenCredential, vault_url_of: VaultLookup
) -> dict[str, str]:
    """The settings with each Key Vault reference replaced by its secret's value, read with `credential`. A
    reference that cannot be read stops with one line naming the setting (never the secret's value)."""
    from azure.core.exceptions import AzureError
    from azure.keyvault.secrets.aio import SecretClient

    # The app's own emulator switch applies to the operator's reads as it does to the app's.
    verify = read_bool(settings, "KEY_VAULT_VERIFY_CHALLENGE_RESOURCE", True)
    resolved = dict(settings)
    clients: dict[str, SecretClient] = {}
    try:
        for name, value in settings.items():
            reference = parse_reference(name, value)
            if reference is None:
                continue
            try:
                vault = reference.vault_url or await vault_url_of(str(reference.vault_name))
            except IngestError as exc:
                raise SettingsError(name, f"its Key Vault reference cannot be resolved: {exc}") from None
            if vault not in clients:
                clients[vault] = SecretClient(vault, credential, verify_challenge_resource=verify)
            try:
                secret = await clients[vault].get_secret(reference.secret, reference.version)
            except AzureError as exc:
                where = f"secret {reference.secret} in {vault}"
                raise SettingsError(
                    name, f"its Key Vault reference to {where} could not be read: {one_line(exc)}"
                ) from None
            if secret.value is None:
                raise SettingsError(name, f"its Key Vault reference to secret {reference.secret} has no value")
            resolved[name] = secret.value
    finally:
        for client in clients.values():
            await client.close()
    return resolved
