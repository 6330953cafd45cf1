"""Reading a deployment's settings: Key Vault references in both forms, the host's own settings left out, and
Azure Resource Manager's refusals as one line. The simulator case is tests/e2e/test_cli_deployment.py; these are the
edge cases, on httpx.MockTransport."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from shared.errors import DeploymentError, SettingsError
from shared.ops.deployment import Deployment, ResourceManager, for_laptop
from shared.ops.vault_references import Reference, parse_reference

VERSION = "ec96f02080254f109c51a1f14cdb1931"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (
            "@Microsoft.KeyVault(SecretUri=https://kv-a.vault.azure.net/secrets/graph-client-secret/)",
            Reference("graph-client-secret", None, vault_url="https://kv-a.vault.azure.net/"),
        ),
        (
            f"@Microsoft.KeyVault(SecretUri=https://kv-a.vault.azure.net/secrets/s1/{VERSION})",
            Reference("s1", VERSION, vault_url="https://kv-a.vault.azure.net/"),
        ),
        (
            "@Microsoft.KeyVault(VaultName=kv-a;SecretName=webhook-function-key)",
            Reference("webhook-function-key", None, vault_name="kv-a"),
        ),
        (
            f"@Microsoft.KeyVault(VaultName=kv-a; SecretName=s1; SecretVersion={VERSION};)",
            Reference("s1", VERSION, vault_name="kv-a"),
        ),
        ("plain value", None),
        ("", None),
    ],
)
def test_references_in_both_forms(value: str, expected: Reference | None) -> None:
    assert parse_reference("X", value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "@Microsoft.KeyVault(SecretUri=https://kv-a.vault.azure.net/secrets/",
        "@Microsoft.KeyVault(SecretUri=http://kv-a.vault.azure.net/secrets/s1)",
        "@Microsoft.KeyVault(SecretUri=https://kv-a.vault.azure.net/keys/s1)",
        "@Microsoft.KeyVault(SecretUri=https://kv-a.vault.azure.net/secrets/s1/not-a-version)",
        "@Microsoft.KeyVault(VaultName=kv-a)",
        "@Microsoft.KeyVault(VaultName=kv a;SecretName=s1)",
        "@Microsoft.KeyVault(kv-a/s1)",
    ],
)
def test_a_malformed_reference_names_the_setting(value: str) -> None:
    with pytest.raises(SettingsError, match=r"^setting WEBHOOK_FUNCTION_KEY: .*Key Vault reference") as caught:
        parse_reference("WEBHOOK_FUNCTION_KEY", value)
    assert "\n" not in str(caught.value)


def test_the_hosts_own_settings_are_left_out() -> None:
    app = {
        "MAILBOXES": "a@contoso.com",
        "AZURE_CLIENT_ID": "identity",
        "AzureWebJobsStorage__blobServiceUri": "https://st.blob.core.windows.net",
        "AzureWebJobsStorage__queueServiceUri": "https://st.queue.core.windows.net",
        "AzureWebJobsStorage__credential": "managedidentity",
        "AzureWebJobsStorage__clientId": "identity",
        "AzureWebJobsFeatureFlags": "EnableWorkerIndexing",
        "APPLICATIONINSIGHTS_CONNECTION_STRING": "InstrumentationKey=x",
        "PYTHON_ENABLE_OPENTELEMETRY": "true",
        "FUNCTIONS_EXTENSION_VERSION": "~4",
        "WEBSITE_RUN_FROM_PACKAGE": "1",
    }
    assert for_laptop(app) == {
        "MAILBOXES": "a@contoso.com",
        "AzureWebJobsStorage__blobServiceUri": "https://st.blob.core.windows.net",
        "AzureWebJobsStorage__queueServiceUri": "https://st.queue.core.windows.net",
    }


class _Token:
    token = "t"


class _Credential:
    def __init__(self) -> None:
        self.scopes: list[str] = []

    async def get_token(self, *scopes: str, **_: Any) -> _Token:
        self.scopes.extend(scopes)
        return _Token()


def _arm(handler: Any, deployment: Deployment | None = None) -> tuple[ResourceManager, _Credential]:
    credential = _Credential()
    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return ResourceManager(deployment or Deployment("sub", "rg", "func-a"), credential, http), credential  # type: ignore[arg-type]


def test_the_settings_request_is_arms() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"name": "appsettings", "properties": {"A": "1", "B": None}})

    arm, credential = _arm(handler)
    assert asyncio.run(arm.app_settings()) == {"A": "1", "B": ""}
    (request,) = seen
    assert request.method == "POST"
    assert str(request.url) == (
        "https://management.azure.com/subscriptions/sub/resourceGroups/rg/providers/Microsoft.Web/sites/func-a"
        "/config/appsettings/list?api-version=2024-04-01"
    )
    assert credential.scopes == ["https://management.azure.com/.default"]


def test_a_refusal_is_one_line_with_arms_code() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        body = {"error": {"code": "ResourceGroupNotFound", "message": "Resource group 'rg' could not be found.\nx"}}
        return httpx.Response(404, content=json.dumps(body))

    arm, _ = _arm(handler)
    with pytest.raises(DeploymentError) as caught:
        asyncio.run(arm.app_settings())
    assert str(caught.value) == (
        "Azure Resource Manager refused the settings of Function App func-a in resource group rg (subscription sub): "
        "404 ResourceGroupNotFound: Resource group 'rg' could not be found."
    )


def test_a_vault_without_an_https_uri_is_refused() -> None:
    arm, _ = _arm(lambda request: httpx.Response(200, json={"properties": {"vaultUri": "http://kv/"}}))
    with pytest.raises(DeploymentError, match="kv-a has no vaultUri"):
        asyncio.run(arm.vault_url("kv-a"))


def test_a_sovereign_clouds_scope_follows_its_management_url() -> None:
    assert Deployment("s", "g", "a", "https://management.chinacloudapi.cn").scope == (
        "https://management.chinacloudapi.cn/.default"
    )
    assert Deployment("s", "g", "a", "https://127.0.0.1:1", "https://management.azure.com/.default").scope == (
        "https://management.azure.com/.default"
    )
