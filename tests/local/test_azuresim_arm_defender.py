"""The simulator's ARM reads for MALWARE_SCANNING=defender: Defender for Storage's setting on an account
(Microsoft.Security 2025-06-01) and a custom topic with its event subscriptions (Event Grid 2025-02-15), only at
those API versions, after the token, group and role checks; the control API refuses a setting the model would."""

from __future__ import annotations

import httpx

from local.azuresim.runner import SimulatorProcess

from .test_azuresim_arm import arm, error, grant

SUB, GROUP = "22222222-3333-4444-5555-666666666666", "rg-scan"
ACCOUNT = f"/subscriptions/{SUB}/resourceGroups/{GROUP}/providers/Microsoft.Storage/storageAccounts/stscan"
SETTING = f"{ACCOUNT}/providers/Microsoft.Security/defenderForStorageSettings/current"
TOPIC = f"/subscriptions/{SUB}/resourceGroups/{GROUP}/providers/Microsoft.EventGrid/topics/evgt-scan"
PROPERTIES = {
    "isEnabled": True,
    "malwareScanning": {
        "onUpload": {"isEnabled": True, "capGBPerMonth": 100},
        "scanResultsEventGridTopicResourceId": TOPIC,
        "blobScanResultsOptions": "blobIndexTags",
    },
    "sensitiveDataDiscovery": {"isEnabled": False},
    "overrideSubscriptionLevelSettings": True,
}


async def test_defender_setting_topic_and_subscriptions(http: httpx.AsyncClient, sim: SimulatorProcess) -> None:
    where = {"subscription": SUB, "resourceGroup": GROUP}
    assert (
        await http.put("/_sim/arm/defender", json={**where, "storageAccount": "stscan", "properties": PROPERTIES})
    ).status_code == 200
    subscription: dict[str, object] = {
        "name": "scan-results-queue",
        "storageAccount": "stscan",
        "queueName": "scan-results",
    }
    subscription["includedEventTypes"] = ["Microsoft.Security.MalwareScanningResult"]
    topic = {**where, "name": "evgt-scan", "eventSubscriptions": [subscription]}
    assert (await http.put("/_sim/arm/topics", json=topic)).status_code == 200
    headers = await arm(http, sim)
    security, grid = {"api-version": "2025-06-01"}, {"api-version": "2025-02-15"}

    refused = await http.get(SETTING, params=security, headers=headers)
    assert refused.status_code == 403 and "'Microsoft.Security/defenderForStorageSettings/read'" in refused.text
    app = (await http.get(f"/_sim/apps/{sim.info['client_id']}")).json()
    await grant(http, str(app["servicePrincipalId"]), "Reader", f"/subscriptions/{SUB}/resourceGroups/{GROUP}")

    older = await http.get(SETTING, params={"api-version": "2022-12-01-preview"}, headers=headers)
    assert older.status_code == 400 and error(older) == "NoRegisteredProviderFound"
    assert "The supported api-versions are '2025-06-01'" in older.json()["error"]["message"]
    setting = (await http.get(SETTING, params=security, headers=headers)).json()
    assert setting["id"] == SETTING and setting["name"] == "current"
    assert setting["type"] == "Microsoft.Security/defenderForStorageSettings"
    assert setting["properties"]["malwareScanning"]["operationStatus"]["code"] == "Succeeded"
    assert setting["properties"]["malwareScanning"]["onUpload"] == {"isEnabled": True, "capGBPerMonth": 100}
    other = await http.get(SETTING.replace("stscan", "stother"), params=security, headers=headers)
    assert other.status_code == 404 and error(other) == "ResourceNotFound"

    shown = (await http.get(TOPIC, params=grid, headers=headers)).json()
    assert shown["properties"]["provisioningState"] == "Succeeded" and shown["properties"]["disableLocalAuth"] is True
    listing = (await http.get(f"{TOPIC}/eventSubscriptions", params=grid, headers=headers)).json()
    (only,) = listing["value"]
    destination = only["properties"]["deliveryWithResourceIdentity"]["destination"]
    assert destination["endpointType"] == "StorageQueue" and destination["properties"]["queueName"] == "scan-results"
    assert only["properties"]["topic"] == TOPIC and only["properties"]["provisioningState"] == "Succeeded"
    wrong = await http.get(TOPIC, params={"api-version": "2022-06-15"}, headers=headers)
    assert wrong.status_code == 400 and error(wrong) == "NoRegisteredProviderFound"


async def test_the_control_api_refuses_what_the_model_would(http: httpx.AsyncClient) -> None:
    where = {"subscription": SUB, "resourceGroup": GROUP, "storageAccount": "stscan"}
    for properties, wrong in (
        ({"isEnabled": "yes"}, "isEnabled: expected bool"),
        ({"malwareScanning": {"onUpload": {"capGbPerMonth": 5}}}, "capGbPerMonth: not a writable property"),
        ({"malwareScanning": {"automatedResponse": "BlobSoftDelete"}}, "automatedResponse: not a writable property"),
        ({"malwareScanning": {"blobScanResultsOptions": "tags"}}, "one of ['blobIndexTags', 'None']"),
    ):
        response = await http.put("/_sim/arm/defender", json={**where, "properties": properties})
        assert response.status_code == 400 and wrong in response.text, response.text
