"""The simulator's Azure Resource Manager refuses what ARM refuses: no token (401 with a challenge), a token for
another resource, no api-version, an unknown resource group or site (404), a principal without a role whose actions
include reading app settings (403, Reader included); and answers a StringDictionary to one that has it."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from local.azuresim.runner import SimulatorProcess
from tests.local.simclient import get_token

SUB, GROUP = "11111111-2222-3333-4444-555555555555", "rg-arm"
SITE = f"/subscriptions/{SUB}/resourceGroups/{GROUP}/providers/Microsoft.Web/sites/func-a"
LIST = f"{SITE}/config/appsettings/list"
API = {"api-version": "2024-04-01"}
SETTINGS = {"MAILBOXES": "a@contoso.com", "WEBHOOK_FUNCTION_KEY": "@Microsoft.KeyVault(VaultName=kv;SecretName=k)"}


@pytest.fixture(scope="module")
async def principal(http: httpx.AsyncClient, sim: SimulatorProcess) -> str:
    site = {"subscription": SUB, "resourceGroup": GROUP, "name": "func-a", "appSettings": SETTINGS}
    assert (await http.put("/_sim/arm/sites", json=site)).status_code == 200
    assert (await http.put("/_sim/arm/vaults", json={**site, "name": "kv-a"})).status_code == 200
    app = (await http.get(f"/_sim/apps/{sim.info['client_id']}")).json()
    return str(app["servicePrincipalId"])


async def arm(http: httpx.AsyncClient, sim: SimulatorProcess) -> dict[str, str]:
    return {"Authorization": f"Bearer {await get_token(http, sim, 'https://management.azure.com/.default')}"}


async def grant(http: httpx.AsyncClient, principal: str, role: str, scope: str) -> None:
    body = {"principalId": principal, "role": role, "scope": scope}
    assert (await http.post("/_sim/arm/roleAssignments", json=body)).status_code == 200


def error(response: httpx.Response) -> Any:
    return response.json()["error"]["code"]


async def test_refusals_before_authorization(http: httpx.AsyncClient, sim: SimulatorProcess, principal: str) -> None:
    anonymous = await http.post(LIST, params=API)
    assert anonymous.status_code == 401 and error(anonymous) == "AuthenticationFailed"
    assert anonymous.headers["WWW-Authenticate"].startswith("Bearer authorization_uri=")
    graph = {"Authorization": f"Bearer {await get_token(http, sim)}"}
    wrong = await http.post(LIST, params=API, headers=graph)
    assert wrong.status_code == 401 and error(wrong) == "InvalidAuthenticationTokenAudience"
    headers = await arm(http, sim)
    versionless = await http.post(LIST, headers=headers)
    assert versionless.status_code == 400 and error(versionless) == "MissingApiVersionParameter"
    group = await http.post(LIST.replace(GROUP, "rg-other"), params=API, headers=headers)
    assert group.status_code == 404 and error(group) == "ResourceGroupNotFound"
    site = await http.post(LIST.replace("func-a", "func-b"), params=API, headers=headers)
    assert site.status_code == 404 and error(site) == "ResourceNotFound"


async def test_reading_settings_needs_a_role_with_the_list_action(
    http: httpx.AsyncClient, sim: SimulatorProcess, principal: str
) -> None:
    headers = await arm(http, sim)
    none = await http.post(LIST, params=API, headers=headers)
    assert none.status_code == 403 and error(none) == "AuthorizationFailed"
    assert "'Microsoft.Web/sites/config/list/action'" in none.json()["error"]["message"]
    await grant(http, principal, "Reader", f"/subscriptions/{SUB}/resourceGroups/{GROUP}")
    reader = await http.post(LIST, params=API, headers=headers)
    assert reader.status_code == 403  # reading settings is an action, not a read
    vault = await http.get(
        f"/subscriptions/{SUB}/resourceGroups/{GROUP}/providers/Microsoft.KeyVault/vaults/kv-a",
        params=API,
        headers=headers,
    )
    assert vault.status_code == 200 and vault.json()["properties"]["vaultUri"] == f"{sim.url}/"
    await grant(http, principal, "Website Contributor", SITE)
    listed = await http.post(LIST, params=API, headers=headers)
    assert listed.status_code == 200
    assert listed.json() == {
        "id": f"{SITE}/config/appsettings",
        "name": "appsettings",
        "type": "Microsoft.Web/sites/config",
        "location": "westeurope",
        "properties": SETTINGS,  # references as written: the platform resolves them for the app, not for ARM
    }


async def test_event_grid_reads_answer_arm_shapes_and_404(
    http: httpx.AsyncClient, sim: SimulatorProcess, principal: str
) -> None:
    grid = f"/subscriptions/{SUB}/resourceGroups/{GROUP}/providers/Microsoft.EventGrid"
    version = {"api-version": "2025-02-15"}
    headers = await arm(http, sim)
    await grant(http, principal, "Reader", f"/subscriptions/{SUB}/resourceGroups/{GROUP}")
    missing = await http.get(f"{grid}/partnerConfigurations/default", params=version, headers=headers)
    assert missing.status_code == 404 and error(missing) == "ResourceNotFound"
    body = {"authorizedPartnersList": [{"partnerName": "MicrosoftGraphAPI"}], "defaultMaximumExpirationTimeInDays": 30}
    assert (await http.put(f"/_sim/eventgrid/partnerConfigurations/{SUB}/{GROUP}", json=body)).status_code == 200
    found = await http.get(f"{grid}/partnerConfigurations/default", params=version, headers=headers)
    assert found.status_code == 200, found.text
    authorization = found.json()["properties"]["partnerAuthorization"]
    assert authorization["defaultMaximumExpirationTimeInDays"] == 30
    (partner,) = authorization["authorizedPartnersList"]
    assert partner["partnerName"] == "MicrosoftGraphAPI" and partner["authorizationExpirationTimeInUtc"].endswith("Z")
    for path in ("partnerTopics/absent-mail", "partnerTopics/absent-mail/eventSubscriptions"):
        topic = await http.get(f"{grid}/{path}", params=version, headers=headers)
        assert topic.status_code == 404 and error(topic) == "ResourceNotFound"
