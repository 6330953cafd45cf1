"""MALWARE_SCANNING=defender: where Defender for Storage's verdicts come from, as `check` looks them up in Azure.

Defender scans the app's storage account on upload and publishes each verdict to an Event Grid custom topic, whose
event subscription delivers it to the Storage queue MALWARE_SCAN_QUEUE (infra/modules/defender.bicep). The account
is the one the app stores in (AzureWebJobsStorage); the subscription and resource group are the deployment's own,
which the infra sets as EVENTGRID_AZURE_SUBSCRIPTION_ID and EVENTGRID_RESOURCE_GROUP in every deployment.

MALWARE_SCANNING and MALWARE_SCAN_QUEUE are parsed once, with the app's other scanning settings, in
`pipeline/malware/options.py`; this adds only where `check` finds Defender in Azure.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from .delivery import AZURE_SUBSCRIPTION, RESOURCE_GROUP, read_matching
from .errors import SettingsError
from .pipeline.malware.options import MalwareScanning

NEEDED_WITH = "MALWARE_SCANNING=defender"
# Storage account names: 3 to 24 lower-case letters and digits.
STORAGE_ACCOUNT = re.compile(r"^[a-z0-9]{3,24}$")


@dataclass(frozen=True)
class DefenderTarget:
    """The storage account Defender scans, and the queue its verdicts must reach."""

    azure_subscription_id: str
    resource_group: str
    storage_account: str
    queue: str


def _storage_account(env: Mapping[str, str]) -> str:
    """The account of AzureWebJobsStorage: a connection string's `AccountName=` (Azurite's for
    `UseDevelopmentStorage=true`) or its `BlobEndpoint`'s host, else the identity-based blob endpoint's host."""
    connection = env.get("AzureWebJobsStorage", "").strip()
    parts = {k.strip().lower(): v.strip() for k, v in (p.split("=", 1) for p in connection.split(";") if "=" in p)}
    if parts.get("usedevelopmentstorage", "").lower() == "true":
        name = "devstoreaccount1"
    else:
        endpoint = parts.get("blobendpoint") or env.get("AzureWebJobsStorage__blobServiceUri", "").strip()
        url = urlsplit(endpoint)
        host = url.hostname or ""
        # Azurite's endpoints name the account in the path (http://127.0.0.1:10000/devstoreaccount1).
        local = host == "localhost" or host.replace(".", "").isdigit()
        name = parts.get("accountname") or (url.path.strip("/").split("/")[0] if local else host.split(".")[0])
    name = name.lower()
    if not STORAGE_ACCOUNT.match(name):
        raise SettingsError("AzureWebJobsStorage", "names no storage account for Defender to scan")
    return name


def defender_target_from_env(env: Mapping[str, str], scanning: MalwareScanning) -> DefenderTarget | None:
    """None with MALWARE_SCANNING=off (the default); with `defender`, what `check` reads in Azure."""
    if not scanning.enabled:
        return None
    return DefenderTarget(
        azure_subscription_id=read_matching(
            env, "EVENTGRID_AZURE_SUBSCRIPTION_ID", AZURE_SUBSCRIPTION, "a GUID", needed_with=NEEDED_WITH
        ).lower(),
        resource_group=read_matching(
            env, "EVENTGRID_RESOURCE_GROUP", RESOURCE_GROUP, "a resource group name", needed_with=NEEDED_WITH
        ),
        storage_account=_storage_account(env),
        queue=scanning.queue,
    )
