"""Every resource in infra/ checked against the ARM model of its exact type and API version, offline.

The models are Microsoft's management SDKs for Python (azure-mgmt-*, pinned in requirements-dev.txt to releases that
ship the API versions the Bicep uses). Each model class carries an attribute map (JSON name, type; `properties.x`
for a property the SDK flattens), a validation map (read-only fields) and its constructor's annotations (the enum
of a field). From those the check finds, with the resource and the path named:

- an unknown or miscased property name (the ARM JSON names are case-sensitive in the models);
- a read-only property set in the template;
- a value of the wrong type (a string where a bool, a number or an object goes, and so on);
- a literal value outside the field's enum (compared case-insensitively, as ARM does), and a parameter whose
  `@allowed` list holds such a value.

What it cannot know offline: values computed at deployment (function calls, references to other resources), which
are accepted as they are. pycep writes a name and a string literal alike, so a string that names a parameter,
variable, resource, module or loop item of the file is taken as that name.
"""

from __future__ import annotations

import importlib
import inspect
import re
import sys
import typing
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import isodate

from .bicep_checks import Resource, load, resources

# (resource type, API version) -> (models module, model class of the PUT body, operations module that must name the
# API version: for SDK releases that keep one version per operation group in a flat `models` package).
MODELS: dict[tuple[str, str], tuple[str, str, str | None]] = {
    ("Microsoft.Resources/resourceGroups", "2024-07-01"): (
        "azure.mgmt.resource.resources.v2024_07_01.models",
        "ResourceGroup",
        None,
    ),
    ("Microsoft.ManagedIdentity/userAssignedIdentities", "2023-01-31"): (
        "azure.mgmt.msi.v2023_01_31.models",
        "Identity",
        None,
    ),
    ("Microsoft.OperationalInsights/workspaces", "2025-07-01"): (
        "azure.mgmt.loganalytics.models",
        "Workspace",
        "azure.mgmt.loganalytics.operations._workspaces_operations",
    ),
    ("Microsoft.Insights/components", "2020-02-02"): (
        "azure.mgmt.applicationinsights.v2020_02_02.models",
        "ApplicationInsightsComponent",
        None,
    ),
    ("Microsoft.Insights/workbooks", "2023-06-01"): (
        "azure.mgmt.applicationinsights.v2023_06_01.models",
        "Workbook",
        None,
    ),
    ("Microsoft.Insights/actionGroups", "2023-01-01"): (
        "azure.mgmt.monitor.models",
        "ActionGroupResource",
        "azure.mgmt.monitor.operations._action_groups_operations",
    ),
    ("Microsoft.Insights/scheduledQueryRules", "2023-12-01"): (
        "azure.mgmt.monitor.models",
        "ScheduledQueryRuleResource",
        "azure.mgmt.monitor.operations._scheduled_query_rules_operations",
    ),
    ("Microsoft.Storage/storageAccounts", "2023-05-01"): (
        "azure.mgmt.storage.v2023_05_01.models",
        "StorageAccountCreateParameters",
        None,
    ),
    ("Microsoft.Storage/storageAccounts/blobServices", "2023-05-01"): (
        "azure.mgmt.storage.v2023_05_01.models",
        "BlobServiceProperties",
        None,
    ),
    ("Microsoft.Storage/storageAccounts/blobServices/containers", "2023-05-01"): (
        "azure.mgmt.storage.v2023_05_01.models",
        "BlobContainer",
        None,
    ),
    ("Microsoft.KeyVault/vaults", "2023-07-01"): (
        "azure.mgmt.keyvault.v2023_07_01.models",
        "VaultCreateOrUpdateParameters",
        None,
    ),
    ("Microsoft.KeyVault/vaults/secrets", "2023-07-01"): (
        "azure.mgmt.keyvault.v2023_07_01.models",
        "SecretCreateOrUpdateParameters",
        None,
    ),
    ("Microsoft.Authorization/roleAssignments", "2022-04-01"): (
        "azure.mgmt.authorization.v2022_04_01.models",
        "RoleAssignmentCreateParameters",
        None,
    ),
    ("Microsoft.Web/serverfarms", "2024-04-01"): ("azure.mgmt.web.v2024_04_01.models", "AppServicePlan", None),
    ("Microsoft.Web/sites", "2024-04-01"): ("azure.mgmt.web.v2024_04_01.models", "Site", None),
    ("Microsoft.Web/sites/basicPublishingCredentialsPolicies", "2024-04-01"): (
        "azure.mgmt.web.v2024_04_01.models",
        "CsmPublishingCredentialsPoliciesEntity",
        None,
    ),
    ("Microsoft.Web/sites/host/functionKeys", "2024-04-01"): ("azure.mgmt.web.v2024_04_01.models", "KeyInfo", None),
    ("Microsoft.Storage/storageAccounts/queueServices/queues", "2023-05-01"): (
        "azure.mgmt.storage.v2023_05_01.models",
        "StorageQueue",
        None,
    ),
    # GRAPH_DELIVERY=eventgrid (infra/modules/eventgrid.bicep, infra/eventgrid/connect.bicep).
    ("Microsoft.EventGrid/partnerConfigurations", "2025-02-15"): (
        "azure.mgmt.eventgrid.models",
        "PartnerConfiguration",
        "azure.mgmt.eventgrid.operations._partner_configurations_operations",
    ),
    ("Microsoft.EventGrid/partnerTopics/eventSubscriptions", "2025-02-15"): (
        "azure.mgmt.eventgrid.models",
        "EventSubscription",
        "azure.mgmt.eventgrid.operations._partner_topic_event_subscriptions_operations",
    ),
    # MALWARE_SCANNING=defender (infra/modules/defender.bicep).
    ("Microsoft.EventGrid/topics", "2025-02-15"): (
        "azure.mgmt.eventgrid.models",
        "Topic",
        "azure.mgmt.eventgrid.operations._topics_operations",
    ),
    ("Microsoft.EventGrid/topics/eventSubscriptions", "2025-02-15"): (
        "azure.mgmt.eventgrid.models",
        "EventSubscription",
        "azure.mgmt.eventgrid.operations._topic_event_subscriptions_operations",
    ),
    # The newest stable version. No Python SDK speaks it: azure-mgmt-security 7.0.0 has this type at 2022-12-01-preview
    # only, 8.0.0b2 at 2025-09-01-preview, whose models are 2025-06-01's (azure-rest-api-specs, stable/2025-06-01/
    # defenderForStorageSettings.json) plus what NOT_IN_VERSION takes away again.
    ("Microsoft.Security/defenderForStorageSettings", "2025-06-01"): (
        "azure.mgmt.security.models",
        "DefenderForStorageSetting",
        None,
    ),
}
# Fields a pinned model has that the API version the Bicep uses does not, by (models module, model class).
NOT_IN_VERSION: dict[tuple[str, str], tuple[str, ...]] = {
    ("azure.mgmt.security.models", "MalwareScanningProperties"): ("automatedResponse",),
}
# sites/config is one type whose body depends on its name.
SITE_CONFIG = {"appsettings": "StringDictionary", "web": "SiteConfigResource", "logs": "SiteLogsConfig"}

# Keys of a resource declaration that are Bicep's, not the resource body's.
BICEP_KEYS = frozenset({"name", "parent", "scope", "dependsOn"})
STRING_TYPES = frozenset({"str", "iso-8601", "rfc-1123", "date", "duration", "base64", "bytearray", "unix-time"})
_EXPRESSION_KEYS = frozenset({"operator", "function"})


@dataclass(frozen=True)
class Field:
    type: str
    readonly: bool
    enum: frozenset[str] | None


@dataclass
class Obj:
    """A JSON object of a model: its fields by JSON name (a nested Obj for a flattened `properties.x`)."""

    fields: dict[str, Field | Obj] = field(default_factory=dict)
    open: bool = False  # additional properties allowed


def _split(key: str) -> list[str]:
    return [part.replace("\\.", ".") for part in re.split(r"(?<!\\)\.", key)]


def _enum(models: ModuleType, cls: type, attr: str) -> frozenset[str] | None:
    for klass in inspect.getmro(cls):
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        param = inspect.signature(init).parameters.get(attr)
        if param is None:
            continue
        for arg in typing.get_args(param.annotation) or (param.annotation,):
            if isinstance(arg, typing.ForwardRef):
                enum = getattr(models, arg.__forward_arg__.removeprefix("_models."), None)
                if isinstance(enum, type) and hasattr(enum, "__members__"):
                    return frozenset(str(m.value).lower() for m in enum.__members__.values())
        return None
    return None


def _typespec_type(models: ModuleType, annotation: Any) -> tuple[str, frozenset[str] | None]:
    """A TypeSpec-generated model's field annotation as the msrest type string the checker reads, with its enum."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) is typing.Union:
        enums = [a for a in args if isinstance(a, type) and hasattr(a, "__members__")]
        if enums:
            return "str", frozenset(str(m.value).lower() for m in enums[0].__members__.values())
        return _typespec_type(models, args[0]) if len(args) == 1 else ("object", None)
    if typing.get_origin(annotation) is list:
        inner, _ = _typespec_type(models, args[0])
        return f"[{inner}]", None
    simple = {bool: "bool", int: "int", float: "float", str: "str"}
    if annotation in simple:
        return simple[annotation], None
    name = getattr(annotation, "__name__", "")
    if isinstance(annotation, type) and getattr(models, name, None) is annotation:
        return name, None
    return "object", None


def _typespec_schema(models: ModuleType, cls: type) -> Obj:
    """TypeSpec-generated models (azure-mgmt-* 8+): rest fields with JSON names and visibility, no flattening."""
    cls()  # the rest fields are gathered on the first instance
    namespace = vars(sys.modules[cls.__module__])
    hints = typing.get_type_hints(cls, globalns=namespace, localns={"_models": models})
    root = Obj()
    for attr, rest in cls._attr_to_rest_field.items():  # type: ignore[attr-defined]
        type_, enum = _typespec_type(models, hints.get(attr))
        root.fields[rest._rest_name] = Field(type_, list(rest._visibility or []) == ["read"], enum)
    for name in NOT_IN_VERSION.get((models.__name__, cls.__name__), ()):
        root.fields.pop(name, None)
    return root


def model_schema(models: ModuleType, cls: type) -> Obj:
    if not hasattr(cls, "_attribute_map"):
        return _typespec_schema(models, cls)
    root = Obj()
    validation: dict[str, dict[str, Any]] = {}
    for klass in reversed(inspect.getmro(cls)):
        validation.update(getattr(klass, "_validation", {}) or {})
    for attr, spec in cls._attribute_map.items():
        if spec["key"] == "":
            root.open = True
            continue
        *parents, leaf = _split(spec["key"])
        node = root
        for name in parents:
            child = node.fields.setdefault(name, Obj())
            assert isinstance(child, Obj), f"{cls.__name__}: {spec['key']}"
            node = child
        node.fields[leaf] = Field(
            spec["type"], bool(validation.get(attr, {}).get("readonly")), _enum(models, cls, attr)
        )
    return root


@dataclass
class Scope:
    """What names mean in one Bicep file, with the current loop item."""

    params: dict[str, dict[str, Any]]
    variables: dict[str, Any]
    symbols: set[str]
    loop: dict[str, Any] = field(default_factory=dict)


def _is_expression(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and len(value) == 1
        and next(iter(value)) in _EXPRESSION_KEYS
        and isinstance(next(iter(value.values())), dict)
        and "type" in next(iter(value.values()))
    )


# What a value is, as far as the file tells: ("literal", v), ("param", type, allowed values) or ("unknown",).
def resolve(value: Any, scope: Scope, depth: int = 0) -> list[tuple[Any, ...]]:
    if depth > 10:
        return [("unknown",)]
    if isinstance(value, str):
        if value in scope.loop:
            return resolve(scope.loop[value], scope, depth + 1)
        if value in scope.params:
            spec = scope.params[value]
            allowed = next((d["argument"] for d in spec.get("decorators") or [] if d["type"] == "allowed"), None)
            return [("param", spec.get("type"), allowed)]
        if value in scope.variables:
            return resolve(scope.variables[value], scope, depth + 1)
        if value in scope.symbols:
            return [("unknown",)]
        return [("literal", value)]
    if isinstance(value, dict) and set(value) >= {"loop_type", "config"}:
        # A property's `[for x in ...: <item>]`: an array whose every element is the item expression.
        return [("literal", [value["config"]])]
    if _is_expression(value):
        op = value.get("operator") or {}
        operands = op.get("operands") or {}
        if op.get("type") == "conditional":
            return resolve(operands["true_value"], scope, depth + 1) + resolve(
                operands["false_value"], scope, depth + 1
            )
        if op.get("type") == "property_accessor":
            base = operands.get("operand_1")
            key = operands.get("operand_2")
            if isinstance(base, str) and isinstance(key, str):
                target = scope.loop.get(base, scope.variables.get(base))
                if isinstance(target, dict) and key in target:
                    return resolve(target[key], scope, depth + 1)
        return [("unknown",)]
    return [("literal", value)]


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


_PARAM_KINDS = {"string": "string", "securestring": "string", "int": "number", "bool": "bool", "array": "array"}


def _expected_kind(type_: str) -> str:
    if type_ in STRING_TYPES:
        return "string"
    if type_ == "bool":
        return "bool"
    if type_ in ("int", "long", "float", "decimal"):
        return "number"
    if type_.startswith("["):
        return "array"
    return "object"


class Checker:
    def __init__(self, models: ModuleType) -> None:
        self.models = models
        self.problems: list[str] = []

    def check_object(self, body: dict[str, Any], schema: Obj, scope: Scope, path: str) -> None:
        for raw_key, value in body.items():
            key = raw_key.strip("'")
            if not path and key in BICEP_KEYS:
                continue
            spec = schema.fields.get(key)
            where = f"{path}.{key}" if path else key
            if spec is None:
                if schema.open:
                    continue
                near = [name for name in schema.fields if name.lower() == key.lower()]
                hint = f" (the model spells it {near[0]})" if near else ""
                self.problems.append(f"{where}: unknown property{hint}")
                continue
            if isinstance(spec, Obj):
                for kind, *rest in resolve(value, scope):
                    if kind == "literal" and isinstance(rest[0], dict):
                        self.check_object(rest[0], spec, scope, where)
                    elif kind == "literal":
                        self.problems.append(f"{where}: expected an object, got {_kind(rest[0])} {rest[0]!r}")
                continue
            if spec.readonly:
                self.problems.append(f"{where}: read-only property (set by Azure, not by a template)")
                continue
            self.check_value(value, spec.type, spec.enum, scope, where)

    def check_value(self, value: Any, type_: str, enum: frozenset[str] | None, scope: Scope, where: str) -> None:
        expected = _expected_kind(type_)
        for kind, *rest in resolve(value, scope):
            if kind == "unknown" or type_ == "object":
                continue
            if kind == "param":
                param_type, allowed = rest
                got = _PARAM_KINDS.get(str(param_type).lower(), "object")
                if got != expected and not (got == "object" and expected == "object"):
                    self.problems.append(f"{where}: expected {expected} ({type_}), got a {param_type} parameter")
                if enum is not None and allowed:
                    for item in allowed:
                        if str(item).lower() not in enum:
                            self.problems.append(f"{where}: the parameter allows {item!r}, not one of {sorted(enum)}")
                continue
            literal = rest[0]
            got = _kind(literal)
            if got != expected:
                self.problems.append(f"{where}: expected {expected} ({type_}), got {got} {literal!r}")
                continue
            if expected == "array":
                for i, item in enumerate(literal):
                    self.check_value(item, type_[1:-1], None, scope, f"{where}[{i}]")
            elif type_.startswith("{"):
                for key, item in literal.items():
                    self.check_value(item, type_[1:-1], None, scope, f"{where}.{key.strip(chr(39))}")
            elif expected == "object":
                cls = getattr(self.models, type_, None)
                if cls is None:
                    continue
                self.check_object(literal, model_schema(self.models, _subtype(self.models, cls, literal)), scope, where)
            elif expected == "string" and "${" not in literal:
                if enum is not None and literal.lower() not in enum:
                    self.problems.append(f"{where}: {literal!r} is not one of {sorted(enum)}")
                if type_ == "duration":
                    try:
                        isodate.parse_duration(literal)
                    except isodate.ISO8601Error:
                        self.problems.append(f"{where}: {literal!r} is not an ISO 8601 duration")
            elif expected == "number" and enum is not None and str(literal).lower() not in enum:
                self.problems.append(f"{where}: {literal!r} is not one of {sorted(enum)}")


def _subtype(models: ModuleType, cls: type, value: dict[str, Any]) -> type:
    """The subclass a discriminator value picks, for polymorphic models."""
    subtypes: dict[str, dict[str, str]] = getattr(cls, "_subtype_map", None) or {}
    for attr, mapping in subtypes.items():
        key = cls._attribute_map[attr]["key"]  # type: ignore[attr-defined]
        chosen = value.get(key)
        if isinstance(chosen, str) and chosen in mapping:
            subclass = getattr(models, mapping[chosen], cls)
            return subclass if isinstance(subclass, type) else cls
    return cls


def _scope(tree: dict[str, Any]) -> Scope:
    variables = {name: var["value"] for name, var in (tree.get("variables") or {}).items()}
    symbols = set(tree.get("resources") or {}) | set(tree.get("modules") or {})
    return Scope(tree.get("parameters") or {}, variables, symbols)


def _model(res: Resource, api_version: str) -> tuple[ModuleType, type] | str:
    key = (res.type, api_version)
    if key not in MODELS:
        return f"no ARM model is pinned for {res.type}@{api_version} (tests/infra/arm_schema.py MODELS)"
    module_name, class_name, operations = MODELS[key]
    models = importlib.import_module(module_name)
    if operations is not None:
        source = inspect.getsource(importlib.import_module(operations))
        if f'"{api_version}"' not in source:
            return f"the pinned {module_name.split('.')[2]} SDK does not speak {res.type}@{api_version}"
    if res.type == "Microsoft.Web/sites/config":
        class_name = SITE_CONFIG.get(str(res.body.get("name")), "")
    cls = getattr(models, class_name, None)
    if not isinstance(cls, type):
        return f"{module_name} has no model {class_name}"
    return models, cls


def _bodies(res: Resource, raw: dict[str, Any], scope: Scope) -> Iterator[Scope]:
    """One scope per element of the loop a resource is declared in (the loop item bound), else the file's scope."""
    loop = (raw.get("config") or {}).get("loop_type")
    if not loop:
        yield scope
        return
    detail = loop.get("detail") or {}
    array = _elements(scope.variables.get(str(detail.get("array_name"))), scope)
    if array is None:
        yield scope
        return
    for element in array:
        yield Scope(scope.params, scope.variables, scope.symbols, {**scope.loop, detail["item_name"]: element})


def _elements(value: Any, scope: Scope, depth: int = 0) -> list[Any] | None:
    """Every element an array can hold: a literal, a variable, `concat(...)` of those, both branches of `c ? a : b`."""
    if isinstance(value, list):
        return value
    if isinstance(value, str) and value in scope.variables and depth < 10:
        return _elements(scope.variables[value], scope, depth + 1)
    function = value.get("function") if isinstance(value, dict) else None
    operator = value.get("operator") if isinstance(value, dict) else None
    if isinstance(function, dict) and function.get("type") == "concat":
        parts = [_elements(arg, scope, depth + 1) for arg in function["parameters"].values()]
    elif isinstance(operator, dict) and operator.get("type") == "conditional":
        operands = operator["operands"]
        parts = [_elements(operands[k], scope, depth + 1) for k in ("true_value", "false_value")]
    else:
        return None
    return None if any(p is None for p in parts) else [item for part in parts for item in part or []]


MODELS_WEB_CONFIG = ("Microsoft.Web/sites/config", "2024-04-01")
MODELS[MODELS_WEB_CONFIG] = ("azure.mgmt.web.v2024_04_01.models", "", None)


def check_schema(infra: Path) -> list[str]:
    trees = load(infra)
    problems: list[str] = []
    for res in resources(trees):
        if res.existing:
            continue
        tree = trees[res.file]
        raw = tree["resources"][res.symbol]
        api_version = raw["api_version"]
        where = f"{res.file}: {res.symbol} ({res.type}@{api_version})"
        model = _model(res, api_version)
        if isinstance(model, str):
            problems.append(f"{where}: {model}")
            continue
        models, cls = model
        schema = model_schema(models, cls)
        seen: set[str] = set()
        for scope in _bodies(res, raw, _scope(tree)):
            checker = Checker(models)
            checker.check_object(res.body, schema, scope, "")
            for problem in checker.problems:
                if problem not in seen:
                    seen.add(problem)
                    problems.append(f"{where}: {problem}")
    return problems
