"""The schema check (arm_schema.py): infra/ has no property the ARM models of its API versions would refuse, and an
error of each kind planted in a copy of infra/ is named with its resource and path."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from .arm_schema import MODELS, check_schema
from .bicep_checks import INFRA, load, resources
from .conftest import edit


def test_every_resource_matches_its_arm_model() -> None:
    assert check_schema(INFRA) == []


def test_every_resource_type_is_checked() -> None:
    trees = load(INFRA)
    declared = {
        (r.type, trees[r.file]["resources"][r.symbol]["api_version"]) for r in resources(trees) if not r.existing
    }
    assert declared <= set(MODELS), declared - set(MODELS)


SITE = "modules/functionapp.bicep: site (Microsoft.Web/sites@2024-04-01): "
STORAGE = "modules/storage.bicep: storage (Microsoft.Storage/storageAccounts@2023-05-01): "
RULES = "modules/alerts.bicep: alertRules (Microsoft.Insights/scheduledQueryRules@2023-12-01): "
DEFENDER = "modules/defender.bicep: defender (Microsoft.Security/defenderForStorageSettings@2025-06-01): "
TOPIC = "modules/defender.bicep: topic (Microsoft.EventGrid/topics@2025-02-15): "
PLANTED: dict[str, tuple[Callable[[Path], None], str]] = {
    "miscased name": (
        lambda d: edit(d / "modules/storage.bicep", "allowSharedKeyAccess: false", "allowSharedKeyaccess: false"),
        STORAGE + "properties.allowSharedKeyaccess: unknown property (the model spells it allowSharedKeyAccess)",
    ),
    "unknown name": (
        lambda d: edit(
            d / "modules/functionapp.bicep", "      ftpsState: 'Disabled'\n", "      ftpState: 'Disabled'\n"
        ),
        SITE + "properties.siteConfig.ftpState: unknown property",
    ),
    "read-only property": (
        lambda d: edit(
            d / "modules/functionapp.bicep", "    httpsOnly: true\n", "    httpsOnly: true\n    defaultHostName: 'x'\n"
        ),
        SITE + "properties.defaultHostName: read-only property (set by Azure, not by a template)",
    ),
    "wrong type": (
        lambda d: edit(d / "modules/functionapp.bicep", "    httpsOnly: true\n", "    httpsOnly: 'true'\n"),
        SITE + "properties.httpsOnly: expected bool (bool), got string 'true'",
    ),
    "wrong type of a parameter": (
        lambda d: edit(d / "modules/functionapp.bicep", "instanceCount: httpAlwaysReady", "instanceCount: appName"),
        SITE + "properties.functionAppConfig.scaleAndConcurrency.alwaysReady[0].instanceCount: expected number (int),"
        " got a string parameter",
    ),
    "value outside the enum": (
        lambda d: edit(d / "modules/storage.bicep", "minimumTlsVersion: 'TLS1_2'", "minimumTlsVersion: 'TLS1_4'"),
        STORAGE + "properties.minimumTlsVersion: 'TLS1_4' is not one of ['tls1_0', 'tls1_1', 'tls1_2', 'tls1_3']",
    ),
    "value outside the enum, in a loop": (
        lambda d: edit(d / "modules/alerts.bicep", "timeAggregation: 'Count'", "timeAggregation: 'Sum'"),
        RULES + "properties.criteria.allOf[0].timeAggregation: 'Sum' is not one of",
    ),
    "not a duration, from a loop variable": (
        lambda d: edit(
            d / "modules/alerts.bicep",
            "    window: 'PT30M'\n    queryRange: 'PT30M'\n",
            "    window: '30 minutes'\n    queryRange: 'PT30M'\n",
        ),
        RULES + "properties.windowSize: '30 minutes' is not an ISO 8601 duration",
    ),
    "miscased name, TypeSpec model": (
        lambda d: edit(d / "modules/defender.bicep", "capGBPerMonth: capGBPerMonth", "capGbPerMonth: capGBPerMonth"),
        DEFENDER + "properties.malwareScanning.onUpload.capGbPerMonth: unknown property (the model spells it "
        "capGBPerMonth)",
    ),
    "property of a later API version": (
        lambda d: edit(
            d / "modules/defender.bicep",
            "      blobScanResultsOptions: 'blobIndexTags'\n",
            "      blobScanResultsOptions: 'blobIndexTags'\n      automatedResponse: 'BlobSoftDelete'\n",
        ),
        DEFENDER + "properties.malwareScanning.automatedResponse: unknown property",
    ),
    "value outside a TypeSpec enum": (
        lambda d: edit(
            d / "modules/defender.bicep",
            "blobScanResultsOptions: 'blobIndexTags'",
            "blobScanResultsOptions: 'indexTags'",
        ),
        DEFENDER
        + "properties.malwareScanning.blobScanResultsOptions: 'indexTags' is not one of ['blobindextags', 'none']",
    ),
    "wrong type in a property's for-expression": (
        lambda d: edit(d / "modules/defender.bicep", "]): '${name}/']", "]): 5]"),
        DEFENDER
        + "properties.malwareScanning.onUpload.filters.excludeBlobsWithPrefix[0]: expected string (str), got number 5",
    ),
    "wrong type on the topic": (
        lambda d: edit(d / "modules/defender.bicep", "disableLocalAuth: true", "disableLocalAuth: 'yes'"),
        TOPIC + "properties.disableLocalAuth: expected bool (bool), got string 'yes'",
    ),
    "not a duration, in the conditional rules": (
        lambda d: edit(d / "modules/alerts.bicep", "queryRange: 'PT1H'", "queryRange: '1 hour'"),
        RULES + "properties.overrideQueryTimeRange: '1 hour' is not an ISO 8601 duration",
    ),
    "API version no model is pinned for": (
        lambda d: edit(
            d / "modules/functionapp.bicep",
            "'Microsoft.Web/sites@2024-04-01' = {",
            "'Microsoft.Web/sites@2022-03-01' = {",
        ),
        "modules/functionapp.bicep: site (Microsoft.Web/sites@2022-03-01): no ARM model is pinned",
    ),
}


@pytest.mark.parametrize("planted", list(PLANTED))
def test_a_planted_schema_error_is_named(tmp_path: Path, planted: str) -> None:
    copy = tmp_path / "infra"
    shutil.copytree(INFRA, copy)
    plant, expected = PLANTED[planted]
    plant(copy)
    problems = check_schema(copy)
    assert any(p.startswith(expected) for p in problems), problems
