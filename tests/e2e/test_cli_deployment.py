"""`python -m shared.cli --app NAME --resource-group GROUP ...` against a simulated deployment: the Function App's
settings read from Azure Resource Manager's appsettings list with the operator's sign-in, Key Vault references in
both forms resolved, the host's own settings left out; and `maintain` refusing webhook URLs that are not the app's."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest

from local.stack import Stack

from .test_cli import cli

SUBSCRIPTION = "8f1c2a4e-5b6d-4e7f-9a0b-1c2d3e4f5a6b"
GROUP = "rg-mail-ingest"
APP = "func-abc123"
VAULT = "kv-abc123"
MANAGEMENT = "https://management.azure.com/.default"
# The host's own settings, which the laptop leaves out (the app's managed identity, its telemetry export).
HOST_ONLY = {
    "AZURE_CLIENT_ID": "0d7a0a39-0000-4000-8000-00000000beef",
    "AzureWebJobsStorage__credential": "managedidentity",
    "AzureWebJobsStorage__clientId": "0d7a0a39-0000-4000-8000-00000000beef",
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING": "ClientId=0d7a0a39-0000-4000-8000-00000000beef;Authorization=AAD",
    "FUNCTIONS_EXTENSION_VERSION": "~4",
}
COPIED = (
    "MAILBOXES",
    "GRAPH_TENANT_ID",
    "GRAPH_CLIENT_ID",
    "GRAPH_AUTHORITY_HOST",
    "GRAPH_API_URL",
    "GRAPH_SCOPE",
    "KEY_VAULT_URL",
    "KEY_VAULT_VERIFY_CHALLENGE_RESOURCE",
    "AzureWebJobsStorage",
    "WEBHOOK_BASE_URL",
    "MAINTAIN_SCHEDULE",
)


def put_secret(stack: Stack, name: str, value: str) -> None:
    token = stack.graph_token("https://vault.azure.net/.default")
    response = stack._client().put(
        f"{stack.sim_url}/secrets/{name}",
        params={"api-version": "7.5"},
        json={"value": value},
        headers={"Authorization": f"Bearer {token}"},
    )
    response.raise_for_status()


def site(stack: Stack, name: str = APP, **overrides: str) -> dict[str, str]:
    """The app's settings as infra/ writes them: secrets as Key Vault references, and the host's own."""
    settings = {k: stack.env[k] for k in COPIED}
    settings |= {
        "GRAPH_CLIENT_SECRET": f"@Microsoft.KeyVault(SecretUri={stack.sim_url}/secrets/graph-client-secret/)",
        "WEBHOOK_FUNCTION_KEY": f"@Microsoft.KeyVault(VaultName={VAULT};SecretName=webhook-function-key)",
        **HOST_ONLY,
        **overrides,
    }
    body = {"subscription": SUBSCRIPTION, "resourceGroup": GROUP, "name": name, "appSettings": settings}
    stack.control("PUT", "/_sim/arm/sites", body)
    return settings


def operator_env(stack: Stack) -> dict[str, str]:
    """This machine: trust, the operator's sign-in (here the simulated app registration) and the subscription;
    none of the app's settings."""
    keep = ("PATH", "HOME", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "AZURE_TENANT_ID", "AZURE_CLIENT_ID")
    env = {k: stack.env[k] for k in keep if k in stack.env}
    env |= {k: stack.env[k] for k in ("AZURE_CLIENT_SECRET", "AZURE_AUTHORITY_HOST")}
    return env | {"AZURE_SUBSCRIPTION_ID": SUBSCRIPTION}


def app_cli(stack: Stack, *args: str, app: str = APP) -> subprocess.CompletedProcess[str]:
    where = ("--app", app, "--resource-group", GROUP, "--management-url", stack.sim_url)
    return cli(stack, *where, "--management-scope", MANAGEMENT, *args, env=operator_env(stack))


@pytest.fixture(scope="module")
def deployment(stack: Stack) -> dict[str, Any]:
    app = stack.control("GET", f"/_sim/apps/{stack.env['GRAPH_CLIENT_ID']}")
    principal = app["servicePrincipalId"]
    stack.control("PUT", "/_sim/arm/vaults", {"subscription": SUBSCRIPTION, "resourceGroup": GROUP, "name": VAULT})
    put_secret(stack, "graph-client-secret", stack.env["GRAPH_CLIENT_SECRET"])
    put_secret(stack, "webhook-function-key", stack.env["WEBHOOK_FUNCTION_KEY"])
    settings = site(stack)
    site(stack, name="func-no-role")
    group = f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{GROUP}"
    # What docs/setup.md's operator has: Contributor-level rights on the app (reading settings is an action), and
    # Reader on the group for the vault's URI. Nothing on func-no-role.
    for role, scope in (("Website Contributor", f"{group}/providers/Microsoft.Web/sites/{APP}"), ("Reader", group)):
        stack.control("POST", "/_sim/arm/roleAssignments", {"principalId": principal, "role": role, "scope": scope})
    return settings


def test_check_status_and_maintain_run_with_the_deployments_settings(stack: Stack, deployment: dict[str, Any]):
    checked = app_cli(stack, "check")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "webhook (notification URL)" in checked.stdout and "checks passed" in checked.stdout
    maintained = app_cli(stack, "maintain")
    assert maintained.returncode == 0, maintained.stdout + maintained.stderr
    assert "invoices@contoso.com/Inbox" in maintained.stdout and "0 failed" in maintained.stdout
    status = app_cli(stack, "status")
    assert status.returncode == 0, status.stderr
    assert "invoices@contoso.com/Inbox" in status.stdout and "subscription  " in status.stdout
    # The subscriptions call the app's own URLs: the key from the vault, not the reference's text.
    urls = {s["notificationUrl"] for s in stack.control("GET", "/_sim/subscriptions")["value"]}
    assert urls == {stack.webhook_url("notifications")}


def test_a_principal_without_a_role_and_an_unknown_app_get_one_line(stack: Stack, deployment: dict[str, Any]):
    refused = app_cli(stack, "status", app="func-no-role")
    assert refused.returncode == 1
    (line,) = refused.stderr.strip().splitlines()
    assert "403 AuthorizationFailed" in line and "Microsoft.Web/sites/config/list/action" in line
    missing = app_cli(stack, "status", app="func-gone")
    assert missing.returncode == 1
    assert "404 ResourceNotFound" in missing.stderr and len(missing.stderr.strip().splitlines()) == 1


def test_maintain_refuses_webhook_urls_other_than_the_apps(stack: Stack, deployment: dict[str, Any]):
    assert app_cli(stack, "maintain").returncode == 0  # the subscriptions exist, with the app's URLs
    before = stack.control("GET", "/_sim/subscriptions")["value"]
    # `azd env get-values` copied to the shell before the key was rotated: an old key.
    env = {**stack.env, "WEBHOOK_FUNCTION_KEY": "an-old-key-from-a-stale-copy"}
    refused = cli(stack, "maintain", env=env)
    assert refused.returncode == 1
    (line,) = refused.stderr.strip().splitlines()
    assert line.startswith("error: refused: the webhook URLs from this machine's settings") and "--app NAME" in line
    assert stack.control("GET", "/_sim/subscriptions")["value"] == before
    # The unresolved reference itself (settings copied from the deployment) stops at the settings, naming them.
    env["WEBHOOK_FUNCTION_KEY"] = "@Microsoft.KeyVault(VaultName=kv-abc123;SecretName=webhook-function-key)"
    refused = cli(stack, "maintain", env=env)
    assert refused.returncode == 1 and "setting WEBHOOK_FUNCTION_KEY: is a Key Vault reference" in refused.stderr


def test_check_and_status_name_a_broken_routes_blob(stack: Stack, deployment: dict[str, Any]):
    from azure.storage.blob import BlobServiceClient

    name = "config/routes-broken.json"
    service = BlobServiceClient.from_connection_string(stack.storage_connection_string)
    state = service.get_container_client(stack.env.get("STATE_CONTAINER", "mail-ingest-state"))
    state.upload_blob(name, b'[{"name": "ap", "path": "{year}/{messageKey}"}]', overwrite=True)
    site(stack, name="func-routes", ROUTES_BLOB=name)
    group = f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{GROUP}"
    principal = stack.control("GET", f"/_sim/apps/{stack.env['GRAPH_CLIENT_ID']}")["servicePrincipalId"]
    scope = f"{group}/providers/Microsoft.Web/sites/func-routes"
    stack.control(
        "POST", "/_sim/arm/roleAssignments", {"principalId": principal, "role": "Contributor", "scope": scope}
    )
    checked = app_cli(stack, "check", app="func-routes")
    assert checked.returncode == 1
    assert f"routes (ROUTES_BLOB): {name}" not in checked.stdout  # failed, not counted
    assert "path has an unknown token {year}" in checked.stdout
    status = app_cli(stack, "status", app="func-routes")
    assert f"routes: {name} latest version not used: route 'ap': path has an unknown token" in status.stdout
    assert "unhealthy: " in status.stdout and f"routes ({name})" in status.stdout
    state.upload_blob(name, b'[{"name": "ap", "container": "ap-invoices"}]', overwrite=True)
    assert f"routes: {name} in use" in app_cli(stack, "status", app="func-routes").stdout
