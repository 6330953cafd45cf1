"""What a first deployment meets in Azure and no schema shows: the storage redundancy of each region, Flex
Consumption's scale-out bounds, a host key only once the host runs (the postdeploy hook, against a host that is
still restarting), the operator's own data access, and a second deployment after `azd down` (the soft-deleted vault).

Each rule is checked on infra/ and on a copy with the trap planted back in, so each check is shown to fail.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from .bicep_checks import INFRA, check_no_host_keys, check_roles, load, parse
from .conftest import edit
from .platform_rules import (
    NO_ZONE_REGIONS,
    ZRS_REGIONS,
    check_flex_instance_bounds,
    check_storage_redundancy,
    storage_skus,
)

HOOKS = INFRA / "hooks"


# --- storage redundancy ---------------------------------------------------------------------------------------


def test_storage_redundancy_deploys_in_every_region() -> None:
    assert check_storage_redundancy(INFRA) == []
    assert storage_skus(INFRA, ["westus", "WestEurope"]) == {"westus": "Standard_LRS", "WestEurope": "Standard_ZRS"}
    assert ZRS_REGIONS.isdisjoint(NO_ZONE_REGIONS)


def test_zone_redundant_storage_everywhere_is_caught(infra_copy: Path) -> None:
    edit(
        infra_copy / "modules/storage.bicep",
        "name: contains(zoneRedundantRegions, toLower(location)) ? 'Standard_ZRS' : 'Standard_LRS'",
        "name: 'Standard_ZRS'",
    )
    problems = check_storage_redundancy(infra_copy)
    assert any(p.startswith("westus: Standard_ZRS fails there") for p in problems), problems
    assert any(p.startswith("northcentralus:") for p in problems)


def test_a_region_without_zones_in_the_list_is_caught(infra_copy: Path) -> None:
    edit(infra_copy / "modules/storage.bicep", "  'westus2'\n", "  'westus2'\n  'ukwest'\n")
    assert check_storage_redundancy(infra_copy) == [
        "ukwest: Standard_ZRS fails there (no availability zones: RedundancyConfigurationNotAvailableInRegion)"
    ]


# --- Flex Consumption scale-out bounds ------------------------------------------------------------------------


def test_maximum_instance_count_has_the_platform_bounds() -> None:
    assert check_flex_instance_bounds(INFRA) == []


def test_maximum_instance_count_below_the_platform_minimum_is_caught(infra_copy: Path) -> None:
    edit(
        infra_copy / "main.bicep",
        "@minValue(40)\n@maxValue(1000)\nparam max",
        "@minValue(1)\n@maxValue(1000)\nparam max",
    )
    assert check_flex_instance_bounds(infra_copy) == [
        "main.bicep: maximumInstanceCount must be @minValue(40) @maxValue(1000), is (1, 1000)"
    ]


# --- host keys ------------------------------------------------------------------------------------------------


def test_no_host_key_is_created_before_code_is_deployed() -> None:
    assert check_no_host_keys(load(INFRA)) == []


def test_a_host_key_in_the_bicep_is_caught(infra_copy: Path) -> None:
    path = infra_copy / "modules/functionapp.bicep"
    path.write_text(
        path.read_text()
        + "\nresource host 'Microsoft.Web/sites/host@2024-04-01' existing = {\n  parent: site\n  name: 'default'\n}\n"
        + "\nresource webhookHostKey 'Microsoft.Web/sites/host/functionKeys@2024-04-01' = {\n  parent: host\n"
        + "  name: 'graphwebhook'\n  properties: {\n    name: 'graphwebhook'\n  }\n}\n"
    )
    assert check_no_host_keys(load(infra_copy)) == [
        "modules/functionapp.bicep: webhookHostKey creates a host key (Microsoft.Web/sites/host/functionKeys) during"
        " provisioning, before any code is deployed"
    ]


class FakeApp:
    """The Functions host's admin endpoint and the app's /api/health, as the postdeploy hook sees them.

    The maintain pass is accepted only once the host key graphwebhook was set (the az log says so), so the hook's
    order is checked too."""

    def __init__(self, az_log: Path) -> None:
        self.az_log = az_log
        self.passes = 0
        self.refused = 0
        app = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _answer(self, status: int, body: dict[str, object]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                at = f"2026-12-01T10:00:0{app.passes}Z" if app.passes else None
                folders = {"invoices@contoso.com/Inbox": "created"} if app.passes else {}
                self._answer(200, {"maintain": {"at": at, "folders": folders}})

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                key_set = app.az_log.exists() and "keys set" in app.az_log.read_text()
                if self.headers.get("x-functions-key") != "master-key" or not key_set:
                    app.refused += 1
                    self._answer(503, {})
                    return
                app.passes += 1
                self._answer(202, {})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _fake_bin(tmp_path: Path, fail_list: int, fail_set: int) -> tuple[Path, Path]:
    """`az` that fails its first calls as a restarting host does, and a `sleep` that does not wait."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "az.log"
    counts = tmp_path / "counts"
    counts.mkdir()
    az = bin_dir / "az"
    az.write_text(
        f"""#!/bin/sh
op="$2 $3"
n=$(cat "{counts}/$3" 2>/dev/null || echo 0); n=$((n + 1)); echo $n > "{counts}/$3"
case "$op" in
  "keys list") [ $n -gt {fail_list} ] || {{ echo "BadRequest: Encountered an error from host runtime" >&2; exit 1; }}
               echo master-key ;;
  "keys set")  [ $n -gt {fail_set} ] || {{ echo "InternalServerError" >&2; exit 1; }}
               echo "$*" | sed 's/--key-value [^ ]*/--key-value ***/' >> "{log}"; echo '{{}}' ;;
  *) exit 2 ;;
esac
"""
    )
    az.chmod(0o755)
    sleep = bin_dir / "sleep"
    sleep.write_text("#!/bin/sh\nexec /bin/sleep 0.05\n")
    sleep.chmod(0o755)
    return bin_dir, log


@pytest.fixture()
def restarting_host(tmp_path: Path) -> Iterator[tuple[FakeApp, dict[str, str], Path]]:
    bin_dir, log = _fake_bin(tmp_path, fail_list=2, fail_set=1)
    app = FakeApp(log)
    env = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "WEBHOOK_BASE_URL": app.url,
        "AZURE_FUNCTION_APP_NAME": "func-abc",
        "AZURE_RESOURCE_GROUP": "rg-prod",
        "WEBHOOK_FUNCTION_KEY": "a" * 64,
        "MAINTAIN_WAIT_SECONDS": "20",
    }
    yield app, env, log
    app.close()


def test_postdeploy_sets_the_host_key_and_rides_out_a_restarting_host(
    restarting_host: tuple[FakeApp, dict[str, str], Path],
) -> None:
    app, env, log = restarting_host
    done = subprocess.run(["sh", str(HOOKS / "postdeploy.sh")], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert log.read_text().split() == [
        "functionapp",
        "keys",
        "set",
        "-g",
        "rg-prod",
        "-n",
        "func-abc",
        "--key-type",
        "functionKeys",
        "--key-name",
        "graphwebhook",
        "--key-value",
        "***",
    ]
    assert "Host key graphwebhook set." in done.stdout
    assert "OK   invoices@contoso.com/Inbox: created" in done.stdout
    assert app.passes == 1 and app.refused == 0  # the pass came after the key, once
    assert "a" * 64 not in done.stdout + done.stderr


def test_postdeploy_says_what_to_do_when_it_gives_up(tmp_path: Path) -> None:
    bin_dir, log = _fake_bin(tmp_path, fail_list=10**6, fail_set=10**6)
    app = FakeApp(log)
    try:
        env = {
            "PATH": f"{bin_dir}:/usr/bin:/bin",
            "WEBHOOK_BASE_URL": app.url,
            "AZURE_FUNCTION_APP_NAME": "func-abc",
            "AZURE_RESOURCE_GROUP": "rg-prod",
            "WEBHOOK_FUNCTION_KEY": "b" * 64,
            "MAINTAIN_WAIT_SECONDS": "1",
        }
        done = subprocess.run(["sh", str(HOOKS / "postdeploy.sh")], env=env, capture_output=True, text=True, timeout=60)
    finally:
        app.close()
    assert done.returncode == 1
    assert "Gave up after 1s: could not read the app's master key" in done.stdout
    assert (
        "az functionapp keys set -g rg-prod -n func-abc --key-type functionKeys --key-name graphwebhook"
        ' --key-value "$(azd env get-value WEBHOOK_FUNCTION_KEY)"'
    ) in done.stdout
    assert "azd hooks run postdeploy" in done.stdout
    assert "b" * 64 not in done.stdout + done.stderr


def test_postdeploy_twins_set_the_same_key() -> None:
    for hook in ("postdeploy.sh", "postdeploy.ps1"):
        text = (HOOKS / hook).read_text()
        assert "az functionapp keys set -g" in text and "--key-type functionKeys --key-name graphwebhook" in text, hook
        assert text.index("keys set -g") < text.index("/admin/functions/maintain"), hook


# --- the operator's own access ---------------------------------------------------------------------------------


def test_the_operator_gets_the_data_roles_only_when_azd_names_them() -> None:
    assert check_roles(load(INFRA), INFRA) == []
    params = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert params["principalId"] == {"value": "${AZURE_PRINCIPAL_ID}"}
    assert params["principalType"] == {"value": "${AZURE_PRINCIPAL_TYPE=User}"}


def _drop_operator_module(infra: Path) -> None:
    (infra / "modules/operator.bicep").unlink()
    edit(infra / "main.bicep", "'modules/operator.bicep'", "'modules/other.bicep'")


@pytest.mark.parametrize(
    ("breaks", "expected"),
    [
        (
            lambda d: edit(d / "main.bicep", "= if (!empty(principalId)) {", "= {"),
            "main.bicep: the modules/operator.bicep module must be conditional on a non-empty principalId",
        ),
        (
            lambda d: edit(
                d / "modules/operator.bicep", "QueueDataContributor: '974c5e8b", "QueueDataContributor: '19e7f393"
            ),
            "modules/operator.bicep: role assignment operatorQueues: role 19e7f393",
        ),
        (
            _drop_operator_module,
            "missing role assignment for the operator: Key Vault Secrets Officer",
        ),
    ],
    ids=["unconditional", "another role", "no operator module"],
)
def test_operator_access_mistakes_are_caught(infra_copy: Path, breaks, expected: str) -> None:
    breaks(infra_copy)
    problems = check_roles(load(infra_copy), infra_copy)
    assert any(p.startswith(expected) for p in problems), problems


# --- deploying again after azd down ----------------------------------------------------------------------------


def _preprovision(tmp_path: Path, deleted: str, **extra: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    store = tmp_path / "azd-env"
    store.unlink(missing_ok=True)
    (bin_dir / "azd").write_text(f'#!/bin/sh\n[ "$1 $2" = "env set" ] && echo "$3=$4" >> "{store}"\n')
    # `az keyvault list-deleted` answers as the query would: the vault name only for this environment and region.
    (bin_dir / "az").write_text(
        '#!/bin/sh\n[ "$1 $2" = "keyvault list-deleted" ] || exit 2\n'
        f'case "$*" in *"azd-env-name\\"==\'prod\' && properties.location==\'westeurope\'"*) echo "{deleted}" ;; esac\n'
    )
    for name in ("azd", "az"):
        (bin_dir / name).chmod(0o755)
    env = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "HOME": str(tmp_path),
        "MAILBOXES": "imaps://ap%40example.org@imap.example.org?secret=ap",
        "WEBHOOK_FUNCTION_KEY": "c" * 64,
        "AZURE_ENV_NAME": "prod",
        "AZURE_LOCATION": "westeurope",
        **extra,
    }
    done = subprocess.run(["sh", str(HOOKS / "preprovision.sh")], env=env, capture_output=True, text=True, check=True)
    return done, store.read_text().splitlines() if store.exists() else []


def test_a_soft_deleted_vault_of_the_environment_is_recovered(tmp_path: Path) -> None:
    done, recorded = _preprovision(tmp_path, deleted="kv-abc123")
    assert recorded == ["KEY_VAULT_CREATE_MODE=recover"]
    assert "Key Vault kv-abc123 of this environment is soft-deleted" in done.stdout
    # Once recovered, the next provision creates nothing anew and must not ask to recover again.
    _, recorded = _preprovision(tmp_path, deleted="", KEY_VAULT_CREATE_MODE="recover")
    assert recorded == ["KEY_VAULT_CREATE_MODE=default"]
    _, recorded = _preprovision(tmp_path, deleted="")
    assert recorded == []


def test_the_vault_create_mode_reaches_the_vault() -> None:
    main = parse(INFRA / "main.bicep")
    decorators = main["parameters"]["keyVaultCreateMode"]["decorators"]
    assert {"type": "allowed", "argument": ["default", "recover"]} in decorators, decorators
    assert main["modules"]["keyVault"]["config"]["params"]["createMode"] == "keyVaultCreateMode"
    vault = parse(INFRA / "modules/keyvault.bicep")["resources"]["vault"]["config"]["properties"]
    assert vault["createMode"] == "createMode"
    assert vault["enablePurgeProtection"] is True and vault["enableSoftDelete"] is True
    params = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert params["keyVaultCreateMode"] == {"value": "${KEY_VAULT_CREATE_MODE=default}"}
    for hook in ("preprovision.sh", "preprovision.ps1"):
        text = (HOOKS / hook).read_text()
        assert re.search(r"az keyvault list-deleted --resource-type vault", text), hook
        assert "azd env set KEY_VAULT_CREATE_MODE" in text, hook
