"""Rules of the platform that no resource schema shows, checked on the parsed Bicep (see bicep_checks).

- Storage redundancy: Standard_ZRS exists only in regions with availability zones; elsewhere the storage account
  fails with RedundancyConfigurationNotAvailableInRegion. The account's SKU is evaluated for each region.
- Flex Consumption's scale-out bounds: the maximum instance count is at least 40 and at most 1,000.
- Host keys: none is created during provisioning (bicep_checks.check_no_host_keys), the postdeploy hook sets it.

Each check returns one line per problem, like bicep_checks, so a planted error can be shown to be caught.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .bicep_checks import load, of_type, parse

# Standard general-purpose v2 accounts may be zone-redundant in these regions only: Microsoft's list, "Azure regions
# that support zone-redundant storage (ZRS)", https://learn.microsoft.com/azure/storage/common/redundancy-regions-zrs
ZRS_REGIONS = frozenset(
    [
        "australiaeast",
        "brazilsouth",
        "canadacentral",
        "centralindia",
        "centralus",
        "chinanorth3",
        "eastasia",
        "eastus",
        "eastus2",
        "francecentral",
        "germanywestcentral",
        "israelcentral",
        "italynorth",
        "japaneast",
        "koreacentral",
        "mexicocentral",
        "northeurope",
        "norwayeast",
        "polandcentral",
        "qatarcentral",
        "southafricanorth",
        "southcentralus",
        "southeastasia",
        "spaincentral",
        "swedencentral",
        "switzerlandnorth",
        "uaenorth",
        "uksouth",
        "usgovvirginia",
        "westeurope",
        "westus2",
        "westus3",
    ]
)
# Regions without availability zones (so without ZRS), among them the Flex Consumption regions the issue names.
NO_ZONE_REGIONS = frozenset(
    [
        "westus",
        "northcentralus",
        "westcentralus",
        "ukwest",
        "australiasoutheast",
        "australiacentral",
        "canadaeast",
        "japanwest",
        "southindia",
        "westindia",
        "koreasouth",
        "germanynorth",
        "norwaywest",
        "switzerlandwest",
        "brazilsoutheast",
        "uaecentral",
        "southafricawest",
        "francesouth",
    ]
)
ZONE_REDUNDANT_SKUS = frozenset({"Standard_ZRS", "Standard_GZRS", "Standard_RAGZRS", "Premium_ZRS"})

# Flex Consumption: "the lowest maximum instance count value is 40, and the highest supported maximum instance count
# value is 1000" (https://learn.microsoft.com/azure/azure-functions/event-driven-scaling#limit-scale-out).
FLEX_MAX_INSTANCES = (40, 1000)


class Unknown(Exception):
    """An expression the evaluator does not follow."""


def evaluate(expr: Any, scope: dict[str, Any]) -> Any:
    """The value of a small subset of Bicep expressions: literals, names in `scope`, `cond ? a : b`, `!x`,
    contains(), toLower(), empty(). pycep writes a name and a string literal alike, so a string that names an
    entry of `scope` is that entry."""
    if isinstance(expr, bool | int | list):
        return expr
    if isinstance(expr, str):
        return scope.get(expr, expr)
    if isinstance(expr, dict) and "operator" in expr:
        op = expr["operator"]
        operands = op.get("operands", {})
        if op.get("type") == "conditional":
            branch = "true_value" if evaluate(operands["condition"], scope) else "false_value"
            return evaluate(operands[branch], scope)
        if op.get("type") == "not":
            return not evaluate(operands["bool_value"], scope)
    if isinstance(expr, dict) and "function" in expr:
        fn = expr["function"]
        params = fn.get("parameters", {})
        if fn.get("type") == "contains":
            return evaluate(params["item_to_find"], scope) in evaluate(params["container"], scope)
        if fn.get("type") == "to_lower":
            return str(evaluate(params["string_to_change"], scope)).lower()
        if fn.get("type") == "empty":
            return not evaluate(params["item_to_test"], scope)
    raise Unknown(repr(expr)[:200])


def _scope(tree: dict[str, Any], **params: Any) -> dict[str, Any]:
    variables = {name: var["value"] for name, var in (tree.get("variables") or {}).items()}
    return {**variables, **params}


def storage_skus(infra: Path, regions: list[str]) -> dict[str, str]:
    """The storage account's SKU name when deployed to each of `regions`."""
    (account,) = of_type(load(infra), "Microsoft.Storage/storageAccounts")
    tree = parse(infra / account.file)
    expr = (account.body.get("sku") or {}).get("name")
    return {region: str(evaluate(expr, _scope(tree, location=region))) for region in regions}


def check_storage_redundancy(infra: Path) -> list[str]:
    try:
        skus = storage_skus(infra, sorted(NO_ZONE_REGIONS | ZRS_REGIONS))
    except Unknown as exc:
        return [f"the storage SKU cannot be evaluated for a region: {exc}"]
    problems = [
        f"{region}: {skus[region]} fails there (no availability zones: RedundancyConfigurationNotAvailableInRegion)"
        for region in sorted(NO_ZONE_REGIONS)
        if skus[region] in ZONE_REDUNDANT_SKUS
    ]
    problems += [
        f"{region}: {skus[region]} where the region offers zone-redundant storage"
        for region in sorted(ZRS_REGIONS)
        if skus[region] not in ZONE_REDUNDANT_SKUS
    ]
    return problems


def _bounds(spec: dict[str, Any]) -> tuple[Any, Any]:
    decorators = {d["type"]: d.get("argument") for d in spec.get("decorators") or []}
    return decorators.get("min_value"), decorators.get("max_value")


def check_flex_instance_bounds(infra: Path) -> list[str]:
    problems = []
    low, high = FLEX_MAX_INSTANCES
    for file in ("main.bicep", "modules/functionapp.bicep"):
        spec = (parse(infra / file).get("parameters") or {}).get("maximumInstanceCount")
        if spec is None:
            problems.append(f"{file}: no parameter maximumInstanceCount")
            continue
        if _bounds(spec) != (low, high):
            bounds = _bounds(spec)
            problems.append(f"{file}: maximumInstanceCount must be @minValue({low}) @maxValue({high}), is {bounds}")
        default = spec.get("default")
        if default is not None and not low <= default <= high:
            problems.append(f"{file}: maximumInstanceCount defaults to {default}, outside {low}..{high}")
    return problems
