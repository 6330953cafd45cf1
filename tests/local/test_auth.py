"""The app's credentials in process against the simulator (real MSAL, the real Key Vault SDK) and
Azurite: a certificate from Key Vault, delegated consent and its refusals, refresh tokens kept alive
over 100 simulated days, and one left idle that turns into "needs consent"."""

from __future__ import annotations

import asyncio
import base64
import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from typing import Any

import aiohttp.connector
import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from local.azuresim.runner import SimulatorProcess
from local.stack import azure_credential_settings, simulator_settings
from shared import clock
from shared.errors import AuthError, GraphAuthError, NeedsConsent
from shared.runtime import Runtime, build_runtime
from shared.settings import parse_settings
from shared.sources.graph import authstatus, consent
from shared.sources.graph.delegated import DelegatedTokens, cache_secret_name, keep_alive
from tests.local.simclient import VAULT_SCOPE, cert_pem, claims_of, deliver, get_token, key_pem, make_certificate
from tests.local.test_azuresim_identity import Page, browser, sign_in
from tests.local.test_azuresim_keyvault import import_certificate

DAY = 86400
APP_URL = "http://127.0.0.1:7999"  # the consent callback is never called over HTTP here: the test hands its query on


@pytest.fixture(scope="module")
def app_trust(sim: SimulatorProcess, ca_env: None) -> Iterator[None]:
    """The app's Azure SDK clients (aiohttp) in this process trust the test CA, and find their credential.

    aiohttp made its default TLS context when it was imported, before the simulator's CA existed: the CA
    is added to that context (test-only; the dev host gets it through SSL_CERT_FILE at start-up)."""
    aiohttp.connector._SSL_CONTEXT_VERIFIED.load_verify_locations(cafile=sim.ca_file)
    with pytest.MonkeyPatch.context() as patch:
        for name, value in azure_credential_settings(sim.info).items():
            patch.setenv(name, value)
        yield


def app_env(sim: SimulatorProcess, azurite: str, mailboxes: str, **extra: str) -> dict[str, str]:
    return {
        **simulator_settings(sim.info),
        "AzureWebJobsStorage": azurite,
        "STATE_CONTAINER": f"state-{uuid.uuid4().hex[:12]}",
        "WEBHOOK_BASE_URL": APP_URL,
        "MAILBOXES": mailboxes,
        **extra,
    }


@pytest.fixture
async def runtimes(app_trust: None) -> AsyncIterator[list[Runtime]]:
    """Runtimes a test builds (each a process of the app); closed afterwards."""
    made: list[Runtime] = []
    yield made
    for rt in made:
        await rt.aclose()


def runtime(made: list[Runtime], env: dict[str, str]) -> Runtime:
    rt = build_runtime(parse_settings(env))
    made.append(rt)
    return rt


class Clocks:
    """The simulator's clock and the app's, moved together."""

    def __init__(self, http: httpx.AsyncClient, patch: pytest.MonkeyPatch) -> None:
        self.http = http
        self.offset = timedelta()
        real = clock.now
        patch.setattr(clock, "now", lambda: real() + self.offset)

    async def advance(self, seconds: float) -> None:
        response = await self.http.post("/_sim/clock", json={"advanceSeconds": seconds})
        assert response.status_code == 200, response.text
        self.offset += timedelta(seconds=seconds)


@pytest.fixture
def clocks(http: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch) -> Clocks:
    return Clocks(http, monkeypatch)


@pytest.fixture(scope="module", autouse=True)
async def redirect_registered(http: httpx.AsyncClient, sim: SimulatorProcess) -> None:
    uris = {"redirectUris": [f"{APP_URL}/api/consent/callback"]}
    assert (await http.post(f"/_sim/apps/{sim.info['client_id']}/redirectUris", json=uris)).status_code == 200


async def new_user(http: httpx.AsyncClient) -> str:
    address = f"user-{uuid.uuid4().hex[:8]}@contoso.com"
    assert (await http.post("/_sim/mailboxes", json={"address": address})).status_code == 201
    return address


async def authorize(
    sim: SimulatorProcess, rt: Runtime, mailbox: str, user: str | None = None, **kw: str
) -> dict[str, str]:
    """Start the consent as the app does, sign in (as `user`) in a cookie-jar browser; what reaches the callback."""
    url = await consent.begin(rt, mailbox, kw.pop("prompt", None))
    async with browser(sim) as client:
        done = await sign_in(client, url, user or mailbox, **kw)
    page = Page(done.text)  # form_post: a page whose form the browser posts to the callback
    assert page.actions.get("response-form") == f"{APP_URL}/api/consent/callback", done.text
    return page.forms["response-form"]


async def consented(sim: SimulatorProcess, rt: Runtime, mailbox: str) -> None:
    assert await consent.finish(rt, await authorize(sim, rt, mailbox)) == mailbox


def events(caplog: pytest.LogCaptureFixture, name: str) -> list[dict[str, Any]]:
    """The events logged by that name: their fields are flat record attributes (shared/logs.py)."""
    return [{**vars(r), "level": r.levelno} for r in caplog.records if getattr(r, "event", None) == name]


# -- certificate credential -----------------------------------------------------------------------------
@pytest.mark.parametrize("content_type", ["application/x-pkcs12", "application/x-pem-file"])
async def test_certificate_from_key_vault_gets_an_app_token(
    http: httpx.AsyncClient, sim: SimulatorProcess, azurite: str, runtimes: list[Runtime], content_type: str
) -> None:
    key, cert = make_certificate("mail-ingest")
    if content_type == "application/x-pem-file":
        value = key_pem(key) + cert_pem(cert)
    else:
        pfx = pkcs12.serialize_key_and_certificates(None, key, cert, None, serialization.NoEncryption())
        value = base64.b64encode(pfx).decode()
    name = f"graph-cert-{uuid.uuid4().hex[:8]}"
    vault_auth = {"Authorization": f"Bearer {await get_token(http, sim, VAULT_SCOPE)}"}
    assert (await import_certificate(http, vault_auth, name, value, content_type)).status_code == 200
    env = app_env(sim, azurite, "a@contoso.com", GRAPH_CLIENT_SECRET="", GRAPH_CLIENT_CERTIFICATE=name)
    rt = runtime(runtimes, env)

    with pytest.raises(AuthError, match="invalid_client"):  # not yet registered on the app
        await rt.tokens.token(None)
    registered = await http.post(
        f"/_sim/apps/{sim.info['client_id']}/certificates", json={"certificate": cert_pem(cert)}
    )
    assert registered.status_code == 201
    rt = runtime(runtimes, env)
    claims = claims_of(await rt.tokens.token(None))
    assert claims["azpacr"] == "2" and claims["roles"]  # signed in with the certificate, not a secret
    await http.delete(f"/_sim/apps/{sim.info['client_id']}/certificates/{registered.json()['keyId']}")


async def test_a_missing_certificate_is_one_clear_error(
    sim: SimulatorProcess, azurite: str, runtimes: list[Runtime]
) -> None:
    env = app_env(sim, azurite, "a@contoso.com", GRAPH_CLIENT_CERTIFICATE="no-such-cert")
    rt = runtime(runtimes, env)
    with pytest.raises(AuthError, match="Key Vault has no certificate no-such-cert"):
        await rt.tokens.token(None)


# -- consent --------------------------------------------------------------------------------------------
async def test_consent_stores_the_cache_and_graph_calls_use_it(
    http: httpx.AsyncClient,
    sim: SimulatorProcess,
    azurite: str,
    runtimes: list[Runtime],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    owner = await new_user(http)
    await deliver(http, owner, subject="Before consent")
    rt = runtime(runtimes, app_env(sim, azurite, owner, GRAPH_AUTH_MODE="delegated"))
    for _ in range(2):
        with pytest.raises(NeedsConsent):
            await rt.graph.request("GET", f"users/{owner}/messages", mailbox=owner)
    assert len(events(caplog, "auth.needs_consent")) == 1  # reported once, not on every call
    status = await authstatus.load(rt.state, owner)
    assert status is not None and status.status == "needs_consent"
    assert status.consent_url == f"{APP_URL}/api/consent?mailbox={owner.replace('@', '%40')}"

    params = await authorize(sim, rt, owner)
    assert {"code", "state"} <= set(params)
    stored = await rt.state.read_json(consent.flow_path(params["state"]))
    assert stored is not None and stored[0]["flow"]["code_verifier"]  # kept server-side, not in the browser
    assert await consent.finish(rt, params) == owner
    assert await rt.state.read_json(consent.flow_path(params["state"])) is None  # deleted on use
    assert await rt.vault.get(cache_secret_name(owner))
    status = await authstatus.load(rt.state, owner)
    assert status is not None and status.status == "ok" and status.consented_at and status.reason is None
    assert events(caplog, "auth.consented")[0]["mailbox"] == owner

    listed = await rt.graph.request("GET", f"users/{owner}/messages", mailbox=owner)
    assert [m["subject"] for m in listed["value"]] == ["Before consent"]
    # Another process reads the stored cache from Key Vault.
    other = runtime(runtimes, app_env(sim, azurite, owner, GRAPH_AUTH_MODE="delegated"))
    assert claims_of(await other.tokens.token(owner))["preferred_username"] == owner
    # Graph refusing the owner's token (here: a path outside the owner's mailbox) is reported as a consent problem.
    stranger = await new_user(http)
    with pytest.raises(GraphAuthError):
        await rt.graph.request("GET", f"users/{stranger}/messages", mailbox=owner)
    [denied] = events(caplog, "auth.needs_consent")[-1:]
    assert denied["mailbox"] == owner and "403 ErrorAccessDenied" in denied["reason"]


async def test_application_mode_reports_a_mailbox_graph_refuses(
    http: httpx.AsyncClient,
    sim: SimulatorProcess,
    azurite: str,
    runtimes: list[Runtime],
    caplog: pytest.LogCaptureFixture,
) -> None:
    client_id = sim.info["client_id"]
    assert (await http.post("/_sim/roles", json={"roles": [], "clientId": client_id})).status_code == 200
    try:
        rt = runtime(runtimes, app_env(sim, azurite, "a@contoso.com"))
        with pytest.raises(GraphAuthError):
            await rt.graph.request("GET", "users/a@contoso.com/mailFolders/inbox", mailbox="a@contoso.com")
    finally:
        await http.post("/_sim/roles", json={"roles": ["Mail.Read", "Mail.ReadWrite"], "clientId": client_id})
    [logged] = events(caplog, "auth.needs_consent")
    assert logged["level"] == logging.ERROR and logged["mailbox"] == "a@contoso.com"
    assert "admin consent" in logged["reason"] and "Exchange application role assignment" in logged["reason"]


async def test_consent_refusals_store_nothing(
    http: httpx.AsyncClient, sim: SimulatorProcess, azurite: str, runtimes: list[Runtime], clocks: Clocks
) -> None:
    owner, intruder = await new_user(http), await new_user(http)
    rt = runtime(runtimes, app_env(sim, azurite, owner, GRAPH_AUTH_MODE="delegated"))

    with pytest.raises(consent.ConsentProblem, match="not a configured mailbox"):
        await consent.begin(rt, intruder, None)
    with pytest.raises(consent.ConsentProblem, match="prompt must be"):
        await consent.begin(rt, owner, "none")
    for state in ("", "../../etc", "unknown-state-value"):
        with pytest.raises(consent.ConsentProblem, match="unknown, expired or already used"):
            await consent.finish(rt, {"code": "x", "state": state})

    wrong = await authorize(sim, rt, owner, user=intruder)  # someone else signs in
    with pytest.raises(consent.ConsentProblem, match=f"Signed in as {intruder}, but this consent is for {owner}"):
        await consent.finish(rt, wrong)
    with pytest.raises(consent.ConsentProblem, match="already used"):
        await consent.finish(rt, wrong)  # replayed

    declined = await authorize(sim, rt, owner, consent="decline")
    assert declined["error"] == "access_denied"
    with pytest.raises(consent.ConsentProblem, match="No consent was given \\(access_denied"):
        await consent.finish(rt, declined)

    slow = await authorize(sim, rt, owner)
    await clocks.advance(11 * 60)
    with pytest.raises(consent.ConsentProblem, match="took too long"):
        await consent.finish(rt, slow)

    assert await rt.vault.get(cache_secret_name(owner)) is None
    assert await authstatus.load(rt.state, owner) is None


# -- keep-alive -----------------------------------------------------------------------------------------
async def test_refresh_tokens_kept_alive_for_100_days_and_an_idle_one_needs_consent(
    http: httpx.AsyncClient,
    sim: SimulatorProcess,
    azurite: str,
    runtimes: list[Runtime],
    clocks: Clocks,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    busy, idle = await new_user(http), await new_user(http)
    await deliver(http, busy, subject="Kept alive")
    # Two deployments of the app, one per mailbox: only the busy one's timer runs meanwhile.
    busy_rt = runtime(runtimes, app_env(sim, azurite, busy, GRAPH_AUTH_MODE="delegated"))
    idle_rt = runtime(runtimes, app_env(sim, azurite, idle, GRAPH_AUTH_MODE="delegated"))
    await consented(sim, busy_rt, busy)
    await consented(sim, idle_rt, idle)
    assert isinstance(busy_rt.tokens, DelegatedTokens) and isinstance(idle_rt.tokens, DelegatedTokens)

    assert await keep_alive(busy_rt.settings, busy_rt.tokens, busy_rt.state) == {busy: "fresh"}
    stored = await busy_rt.vault.get(cache_secret_name(busy))
    for _ in range(5):  # 100 days in steps of 20
        await clocks.advance(20 * DAY)
        assert await keep_alive(busy_rt.settings, busy_rt.tokens, busy_rt.state) == {busy: "refreshed"}
        rotated = await busy_rt.vault.get(cache_secret_name(busy))
        assert rotated != stored  # the rotated refresh token was written back
        stored = rotated
    assert len(events(caplog, "token.refreshed")) == 5
    listed = await busy_rt.graph.request("GET", f"users/{busy}/messages", mailbox=busy)
    assert [m["subject"] for m in listed["value"]] == ["Kept alive"]
    fresh_process = runtime(runtimes, app_env(sim, azurite, busy, GRAPH_AUTH_MODE="delegated"))
    assert await fresh_process.graph.request("GET", f"users/{busy}/messages", mailbox=busy)
    status = await authstatus.load(busy_rt.state, busy)
    assert status is not None and status.status == "ok" and status.refreshed_at

    # The idle mailbox's refresh token went unused for 100 days.
    assert await keep_alive(idle_rt.settings, idle_rt.tokens, idle_rt.state) == {idle: "needs consent"}
    status = await authstatus.load(idle_rt.state, idle)
    assert status is not None and status.status == "needs_consent"
    assert status.reason is not None and "AADSTS700082" in status.reason
    [logged] = events(caplog, "auth.needs_consent")
    assert logged["level"] == logging.ERROR and logged["mailbox"] == idle
    assert f"{APP_URL}/api/consent?mailbox=" in logged["reason"] and "AADSTS700082" in logged["reason"]
    with pytest.raises(NeedsConsent):
        await idle_rt.graph.request("GET", f"users/{idle}/messages", mailbox=idle)

    # Consent again, and the mailbox is back.
    await consented(sim, idle_rt, idle)
    assert (await idle_rt.graph.request("GET", f"users/{idle}/messages", mailbox=idle))["value"] == []
    status = await authstatus.load(idle_rt.state, idle)
    assert status is not None and status.status == "ok"


async def test_concurrent_refreshes_do_not_undo_each_other(
    http: httpx.AsyncClient, sim: SimulatorProcess, azurite: str, runtimes: list[Runtime], clocks: Clocks
) -> None:
    owner = await new_user(http)
    env = app_env(sim, azurite, owner, GRAPH_AUTH_MODE="delegated")
    first, second = runtime(runtimes, env), runtime(runtimes, env)
    await consented(sim, first, owner)
    assert await second.tokens.token(owner)  # both instances hold the same refresh token
    await clocks.advance(2 * DAY)
    assert isinstance(first.tokens, DelegatedTokens) and isinstance(second.tokens, DelegatedTokens)
    await asyncio.gather(first.tokens.refresh(owner), second.tokens.refresh(owner))
    # Whichever cache Key Vault kept works, in a process that starts now.
    await clocks.advance(80 * DAY)
    late = runtime(runtimes, env)
    assert isinstance(late.tokens, DelegatedTokens)
    await late.tokens.refresh(owner)
