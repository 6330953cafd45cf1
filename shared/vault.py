"""Key Vault secrets the app reads and writes (the clientState key), through the Azure SDK.

Credentials come from DefaultAzureCredential: the managed identity in Azure, the AZURE_* variables
elsewhere. The SDK's check that a challenge's resource matches a `*.vault.azure.net` host stays on
unless KEY_VAULT_VERIFY_CHALLENGE_RESOURCE=false (for an emulator).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from .errors import IngestError
from .settings import Settings

if TYPE_CHECKING:
    from azure.identity.aio import DefaultAzureCredential
    from azure.keyvault.secrets.aio import SecretClient

CLIENT_STATE_SECRET = "graph-client-state-key"  # noqa: S105 (a secret's name, not a secret)


class VaultError(IngestError):
    """Key Vault refused or could not be reached."""


class Vault:
    def __init__(self, settings: Settings, credential: DefaultAzureCredential) -> None:
        from azure.keyvault.secrets.aio import SecretClient

        self._client: SecretClient = SecretClient(
            settings.key_vault_url,
            credential,
            verify_challenge_resource=settings.key_vault_verify_challenge_resource,
        )

    async def aclose(self) -> None:
        await self._client.close()

    async def get(self, name: str) -> str | None:
        found = await self.get_typed(name)
        return found[0] if found is not None else None

    async def get_typed(self, name: str) -> tuple[str, str | None] | None:
        """The secret's value and content type (a certificate's backing secret says PEM or PKCS#12 there)."""
        from azure.core.exceptions import AzureError, ResourceNotFoundError

        try:
            secret = await self._client.get_secret(name)
        except ResourceNotFoundError:
            return None
        except AzureError as exc:
            raise VaultError(f"Key Vault get {name} failed: {type(exc).__name__}: {exc.message}") from exc
        if secret.value is None:
            return None
        return secret.value, secret.properties.content_type

    async def set(self, name: str, value: str) -> None:
        from azure.core.exceptions import AzureError

        try:
            await self._client.set_secret(name, value, content_type="text/plain")
        except AzureError as exc:
            raise VaultError(f"Key Vault set {name} failed: {type(exc).__name__}: {exc.message}") from exc

    async def get_or_create(self, name: str, make: Callable[[], str]) -> str:
        """The secret's value, creating it first if it does not exist.

        Two instances creating it at once both write; both then read back the newest version, so
        they agree on one value.
        """
        value = await self.get(name)
        if value is not None:
            return value
        await self.set(name, make())
        value = await self.get(name)
        if value is None:
            raise VaultError(f"Key Vault secret {name} vanished right after it was written")
        return value
