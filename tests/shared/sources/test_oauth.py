"""XOAUTH2: the app's own Entra credential signs in to IMAP and POP, as with Exchange Online's app-only
access, through Dovecot's oauth2 passdb and an introspection endpoint that checks the simulator's tokens.
A provider's refresh token kept in Key Vault is redeemed, and a rotated one written back."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import trustme
from aiohttp import web

from local.azuresim.runner import SimulatorProcess, start_simulator
from local.dovecot import Dovecot
from local.introspection import Introspection, dovecot_oauth2_config
from local.stack import simulator_settings, write_ca_bundle
from shared.errors import MailAuthFailed
from shared.settings import MailAccount, parse_account, parse_settings
from shared.sources.common import Login
from shared.sources.imap.session import ImapSession
from shared.sources.oauth import access_token
from shared.sources.pop3.session import Pop3Session
from tests.shared.conftest import BASE_ENV
from tests.shared.sources.conftest import MailUser, make_user, message


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimulatorProcess]:
    with start_simulator(tmp_path_factory.mktemp("azuresim")) as process:
        yield process


def grant_roles(sim: SimulatorProcess, roles: list[str]) -> None:
    response = httpx.post(f"{sim.url}/_sim/roles", json={"roles": roles}, verify=sim.ssl_context())
    response.raise_for_status()


@pytest.fixture(scope="module")
async def introspection(sim: SimulatorProcess) -> AsyncIterator[Introspection]:
    async with Introspection(sim.info, {}) as endpoint:
        yield endpoint


@pytest.fixture(scope="module")
def oauth_dovecot(
    introspection: Introspection, mail_ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Dovecot]:
    directory = tmp_path_factory.mktemp("dovecot-oauth2")
    args_file = directory / "oauth2.conf.ext"
    main, args = dovecot_oauth2_config(str(args_file), introspection.url)
    args_file.write_text(args)
    with Dovecot(directory / "dovecot", mail_ca, extra_config=main) as server:
        yield server


@pytest.fixture
def trust_both(sim: SimulatorProcess, mail_ca_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """MSAL (requests) trusts the simulator, the mail client the mail server: one bundle for both."""
    bundle = write_ca_bundle(tmp_path / "bundle.pem", Path(sim.ca_file), {"SSL_CERT_FILE": str(mail_ca_bundle)})
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(bundle))


def runtime(sim: SimulatorProcess, vault: Any = None) -> Any:
    """What access_token uses of the runtime: the settings (the simulator's tenant and app) and the vault."""
    return SimpleNamespace(settings=parse_settings({**BASE_ENV, **simulator_settings(sim.info)}), vault=vault)


def app_only(account: MailAccount) -> MailAccount:
    """The account as `auth=xoauth2` without a secret: the app's own credential."""
    return replace(account, auth="xoauth2", secret=None)


@pytest.fixture
def granted(oauth_dovecot: Dovecot, introspection: Introspection, sim: SimulatorProcess) -> MailUser:
    """A mailbox the app's service principal may open (as Add-MailboxPermission grants it)."""
    user = make_user(oauth_dovecot)
    introspection.grants = {str(sim.info["client_id"]): user.name}
    return user


@pytest.mark.usefixtures("trust_both")
async def test_imap_and_pop3_with_the_apps_token(granted: MailUser, sim: SimulatorProcess):
    grant_roles(sim, ["Mail.Read", "IMAP.AccessAsApp", "POP.AccessAsApp"])
    granted.deliver(message("by token"))
    account = app_only(granted.account("imaps"))
    token = await access_token(runtime(sim), account)
    async with await ImapSession.open(account, Login(granted.name, token=token)) as session:
        assert (await session.examine()).exists == 1
    pop3 = app_only(granted.account("pop3s"))
    async with await Pop3Session.open(pop3, Login(granted.name, token=token)) as session:
        assert len(await session.listing()) == 1


@pytest.mark.usefixtures("trust_both")
async def test_a_token_without_the_permission_or_for_another_mailbox_is_refused(
    granted: MailUser, oauth_dovecot: Dovecot, sim: SimulatorProcess, introspection: Introspection
):
    account = app_only(granted.account("imaps"))
    grant_roles(sim, ["Mail.Read"])  # IMAP.AccessAsApp not granted
    from shared.sources import oauth

    oauth._apps.clear()  # a new process: no cached token from the test before
    token = await access_token(runtime(sim), account)
    with pytest.raises(MailAuthFailed):
        await ImapSession.open(account, Login(granted.name, token=token))
    assert introspection.answers[-1] == {"active": False}
    grant_roles(sim, ["Mail.Read", "IMAP.AccessAsApp"])
    oauth._apps.clear()
    token = await access_token(runtime(sim), account)
    other = make_user(oauth_dovecot)
    with pytest.raises(MailAuthFailed):
        await ImapSession.open(app_only(other.account("imaps")), Login(other.name, token=token))
    with pytest.raises(MailAuthFailed):
        await ImapSession.open(account, Login(granted.name, token=token + "x"))  # a forged signature


class Vault:
    def __init__(self, values: dict[str, str]) -> None:
        self.values = values

    async def get(self, name: str) -> str | None:
        return self.values.get(name)

    async def set(self, name: str, value: str) -> None:
        self.values[name] = value


@pytest.fixture
async def token_endpoint() -> AsyncIterator[tuple[str, list[dict[str, str]]]]:
    """A provider's token endpoint (RFC 6749 6): refresh token `rt-1` is good once and rotates to `rt-2`."""
    seen: list[dict[str, str]] = []

    async def token(request: web.Request) -> web.Response:
        form = {k: str(v) for k, v in (await request.post()).items()}
        seen.append(form)
        if form.get("grant_type") != "refresh_token" or form.get("refresh_token") != "rt-1" or len(seen) > 1:
            return web.json_response({"error": "invalid_grant"}, status=400)
        return web.json_response({"access_token": "at-1", "token_type": "Bearer", "refresh_token": "rt-2"})

    app = web.Application()
    app.router.add_post("/token", token)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}/token", seen
    await runner.cleanup()


async def test_a_refresh_token_in_key_vault_is_redeemed_and_rotated(
    token_endpoint: tuple[str, list[dict[str, str]]], sim: SimulatorProcess
):
    url, seen = token_endpoint
    grant = {"token_url": url, "client_id": "cid", "client_secret": "cs", "refresh_token": "rt-1"}
    vault = Vault({"gmail-ap": json.dumps(grant)})
    account = parse_account("imaps://ap%40gmail.example@imap.gmail.example?auth=xoauth2&secret=gmail-ap")
    assert await access_token(runtime(sim, vault), account) == "at-1"
    assert seen[0] == {
        "grant_type": "refresh_token",
        "refresh_token": "rt-1",
        "client_id": "cid",
        "client_secret": "cs",
    }
    assert json.loads(vault.values["gmail-ap"])["refresh_token"] == "rt-2"
    # The old refresh token, which the provider no longer takes after the rotation:
    with pytest.raises(MailAuthFailed, match="refused the refresh token: invalid_grant"):
        await access_token(runtime(sim, Vault({"gmail-ap": json.dumps(grant)})), account)
    with pytest.raises(MailAuthFailed, match="not a token_url"):
        await access_token(runtime(sim, Vault({"gmail-ap": "a password"})), account)
