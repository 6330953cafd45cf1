"""The simulator's delegated identity platform through real MSAL clients: the authorize page driven
with httpx (a cookie jar plays the browser), the authorization code grant with PKCE, refresh tokens
on the simulated clock, revocation, certificate credentials, and Graph seen with a user's token."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx
import msal
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from local.azuresim import jose
from local.azuresim.runner import SimulatorProcess
from tests.local.simclient import (
    Receiver,
    cert_pem,
    claims_of,
    deliver,
    expiry,
    key_pem,
    make_certificate,
    new_mailbox,
    sha1_thumbprint,
)

MAIL_READ = "https://graph.microsoft.com/Mail.Read"
MAIL_READWRITE = "https://graph.microsoft.com/Mail.ReadWrite"
USER_READ = "https://graph.microsoft.com/User.Read"
CALLBACK = "http://127.0.0.1/callback"
# Loopback redirect URIs match whatever the port ("the port component ... is ignored").
CALLBACK_WITH_PORT = "http://127.0.0.1:8400/callback"
PATHLESS = "https://app.example"
PASSWORD = "correct horse battery staple"
DAY = 86400


class Page(HTMLParser):
    """The forms on a page by id (their input values by name), and the text and attributes of elements with ids."""

    VOID = frozenset({"input", "meta", "br", "img", "link", "hr"})

    def __init__(self, text: str) -> None:
        super().__init__()
        self.forms: dict[str, dict[str, str]] = {}
        self.actions: dict[str, str] = {}
        self.texts: dict[str, str] = {}
        self.attributes: dict[str, dict[str, str]] = {}
        self.scopes: list[str] = []
        self._form: str | None = None
        self._open: list[tuple[str, str | None]] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        if "id" in values:
            self.attributes[values["id"]] = values
        if tag not in self.VOID:
            self._open.append((tag, values.get("id")))
        if tag == "form":
            self._form = values.get("id", "")
            self.forms[self._form] = {}
            self.actions[self._form] = values.get("action", "")
        elif tag == "input" and self._form is not None and "name" in values:
            self.forms[self._form][values["name"]] = values.get("value", "")
        elif tag == "li" and "data-scope" in values:
            self.scopes.append(values["data-scope"])

    def handle_endtag(self, tag: str) -> None:
        while self._open:
            if self._open.pop()[0] == tag:
                break
        if tag == "form":
            self._form = None

    def handle_data(self, data: str) -> None:
        for _, element in self._open:
            if element is not None:
                self.texts[element] = self.texts.get(element, "") + data

    def text(self, element: str) -> str:
        return self.texts.get(element, "").strip()


@asynccontextmanager
async def browser(sim: SimulatorProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(verify=sim.ssl_context(), timeout=30) as client:
        yield client


def query_of(location: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(location).query))


async def submit(
    client: httpx.AsyncClient, page: httpx.Response, form: str, **fields: str
) -> tuple[httpx.Response, Page]:
    parsed = Page(page.text)
    assert form in parsed.forms, page.text
    response = await client.post(str(page.url), data={**parsed.forms[form], **fields})
    return response, Page(response.text)


async def sign_in(
    client: httpx.AsyncClient, auth_uri: str, address: str, *, consent: str = "accept", password: str = PASSWORD
) -> httpx.Response:
    """Through the sign-in page and the consent page, each when shown; the last answer."""
    response = await client.get(auth_uri)
    parsed = Page(response.text)
    if "signin-form" in parsed.forms:
        response, parsed = await submit(client, response, "signin-form", username=address, password=password)
    if "consent-form" in parsed.forms:
        response, parsed = await submit(client, response, "consent-form", consent=consent)
    return response


def msal_app(sim: SimulatorProcess, credential: Any = None) -> msal.ConfidentialClientApplication:
    info = sim.info
    return msal.ConfidentialClientApplication(
        info["client_id"],
        client_credential=credential if credential is not None else info["client_secret"],
        authority=f"{sim.url}/{info['tenant_id']}",
        instance_discovery=False,
    )


async def msal_sign_in(
    app: msal.ConfidentialClientApplication, client: httpx.AsyncClient, address: str, scopes: list[str]
) -> dict[str, Any]:
    flow = app.initiate_auth_code_flow(
        scopes, redirect_uri=CALLBACK_WITH_PORT, login_hint=address, response_mode="form_post"
    )
    done = await sign_in(client, flow["auth_uri"], address)
    response = Page(done.text).forms.get("response-form")
    assert response is not None, done.text
    result: dict[str, Any] = app.acquire_token_by_auth_code_flow(flow, response)
    assert "access_token" in result, result
    return result


async def token_request(http: httpx.AsyncClient, sim: SimulatorProcess, **form: str) -> httpx.Response:
    info = sim.info
    data = {"client_id": info["client_id"], "client_secret": info["client_secret"], **form}
    return await http.post(f"/{info['tenant_id']}/oauth2/v2.0/token", data=data)


def authorize_url(sim: SimulatorProcess, **params: str) -> str:
    query = {
        "client_id": sim.info["client_id"],
        "response_type": "code",
        "redirect_uri": CALLBACK,
        "scope": f"{MAIL_READ} openid offline_access",
        "state": "st-1",
        **params,
    }
    return f"{sim.url}/{sim.info['tenant_id']}/oauth2/v2.0/authorize?{urlencode(query)}"


def refresh_token_of(app: msal.ConfidentialClientApplication) -> str:
    [entry] = list(app.token_cache.search(msal.TokenCache.CredentialType.REFRESH_TOKEN))
    return str(entry["secret"])


@pytest.fixture(scope="module", autouse=True)
async def registered(http: httpx.AsyncClient, sim: SimulatorProcess) -> None:
    response = await http.post(
        f"/_sim/apps/{sim.info['client_id']}/redirectUris", json={"redirectUris": [CALLBACK, PATHLESS]}
    )
    assert response.status_code == 200, response.text


async def advance(http: httpx.AsyncClient, seconds: float) -> None:
    assert (await http.post("/_sim/clock", json={"advanceSeconds": seconds})).status_code == 200


# -- authorization code flow ----------------------------------------------------------------------
async def test_auth_code_flow_with_pkce_consent_and_single_sign_on(
    http: httpx.AsyncClient, sim: SimulatorProcess, ca_env: None
) -> None:
    box = await new_mailbox(http)
    app = msal_app(sim)
    flow = app.initiate_auth_code_flow(
        [MAIL_READ], redirect_uri=CALLBACK_WITH_PORT, login_hint=box["address"], response_mode="form_post"
    )
    assert "code_challenge_method=S256" in flow["auth_uri"]
    async with browser(sim) as client:
        page = await client.get(flow["auth_uri"])
        assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
        assert Page(page.text).forms["signin-form"]["username"] == box["address"]  # from login_hint
        consent, parsed = await submit(client, page, "signin-form", username=box["address"], password="anything")
        assert consent.status_code == 200 and "azuresim-session" in consent.cookies
        assert set(parsed.scopes) == {MAIL_READ, "offline_access", "openid", "profile"}
        assert parsed.text("consent-user") == box["address"]
        done, answer = await submit(client, consent, "consent-form", consent="accept")
        assert done.status_code == 200 and answer.actions["response-form"] == CALLBACK_WITH_PORT
        response = answer.forms["response-form"]
        assert response["state"] == flow["state"]
        result = app.acquire_token_by_auth_code_flow(flow, response)
        assert "access_token" in result, result

        # Signed in and consented: the next request is answered at once (single sign-on).
        silent = await client.get(authorize_url(sim))
        assert silent.status_code == 302 and "code" in query_of(silent.headers["Location"])

    claims = claims_of(result["access_token"])
    info = sim.info
    assert claims["aud"] == "https://graph.microsoft.com" and claims["scp"] == "Mail.Read"
    assert (claims["oid"], claims["tid"], claims["preferred_username"]) == (
        box["id"],
        info["tenant_id"],
        box["address"],
    )
    assert claims["idtyp"] == "user" and claims["azp"] == info["client_id"] and claims["azpacr"] == "1"
    assert result["id_token_claims"]["preferred_username"] == box["address"]  # MSAL checked the nonce
    assert result["id_token_claims"]["sub"] == claims["sub"] and result["id_token_claims"]["aud"] == info["client_id"]
    assert result["refresh_token"] and result["expires_in"] == 3599 and result["token_type"] == "Bearer"
    assert MAIL_READ in result["scope"]
    [account] = app.get_accounts()
    assert account["home_account_id"] == f"{box['id']}.{info['tenant_id']}"  # from client_info
    assert account["username"] == box["address"]
    consents = (await http.get(f"/_sim/users/{box['address']}/consents")).json()["value"]
    assert consents == [
        {"clientId": info["client_id"], "scopes": sorted([MAIL_READ, "offline_access", "openid", "profile"])}
    ]

    # A code is good for one redemption.
    reused = await token_request(
        http,
        sim,
        grant_type="authorization_code",
        code=response["code"],
        redirect_uri=CALLBACK_WITH_PORT,
        code_verifier=flow["code_verifier"],
    )
    assert reused.status_code == 400 and reused.json()["error"] == "invalid_grant"
    assert reused.json()["error_codes"] == [54005]
    assert {"error_description", "timestamp", "trace_id", "correlation_id"} <= set(reused.json())


async def test_code_redemption_checks_pkce_redirect_uri_and_lifetime(
    http: httpx.AsyncClient, sim: SimulatorProcess
) -> None:
    box = await new_mailbox(http)
    verifier = secrets.token_urlsafe(48)
    challenge = jose.b64url(hashlib.sha256(verifier.encode()).digest())
    url = authorize_url(sim, scope=f"{MAIL_READ} openid", code_challenge=challenge, code_challenge_method="S256")
    async with browser(sim) as client:
        done = await sign_in(client, url, box["address"])
        assert done.status_code == 302
        code = query_of(done.headers["Location"])["code"]
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": CALLBACK}

        wrong = await token_request(http, sim, **form, code_verifier=secrets.token_urlsafe(48))
        assert wrong.status_code == 400 and wrong.json()["error_codes"] == [501481]
        missing = await token_request(http, sim, **form)
        assert missing.status_code == 400 and missing.json()["error"] == "invalid_grant"
        other_uri = await token_request(http, sim, **{**form, "redirect_uri": PATHLESS}, code_verifier=verifier)
        assert other_uri.status_code == 400 and other_uri.json()["error_codes"] == [50011]

        ok = await token_request(http, sim, **form, code_verifier=verifier)
        assert ok.status_code == 200, ok.text
        body = ok.json()
        # No offline_access, no client_info=1: no refresh token and no client_info.
        assert "refresh_token" not in body and "client_info" not in body and "id_token" in body
        assert body["scope"] == f"{MAIL_READ} openid" and body["ext_expires_in"] == 3599

        # Codes live about ten minutes (simulated clock).
        late = await client.get(url)
        late_code = query_of(late.headers["Location"])["code"]
        await advance(http, 11 * 60)
        expired = await token_request(http, sim, **{**form, "code": late_code}, code_verifier=verifier)
        assert expired.status_code == 400 and expired.json()["error_codes"] == [70008]


# -- refresh tokens -------------------------------------------------------------------------------
async def test_refresh_rotates_and_the_old_token_stays_valid(
    http: httpx.AsyncClient, sim: SimulatorProcess, ca_env: None
) -> None:
    box = await new_mailbox(http)
    app = msal_app(sim)
    async with browser(sim) as client:
        first = await msal_sign_in(app, client, box["address"], [MAIL_READ])
    [account] = app.get_accounts()
    refreshed = app.acquire_token_silent([MAIL_READ], account, force_refresh=True)
    assert refreshed is not None and refreshed["token_source"] == "identity_provider"
    assert refresh_token_of(app) != first["refresh_token"]

    # "The Microsoft identity platform doesn't revoke old refresh tokens when used to fetch new access tokens."
    old = await token_request(http, sim, grant_type="refresh_token", refresh_token=first["refresh_token"])
    assert old.status_code == 200, old.text
    assert claims_of(old.json()["access_token"])["scp"] == "Mail.Read"
    assert old.json()["refresh_token"] not in (first["refresh_token"], refresh_token_of(app))

    unconsented = await token_request(
        http,
        sim,
        grant_type="refresh_token",
        refresh_token=first["refresh_token"],
        scope="https://vault.azure.net/user_impersonation",
    )
    assert unconsented.status_code == 400 and unconsented.json()["error"] == "invalid_grant"
    assert unconsented.json()["error_codes"] == [65001]
    garbage = await token_request(http, sim, grant_type="refresh_token", refresh_token="1.Anot-a-token")
    assert garbage.status_code == 400 and garbage.json()["error"] == "invalid_grant"


async def test_refresh_tokens_expire_after_90_idle_days(
    http: httpx.AsyncClient, sim: SimulatorProcess, ca_env: None
) -> None:
    busy, idle = await new_mailbox(http), await new_mailbox(http)
    busy_app, idle_app = msal_app(sim), msal_app(sim)
    async with browser(sim) as one, browser(sim) as two:
        await msal_sign_in(busy_app, one, busy["address"], [MAIL_READ])
        await msal_sign_in(idle_app, two, idle["address"], [MAIL_READ])
    [busy_account], [idle_account] = busy_app.get_accounts(), idle_app.get_accounts()

    def refresh(app: msal.ConfidentialClientApplication, account: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = app.acquire_token_silent_with_error([MAIL_READ], account, force_refresh=True)
        return result

    for days in (30, 30, 30):
        await advance(http, days * DAY)
        assert "access_token" in refresh(busy_app, busy_account)
    await advance(http, 1 * DAY)  # day 91: the idle token has gone unused for 91 days
    expired = refresh(idle_app, idle_account)
    assert expired["error"] == "invalid_grant" and expired["error_codes"] == [700082]
    assert "inactive for 90.00:00:00" in expired["error_description"]
    await advance(http, 9 * DAY)  # day 100: refreshed every 30 days, still alive
    assert "access_token" in refresh(busy_app, busy_account)


async def test_revoking_sign_in_sessions(http: httpx.AsyncClient, sim: SimulatorProcess, ca_env: None) -> None:
    box = await new_mailbox(http)
    app = msal_app(sim)
    async with browser(sim) as client:
        await msal_sign_in(app, client, box["address"], [MAIL_READ])
        revoked = await http.post(f"/_sim/users/{box['address']}/revokeSignInSessions")
        assert revoked.json() == {"value": True, "revokedRefreshTokens": 1}
        [account] = app.get_accounts()
        result = app.acquire_token_silent_with_error([MAIL_READ], account, force_refresh=True)
        assert result["error"] == "invalid_grant" and result["error_codes"] == [50173]
        # The browser session went too: a silent request needs a sign-in again.
        silent = await client.get(authorize_url(sim, prompt="none"))
        assert query_of(silent.headers["Location"])["error"] == "login_required"


# -- the authorize endpoint -----------------------------------------------------------------------
async def test_prompt_none_and_prompt_consent(http: httpx.AsyncClient, sim: SimulatorProcess) -> None:
    box = await new_mailbox(http)
    async with browser(sim) as client:
        nobody = await client.get(authorize_url(sim, prompt="none"))
        answer = query_of(nobody.headers["Location"])
        assert answer["error"] == "login_required" and answer["state"] == "st-1"
        assert answer["error_description"].startswith("AADSTS50058:")

        assert (await sign_in(client, authorize_url(sim), box["address"])).status_code == 302
        more = await client.get(authorize_url(sim, prompt="none", scope=f"{MAIL_READWRITE} openid offline_access"))
        answer = query_of(more.headers["Location"])
        assert answer["error"] == "consent_required" and answer["error_description"].startswith("AADSTS65001:")
        consented = await client.get(authorize_url(sim, prompt="none"))
        assert "code" in query_of(consented.headers["Location"])
        fragment = await client.get(authorize_url(sim, prompt="none", response_mode="fragment"))
        assert fragment.headers["Location"].startswith(f"{CALLBACK}#code=")
        await advance(http, 60)  # the sign-in is now a minute old
        stale = await client.get(authorize_url(sim, prompt="none", max_age="30"))
        assert query_of(stale.headers["Location"])["error"] == "login_required"
        recent = await client.get(authorize_url(sim, prompt="none", max_age="3600"))
        assert "code" in query_of(recent.headers["Location"])

        again = await client.get(authorize_url(sim, prompt="consent"))
        assert again.status_code == 200 and "consent-form" in Page(again.text).forms
        login = await client.get(authorize_url(sim, prompt="login"))
        assert "signin-form" in Page(login.text).forms


async def test_authorize_errors_and_redirect_uris(http: httpx.AsyncClient, sim: SimulatorProcess) -> None:
    box = await new_mailbox(http)
    async with browser(sim) as client:
        unregistered = await client.get(authorize_url(sim, redirect_uri="http://127.0.0.1/elsewhere"))
        page = Page(unregistered.text)
        assert unregistered.status_code == 400 and "Location" not in unregistered.headers
        assert page.text("error-code") == "AADSTS50011" and "elsewhere" in page.text("error-description")
        unknown = await client.get(authorize_url(sim, client_id=str(uuid.uuid4())))
        assert unknown.status_code == 400 and Page(unknown.text).text("error-code") == "AADSTS700016"
        # OpenID Connect lets the request come as a form POST too.
        url = authorize_url(sim)
        posted = await client.post(url.split("?")[0], data=dict(parse_qsl(urlsplit(url).query)))
        assert posted.status_code == 200 and "signin-form" in Page(posted.text).forms

        token_type = await client.get(authorize_url(sim, response_type="token"))
        assert query_of(token_type.headers["Location"])["error"] == "unsupported_response_type"
        bad_scope = await client.get(authorize_url(sim, scope="Mail.Fly"))
        assert query_of(bad_scope.headers["Location"])["error"] == "invalid_scope"
        short = await client.get(authorize_url(sim, code_challenge="too-short", code_challenge_method="S256"))
        assert query_of(short.headers["Location"])["error"] == "invalid_request"

        declined = await sign_in(client, authorize_url(sim), box["address"], consent="decline")
        answer = query_of(declined.headers["Location"])
        assert answer["error"] == "access_denied" and answer["error_description"].startswith("AADSTS65004:")

    # "Redirect URIs not configured with a path segment are returned with a trailing slash."
    async with browser(sim) as client:
        done = await sign_in(client, authorize_url(sim, redirect_uri=PATHLESS), box["address"])
        assert done.headers["Location"].startswith(f"{PATHLESS}/?code=")
        form_post = await client.get(authorize_url(sim, response_mode="form_post"))
        page = Page(form_post.text)
        assert form_post.status_code == 200 and page.actions["response-form"] == CALLBACK
        assert page.forms["response-form"]["code"] and page.forms["response-form"]["state"] == "st-1"

    # A user with a password of their own must give it.
    await http.put(f"/_sim/users/{box['id']}/password", json={"password": PASSWORD})
    async with browser(sim) as client:
        wrong = await sign_in(client, authorize_url(sim), box["address"], password="guess")
        assert wrong.status_code == 200 and Page(wrong.text).attributes["error"]["data-code"] == "AADSTS50126"
        assert (await sign_in(client, authorize_url(sim), box["address"])).status_code == 302
        stranger = await sign_in(client, authorize_url(sim, prompt="login"), "nobody@contoso.com")
        assert Page(stranger.text).attributes["error"]["data-code"] == "AADSTS50034"

    rejected = await http.post(
        f"/_sim/apps/{sim.info['client_id']}/redirectUris", json={"redirectUris": ["http://app.example/cb"]}
    )
    assert rejected.status_code == 400 and "https" in rejected.json()["error"]["message"]


# -- certificate credentials ----------------------------------------------------------------------
async def test_certificate_credentials_through_msal(
    http: httpx.AsyncClient, sim: SimulatorProcess, ca_env: None, tmp_path: Path
) -> None:
    key, cert = make_certificate()
    client_id = sim.info["client_id"]
    registered = await http.post(f"/_sim/apps/{client_id}/certificates", json={"certificate": cert_pem(cert)})
    assert registered.status_code == 201 and registered.json()["thumbprint"] == sha1_thumbprint(cert)
    pfx = tmp_path / "app.pfx"
    pfx.write_bytes(pkcs12.serialize_key_and_certificates(None, key, cert, None, serialization.NoEncryption()))
    credentials = [
        {"private_key": key_pem(key), "thumbprint": sha1_thumbprint(cert)},  # RS256 with x5t
        {"private_key": key_pem(key), "public_certificate": cert_pem(cert)},  # PS256 with x5t#S256 and x5c
        {"private_key_pfx_path": str(pfx)},  # PS256 with x5t#S256
    ]
    for credential in credentials:
        result = msal_app(sim, credential).acquire_token_for_client(["https://graph.microsoft.com/.default"])
        assert "access_token" in result, (credential.keys(), result)
        assert claims_of(result["access_token"])["azpacr"] == "2"

    # The delegated grants take the same credential.
    box = await new_mailbox(http)
    app = msal_app(sim, credentials[0])
    async with browser(sim) as client:
        signed_in = await msal_sign_in(app, client, box["address"], [MAIL_READ])
    assert claims_of(signed_in["access_token"])["azpacr"] == "2"
    [account] = app.get_accounts()
    assert "access_token" in app.acquire_token_silent_with_error([MAIL_READ], account, force_refresh=True)

    removed = await http.delete(f"/_sim/apps/{client_id}/certificates/{registered.json()['keyId']}")
    assert removed.status_code == 204
    after = msal_app(sim, credentials[0]).acquire_token_for_client(["https://graph.microsoft.com/.default"])
    assert after["error"] == "invalid_client" and after["error_codes"] == [700027]


async def test_client_assertions_are_checked(http: httpx.AsyncClient, sim: SimulatorProcess) -> None:
    key, cert = make_certificate()
    stranger_key, stranger_cert = make_certificate("not-registered")
    info = sim.info
    await http.post(f"/_sim/apps/{info['client_id']}/certificates", json={"certificate": cert_pem(cert)})
    endpoint = f"{sim.url}/{info['tenant_id']}/oauth2/v2.0/token"

    def assertion(signer: Any = key, signed_cert: Any = cert, **claims: Any) -> str:
        now = time.time()
        thumbprint = base64.urlsafe_b64encode(bytes.fromhex(sha1_thumbprint(signed_cert))).decode().rstrip("=")
        header = {"alg": "RS256", "typ": "JWT", "x5t": thumbprint}
        body = {
            "aud": endpoint,
            "iss": info["client_id"],
            "sub": info["client_id"],
            "jti": str(uuid.uuid4()),
            "nbf": int(now),
            "exp": int(now) + 600,
            **claims,
        }
        return jose.sign_rs256(signer, header, body)

    async def attempt(
        value: str, kind: str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    ) -> httpx.Response:
        return await http.post(
            f"/{info['tenant_id']}/oauth2/v2.0/token",
            data={
                "grant_type": "client_credentials",
                "client_id": info["client_id"],
                "scope": "https://graph.microsoft.com/.default",
                "client_assertion_type": kind,
                "client_assertion": value,
            },
        )

    valid = assertion()
    assert (await attempt(valid)).status_code == 200
    assert (await attempt(valid)).status_code == 200  # the same jti again: no documented replay check
    cases = {
        700027: assertion(stranger_key, stranger_cert),  # certificate not registered
        700023: assertion(aud=f"{sim.url}/{info['tenant_id']}/v2.0"),
        700024: assertion(nbf=int(time.time()) - 1800, exp=int(time.time()) - 900),
        50048: assertion(sub=str(uuid.uuid4())),
        700021: assertion(iss="someone-else", sub="someone-else"),
    }
    for code, value in cases.items():
        rejected = await attempt(value)
        assert rejected.status_code == 401, (code, rejected.text)
        assert rejected.json()["error"] == "invalid_client" and rejected.json()["error_codes"] == [code]
    head, body, _ = valid.split(".")
    forged = f"{head}.{jose.b64url(json.dumps({**claims_of(valid), 'exp': 9999999999}).encode())}.{valid.split('.')[2]}"
    assert (await attempt(forged)).json()["error_codes"] == [700027]
    assert (await attempt(f"{head}.{body}.AAAA")).json()["error_codes"] == [700027]
    wrong_type = await attempt(valid, kind="urn:example:other")
    assert wrong_type.status_code == 400 and wrong_type.json()["error"] == "invalid_request"


# -- Graph with a user's token --------------------------------------------------------------------
async def test_delegated_graph_access_is_limited_to_the_own_mailbox(
    http: httpx.AsyncClient, sim: SimulatorProcess, ca_env: None, receiver: Receiver, graph: dict[str, str]
) -> None:
    own, other = await new_mailbox(http), await new_mailbox(http)
    mine = await deliver(http, own["address"], subject="Mine")
    theirs = await deliver(http, other["address"], subject="Theirs")
    app = msal_app(sim)
    async with browser(sim) as client:
        reader = await msal_sign_in(app, client, own["address"], [MAIL_READ])
        auth = {"Authorization": f"Bearer {reader['access_token']}"}

        listed = await http.get("/v1.0/me/messages", headers=auth)
        assert listed.status_code == 200 and [m["subject"] for m in listed.json()["value"]] == ["Mine"]
        by_address = await http.get(f"/v1.0/users/{own['address']}/messages/{mine['id']}", headers=auth)
        assert by_address.status_code == 200
        for path in (f"/v1.0/users/{other['id']}/messages", f"/v1.0/users/{other['address']}/messages/{theirs['id']}"):
            denied = await http.get(path, headers=auth)
            assert denied.status_code == 403 and denied.json()["error"]["code"] == "ErrorAccessDenied"
        # Mail.Read does not write; without User.Read the profile is out of reach.
        patch = await http.patch(f"/v1.0/me/messages/{mine['id']}", json={"isRead": True}, headers=auth)
        assert patch.status_code == 403
        profile = await http.get("/v1.0/me", headers=auth)
        assert profile.status_code == 403 and profile.json()["error"]["code"] == "Authorization_RequestDenied"

        # Subscriptions: the signed-in user's own mailbox only.
        body = {
            "changeType": "created",
            "notificationUrl": f"{receiver.url}/delegated",
            "expirationDateTime": await expiry(http, 60),
            "clientState": "state",
        }
        created = await http.post(
            "/v1.0/subscriptions", json={**body, "resource": "me/mailFolders('inbox')/messages"}, headers=auth
        )
        assert created.status_code == 201, created.text
        assert (
            created.json()["creatorId"] == own["id"]
            and created.json()["resource"] == "me/mailFolders('inbox')/messages"
        )
        foreign = await http.post(
            "/v1.0/subscriptions", json={**body, "resource": f"users/{other['id']}/messages"}, headers=auth
        )
        assert foreign.status_code == 403
        # The app's own subscriptions stay out of the user's sight (subscription-list).
        app_only = await http.post(
            "/v1.0/subscriptions", json={**body, "resource": f"users/{other['id']}/messages"}, headers=graph
        )
        assert app_only.status_code == 201, app_only.text
        listed_subs = (await http.get("/v1.0/subscriptions", headers=auth)).json()["value"]
        assert [s["id"] for s in listed_subs] == [created.json()["id"]]
        assert (await http.get(f"/v1.0/subscriptions/{app_only.json()['id']}", headers=auth)).status_code == 404
        await deliver(http, own["address"], subject="Notify me")
        await receiver.wait(lambda: bool(receiver.items("/delegated")))
        assert receiver.items("/delegated")[0]["resource"].startswith(f"Users/{own['id']}/Messages/")

        # Incremental consent: the new scopes are asked for, and the token then carries all of them.
        writer = await msal_sign_in(app, client, own["address"], [MAIL_READWRITE, USER_READ])
        assert set(claims_of(writer["access_token"])["scp"].split()) == {"Mail.Read", "Mail.ReadWrite", "User.Read"}
        auth = {"Authorization": f"Bearer {writer['access_token']}"}
        assert (
            await http.patch(f"/v1.0/me/messages/{mine['id']}", json={"isRead": True}, headers=auth)
        ).status_code == 200
        me = await http.get("/v1.0/me", headers=auth)
        assert me.status_code == 200 and me.json()["id"] == own["id"]
