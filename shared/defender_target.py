"""MALWARE_SCANNING=defender: where Defender for Storage's verdicts come from, as `check` looks them up in Azure.

Defender scans the app's storage account on upload and publishes each verdict to an Event Grid custom topic, whose
event subscription delivers it to the Storage queue MALWARE_SCAN_QUEUE (infra/modules/defender.bicep). The account
is the one the app stores in (AzureWebJobsStorage); the subscription and resource group are the deployment's own,
which the infra sets as EVENTGRID_AZURE_SUBSCRIPTION_ID and EVENTGRID_RESOURCE_GROUP in every deployment.

The app's side of MALWARE_SCANNING (the verdict worker, quarantine, hand-off waiting) reads its settings in its own
module; this reads only what the check needs, with the same names and values (issue 20's contract).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from .delivery import AZURE_SUBSCRIPTION, RESOURCE_GROUP, read_matching
from .env import read_queue_name
from .errors import SettingsError

DEFAULT_SCAN_QUEUE = "scan-results"
NEEDED_WITH = "MALWARE_SCANNING=defender"
SCANNING_MODES = ("off", "defender")
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
    """The account of AzureWebJobsStorage: `AccountName=` of a connection string, else the blob endpoint's host."""
    connection = env.get("AzureWebJobsStorage", "").strip()
    parts = dict(p.split("=", 1) for p in connection.split(";") if "=" in p)
    name = parts.get("AccountName") or (
        urlsplit(env.get("AzureWebJobsStorage__blobServiceUri", "").strip()).hostname or ""
    )
    name = name.split(".")[0].lower()
    if not STORAGE_ACCOUNT.match(name):
        raise SettingsError("AzureWebJobsStorage", "names no storage account for Defender to scan")
    return name


def defender_target_from_env(env: Mapping[str, str]) -> DefenderTarget | None:
    """None with MALWARE_SCANNING=off (the default); with `defender`, what `check` reads in Azure."""
    mode = env.get("MALWARE_SCANNING", "").strip().lower() or "off"
    if mode not in SCANNING_MODES:
        raise SettingsError("MALWARE_SCANNING", f"must be off or defender, got {mode!r}")
    if mode == "off":
        return None
    return DefenderTarget(
        azure_subscription_id=read_matching(
            env, "EVENTGRID_AZURE_SUBSCRIPTION_ID", AZURE_SUBSCRIPTION, "a GUID", needed_with=NEEDED_WITH
        ).lower(),
        resource_group=read_matching(
            env, "EVENTGRID_RESOURCE_GROUP", RESOURCE_GROUP, "a resource group name", needed_with=NEEDED_WITH
        ),
        storage_account=_storage_account(env),
        queue=read_queue_name(env, "MALWARE_SCAN_QUEUE", DEFAULT_SCAN_QUEUE) or DEFAULT_SCAN_QUEUE,
    )
