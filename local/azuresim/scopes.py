"""Delegated scopes as the identity platform reads them (permissions-consent-overview, scopes-oidc):
``openid profile email offline_access`` are OpenID Connect scopes; ``https://graph.microsoft.com/Mail.Read``
names a resource and a permission; a bare ``Mail.Read`` means Microsoft Graph; ``{resource}/.default``
means the permissions configured on the app registration. Scope names are case-insensitive.

A consented scope is kept as ``{resource}/{Permission}`` (canonical casing) or a bare OIDC scope.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

GRAPH = "https://graph.microsoft.com"
GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"
VAULT = "https://vault.azure.net"
VAULT_APP_ID = "cfa8b339-82a2-471a-a3c9-0fc0be7a4093"
# Exchange Online: IMAP and POP with OAuth (app-only IMAP.AccessAsApp, POP.AccessAsApp).
EXCHANGE = "https://outlook.office365.com"
EXCHANGE_APP_ID = "00000002-0000-0ff1-ce00-000000000000"
# Azure Resource Manager, for the operator's CLI reading a Function App's settings. It is known by two application
# ID URIs, the classic one with its trailing slash (Azure CLI asks for that one).
MANAGEMENT = "https://management.azure.com"
MANAGEMENT_CLASSIC = "https://management.core.windows.net"
MANAGEMENT_APP_ID = "797f4846-ba00-4fd7-ba43-dac1f8f63013"
OIDC_SCOPES = ("openid", "profile", "email", "offline_access")

# The delegated permissions each simulated resource knows (the ones this app family may ask for);
# anything else is an invalid scope, so a typo fails here as it would against Entra ID.
DELEGATED_PERMISSIONS: dict[str, tuple[str, ...]] = {
    GRAPH: (
        "User.Read",
        "User.ReadBasic.All",
        "Mail.Read",
        "Mail.ReadBasic",
        "Mail.ReadWrite",
        "Mail.Read.Shared",
        "Mail.ReadWrite.Shared",
        "Mail.Send",
        "MailboxSettings.Read",
        "MailboxSettings.ReadWrite",
    ),
    VAULT: ("user_impersonation",),
    EXCHANGE: ("IMAP.AccessAsUser.All", "POP.AccessAsUser.All"),
    MANAGEMENT: ("user_impersonation",),
}
# The resources the simulated tenant knows, by application ID URI or by app id. Like Entra ID, it knows no
# other: a scope naming the simulator's own host is refused, so the app must be told the resource (GRAPH_SCOPE).
RESOURCES = {
    GRAPH: GRAPH,
    GRAPH_APP_ID: GRAPH,
    VAULT: VAULT,
    VAULT_APP_ID: VAULT,
    EXCHANGE: EXCHANGE,
    EXCHANGE_APP_ID: EXCHANGE,
    MANAGEMENT: MANAGEMENT,
    MANAGEMENT_CLASSIC: MANAGEMENT,
    MANAGEMENT_APP_ID: MANAGEMENT,
}


class ScopeError(Exception):
    """``oauth`` is the OAuth error code, ``aadsts`` the AADSTS number."""

    def __init__(self, oauth: str, aadsts: int, message: str) -> None:
        super().__init__(message)
        self.oauth = oauth
        self.aadsts = aadsts
        self.message = message


@dataclass(frozen=True)
class ScopeRequest:
    oidc: tuple[str, ...]  # lower case, in request order
    permissions: tuple[str, ...]  # canonical "{resource}/{Permission}", in request order
    qualified: frozenset[str]  # resources the request named by URI (answered in the same form)

    @property
    def resources(self) -> tuple[str, ...]:
        seen: dict[str, None] = {}
        for scope in self.permissions:
            seen.setdefault(resource_of(scope), None)
        return tuple(seen)

    @property
    def consent_scopes(self) -> frozenset[str]:
        return frozenset(self.permissions) | frozenset(self.oidc)


def resource_of(scope: str) -> str:
    return scope.rsplit("/", 1)[0]


def permission_of(scope: str) -> str:
    return scope.rsplit("/", 1)[1]


def _permission(resource: str, name: str, raw: str) -> str:
    for known in DELEGATED_PERMISSIONS[resource]:
        if known.lower() == name.lower():
            return f"{resource}/{known}"
    raise ScopeError(
        "invalid_scope",
        70011,
        f"The provided value for the input parameter 'scope' is not valid. The scope '{raw}' does not exist.",
    )


def parse_scopes(text: str, configured: Callable[[str], tuple[str, ...]]) -> ScopeRequest:
    """``configured(resource)`` gives the app's permissions on a resource, for ``/.default``."""
    oidc: list[str] = []
    permissions: list[str] = []
    qualified: set[str] = set()
    for raw in text.split():
        lowered = raw.lower()
        if lowered in OIDC_SCOPES:
            if lowered not in oidc:
                oidc.append(lowered)
            continue
        if "/" in raw:
            base, _, name = raw.rstrip("/").rpartition("/")
            resource = RESOURCES.get(base.rstrip("/").lower()) if base else None
            if resource is None:
                raise ScopeError(
                    "invalid_resource",
                    500011,
                    f"The resource principal named {base} was not found in the tenant.",
                )
            qualified.add(resource)
        else:
            resource, name = GRAPH, raw
        names = configured(resource) if name.lower() == ".default" else (name,)
        for each in names:
            scope = _permission(resource, each, raw)
            if scope not in permissions:
                permissions.append(scope)
    return ScopeRequest(tuple(oidc), tuple(permissions), frozenset(qualified))


def render(scopes: list[str], qualified: frozenset[str], oidc: tuple[str, ...] = ()) -> str:
    """The ``scope`` of a token response: each permission in the form the request used
    (Graph's bare, anything else by URI), then the OIDC scopes."""
    rendered = [s if resource_of(s) in qualified or resource_of(s) != GRAPH else permission_of(s) for s in scopes]
    return " ".join([*rendered, *oidc])
