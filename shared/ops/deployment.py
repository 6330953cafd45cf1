"""A deployed Function App's settings, for the operator's CLI (`--app NAME --resource-group GROUP`).

Read as the platform hands them to the app: the app settings from Azure Resource Manager (`POST .../sites/NAME/
config/appsettings/list`, which needs `Microsoft.Web/sites/config/list/action`: Contributor or Website Contributor,
not Reader), with the operator's sign-in (DefaultAzureCredential: `az login`, or the AZURE_* variables), then each
Key Vault reference resolved with the same sign-in (vault_references.py). The Functions host's own settings, which
describe the app's instance and identity rather than the app, are left out: on a laptop the operator's sign-in
reaches storage and Key Vault, not the app's managed identity.

Plain httpx with an azure-identity token: two requests do not justify azure-mgmt-web (tens of MB of generated
models, which would ship with the app to every instance).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

import httpx

from ..errors import DeploymentError
from .vault_references import resolve_references

if TYPE_CHECKING:
    from azure.core.credentials_async import AsyncTokenCredential

PUBLIC_CLOUD = "https://management.azure.com"
WEB_API_VERSION = "2024-04-01"  # the version infra/modules/functionapp.bicep deploys with
VAULT_API_VERSION = "2023-07-01"
EVENTGRID_API_VERSION = "2025-02-15"  # the version infra/modules/eventgrid.bicep deploys with
# The host's and the platform's settings (instance, deployment, telemetry export with the managed identity, the
# Python worker's switches), and the identity-based storage connection's choice of that identity.
HOST_PREFIXES = ("FUNCTIONS_", "WEBSITE_", "SCM_", "APPLICATIONINSIGHTS_", "PYTHON_", "AzureWebJobs")
# AZURE_CLIENT_ID picks the app's user-assigned identity; on a laptop DefaultAzureCredential must be the operator.
HOST_SETTINGS = frozenset({"AZURE_CLIENT_ID"})
# The storage connection itself is the app's: a connection string, or the service URIs reached with the identity.
STORAGE_SETTINGS = frozenset(
    {"AzureWebJobsStorage", "AzureWebJobsStorage__blobServiceUri", "AzureWebJobsStorage__queueServiceUri"}
)


@dataclass(frozen=True)
class Deployment:
    subscription: str
    resource_group: str
    app: str
    management_url: str = PUBLIC_CLOUD
    management_scope: str | None = None  # default: the management URL's origin + /.default

    @property
    def scope(self) -> str:
        if self.management_scope:
            return self.management_scope
        parts = urlsplit(self.management_url)
        return f"{parts.scheme}://{parts.netloc}/.default"

    def group_url(self) -> str:
        sub, group = quote(self.subscription, safe=""), quote(self.resource_group, safe="")
        return f"{self.management_url.rstrip('/')}/subscriptions/{sub}/resourceGroups/{group}"


def for_laptop(settings: Mapping[str, str]) -> dict[str, str]:
    """The app's settings without the host's own (HOST_PREFIXES, HOST_SETTINGS), storage's connection kept."""
    return {
        name: value
        for name, value in settings.items()
        if name in STORAGE_SETTINGS or not (name in HOST_SETTINGS or name.startswith(HOST_PREFIXES))
    }


def _refusal(response: httpx.Response) -> str:
    try:
        error = response.json().get("error") or {}
    except ValueError:
        error = {}
    code = error.get("code") or response.reason_phrase
    message = str(error.get("message") or "").splitlines()[0:1]
    return f"{response.status_code} {code}" + (f": {message[0]}" if message else "")


class ResourceManager:
    """The few ARM requests the CLI makes, with one token for the operator."""

    def __init__(self, deployment: Deployment, credential: AsyncTokenCredential, http: httpx.AsyncClient) -> None:
        self.deployment = deployment
        self.credential = credential
        self.http = http

    async def _call(self, method: str, url: str, api_version: str) -> httpx.Response:
        token = await self.credential.get_token(self.deployment.scope)
        headers = {"Authorization": f"Bearer {token.token}"}
        return await self.http.request(method, url, params={"api-version": api_version}, headers=headers)

    async def resource(self, path: str, api_version: str) -> dict[str, Any] | None:
        """A resource of the group (`path` after `/providers/`) as ARM describes it, or None when ARM answers 404."""
        where = f"{path} in resource group {self.deployment.resource_group}"
        return await self._read(f"{self.deployment.group_url()}/providers/{path}", api_version, where)

    async def resource_by_id(self, resource_id: str, api_version: str) -> dict[str, Any] | None:
        """A resource by its full id (`/subscriptions/...`), which another resource named; None when ARM answers 404."""
        if not resource_id.startswith("/subscriptions/"):
            raise DeploymentError(f"{resource_id!r} is no Azure resource id")
        return await self._read(f"{self.deployment.management_url.rstrip('/')}{resource_id}", api_version, resource_id)

    async def _read(self, url: str, api_version: str, where: str) -> dict[str, Any] | None:
        response = await self._call("GET", url, api_version)
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise DeploymentError(f"Azure Resource Manager refused {where}: {_refusal(response)}")
        body: Any = response.json()
        if not isinstance(body, dict):
            raise DeploymentError(f"Azure Resource Manager answered {where} with no JSON object")
        return body

    async def app_settings(self) -> dict[str, str]:
        d = self.deployment
        url = f"{d.group_url()}/providers/Microsoft.Web/sites/{quote(d.app, safe='')}/config/appsettings/list"
        response = await self._call("POST", url, WEB_API_VERSION)
        if response.status_code != 200:
            where = f"Function App {d.app} in resource group {d.resource_group} (subscription {d.subscription})"
            raise DeploymentError(f"Azure Resource Manager refused the settings of {where}: {_refusal(response)}")
        properties: Any = response.json().get("properties")
        if not isinstance(properties, dict):
            raise DeploymentError(f"Azure Resource Manager answered the settings of {d.app} without properties")
        return {str(k): "" if v is None else str(v) for k, v in properties.items()}

    async def vault_url(self, name: str) -> str:
        d = self.deployment
        url = f"{d.group_url()}/providers/Microsoft.KeyVault/vaults/{quote(name, safe='')}"
        response = await self._call("GET", url, VAULT_API_VERSION)
        if response.status_code != 200:
            raise DeploymentError(
                f"Key Vault {name} (named by a VaultName reference) was not found in resource group "
                f"{d.resource_group}: {_refusal(response)}; use SecretUri=... for a vault elsewhere"
            )
        uri = (response.json().get("properties") or {}).get("vaultUri")
        if not isinstance(uri, str) or not uri.startswith("https://"):
            raise DeploymentError(f"Key Vault {name} has no vaultUri in Azure Resource Manager's answer")
        return uri


async def deployment_settings(deployment: Deployment, credential: AsyncTokenCredential) -> dict[str, str]:
    """The app's settings as it runs with them, for this machine: read, host's own left out, references resolved."""
    async with httpx.AsyncClient(timeout=60) as http:
        arm = ResourceManager(deployment, credential, http)
        return await resolve_references(for_laptop(await arm.app_settings()), credential, arm.vault_url)
