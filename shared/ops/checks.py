"""The "test login" of a deployment: every outside dependency tried once, as the app uses it.

Each check is one line: what was tried, whether it worked, and on failure the likely fix. Checks
after a failed one still run, so one run lists everything that needs fixing.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import quote, urlsplit

import httpx

from .. import clock
from ..errors import AuthError, DeploymentError, GraphAuthError, GraphNotFound, SettingsError, one_line
from ..logs import redact_url
from ..runtime import Runtime
from ..settings import NO_MICROSOFT_365, MailAccount, MailboxFolder
from ..sources.graph.folders import resolve_folder, user_path
from ..vault import CLIENT_STATE_SECRET
from . import defender_azure as dfs
from . import eventgrid_azure as eg
from .deployment import EVENTGRID_API_VERSION, PUBLIC_CLOUD, Deployment, ResourceManager

if TYPE_CHECKING:
    from azure.core.credentials_async import AsyncTokenCredential

CHECK_SECRET = "ingest-check"  # noqa: S105 (a secret's name, not a secret)
NO_GRAPH = f"{NO_MICROSOFT_365} (token, mailbox folders and webhooks are not used)"
# Graph gives the endpoint 10 seconds to answer its validation request (graph_facts §2).
VALIDATION_TIMEOUT = 10.0

ROLE_HINTS = {
    "storage": "grant the app's identity (or your `az login` user) 'Storage Blob Data Contributor' on the "
    "storage account, or check AzureWebJobsStorage",
    "vault": "grant the app's identity (or your `az login` user) 'Key Vault Secrets Officer' on the vault, "
    "and check KEY_VAULT_URL",
}


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    detail: str = ""
    hint: str = ""


Check = Callable[[], Awaitable[str]]


async def _run(name: str, check: Check, hint: Callable[[Exception], str]) -> CheckResult:
    try:
        return CheckResult(name, True, await check())
    except Exception as exc:  # any failure is the check's answer
        return CheckResult(name, False, one_line(exc), hint(exc))


def _token_hint(exc: Exception) -> str:
    text = str(exc)
    if "invalid_resource" in text or "invalid_scope" in text or "AADSTS500011" in text:
        # A Graph endpoint behind a gateway or emulator: its host is not a resource Entra ID knows.
        return (
            "the identity platform does not know the resource of the token scope: set GRAPH_SCOPE to the "
            "resource Graph tokens are for, usually https://graph.microsoft.com/.default"
        )
    return (
        "check GRAPH_TENANT_ID, GRAPH_CLIENT_ID, GRAPH_AUTHORITY_HOST and the credential: GRAPH_CLIENT_SECRET "
        "(expired?) or GRAPH_CLIENT_CERTIFICATE (a Key Vault certificate whose public key is uploaded to the "
        "app registration)"
    )


def _graph_hint(folder: MailboxFolder) -> Callable[[Exception], str]:
    def hint(exc: Exception) -> str:
        if isinstance(exc, GraphNotFound):
            return (
                f"no folder {folder.folder!r} in mailbox {folder.mailbox}: fix the entry in MAILBOXES "
                "(mailbox address, folder path as shown in Outlook) or create the folder"
            )
        if isinstance(exc, GraphAuthError):
            return (
                "include this mailbox in the app's Exchange Online RBAC for Applications scope, or (for every "
                "mailbox of the tenant) grant the application permission Mail.Read with admin consent: "
                "docs/setup.md, step 4"
            )
        if isinstance(exc, AuthError):
            return _token_hint(exc)
        return "check GRAPH_API_URL and that Microsoft Graph is reachable from here"

    return hint


def _webhook_hint(url: Callable[[], str]) -> Callable[[Exception], str]:
    def hint(exc: Exception) -> str:
        if isinstance(exc, SettingsError):
            return "set WEBHOOK_BASE_URL to the app's public HTTPS URL"
        return (
            f"Graph must reach {redact_url(url())} and get the token back as text/plain within 10 s: set "
            "WEBHOOK_BASE_URL to the app's public HTTPS URL (in Azure https://<app>.azurewebsites.net) "
            "and make sure the function app is running"
        )

    return hint


async def validation_handshake(url: str, limit: float = VALIDATION_TIMEOUT) -> str:
    """POST `url` with `validationToken` as Graph does; the endpoint must echo the decoded token."""
    token = f"Validation: Testing client application reachability for subscription Request-Id: {secrets.token_hex(8)}"
    sep = "&" if urlsplit(url).query else "?"
    started = time.monotonic()
    # The whole exchange within the limit, as Graph counts it (httpx's timeouts are per operation).
    async with asyncio.timeout(limit), httpx.AsyncClient(timeout=limit) as client:
        response = await client.post(
            f"{url}{sep}validationToken={quote(token, safe='')}",
            headers={"Content-Type": "text/plain; charset=utf-8"},
        )
    ms = round((time.monotonic() - started) * 1000)
    if response.status_code != 200:
        raise ValueError(f"answered {response.status_code}, expected 200")
    content_type = response.headers.get("content-type", "")
    if not content_type.lower().startswith("text/plain"):
        raise ValueError(f"answered with content type {content_type!r}, expected text/plain")
    if response.text != token:
        raise ValueError("answered 200 but did not echo the decoded validation token")
    return f"echoed the token in {ms} ms"


def _arm_hint(command: str, group: str) -> Callable[[Exception], str]:
    def hint(exc: Exception) -> str:
        if isinstance(exc, DeploymentError):
            return (
                f"sign in (`az login`, or AZURE_* variables) as someone with Reader on resource group {group}, "
                "and check --management-url"
            )
        return command

    return hint


class Checks:
    """The checklist against one runtime (settings already parsed). `management_url` and `management_scope`: Azure
    Resource Manager, read with the operator's sign-in (as `--app` does) for the Azure side of Event Grid."""

    def __init__(self, rt: Runtime, management_url: str = PUBLIC_CLOUD, management_scope: str | None = None) -> None:
        self.rt = rt
        self.settings = rt.settings
        self.management_url = management_url
        self.management_scope = management_scope

    async def token(self) -> list[CheckResult]:
        if self.settings.auth_mode == "application":

            async def client_credentials() -> str:
                await self.rt.tokens.token(None)
                how = "certificate" if self.settings.client_certificate else "client secret"
                return f"client credentials ({how}) for {self.settings.graph_scope}"

            return [await _run("token (client credentials)", client_credentials, _token_hint)]
        # Delegated: each mailbox has its own sign-in; a Graph call for it shows whether its token works.
        mailboxes = sorted({f.mailbox for f in self.settings.mailboxes})
        return list(await asyncio.gather(*(self._delegated(m) for m in mailboxes)))

    async def _delegated(self, mailbox: str) -> CheckResult:
        async def signed_in() -> str:
            await self.rt.graph.request(
                "GET", f"{user_path(mailbox)}/mailFolders/inbox", mailbox=mailbox, params={"$select": "id"}
            )
            return "token accepted by Graph"

        def hint(exc: Exception) -> str:
            return (
                f"{mailbox} must sign in and consent again: `status` shows its consent URL "
                f"(state record auth/{mailbox.lower()}.json)"
            )

        return await _run(f"token for {mailbox} (delegated)", signed_in, hint)

    async def folder(self, folder: MailboxFolder) -> CheckResult:
        async def readable() -> str:
            folder_id = await resolve_folder(self.rt.graph, folder.mailbox, folder.folder)
            path = f"{user_path(folder.mailbox)}/mailFolders/{quote(folder_id, safe='')}/messages"
            page = await self.rt.graph.request(
                "GET", path, mailbox=folder.mailbox, params={"$top": "1", "$select": "id"}
            )
            return f"resolved, {len(page.get('value', []))} message(s) listed"

        return await _run(f"mailbox folder {folder}", readable, _graph_hint(folder))

    async def account(self, account: MailAccount) -> CheckResult:
        from ..sources.check import account_hint, check_account

        return await _run(
            f"account {account}", lambda: check_account(self.rt, account), lambda exc: account_hint(account, exc)
        )

    async def webhook(self, name: str, url: Callable[[], str]) -> CheckResult:
        """`url` is read inside the check: without WEBHOOK_BASE_URL it fails there, with its hint."""
        return await _run(name, lambda: validation_handshake(url()), _webhook_hint(url))

    def _arm(
        self, subscription: str, group: str, http: httpx.AsyncClient, credential: AsyncTokenCredential
    ) -> ResourceManager:
        where = Deployment(subscription, group, "", self.management_url, self.management_scope)
        return ResourceManager(where, credential, http)

    async def defender(self) -> list[CheckResult]:
        """Defender for Storage's setting on the account, the topic it publishes to and the event subscription that
        delivers to MALWARE_SCAN_QUEUE, as ARM describes them."""
        from azure.identity.aio import DefaultAzureCredential

        target = self.settings.defender
        assert target is not None
        topic: list[str] = []  # the setting's topic, once read: the other two checks need it

        def named_topic() -> str:
            if not topic:
                raise ValueError("Defender's setting names no topic to look at")
            return topic[0]

        async with DefaultAzureCredential() as credential, httpx.AsyncClient(timeout=60) as http:
            arm = self._arm(target.azure_subscription_id, target.resource_group, http, credential)

            async def scanning() -> str:
                setting = await arm.resource(dfs.setting_path(target), dfs.DEFENDER_API_VERSION)
                topic.extend(filter(None, [dfs.named_topic(setting)]))  # checked even when the setting is wrong
                return dfs.setting_verdict(setting, target)[0]

            async def provisioned() -> str:
                return dfs.topic_verdict(await arm.resource_by_id(named_topic(), EVENTGRID_API_VERSION), named_topic())

            async def subscribed() -> str:
                listing = await arm.resource_by_id(f"{named_topic()}/eventSubscriptions", EVENTGRID_API_VERSION)
                return dfs.subscription_verdict(listing, target, named_topic())

            hint = _arm_hint(dfs.provision_command(target), target.resource_group)
            return [
                await _run("Defender for Storage malware scanning", scanning, hint),
                await _run("Defender scan results topic", provisioned, hint),
                await _run("Defender scan results event subscription", subscribed, hint),
            ]

    async def eventgrid(self) -> list[CheckResult]:
        """The partner configuration, the partner topic and its event subscription, as ARM describes them."""
        from azure.identity.aio import DefaultAzureCredential

        target = self.settings.eventgrid
        assert target is not None
        topic = eg.topic_path(target)

        async with DefaultAzureCredential() as credential, httpx.AsyncClient(timeout=60) as http:
            arm = self._arm(target.azure_subscription_id, target.resource_group, http, credential)

            async def authorized() -> str:
                configuration = await arm.resource(eg.CONFIGURATION, EVENTGRID_API_VERSION)
                return eg.authorization_verdict(configuration, target, clock.now())

            async def activated() -> str:
                return eg.activation_verdict(await arm.resource(topic, EVENTGRID_API_VERSION), target)

            async def subscribed() -> str:
                listing = await arm.resource(f"{topic}/eventSubscriptions", EVENTGRID_API_VERSION)
                return eg.subscription_verdict(listing, target)

            group = target.resource_group
            return [
                await _run(
                    "Event Grid partner authorization", authorized, _arm_hint(eg.authorize_command(target), group)
                ),
                await _run("Event Grid partner topic", activated, _arm_hint(eg.activate_command(target), group)),
                await _run("Event Grid event subscription", subscribed, _arm_hint(eg.subscribe_command(target), group)),
            ]

    async def blob(self) -> CheckResult:
        async def write_read_delete() -> str:
            path = f"check/{secrets.token_hex(8)}.json"
            value = secrets.token_hex(8)
            await self.rt.state.write_json(path, {"check": value}, None)
            try:
                found = await self.rt.state.read_json(path)
                if found is None or found[0].get("check") != value:
                    raise ValueError("the blob read back is not the one written")
            finally:
                await self.rt.state.delete(path)
            return f"container {self.settings.state_container}"

        return await _run("blob write, read, delete", write_read_delete, lambda _: ROLE_HINTS["storage"])

    async def vault(self) -> CheckResult:
        async def read_write() -> str:
            key = await self.rt.vault.get(CLIENT_STATE_SECRET)
            value = secrets.token_hex(8)
            await self.rt.vault.set(CHECK_SECRET, value)
            if await self.rt.vault.get(CHECK_SECRET) != value:
                raise ValueError(f"secret {CHECK_SECRET} read back differs from what was set")
            if not self.settings.uses_graph:
                return f"{CHECK_SECRET} set and read back"
            present = "present" if key is not None else "not created yet (the first maintain run creates it)"
            return f"{CLIENT_STATE_SECRET} {present}; {CHECK_SECRET} set and read back"

        return await _run("Key Vault read and write", read_write, lambda _: ROLE_HINTS["vault"])

    async def routes(self) -> CheckResult:
        async def readable() -> str:
            blob = self.rt.routes_blob
            assert blob is not None
            await blob.refresh(now=True)
            if blob.problem:
                raise ValueError(blob.problem)
            return f"{len(await blob.current())} route(s) from {blob.store.name}/{blob.name}"

        hint = "fix the blob; until then the last good routes stay (a new instance without them holds its mail)"
        return await _run("routes (ROUTES_BLOB)", readable, lambda _: hint)

    async def all(self) -> list[CheckResult]:
        results: list[CheckResult] = []
        if self.settings.uses_graph:
            results += await self.token()
            results += await asyncio.gather(*(self.folder(f) for f in self.settings.mailboxes))
        else:
            results.append(CheckResult("Microsoft Graph", True, f"skipped: {NO_GRAPH}"))
        results += await asyncio.gather(*(self.account(a) for a in self.settings.accounts))
        if self.settings.uses_graph and self.settings.eventgrid is not None:
            topic = self.settings.eventgrid.partner_topic
            results.append(CheckResult("webhooks", True, f"not used: Graph publishes to partner topic {topic}"))
            results += await self.eventgrid()
        elif self.settings.uses_graph:
            results.append(await self.webhook("webhook (notification URL)", lambda: self.settings.notification_url))
            results.append(await self.webhook("webhook (lifecycle URL)", lambda: self.settings.lifecycle_url))
        if self.settings.defender is not None:
            results += await self.defender()
        results.append(await self.blob())
        if self.rt.routes_blob is not None:
            results.append(await self.routes())
        results.append(await self.vault())
        return results
