"""MALWARE_SCANNING as far as `check` reads it: off by default, `defender` with the deployment's subscription, group
and storage account, anything else one line naming the setting."""

from __future__ import annotations

import pytest

from shared.defender_target import DefenderTarget, defender_target_from_env
from shared.errors import SettingsError
from shared.pipeline.malware.options import malware_scanning_from_env

SUB = "8F1C2A4E-5B6D-4E7F-9A0B-1C2D3E4F5A6B"
DEPLOYED = {
    "MALWARE_SCANNING": "defender",
    "EVENTGRID_AZURE_SUBSCRIPTION_ID": SUB,
    "EVENTGRID_RESOURCE_GROUP": "rg-mail",
    "AzureWebJobsStorage__blobServiceUri": "https://stabc123.blob.core.windows.net/",
}


def _target(env: dict[str, str]) -> DefenderTarget | None:
    # As parse_settings reads it: the scanning section first (mode, queue), then where Defender is.
    return defender_target_from_env(env, malware_scanning_from_env(env, {}))


def test_off_unless_defender() -> None:
    assert _target({}) is None
    assert _target({"MALWARE_SCANNING": " Off "}) is None


def test_defender_in_a_deployment_and_with_a_connection_string() -> None:
    assert _target(DEPLOYED) == DefenderTarget(SUB.lower(), "rg-mail", "stabc123", "scan-results")
    local = {**DEPLOYED, "MALWARE_SCAN_QUEUE": "verdicts", "AzureWebJobsStorage": "AccountName=devstoreaccount1;x=y"}
    assert _target(local) == DefenderTarget(SUB.lower(), "rg-mail", "devstoreaccount1", "verdicts")
    for storage in ("UseDevelopmentStorage=true", "BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;x=y"):
        found = _target({**DEPLOYED, "AzureWebJobsStorage": storage})
        assert found is not None and found.storage_account == "devstoreaccount1"


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"MALWARE_SCANNING": "clamav"}, "MALWARE_SCANNING"),
        ({"EVENTGRID_RESOURCE_GROUP": ""}, "EVENTGRID_RESOURCE_GROUP"),
        ({"EVENTGRID_AZURE_SUBSCRIPTION_ID": "not-a-guid"}, "EVENTGRID_AZURE_SUBSCRIPTION_ID"),
        ({"MALWARE_SCAN_QUEUE": "Scan_Results"}, "MALWARE_SCAN_QUEUE"),
        ({"AzureWebJobsStorage__blobServiceUri": ""}, "AzureWebJobsStorage"),
    ],
)
def test_a_broken_setting_is_named(change: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError) as caught:
        _target({**DEPLOYED, **change})
    assert caught.value.name == named and "\n" not in str(caught.value)
