"""infra/ checked offline: it parses, keeps its invariants, sets every app setting, and passes checkov.

The "broken copy" tests copy infra/ to a temporary folder, break one module the way a careless edit would,
and assert that the checks name the problem.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from .app_settings import names_from_os_environ, names_passed_with_env, settings_read_by_app
from .bicep_checks import INFRA, REPO, app_settings, app_settings_layers, bicep_files, check_invariants, load, parse
from .checkov_run import run_checkov
from .conftest import edit
from .test_defender import DEFENDER_BREAKAGES

# Settings the app reads that the deployment may leave unset, each with the reason. A name the app reads is
# either set by infra/modules/functionapp.bicep or listed here; nothing else passes.
OPTIONAL_SETTINGS = {
    "MALWARE_SCANNING": "defaults to off; the infra sets defender with its malwareScanning parameter (issue 20 part 4)",
    "MALWARE_SCAN_QUEUE": "defaults to scan-results, the queue the infra makes for Defender's scan results",
    "MALWARE_SCAN_TIMEOUT_MINUTES": "defaults to 30 minutes (README)",
    "QUARANTINE_CONTAINER": "defaults to quarantine, the container the infra makes when scanning is on",
    "AzureWebJobsStorage": "the connection-string form; Azure uses AzureWebJobsStorage__* with the identity",
    "WEBSITE_HOSTNAME": "set by the platform on every Function App (WEBHOOK_BASE_URL is set anyway)",
    "WEBSITE_SITE_NAME": "set by the platform on every Function App (EVENTGRID_PARTNER_TOPIC is set anyway)",
    "GRAPH_AUTHORITY_HOST": "defaults to https://login.microsoftonline.com, the public cloud (README)",
    "GRAPH_SCOPE": "defaults to the origin of GRAPH_API_URL + /.default; set only behind a gateway (README)",
    "GRAPH_API_URL": "defaults to https://graph.microsoft.com/v1.0 (README)",
    "KEY_VAULT_VERIFY_CHALLENGE_RESOURCE": "only relaxed for a Key Vault emulator; Azure keeps the default true",
    "SUBSCRIPTION_LIFETIME_MINUTES": "defaults to Graph's maximum for messages, 10,080 (README)",
    "GRAPH_MAX_RETRIES": "defaults to 4 (README)",
    "GRAPH_MAX_RETRY_AFTER_SECONDS": "defaults to 60 (README)",
    # Ingest tunables: each has a default for document capture (README); an operator sets one on the
    # Function App when a mailbox needs it.
    "ATTACHMENT_EXTENSIONS": "defaults to every extension (README)",
    "ATTACHMENT_CONTENT_TYPES": "defaults to every content type (README)",
    "ATTACHMENT_MIN_BYTES": "defaults to 0 (README)",
    "ATTACHMENT_MAX_BYTES": "defaults to 150 MiB, Exchange's largest message (README)",
    "INCLUDE_INLINE_ATTACHMENTS": "defaults to false: signature logos are skipped (README)",
    "EXTRACT_ATTACHED_MAIL": "defaults to true (README)",
    "ATTACHED_MAIL_MAX_DEPTH": "the old name of UNPACK_MAX_DEPTH, read when that is not set (README)",
    "UNPACK_MAX_DEPTH": "defaults to 5 (README)",
    "MAIL_CONNECTIONS_PER_ACCOUNT": "defaults to 4 signed-in connections per account and instance (README)",
    "EXTRACT_ARCHIVES": "defaults to true (README)",
    "ARCHIVE_MAX_FILES": "defaults to 1,000 per mail (README)",
    "ARCHIVE_MAX_BYTES": "defaults to 1 GiB uncompressed per mail (README)",
    "ARCHIVE_MAX_RATIO": "defaults to 100 (README)",
    "SMIME_CERTIFICATES": "defaults to none: encrypted mail is stored as smime.p7m, not decrypted (README)",
    "SMIME_CA_CERTIFICATES": "defaults to none: S/MIME signers are trusted through the system's CAs only (README)",
    "SAVE_MESSAGE": "defaults to never (README)",
    "SAVE_BODY": "defaults to never (README)",
    "DUPLICATES": "defaults to mark: every copy stored, later ones marked duplicateOf (README)",
    "AFTER_INGEST": "defaults to none, which needs only Mail.Read (README)",
    "AFTER_INGEST_BY_MAILBOX": "defaults to no per-mailbox override (README)",
    "RECONCILE_MINUTES": "defaults to an hourly delta reconciliation (README)",
    "BACKFILL_HOURS": "defaults to 0: a new folder starts from now (README)",
    "FULL_RESYNC_HOURS": "defaults to 72: the window of a full resync after a refused delta link (README)",
    "ROUTES": "defaults to no routes: every mail in ATTACHMENTS_CONTAINER, standard layout (README, Routes)",
    "ROUTES_FILE": "defaults to none; ROUTES wins when both are set (README, Routes)",
    "ROUTES_BLOB": "defaults to none: routes from ROUTES or ROUTES_FILE (README, Routes)",
    "INGESTED_QUEUE": "defaults to mail-ingested, a queue in the app's own storage account (README, Hand-off)",
    "TOKEN_REFRESH_HOURS": "delegated mode only; defaults to a daily refresh, well inside the 90-day limit (README)",
}

# Settings the app reads that `azd env set` cannot set, each with the reason. Every other one has a way in: a
# parameter of main.parameters.json (`${NAME}`) for those the template owns, else infra/hooks/app-settings.txt.
NO_WAY_IN_FROM_AZD = {
    "AzureWebJobsStorage": "the connection-string form; Azure uses AzureWebJobsStorage__* with the identity",
    "AzureWebJobsStorage__blobServiceUri": "the deployment's own storage account",
    "AzureWebJobsStorage__queueServiceUri": "the deployment's own storage account",
    "KEY_VAULT_URL": "the deployment's own vault",
    "WEBHOOK_BASE_URL": "the app's own host name, which Graph's subscriptions call",
    "WEBSITE_HOSTNAME": "set by the platform",
    "WEBSITE_SITE_NAME": "set by the platform: the Function App's name",
    "EVENTGRID_AZURE_SUBSCRIPTION_ID": "the deployment's own subscription, which the partner topic is in",
    "EVENTGRID_RESOURCE_GROUP": "the deployment's own resource group, which the partner topic is in",
    "EVENTGRID_LOCATION": "the deployment's own region, which the partner topic is in",
}

# The scanner must keep finding these, or a refactor of shared/settings.py has defeated it.
CORE_SETTINGS = {"GRAPH_TENANT_ID", "GRAPH_CLIENT_ID", "GRAPH_CLIENT_SECRET", "MAILBOXES", "KEY_VAULT_URL"}


@pytest.fixture(scope="session")
def checkov_report() -> dict[str, Any]:
    return run_checkov(INFRA)


def cut_resource(path: Path, symbol: str) -> None:
    """Remove `resource <symbol> ... = {...}` (up to its closing brace at column 0)."""
    text = path.read_text()
    match = re.search(rf"^resource {symbol} .*?^}}\n", text, flags=re.MULTILINE | re.DOTALL)
    assert match, f"no resource {symbol} in {path.name}"
    path.write_text(text[: match.start()] + text[match.end() :])


# --- parsing and invariants ---------------------------------------------------------------------------------


@pytest.mark.parametrize("path", bicep_files(INFRA), ids=lambda p: p.relative_to(INFRA).as_posix())
def test_every_bicep_file_parses(path: Path) -> None:
    tree = parse(path)
    assert tree.get("resources") or tree.get("modules"), f"{path.name} declares nothing"


def test_main_uses_every_module() -> None:
    modules = {m["detail"]["path"] for m in parse(INFRA / "main.bicep")["modules"].values()}
    on_disk = {p.relative_to(INFRA).as_posix() for p in (INFRA / "modules").glob("*.bicep")}
    assert modules == on_disk


def test_invariants_hold() -> None:
    assert check_invariants(INFRA) == []


BREAKAGES: dict[str, tuple[Callable[[Path], None], str]] = {
    "shared key on": (
        lambda d: edit(d / "modules/storage.bicep", "allowSharedKeyAccess: false", "allowSharedKeyAccess: true"),
        "allowSharedKeyAccess must be false",
    ),
    "hierarchical namespace": (
        lambda d: edit(d / "modules/storage.bicep", "isHnsEnabled: false", "isHnsEnabled: true"),
        "isHnsEnabled must be false",
    ),
    "old TLS on storage": (
        lambda d: edit(d / "modules/storage.bicep", "minimumTlsVersion: 'TLS1_2'", "minimumTlsVersion: 'TLS1_0'"),
        "minimumTlsVersion must be TLS1_2 or newer",
    ),
    "queue role missing": (
        lambda d: cut_resource(d / "modules/roles.bicep", "queueContributor"),
        "missing role assignment: Storage Queue Data Contributor",
    ),
    "metrics role missing": (
        lambda d: cut_resource(d / "modules/roles.bicep", "metricsPublisher"),
        "missing role assignment: Monitoring Metrics Publisher",
    ),
    "broader role": (
        lambda d: edit(
            d / "modules/roles.bicep",
            "storageQueueDataContributor: '974c5e8b-45b9-4653-ba55-5f855dd0fb88'",
            "storageQueueDataContributor: '17d1049b-9a84-46fb-8f53-869881c3d3ab'",  # Storage Account Contributor
        ),
        "is not one of the least-privilege roles",
    ),
    "role without guid name": (
        lambda d: edit(
            d / "modules/roles.bicep",
            "name: guid(storage.id, principalId, roles.storageBlobDataOwner)",
            "name: 'blob-owner'",
        ),
        "the name must come from guid()",
    ),
    "role at resource group scope": (
        lambda d: edit(d / "modules/roles.bicep", "  scope: appInsights\n", ""),
        "Monitoring Metrics Publisher must be scoped to a Microsoft.Insights/components",
    ),
    "vault with access policies": (
        lambda d: edit(d / "modules/keyvault.bicep", "enableRbacAuthorization: true", "enableRbacAuthorization: false"),
        "enableRbacAuthorization must be true",
    ),
    "purge protection off": (
        lambda d: edit(d / "modules/keyvault.bicep", "enablePurgeProtection: true", "enablePurgeProtection: false"),
        "enablePurgeProtection must be true",
    ),
    "http allowed": (
        lambda d: edit(d / "modules/functionapp.bicep", "httpsOnly: true", "httpsOnly: false"),
        "httpsOnly must be true",
    ),
    "old TLS on the app": (
        lambda d: edit(d / "modules/functionapp.bicep", "      minTlsVersion: '1.2'", "      minTlsVersion: '1.0'"),
        "siteConfig.minTlsVersion must be 1.2 or newer",
    ),
    "ftp on": (
        lambda d: edit(
            d / "modules/functionapp.bicep",
            "name: 'ftp'\n  properties: {\n    allow: false",
            "name: 'ftp'\n  properties: {\n    allow: true",
        ),
        "basic publishing credentials for ftp must be off",
    ),
    "no always-ready http": (
        lambda d: edit(d / "modules/functionapp.bicep", "name: 'http'", "name: 'function:ingest'"),
        "no always-ready instances for the 'http' scale group",
    ),
    "secret in plain text": (
        lambda d: edit(
            d / "modules/functionapp.bicep",
            "GRAPH_CLIENT_SECRET: empty(graphClientSecretName) ? '' : '@Microsoft.KeyVault(",
            "GRAPH_CLIENT_SECRET: empty(graphClientSecretName) ? '' : webhookFunctionKey // '@Microsoft.KeyVault(",
        ),
        "GRAPH_CLIENT_SECRET must be a Key Vault reference",
    ),
    "secret without a credential branch": (
        lambda d: edit(
            d / "modules/functionapp.bicep",
            "GRAPH_CLIENT_SECRET: empty(graphClientSecretName) ? '' : '@Microsoft.KeyVault(",
            "GRAPH_CLIENT_SECRET: empty(graphClientSecretName) ? 'plain' : '@Microsoft.KeyVault(",
        ),
        "GRAPH_CLIENT_SECRET must be a Key Vault reference",
    ),
    "storage connection string": (
        lambda d: edit(
            d / "modules/functionapp.bicep",
            "  AzureWebJobsStorage__credential: 'managedidentity'\n",
            "  AzureWebJobsStorage: 'DefaultEndpointsProtocol=https'\n",
        ),
        "AzureWebJobsStorage is set",
    ),
    "no consent alert": (
        lambda d: edit(d / "modules/alerts.bicep", '"auth.needs_consent"', '"auth.other"'),
        "no alert rule watches the auth.needs_consent event",
    ),
    "secret in an output": (
        lambda d: edit(
            d / "main.bicep", "output MAILBOXES string = mailboxes", "output MAILBOXES string = graphClientSecret"
        ),
        "output MAILBOXES exposes the secure parameter graphClientSecret",
    ),
    "portal changes dropped": (
        lambda d: edit(
            d / "modules/functionapp.bicep", "keepAppSettings ? currentSettings.list().properties : {}", "{}"
        ),
        "the app's current settings are not kept",
    ),
    "azd values under the app's": (
        lambda d: edit(
            d / "modules/functionapp.bicep",
            "    keepAppSettings ? currentSettings.list().properties : {},\n    appSettingsFromAzd,\n",
            "    appSettingsFromAzd,\n    keepAppSettings ? currentSettings.list().properties : {},\n",
        ),
        "union the current settings, then appSettingsFromAzd, then the owned settings",
    ),
    "parameter not supplied": (
        lambda d: edit(d / "main.parameters.json", '"mailboxes": {', '"mailboxList": {'),
        "main.parameters.json does not set the required parameter mailboxes",
    ),
}


BREAKAGES |= DEFENDER_BREAKAGES


@pytest.mark.parametrize("breakage", list(BREAKAGES))
def test_broken_copy_is_caught(infra_copy: Path, breakage: str) -> None:
    breaks, expected = BREAKAGES[breakage]
    breaks(infra_copy)
    problems = check_invariants(infra_copy)
    assert any(expected in p for p in problems), problems


# --- the settings contract ------------------------------------------------------------------------------------


def test_every_setting_the_app_reads_is_set_or_optional() -> None:
    read = settings_read_by_app(REPO)
    assert read >= CORE_SETTINGS, "the settings scanner no longer finds the core settings"
    missing = read - set(app_settings(load(INFRA))) - set(OPTIONAL_SETTINGS)
    assert not missing, (
        f"set these in infra/modules/functionapp.bicep or list them in OPTIONAL_SETTINGS: {sorted(missing)}"
    )


def test_optional_settings_are_still_read() -> None:
    stale = set(OPTIONAL_SETTINGS) - settings_read_by_app(REPO)
    assert not stale, f"OPTIONAL_SETTINGS lists names the app no longer reads: {sorted(stale)}"


def test_a_setting_missing_from_infra_is_caught(infra_copy: Path) -> None:
    edit(infra_copy / "modules/functionapp.bicep", "  MAILBOXES: mailboxes\n", "")
    missing = settings_read_by_app(REPO) - set(app_settings(load(infra_copy))) - set(OPTIONAL_SETTINGS)
    assert missing == {"MAILBOXES"}


def hook_list(infra: Path = INFRA) -> set[str]:
    lines = (infra / "hooks" / "app-settings.txt").read_text().splitlines()
    return {line.strip() for line in lines if line.strip() and not line.startswith("#")}


def test_every_setting_can_be_set_with_azd_env_set() -> None:
    parameters = set(re.findall(r"\$\{([A-Za-z_]+)", (INFRA / "main.parameters.json").read_text()))
    owned = app_settings_layers(load(INFRA))[-1]
    missing = settings_read_by_app(REPO) - parameters - hook_list() - set(NO_WAY_IN_FROM_AZD)
    assert not missing, f"no way in from `azd env set`: add them to infra/hooks/app-settings.txt: {sorted(missing)}"
    unset = set(owned) & settings_read_by_app(REPO) - set(NO_WAY_IN_FROM_AZD) - parameters
    assert not unset, f"the template owns these but main.parameters.json passes no ${{NAME}}: {sorted(unset)}"


def test_the_hook_passes_every_setting_the_template_does_not_own() -> None:
    owned = set(app_settings_layers(load(INFRA))[-1])
    assert hook_list() == settings_read_by_app(REPO) - owned - set(NO_WAY_IN_FROM_AZD)


def test_a_new_setting_without_a_way_in_is_caught(infra_copy: Path) -> None:
    edit(infra_copy / "hooks" / "app-settings.txt", "ROUTES\n", "")
    assert settings_read_by_app(REPO) - hook_list(infra_copy) - set(NO_WAY_IN_FROM_AZD) >= {"ROUTES"}


def test_settings_scanner_finds_each_form() -> None:
    source = (
        "def parse(env):\n"
        "    a = env.get('A_ONE', '')\n"
        "    b = _required(env, 'B_TWO')\n"
        "    c = _int(env, 'C_THREE', 4, 0, 10)\n"
        "    d = env['D_FOUR']\n"
        "    raise SettingsError('NOT_READ', 'message')\n"
    )
    assert names_passed_with_env(source) == {"A_ONE", "B_TWO", "C_THREE", "D_FOUR"}
    app = (
        "import os\nx = os.environ.get('E_FIVE')\ny = os.getenv('F_SIX')\nz = os.environ['G_SEVEN']\ns = '%H_EIGHT%'\n"
    )
    assert names_from_os_environ(app) == {"E_FIVE", "F_SIX", "G_SEVEN", "H_EIGHT"}


def test_webhook_key_contract() -> None:
    settings = app_settings(load(INFRA))
    assert settings["WEBHOOK_FUNCTION_KEY"] == (
        "@Microsoft.KeyVault(VaultName=${keyVaultName};SecretName=${webhookFunctionKeySecretName})"
    )
    vault = parse(INFRA / "modules/keyvault.bicep")
    output = vault["outputs"]["webhookFunctionKeySecretName"]["value"]["operator"]["operands"]
    assert output == {"operand_1": "webhookKeySecret", "operand_2": "name"}
    assert vault["resources"]["webhookKeySecret"]["config"]["name"] == "webhook-function-key"
    # The host key of the same value is set by the postdeploy hook, once the host runs (test_platform.py).
    for hook in ("postdeploy.sh", "postdeploy.ps1"):
        text = (INFRA / "hooks" / hook).read_text()
        assert "--key-name graphwebhook" in text and "WEBHOOK_FUNCTION_KEY" in text, hook


def test_setup_doc_names_only_real_settings() -> None:
    """Every `UPPER_CASE` name in docs/setup.md is a setting, an azd variable or an output of the deployment."""
    main = parse(INFRA / "main.bicep")
    parameters = (INFRA / "main.parameters.json").read_text()
    known = (
        settings_read_by_app(REPO)
        | set(app_settings(load(INFRA)))
        | set(re.findall(r"\$\{([A-Z_]+)", parameters))
        | set(main["outputs"])
    )
    named = set(re.findall(r"`([A-Z][A-Z0-9]*_[A-Z0-9_]+)`", (REPO / "docs" / "setup.md").read_text()))
    assert named, "docs/setup.md names no setting"
    assert named <= known, f"docs/setup.md names unknown settings: {sorted(named - known)}"


# --- checkov --------------------------------------------------------------------------------------------------


def test_checkov_reports_no_failed_check(checkov_report: dict[str, Any]) -> None:
    summary = checkov_report["summary"]
    failed = [f"{c['check_id']} {c['resource']} ({c['file_path']})" for c in checkov_report["results"]["failed_checks"]]
    assert summary["failed"] == 0, failed
    assert summary["parsing_errors"] == 0, checkov_report["results"]["parsing_errors"]
    assert summary["passed"] > 0


def test_checkov_suppressions_carry_a_reason(checkov_report: dict[str, Any]) -> None:
    for check in checkov_report["results"]["skipped_checks"]:
        reason = check["check_result"].get("suppress_comment", "")
        assert len(reason) >= 20 and reason != "No comment provided", f"{check['check_id']} in {check['file_path']}"


def test_checkov_catches_a_broken_copy(infra_copy: Path) -> None:
    edit(infra_copy / "modules/storage.bicep", "minimumTlsVersion: 'TLS1_2'", "minimumTlsVersion: 'TLS1_0'")
    edit(infra_copy / "modules/keyvault.bicep", "enablePurgeProtection: true", "enablePurgeProtection: false")
    report = run_checkov(infra_copy)
    failed = {c["check_id"] for c in report["results"]["failed_checks"]}
    assert {"CKV_AZURE_44", "CKV_AZURE_110"} <= failed


# --- azd ------------------------------------------------------------------------------------------------------


def test_azure_yaml_hooks_exist() -> None:
    text = (REPO / "azure.yaml").read_text()
    for hook in ("preprovision", "postprovision", "postdeploy"):
        assert f"  {hook}:" in text
        for script in (f"infra/hooks/{hook}.sh", f"infra/hooks/{hook}.ps1"):
            assert f"run: {script}" in text
            assert (REPO / script).is_file()
    assert "host: function" in text


def test_abbreviations_name_every_resource() -> None:
    abbreviations = json.loads((INFRA / "abbreviations.json").read_text())
    used = set(re.findall(r"abbrs\.(\w+)", (INFRA / "main.bicep").read_text()))
    assert used <= set(abbreviations), used - set(abbreviations)


def _fake_azd(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """An `azd` on PATH that records `azd env set NAME VALUE` into a file."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    store = tmp_path / "azd-env"
    script = bin_dir / "azd"
    script.write_text(f'#!/bin/sh\n[ "$1 $2" = "env set" ] && echo "$3=$4" >> "{store}"\n')
    script.chmod(0o755)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "HOME": str(tmp_path)}
    return env, store


def test_preprovision_creates_the_webhook_key_once(tmp_path: Path) -> None:
    env, store = _fake_azd(tmp_path)
    env |= {"GRAPH_CLIENT_ID": "app", "GRAPH_CLIENT_SECRET": "secret", "MAILBOXES": "a@contoso.com"}
    hook = str(INFRA / "hooks" / "preprovision.sh")
    subprocess.run(["sh", hook], env=env, check=True, capture_output=True)
    (line,) = store.read_text().splitlines()
    name, _, key = line.partition("=")
    assert name == "WEBHOOK_FUNCTION_KEY"
    assert re.fullmatch(r"[0-9a-f]{64}", key)
    subprocess.run(["sh", hook], env=env | {"WEBHOOK_FUNCTION_KEY": key}, check=True, capture_output=True)
    assert store.read_text().splitlines() == [line]


def test_preprovision_passes_the_environments_settings_as_they_are(tmp_path: Path) -> None:
    env, store = _fake_azd(tmp_path)
    routes = json.dumps([{"name": "ap", "match": {"subject": "(?i)invoice\\s+\\d+"}, "path": "{yyyy}/{messageKey}"}])
    env |= {"GRAPH_CLIENT_ID": "app", "GRAPH_CLIENT_SECRET": "secret", "MAILBOXES": "a@contoso.com"}
    env |= {"ROUTES": routes, "MAIL_POLL_SCHEDULE": "0 */5 * * * *", "SAVE_BODY": "", "WEBHOOK_FUNCTION_KEY": "k" * 64}
    subprocess.run(["sh", str(INFRA / "hooks" / "preprovision.sh")], env=env, check=True, capture_output=True)
    (line,) = store.read_text().splitlines()
    name, _, value = line.partition("=")
    assert name == "APP_SETTINGS_FROM_AZD"
    assert json.loads(base64.b64decode(value)) == {"MAIL_POLL_SCHEDULE": "0 */5 * * * *", "ROUTES": routes}
    # Unchanged: not set again (azd env set on every provision would churn .azure/<env>/.env).
    store.unlink()
    subprocess.run(
        ["sh", str(INFRA / "hooks" / "preprovision.sh")], env=env | {name: value}, check=True, capture_output=True
    )
    assert not store.exists()


def test_preprovision_names_missing_settings(tmp_path: Path) -> None:
    env, store = _fake_azd(tmp_path)
    proc = subprocess.run(["sh", str(INFRA / "hooks" / "preprovision.sh")], env=env, capture_output=True, text=True)
    assert proc.returncode == 1
    for name in ("GRAPH_CLIENT_ID", "GRAPH_CLIENT_SECRET", "MAILBOXES"):
        assert f"azd env set {name}" in proc.stderr
    assert not store.exists()


def test_preprovision_takes_a_certificate_instead_of_the_secret(tmp_path: Path) -> None:
    env, store = _fake_azd(tmp_path)
    env |= {"GRAPH_CLIENT_ID": "app", "GRAPH_CLIENT_CERTIFICATE": "graph-cert", "MAILBOXES": "a@contoso.com"}
    subprocess.run(["sh", str(INFRA / "hooks" / "preprovision.sh")], env=env, check=True, capture_output=True)
    assert store.read_text().startswith("WEBHOOK_FUNCTION_KEY=")
    del env["GRAPH_CLIENT_CERTIFICATE"]
    proc = subprocess.run(["sh", str(INFRA / "hooks" / "preprovision.sh")], env=env, capture_output=True, text=True)
    assert proc.returncode == 1
    assert "azd env set GRAPH_CLIENT_SECRET" in proc.stderr and "GRAPH_CLIENT_ID" not in proc.stderr.split("\n")[0]


@pytest.mark.parametrize(
    ("mailboxes", "asked"),
    [
        ("imaps://ap%40example.org@imap.example.org?secret=ap, pop3s://b%40example.org@pop.example.org?secret=b", []),
        ("imaps://ap%40gmail.com@imap.gmail.com?secret=gmail-ap&auth=xoauth2", []),
        ("imaps://ap%40contoso.com@outlook.office365.com?auth=xoauth2", ["GRAPH_CLIENT_ID", "GRAPH_CLIENT_SECRET"]),
        (
            "imaps://ap%40example.org@imap.example.org?secret=ap, invoices@contoso.com/Inbox/*",
            ["GRAPH_CLIENT_ID", "GRAPH_CLIENT_SECRET"],
        ),
    ],
)
def test_preprovision_asks_for_the_app_registration_only_where_it_is_used(
    tmp_path: Path, mailboxes: str, asked: list[str]
) -> None:
    env, store = _fake_azd(tmp_path)
    env |= {"MAILBOXES": mailboxes}
    proc = subprocess.run(["sh", str(INFRA / "hooks" / "preprovision.sh")], env=env, capture_output=True, text=True)
    named = re.findall(r"azd env set (\w+)", proc.stderr)
    assert named == asked
    assert proc.returncode == (1 if asked else 0)
    assert store.exists() != bool(asked)  # the webhook key is made only once nothing is missing


def test_postprovision_without_microsoft_365_mailboxes_lists_the_account_secrets(tmp_path: Path) -> None:
    env, _ = _fake_azd(tmp_path)
    env |= {
        "GRAPH_TENANT_ID": "11111111-2222-3333-4444-555555555555",
        "AZURE_KEY_VAULT_NAME": "kv-abc",
        "MAILBOXES": (
            "imaps://ap%40example.org@imap.example.org/INBOX?secret=ap-imap,"
            " pop3s://b%40example.org@pop.example.org?auth=password&secret=b-pop, imaps://c%40example.org@h?secret=ap-imap"
        ),
    }
    out = subprocess.run(
        ["sh", str(INFRA / "hooks" / "postprovision.sh")], env=env, check=True, capture_output=True, text=True
    ).stdout
    assert re.findall(r"az keyvault secret set --vault-name kv-abc --name (\S+)", out) == ["ap-imap", "b-pop"]
    assert "adminconsent" not in out and "New-ServicePrincipal" not in out and "AccessAsApp" not in out
    env["MAILBOXES"] += ", imaps://d%40contoso.com@outlook.office365.com?auth=xoauth2"
    env["GRAPH_CLIENT_ID"] = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
    out = subprocess.run(
        ["sh", str(INFRA / "hooks" / "postprovision.sh")], env=env, check=True, capture_output=True, text=True
    ).stdout
    assert "IMAP.AccessAsApp" in out and "(aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee)" in out


def test_postprovision_prints_consent_and_exchange_scope(tmp_path: Path) -> None:
    env, _ = _fake_azd(tmp_path)
    tenant, client, object_id = (
        "11111111-2222-3333-4444-555555555555",
        "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee",
        "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0",
    )
    env |= {
        "GRAPH_TENANT_ID": tenant,
        "GRAPH_CLIENT_ID": client,
        "MAILBOXES": (
            f"Invoices@Contoso.com, scans@contoso.com/Inbox/Delivery notes, invoices@contoso.com/Archive, {object_id},"
            " imaps://ap%40example.org@imap.example.org/INBOX?secret=ap-imap"
        ),
        "AZURE_ENV_NAME": "prod",
    }
    out = subprocess.run(
        ["sh", str(INFRA / "hooks" / "postprovision.sh")], env=env, check=True, capture_output=True, text=True
    ).stdout
    assert f"https://login.microsoftonline.com/{tenant}/adminconsent?client_id={client}" in out
    assert f"New-ServicePrincipal -AppId {client} -ObjectId " in out
    assert (
        "-RecipientRestrictionFilter \"PrimarySmtpAddress -eq 'invoices@contoso.com' -or "
        f"PrimarySmtpAddress -eq 'scans@contoso.com' -or ExternalDirectoryObjectId -eq '{object_id}'\""
    ) in out
    assert f'-App {client} -Role "Application Mail.Read" -CustomResourceScope "Mail Attachment Ingest prod"' in out
    assert '-Role "Application Mail.ReadWrite"' in out
    assert f"Test-ServicePrincipalAuthorization -Identity {client} -Resource invoices@contoso.com" in out
    assert "example.org" not in out  # an IMAP account is no Exchange recipient
    assert "az keyvault secret set --vault-name <vault> --name ap-imap --value '<password>'" in out  # its password
