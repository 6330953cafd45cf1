"""Azure Resource Manager, the few endpoints the operator's CLI uses against a deployment:

- ``POST /subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Web/sites/{name}/config/appsettings/list``:
  a Function App's app settings (a StringDictionary: ``id``, ``name`` ``appsettings``, ``type``, ``properties``),
  values as stored, Key Vault references unresolved (ARM returns them as written).
- ``GET /subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.KeyVault/vaults/{name}``: a vault, for its
  ``properties.vaultUri`` (here the simulator's own Key Vault).
- ``GET .../providers/Microsoft.EventGrid/partnerConfigurations/default``, ``.../partnerTopics/{name}`` and
  ``.../partnerTopics/{name}/eventSubscriptions``: the simulator's Event Grid state (eventgrid.py) in the shapes
  of the Event Grid control-plane REST API 2025-02-15.
- Defender for Storage's setting on a storage account and Event Grid custom topics with their event subscriptions
  (MALWARE_SCANNING=defender): arm_defender.py.

As ARM does: no bearer token is 401 ``AuthenticationFailed`` with a ``WWW-Authenticate`` challenge; a token for
another audience 401 ``InvalidAuthenticationTokenAudience``; no ``api-version`` 400 ``MissingApiVersionParameter``; an
unknown resource group 404 ``ResourceGroupNotFound``, an unknown resource 404 ``ResourceNotFound``; a principal
without a role whose actions include the operation 403 ``AuthorizationFailed`` naming the action and scope. Reading
app settings is an action (``Microsoft.Web/sites/config/list/action``) that Reader does not have.

Sites, vaults and role assignments are made through the control API (``/_sim/arm/...``), as ``azd provision`` would.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from aiohttp import web

from .arm_base import ArmError, control_names
from .arm_defender import EVENTGRID_API_VERSION as TOPIC_API_VERSION
from .arm_defender import (
    READ_DEFENDER_SETTING,
    READ_TOPIC,
    READ_TOPIC_SUBSCRIPTIONS,
    SECURITY_API_VERSION,
    DefenderResources,
)
from .control import _bad, _json
from .defender import Defender
from .eventgrid import EventGrid, PartnerTopic
from .identity import Authority, TokenError, bearer_token, origin
from .scopes import MANAGEMENT, MANAGEMENT_CLASSIC

# Built-in roles and the actions of theirs this simulator checks (Azure built-in roles reference).
ROLE_ACTIONS: dict[str, tuple[str, ...]] = {
    "Owner": ("*",),
    "Contributor": ("*",),
    "Website Contributor": ("Microsoft.Web/sites/*",),
    "Reader": ("*/read",),
}
LIST_APP_SETTINGS = "Microsoft.Web/sites/config/list/action"
READ_VAULT = "Microsoft.KeyVault/vaults/read"
READ_PARTNER_CONFIGURATION = "Microsoft.EventGrid/partnerConfigurations/read"
READ_PARTNER_TOPIC = "Microsoft.EventGrid/partnerTopics/read"
READ_EVENT_SUBSCRIPTIONS = "Microsoft.EventGrid/partnerTopics/eventSubscriptions/read"
_API_VERSION = re.compile(r"^\d{4}-\d{2}-\d{2}(-preview)?$")
_AUDIENCES = {MANAGEMENT, f"{MANAGEMENT}/", MANAGEMENT_CLASSIC, f"{MANAGEMENT_CLASSIC}/"}


@dataclass
class Site:
    subscription: str
    resource_group: str
    name: str
    app_settings: dict[str, str] = field(default_factory=dict)
    location: str = "westeurope"

    @property
    def id(self) -> str:
        return (
            f"/subscriptions/{self.subscription}/resourceGroups/{self.resource_group}"
            f"/providers/Microsoft.Web/sites/{self.name}"
        )


@dataclass(frozen=True)
class RoleAssignment:
    principal_id: str
    role: str
    scope: str  # a subscription, resource group or resource id


def _allows(role: str, action: str) -> bool:
    for pattern in ROLE_ACTIONS[role]:
        if pattern == "*" or (pattern == "*/read" and action.endswith("/read")):
            return True
        if pattern.endswith("/*") and action.lower().startswith(pattern[:-1].lower()):
            return True
    return False


class ResourceManager:
    def __init__(self, authority: Authority, eventgrid: EventGrid, scanner: Defender | None = None) -> None:
        self.authority = authority
        self.eventgrid = eventgrid
        self.sites: dict[tuple[str, str, str], Site] = {}  # (subscription, group, name), lower case
        self.vaults: dict[tuple[str, str, str], str] = {}  # the same key → the vault's name as given
        self.assignments: list[RoleAssignment] = []
        self.defender = DefenderResources(eventgrid, scanner)

    def routes(self) -> list[web.RouteDef]:
        site = "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Web/sites/{name}"
        vault = "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.KeyVault/vaults/{name}"
        grid = "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.EventGrid"
        account = "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Storage/storageAccounts/{name}"
        return [
            web.post(f"{site}/config/appsettings/list", self.list_app_settings),
            web.get(vault, self.get_vault),
            web.get(grid + "/partnerConfigurations/{name:default}", self.get_partner_configuration),
            web.get(grid + "/partnerTopics/{name}", self.get_partner_topic),
            web.get(grid + "/partnerTopics/{name}/eventSubscriptions", self.list_event_subscriptions),
            web.get(
                f"{account}/providers/Microsoft.Security/defenderForStorageSettings/{{setting}}", self.get_defender
            ),
            web.get(grid + "/topics/{name}", self.get_topic),
            web.get(grid + "/topics/{name}/eventSubscriptions", self.list_topic_subscriptions),
            *self.defender.routes(),
            web.put("/_sim/arm/sites", self.put_site),
            web.put("/_sim/arm/vaults", self.put_vault),
            web.post("/_sim/arm/roleAssignments", self.add_assignment),
        ]

    # -- checks, in ARM's order: token, api-version, group, resource, authorization ---------------------
    def _caller(self, request: web.Request) -> str:
        challenge = {
            "WWW-Authenticate": f'Bearer authorization_uri="{origin(request)}/{self.authority.store.tenant_id}", '
            f'error="invalid_token", error_description="The authentication failed because of missing '
            "'Authorization' header.\""
        }
        token = bearer_token(request)
        if token is None:
            raise ArmError(
                401, "AuthenticationFailed", "Authentication failed. The 'Authorization' header is missing.", challenge
            )
        try:
            claims = self.authority.verify(token, _AUDIENCES)
        except TokenError as exc:
            code = "InvalidAuthenticationTokenAudience" if "audience" in str(exc) else "InvalidAuthenticationToken"
            raise ArmError(401, code, f"The access token is invalid: {exc}", challenge) from exc
        if not _API_VERSION.match(request.query.get("api-version", "")):
            if "api-version" not in request.query:
                raise ArmError(
                    400,
                    "MissingApiVersionParameter",
                    "The api-version query parameter (?api-version=) is required for all requests.",
                )
            raise ArmError(
                400, "InvalidApiVersionParameter", f"The api-version '{request.query['api-version']}' is invalid."
            )
        return str(claims.get("oid", ""))

    def _key(self, request: web.Request) -> tuple[str, str, str]:
        sub, rg, name = (request.match_info[k].lower() for k in ("sub", "rg", "name"))
        groups = (
            *self.sites,
            *self.vaults,
            *self.eventgrid.authorizations,
            *self.eventgrid.topics,
            *self.defender.groups(),
        )
        if not any(k[0] == sub and k[1] == rg for k in groups):
            raise ArmError(
                404, "ResourceGroupNotFound", f"Resource group '{request.match_info['rg']}' could not be found."
            )
        return sub, rg, name

    def _authorize(self, principal: str, action: str, scope: str) -> None:
        lowered = scope.lower()
        for assignment in self.assignments:
            inside = lowered == assignment.scope.lower() or lowered.startswith(f"{assignment.scope.lower()}/")
            if assignment.principal_id == principal and inside and _allows(assignment.role, action):
                return
        raise ArmError(
            403,
            "AuthorizationFailed",
            f"The client '{principal}' with object id '{principal}' does not have authorization to perform action "
            f"'{action}' over scope '{scope}' or the scope is invalid. If access was recently granted, please "
            "refresh your credentials.",
        )

    @staticmethod
    def _not_found(kind: str, request: web.Request) -> ArmError:
        return ArmError(
            404,
            "ResourceNotFound",
            f"The Resource '{kind}/{request.match_info['name']}' under resource group '{request.match_info['rg']}' "
            "was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix",
        )

    # -- ARM -----------------------------------------------------------------------------------------
    async def list_app_settings(self, request: web.Request) -> web.Response:
        principal = self._caller(request)
        site = self.sites.get(self._key(request))
        if site is None:
            raise self._not_found("Microsoft.Web/sites", request)
        self._authorize(principal, LIST_APP_SETTINGS, f"{site.id}/config/appsettings")
        return web.json_response(
            {
                "id": f"{site.id}/config/appsettings",
                "name": "appsettings",
                "type": "Microsoft.Web/sites/config",
                "location": site.location,
                "properties": dict(site.app_settings),
            }
        )

    async def get_vault(self, request: web.Request) -> web.Response:
        principal = self._caller(request)
        key = self._key(request)
        name = self.vaults.get(key)
        if name is None:
            raise self._not_found("Microsoft.KeyVault/vaults", request)
        group = f"/subscriptions/{key[0]}/resourceGroups/{request.match_info['rg']}"
        vault_id = f"{group}/providers/Microsoft.KeyVault/vaults/{name}"
        self._authorize(principal, READ_VAULT, vault_id)
        return web.json_response(
            {
                "id": vault_id,
                "name": name,
                "type": "Microsoft.KeyVault/vaults",
                "properties": {"vaultUri": f"{origin(request)}/", "enableRbacAuthorization": True},
            }
        )

    def _group_id(self, request: web.Request) -> str:
        return f"/subscriptions/{request.match_info['sub']}/resourceGroups/{request.match_info['rg']}"

    async def get_partner_configuration(self, request: web.Request) -> web.Response:
        principal = self._caller(request)
        sub, rg, _ = self._key(request)
        config_id = f"{self._group_id(request)}/providers/Microsoft.EventGrid/partnerConfigurations/default"
        self._authorize(principal, READ_PARTNER_CONFIGURATION, config_id)
        authorization = self.eventgrid.partner_authorization(sub, rg)
        if authorization is None:
            raise self._not_found("Microsoft.EventGrid/partnerConfigurations", request)
        return web.json_response(
            {
                "id": config_id,
                "name": "default",
                "type": "Microsoft.EventGrid/partnerConfigurations",
                "location": "global",
                "properties": {"partnerAuthorization": authorization, "provisioningState": "Succeeded"},
            }
        )

    def _partner_topic(self, request: web.Request, action: str) -> tuple[str, PartnerTopic]:
        principal = self._caller(request)
        key = self._key(request)
        topic_id = f"{self._group_id(request)}/providers/Microsoft.EventGrid/partnerTopics/{request.match_info['name']}"
        self._authorize(principal, action, topic_id)
        topic = self.eventgrid.topics.get(key)
        if topic is None:
            raise self._not_found("Microsoft.EventGrid/partnerTopics", request)
        return topic_id, topic

    async def get_partner_topic(self, request: web.Request) -> web.Response:
        topic_id, topic = self._partner_topic(request, READ_PARTNER_TOPIC)
        return web.json_response({"id": topic_id, **topic.arm()})

    async def list_event_subscriptions(self, request: web.Request) -> web.Response:
        topic_id, topic = self._partner_topic(request, READ_EVENT_SUBSCRIPTIONS)
        storage_group = self._group_id(request)
        return web.json_response(
            {"value": [s.arm(f"{topic_id}/eventSubscriptions", storage_group) for s in topic.subscriptions.values()]}
        )

    # -- MALWARE_SCANNING=defender (arm_defender.py) ----------------------------------------------------
    async def get_defender(self, request: web.Request) -> web.Response:
        principal = self._caller(request)
        DefenderResources.require_version(request, SECURITY_API_VERSION, "defenderForStorageSettings")
        key = self._key(request)
        if request.match_info["setting"] != "current":
            raise ArmError(400, "InvalidResourceName", "The setting name must be 'current'.")
        account_id = (
            f"{self._group_id(request)}/providers/Microsoft.Storage/storageAccounts/{request.match_info['name']}"
        )
        setting_id = f"{account_id}/providers/Microsoft.Security/defenderForStorageSettings/current"
        self._authorize(principal, READ_DEFENDER_SETTING, setting_id)
        setting = self.defender.setting(key, account_id)
        if setting is None:
            raise self._not_found("Microsoft.Security/defenderForStorageSettings", request)
        return web.json_response(setting)

    def _custom_topic(self, request: web.Request, action: str) -> tuple[tuple[str, str, str], str]:
        principal = self._caller(request)
        DefenderResources.require_version(request, TOPIC_API_VERSION, "topics")
        key = self._key(request)
        topic_id = f"{self._group_id(request)}/providers/Microsoft.EventGrid/topics/{request.match_info['name']}"
        self._authorize(principal, action, topic_id)
        if not self.defender.has_topic(key):
            raise self._not_found("Microsoft.EventGrid/topics", request)
        return key, topic_id

    async def get_topic(self, request: web.Request) -> web.Response:
        key, topic_id = self._custom_topic(request, READ_TOPIC)
        return web.json_response(self.defender.topic(key, topic_id))

    async def list_topic_subscriptions(self, request: web.Request) -> web.Response:
        key, topic_id = self._custom_topic(request, READ_TOPIC_SUBSCRIPTIONS)
        return web.json_response({"value": self.defender.subscriptions(key, topic_id)})

    # -- control ---------------------------------------------------------------------------------------
    async def put_site(self, request: web.Request) -> web.Response:
        body = await _json(request)
        settings = body.get("appSettings", {})
        if not isinstance(settings, dict) or not all(isinstance(v, str) for v in settings.values()):
            raise _bad("'appSettings' must be an object of texts")
        site = Site(*control_names(body), app_settings=dict(settings))
        self.sites[(site.subscription.lower(), site.resource_group.lower(), site.name.lower())] = site
        return web.json_response({"id": site.id})

    async def put_vault(self, request: web.Request) -> web.Response:
        sub, rg, name = control_names(await _json(request))
        self.vaults[(sub.lower(), rg.lower(), name.lower())] = name
        return web.json_response({"name": name})

    async def add_assignment(self, request: web.Request) -> web.Response:
        body = await _json(request)
        principal, role, scope = body.get("principalId"), body.get("role"), body.get("scope")
        if not isinstance(principal, str) or not isinstance(scope, str) or role not in ROLE_ACTIONS:
            raise _bad(f"'principalId', 'scope' and 'role' (one of {sorted(ROLE_ACTIONS)}) are required")
        self.assignments.append(RoleAssignment(principal, role, scope))
        return web.json_response({"principalId": principal, "role": role, "scope": scope})
