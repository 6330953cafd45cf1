"""Offline checks of infra/: parse every Bicep file and assert the deployment's invariants.

The Bicep files are parsed with pycep (the parser checkov uses) into JSON-like dicts. pycep writes an identifier
and a string literal alike (`mailboxes` and `'mailboxes'` both become "mailboxes"), so the checks compare
values that cannot be identifiers (booleans, literals such as 'TLS1_2') or look identifiers up themselves.

Each check returns a list of problems, one line each, so that a test can assert both that the real tree has
none and that a deliberately broken copy has the expected one.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from pycep import BicepParser

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"

# Built-in role definitions the app's identity may hold, with the resource type each must be scoped to.
REQUIRED_ROLES = {
    "b7e6dc6d-f1e8-4753-8033-0f276bb0955b": ("Storage Blob Data Owner", "Microsoft.Storage/storageAccounts"),
    "974c5e8b-45b9-4653-ba55-5f855dd0fb88": ("Storage Queue Data Contributor", "Microsoft.Storage/storageAccounts"),
    "b86a8fe4-44ce-4948-aee5-eccb2c155cd7": ("Key Vault Secrets Officer", "Microsoft.KeyVault/vaults"),
    "3913510d-42f4-4e42-8a64-420c390055eb": ("Monitoring Metrics Publisher", "Microsoft.Insights/components"),
}
# Only when the app signs in with a Key Vault certificate: the assignment must be conditional.
CONDITIONAL_ROLES = {
    "db79e9a7-68ee-4b58-9aeb-b90e7c24fcba": ("Key Vault Certificate User", "Microsoft.KeyVault/vaults"),
}

# The deploying user's data-plane roles (modules/operator.bicep, only when azd gives a principalId): what
# `az keyvault secret set` and the operator CLI need, each scoped to the one resource it is for.
OPERATOR_FILE = "modules/operator.bicep"
OPERATOR_ROLES = {
    "ba92f5b4-2d11-453d-a403-e96b0029c9fe": ("Storage Blob Data Contributor", "Microsoft.Storage/storageAccounts"),
    "974c5e8b-45b9-4653-ba55-5f855dd0fb88": ("Storage Queue Data Contributor", "Microsoft.Storage/storageAccounts"),
    "b86a8fe4-44ce-4948-aee5-eccb2c155cd7": ("Key Vault Secrets Officer", "Microsoft.KeyVault/vaults"),
}
# Event Grid's delivery identity (modules/eventgrid.bicep, GRAPH_DELIVERY=eventgrid only): it adds messages to the
# one queue and writes dead letters to the one container, nothing else.
EVENTGRID_FILE = "modules/eventgrid.bicep"
EVENTGRID_ROLES = {
    "c6a89b2d-59bc-44d0-9896-0f6e12d7b80a": (
        "Storage Queue Data Message Sender",
        "Microsoft.Storage/storageAccounts/queueServices/queues",
    ),
    "ba92f5b4-2d11-453d-a403-e96b0029c9fe": (
        "Storage Blob Data Contributor",
        "Microsoft.Storage/storageAccounts/blobServices/containers",
    ),
}
# Defender's verdicts (modules/defender.bicep, malwareScanning only): Event Grid delivers them with an identity of
# its own that holds the same two narrow roles, on the scan queue and its dead-letter container.
DEFENDER_FILE = "modules/defender.bicep"
DELIVERY_ROLES = {EVENTGRID_FILE: EVENTGRID_ROLES, DEFENDER_FILE: EVENTGRID_ROLES}
OPERATOR_CONDITIONAL_ROLES = {
    "a4417e6f-fecd-4de8-b567-7b0420556985": ("Key Vault Certificates Officer", "Microsoft.KeyVault/vaults"),
}

# Log events (and tables) the alert rules must watch.
ALERTED_EVENTS = ("ingest.poisoned", "subscription.failed", "auth.needs_consent", "notification.accepted")
ALERTED_TABLES = ("requests", "exceptions")

_parser = BicepParser()


def parse(path: Path) -> dict[str, Any]:
    return cast(dict[str, Any], _parser.parse(text=path.read_text()))


def bicep_files(infra: Path) -> list[Path]:
    return sorted(infra.rglob("*.bicep"))


def load(infra: Path) -> dict[str, dict[str, Any]]:
    """Every Bicep file under infra/, parsed, by its path relative to infra/."""
    return {path.relative_to(infra).as_posix(): parse(path) for path in bicep_files(infra)}


@dataclass(frozen=True)
class Resource:
    file: str
    symbol: str
    type: str
    existing: bool
    conditional: bool
    body: dict[str, Any]

    @property
    def properties(self) -> dict[str, Any]:
        value = self.body.get("properties") or {}
        return cast(dict[str, Any], value)


def resources(trees: dict[str, dict[str, Any]]) -> Iterator[Resource]:
    for file, tree in trees.items():
        for symbol, res in (tree.get("resources") or {}).items():
            config = res["config"]
            conditional = False
            # `= if (...) {...}` and `= [for ...: {...}]` nest the body one level down.
            if "config" in config and ("condition" in config or "loop_type" in config):
                conditional = config.get("condition") is not None
                config = config["config"]
            yield Resource(file, symbol, res["type"], bool(res.get("existing")), conditional, config)


def of_type(trees: dict[str, dict[str, Any]], resource_type: str) -> list[Resource]:
    return [r for r in resources(trees) if r.type.lower() == resource_type.lower() and not r.existing]


def _dig(value: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def _variable(tree: dict[str, Any], expr: Any) -> Any:
    """The value of `name` or `name.key` when `name` is a variable of the file; None otherwise."""
    variables = tree.get("variables") or {}
    if isinstance(expr, str):
        var = variables.get(expr)
        return var["value"] if var else expr
    operator = _dig(expr, "operator")
    if operator and operator.get("type") == "property_accessor":
        base = _variable(tree, operator["operands"]["operand_1"])
        key = operator["operands"]["operand_2"]
        if isinstance(base, dict) and isinstance(key, str):
            return base.get(key)
    return None


def role_definition_guid(tree: dict[str, Any], expr: Any) -> str | None:
    """The GUID in `subscriptionResourceId('Microsoft.Authorization/roleDefinitions', <guid or variable>)`."""
    function = _dig(expr, "function")
    if not function or function.get("type") not in ("subscription_resource_id", "resource_id"):
        return None
    params = function["parameters"]
    if params.get("resource_type") != "Microsoft.Authorization/roleDefinitions":
        return None
    value = _variable(tree, params.get("resource_name_1"))
    return value.lower() if isinstance(value, str) else None


def check_storage(trees: dict[str, dict[str, Any]]) -> list[str]:
    problems = []
    accounts = of_type(trees, "Microsoft.Storage/storageAccounts")
    if not accounts:
        problems.append("no storage account is defined")
    for acc in accounts:
        props = acc.properties
        where = f"{acc.file}: storage account {acc.symbol}"
        if props.get("allowSharedKeyAccess") is not False:
            problems.append(f"{where}: allowSharedKeyAccess must be false (identity-based access only)")
        if props.get("minimumTlsVersion") not in ("TLS1_2", "TLS1_3"):
            problems.append(f"{where}: minimumTlsVersion must be TLS1_2 or newer")
        if props.get("supportsHttpsTrafficOnly") is not True:
            problems.append(f"{where}: supportsHttpsTrafficOnly must be true")
        if props.get("allowBlobPublicAccess") is not False:
            problems.append(f"{where}: allowBlobPublicAccess must be false")
        if props.get("isHnsEnabled") is not False:
            problems.append(f"{where}: isHnsEnabled must be false (blob index tags need a flat namespace)")
    return problems


def check_key_vault(trees: dict[str, dict[str, Any]]) -> list[str]:
    problems = []
    vaults = of_type(trees, "Microsoft.KeyVault/vaults")
    if not vaults:
        problems.append("no Key Vault is defined")
    for vault in vaults:
        props = vault.properties
        where = f"{vault.file}: Key Vault {vault.symbol}"
        for key in ("enableRbacAuthorization", "enableSoftDelete", "enablePurgeProtection"):
            if props.get(key) is not True:
                problems.append(f"{where}: {key} must be true")
        if props.get("accessPolicies"):
            problems.append(f"{where}: access policies are set; the vault is RBAC only")
    secrets = {r.body.get("name") for r in of_type(trees, "Microsoft.KeyVault/vaults/secrets")}
    if "webhook-function-key" not in secrets:
        problems.append("no Key Vault secret named webhook-function-key")
    return problems


def check_function_app(trees: dict[str, dict[str, Any]]) -> list[str]:
    problems = []
    plans = of_type(trees, "Microsoft.Web/serverfarms")
    if not any(
        _dig(p.body, "sku", "tier") == "FlexConsumption" and _dig(p.body, "sku", "name") == "FC1" for p in plans
    ):
        problems.append("no Flex Consumption (FC1) plan is defined")
    sites = of_type(trees, "Microsoft.Web/sites")
    if not sites:
        problems.append("no Function App is defined")
    for site in sites:
        props = site.properties
        where = f"{site.file}: site {site.symbol}"
        if props.get("httpsOnly") is not True:
            problems.append(f"{where}: httpsOnly must be true")
        config = props.get("siteConfig") or {}
        for key in ("minTlsVersion", "scmMinTlsVersion"):
            if config.get(key) not in ("1.2", "1.3"):
                problems.append(f"{where}: siteConfig.{key} must be 1.2 or newer")
        if config.get("ftpsState") != "Disabled":
            problems.append(f"{where}: siteConfig.ftpsState must be Disabled")
        if _dig(site.body, "identity", "type") != "UserAssigned":
            problems.append(f"{where}: the identity must be user-assigned only")
        if not props.get("keyVaultReferenceIdentity"):
            problems.append(f"{where}: keyVaultReferenceIdentity must name the user-assigned identity")
        fac = props.get("functionAppConfig") or {}
        runtime = fac.get("runtime") or {}
        if (runtime.get("name"), runtime.get("version")) != ("python", "3.11"):
            problems.append(f"{where}: runtime must be python 3.11")
        if _dig(fac, "deployment", "storage", "authentication", "type") != "UserAssignedIdentity":
            problems.append(f"{where}: the deployment container must be reached with the user-assigned identity")
        always_ready = _dig(fac, "scaleAndConcurrency", "alwaysReady") or []
        if not any(isinstance(entry, dict) and entry.get("name") == "http" for entry in always_ready):
            problems.append(f"{where}: no always-ready instances for the 'http' scale group")
    policies = {
        r.body.get("name"): r.properties.get("allow")
        for r in of_type(trees, "Microsoft.Web/sites/basicPublishingCredentialsPolicies")
    }
    for name in ("ftp", "scm"):
        if policies.get(name) is not False:
            problems.append(f"basic publishing credentials for {name} must be off (allow: false)")
    problems += check_no_host_keys(trees)
    return problems


# Keys are kept by the Functions host: a PUT of one goes through the host, which does not run before the code is
# deployed (Flex answers BadRequest or InternalServerError). The postdeploy hook sets them instead.
HOST_KEY_TYPES = ("Microsoft.Web/sites/host/functionKeys", "Microsoft.Web/sites/host/systemKeys")


def check_no_host_keys(trees: dict[str, dict[str, Any]]) -> list[str]:
    return [
        f"{r.file}: {r.symbol} creates a host key ({r.type}) during provisioning, before any code is deployed"
        for r in resources(trees)
        if r.type in HOST_KEY_TYPES or r.type.startswith("Microsoft.Web/sites/functions/keys")
    ]


def app_settings_layers(trees: dict[str, dict[str, Any]]) -> list[Any]:
    """The `appsettings` config resource's properties as the layers it unions, in order (later wins): a variable's
    literal object by its value, anything else (a parameter, the current settings) as parsed."""
    layers: list[Any] = []
    for res in of_type(trees, "Microsoft.Web/sites/config"):
        if res.body.get("name") != "appsettings":
            continue
        properties = res.body.get("properties", {})
        function = properties.get("function") if isinstance(properties, dict) else None
        if not (isinstance(function, dict) and function.get("type") == "union"):
            layers.append(properties)
            continue
        variables = trees[res.file].get("variables", {})
        for arg in function["parameters"].values():
            known = isinstance(arg, str) and arg in variables
            layers.append(variables[arg]["value"] if known else arg)
    return layers


def app_settings(trees: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The Function App's settings the template writes: every literal object among the layers, merged."""
    settings: dict[str, Any] = {}
    for layer in app_settings_layers(trees):
        if isinstance(layer, dict) and "function" not in layer and "operator" not in layer:
            settings.update(layer)
    return settings


def _values(value: Any) -> list[Any]:
    """The values a setting can take: both branches of a conditional (`cond ? a : b`), else the value."""
    operator = value.get("operator") if isinstance(value, dict) else None
    if isinstance(operator, dict) and operator.get("type") == "conditional":
        operands = operator["operands"]
        return [*_values(operands["true_value"]), *_values(operands["false_value"])]
    return [value]


def _is_vault_reference(value: Any) -> bool:
    return isinstance(value, str) and value.startswith("@Microsoft.KeyVault(")


def check_app_settings(trees: dict[str, dict[str, Any]]) -> list[str]:
    problems = []
    settings = app_settings(trees)
    if not settings:
        return ["no appsettings resource (Microsoft.Web/sites/config named appsettings)"]
    if "AzureWebJobsStorage" in settings:
        problems.append(
            "AzureWebJobsStorage is set: storage must use the identity-based AzureWebJobsStorage__* settings"
        )
    if settings.get("AzureWebJobsStorage__credential") != "managedidentity":
        problems.append("AzureWebJobsStorage__credential must be managedidentity")
    for name in (
        "AzureWebJobsStorage__clientId",
        "AzureWebJobsStorage__blobServiceUri",
        "AzureWebJobsStorage__queueServiceUri",
        "AZURE_CLIENT_ID",
    ):
        if not settings.get(name):
            problems.append(f"{name} must be set")
    for name in ("GRAPH_CLIENT_SECRET", "WEBHOOK_FUNCTION_KEY"):
        if not all(_is_vault_reference(v) or v == "" for v in _values(settings.get(name))) or not any(
            _is_vault_reference(v) for v in _values(settings.get(name))
        ):
            problems.append(f"{name} must be a Key Vault reference")
    base = settings.get("WEBHOOK_BASE_URL")
    if not (isinstance(base, str) and base.startswith("https://") and "defaultHostName" in base):
        problems.append("WEBHOOK_BASE_URL must be https://<the site's defaultHostName>")
    return problems + check_settings_kept(trees)


SITE_CONFIG = "Microsoft.Web/sites/config"


def _is_current_settings(layer: Any, trees: dict[str, dict[str, Any]]) -> bool:
    """`keepAppSettings ? <existing appsettings>.list().properties : {}`."""
    operator = layer.get("operator") if isinstance(layer, dict) else None
    if not (isinstance(operator, dict) and operator.get("type") == "conditional"):
        return False
    operands = operator["operands"]
    accessor = (operands["true_value"].get("operator") or {}).get("operands", {})
    call = ((accessor.get("operand_1") or {}).get("operator") or {}).get("operands", {})
    existing = {(r.symbol, r.body.get("name")) for r in resources(trees) if r.existing and r.type == SITE_CONFIG}
    return (
        operands["condition"] == "keepAppSettings"
        and operands["false_value"] == {}
        and call.get("func_name") == "list"
        and (call.get("operand_1"), "appsettings") in existing
        and accessor.get("operand_2") == "properties"
    )


def check_settings_kept(trees: dict[str, dict[str, Any]]) -> list[str]:
    """The re-provision rule (docs/setup.md): the template's defaults, then the app's current settings, then the azd
    environment's (appSettingsFromAzd), then the settings the template owns; later wins."""
    layers = app_settings_layers(trees)
    current = [i for i, layer in enumerate(layers) if _is_current_settings(layer, trees)]
    if not current:
        return ["the app's current settings are not kept: no keepAppSettings ? <appsettings>.list().properties layer"]
    azd = layers.index("appSettingsFromAzd") if "appSettingsFromAzd" in layers else -1
    if not current[0] < azd < len(layers) - 1:
        return ["app settings must union the current settings, then appSettingsFromAzd, then the owned settings"]
    return []


def check_roles(trees: dict[str, dict[str, Any]], infra: Path) -> list[str]:
    problems = []
    symbols = {(r.file, r.symbol): r.type for r in resources(trees)}
    seen: set[str] = set()
    seen_operator: set[str] = set()
    for res in of_type(trees, "Microsoft.Authorization/roleAssignments"):
        tree = trees[res.file]
        where = f"{res.file}: role assignment {res.symbol}"
        guid = role_definition_guid(tree, res.properties.get("roleDefinitionId"))
        operator = res.file == OPERATOR_FILE
        required, conditional = (
            (OPERATOR_ROLES, OPERATOR_CONDITIONAL_ROLES) if operator else (REQUIRED_ROLES, CONDITIONAL_ROLES)
        )
        if res.file in DELIVERY_ROLES:
            required, conditional = DELIVERY_ROLES[res.file], {}
        known = required.get(guid or "") or conditional.get(guid or "")
        if guid is None or known is None:
            problems.append(f"{where}: role {guid or '(unresolved)'} is not one of the least-privilege roles")
            continue
        role_name, scope_type = known
        if res.file not in DELIVERY_ROLES:
            (seen_operator if operator else seen).add(guid)
        if _dig(res.body, "name", "function", "type") != "guid":
            problems.append(f"{where}: the name must come from guid()")
        scope = res.body.get("scope")
        if not isinstance(scope, str) or symbols.get((res.file, scope), "").lower() != scope_type.lower():
            problems.append(f"{where}: {role_name} must be scoped to a {scope_type}")
        # The app's identity is a service principal; the operator is whatever azd signed in as (User in a terminal).
        expected_type = "principalType" if operator else "ServicePrincipal"
        if res.properties.get("principalType") != expected_type:
            problems.append(f"{where}: principalType must be {expected_type}")
        if guid in conditional and not res.conditional:
            problems.append(f"{where}: {role_name} must be conditional")
        if not _has_comment_above(infra / res.file, res.symbol):
            problems.append(f"{where}: say in a comment above it why the role is needed")
    for guid, (role_name, _) in REQUIRED_ROLES.items():
        if guid not in seen:
            problems.append(f"missing role assignment: {role_name}")
    for guid, (role_name, _) in OPERATOR_ROLES.items():
        if guid not in seen_operator:
            problems.append(f"missing role assignment for the operator: {role_name}")
    problems += check_operator_module(infra)
    return problems


def check_operator_module(infra: Path) -> list[str]:
    """main.bicep grants the operator's roles only when azd gives a principal: `if (!empty(principalId))`."""
    main = parse(infra / "main.bicep")
    params = main.get("parameters") or {}
    if "principalId" not in params or params["principalId"].get("default") != "":
        return ["main.bicep: principalId must be an optional parameter (default '')"]
    for module in (main.get("modules") or {}).values():
        if module["detail"]["path"] != OPERATOR_FILE:
            continue
        condition = json.dumps(module["config"].get("condition"))
        if '"empty"' not in condition or "principalId" not in condition or '"not"' not in condition.lower():
            return [f"main.bicep: the {OPERATOR_FILE} module must be conditional on a non-empty principalId"]
        return []
    return [f"main.bicep does not call {OPERATOR_FILE}"]


def _has_comment_above(path: Path, symbol: str) -> bool:
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines):
        if re.match(rf"resource\s+{re.escape(symbol)}\s", line):
            return i > 0 and lines[i - 1].lstrip().startswith("//")
    return False


def check_alerts(trees: dict[str, dict[str, Any]]) -> list[str]:
    rules = of_type(trees, "Microsoft.Insights/scheduledQueryRules")
    if not rules:
        return ["no log alert rules (Microsoft.Insights/scheduledQueryRules)"]
    # The queries live in variables (one rule per entry); search all of the alert files' text values.
    text = json.dumps([trees[r.file] for r in rules])
    problems = [f"no alert rule watches the {event} event" for event in ALERTED_EVENTS if f'\\"{event}\\"' not in text]
    problems += [f"no alert rule queries the {table} table" for table in ALERTED_TABLES if f"{table} |" not in text]
    return problems


SCAN_RESULT_EVENT = "Microsoft.Security.MalwareScanningResult"


def check_malware_scanning(trees: dict[str, dict[str, Any]]) -> list[str]:
    """Defender's setting scans on upload and publishes to the topic, which takes no key and whose subscription
    delivers the scan results to a Storage queue with the delivery identity, dead-lettering with it too."""
    problems = []
    where = f"{DEFENDER_FILE}:"
    settings = of_type(trees, "Microsoft.Security/defenderForStorageSettings")
    if not settings:
        return [f"{where} no Microsoft.Security/defenderForStorageSettings"]
    topics = {r.symbol for r in of_type(trees, "Microsoft.EventGrid/topics")}
    for setting in settings:
        props = setting.properties
        if setting.body.get("name") != "current":
            problems.append(f"{where} the Defender setting must be named 'current'")
        if props.get("isEnabled") is not True or _dig(props, "malwareScanning", "onUpload", "isEnabled") is not True:
            problems.append(f"{where} Defender and its on-upload malware scanning must be enabled")
        if props.get("overrideSubscriptionLevelSettings") is not True:
            problems.append(f"{where} overrideSubscriptionLevelSettings must be true (a per-account custom topic)")
        topic = _dig(props, "malwareScanning", "scanResultsEventGridTopicResourceId", "operator", "operands")
        if not (isinstance(topic, dict) and topic.get("operand_1") in topics and topic.get("operand_2") == "id"):
            problems.append(f"{where} scanResultsEventGridTopicResourceId must be the topic's id")
    for topic_res in of_type(trees, "Microsoft.EventGrid/topics"):
        if topic_res.properties.get("disableLocalAuth") is not True:
            problems.append(f"{where} topic {topic_res.symbol}: disableLocalAuth must be true")
    subscriptions = of_type(trees, "Microsoft.EventGrid/topics/eventSubscriptions")
    if not subscriptions:
        problems.append(f"{where} no event subscription delivers the scan results")
    for sub in subscriptions:
        props = sub.properties
        if _dig(props, "filter", "includedEventTypes") != [SCAN_RESULT_EVENT]:
            problems.append(f"{where} event subscription {sub.symbol} must include {SCAN_RESULT_EVENT} only")
        if props.get("destination") is not None or props.get("deadLetterDestination") is not None:
            problems.append(f"{where} event subscription {sub.symbol} must deliver and dead-letter with the identity")
        delivery = props.get("deliveryWithResourceIdentity") or {}
        if _dig(delivery, "destination", "endpointType") != "StorageQueue":
            problems.append(f"{where} event subscription {sub.symbol} must deliver to a Storage queue")
        dead = _dig(props, "deadLetterWithResourceIdentity", "deadLetterDestination", "endpointType")
        if dead != "StorageBlob":
            problems.append(f"{where} event subscription {sub.symbol} must dead-letter to a blob container")
    return problems


def check_parameters_file(infra: Path) -> list[str]:
    """main.parameters.json gives every required parameter of main.bicep, and nothing main.bicep lacks."""
    params = parse(infra / "main.bicep").get("parameters") or {}
    given = json.loads((infra / "main.parameters.json").read_text())["parameters"]
    problems = [
        f"main.parameters.json sets {name}, which main.bicep does not declare" for name in given if name not in params
    ]
    problems += [
        f"main.parameters.json does not set the required parameter {name}"
        for name, spec in params.items()
        if spec.get("default") is None and name not in given
    ]
    return problems


def check_outputs(infra: Path) -> list[str]:
    """No output carries a secure parameter."""
    tree = parse(infra / "main.bicep")
    secure = {
        name
        for name, spec in (tree.get("parameters") or {}).items()
        if any(d.get("type") == "secure" for d in spec.get("decorators") or [])
    }
    problems = []
    for name, output in (tree.get("outputs") or {}).items():
        text = json.dumps(output.get("value"))
        problems += [f"output {name} exposes the secure parameter {p}" for p in secure if re.search(rf"\b{p}\b", text)]
    return problems


def check_invariants(infra: Path) -> list[str]:
    trees = load(infra)
    return (
        check_storage(trees)
        + check_key_vault(trees)
        + check_function_app(trees)
        + check_app_settings(trees)
        + check_roles(trees, infra)
        + check_alerts(trees)
        + check_malware_scanning(trees)
        + check_parameters_file(infra)
        + check_outputs(infra)
    )
