"""Helpers for tests that drive the Azure simulator: tokens, mailboxes, mail, subscriptions, the
simulated clock, JWT claims, a Key Vault client, certificates and a webhook receiver (served by the
``receiver`` fixture in ``conftest.py``)."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import httpx
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from local.azuresim.runner import SimulatorProcess

GRAPH_SCOPE = "https://graph.microsoft.com/.default"
VAULT_SCOPE = "https://vault.azure.net/.default"
IMMUTABLE = {"Prefer": 'IdType="ImmutableId"'}


async def get_token(http: httpx.AsyncClient, sim: SimulatorProcess, scope: str = GRAPH_SCOPE) -> str:
    info = sim.info
    response = await http.post(
        f"/{info['tenant_id']}/oauth2/v2.0/token",
        data={
            "grant_type": "client_credentials",
            "client_id": info["client_id"],
            "client_secret": info["client_secret"],
            "scope": scope,
        },
    )
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


async def new_mailbox(http: httpx.AsyncClient, folders: list[str] | None = None) -> dict[str, str]:
    address = f"box-{uuid.uuid4().hex[:8]}@contoso.com"
    response = await http.post("/_sim/mailboxes", json={"address": address, "folders": folders or []})
    assert response.status_code == 201, response.text
    return dict(response.json())


async def deliver(http: httpx.AsyncClient, mailbox: str, **spec: Any) -> dict[str, Any]:
    body = {
        "mailbox": mailbox,
        "folder": "Inbox",
        "subject": "Invoice",
        "from": "Supplier <ap@supplier.example>",
    }
    response = await http.post("/_sim/mail", json={**body, **spec})
    assert response.status_code == 201, response.text
    return dict(response.json())


async def sim_now(http: httpx.AsyncClient) -> datetime:
    return datetime.fromisoformat((await http.get("/_sim/clock")).json()["now"])


async def expiry(http: httpx.AsyncClient, minutes: float) -> str:
    return (await sim_now(http) + timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z")


async def subscribe(
    http: httpx.AsyncClient,
    graph: dict[str, str],
    resource: str,
    url: str,
    *,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> httpx.Response:
    body = {
        "changeType": "created",
        "notificationUrl": url,
        "resource": resource,
        "expirationDateTime": await expiry(http, 4000),
        "clientState": "s3cret-state",
        **extra,
    }
    return await http.post("/v1.0/subscriptions", json=body, headers={**graph, **(headers or {})})


def claims_of(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


class Receiver:
    """The subscriber's endpoint: answers validation handshakes and records notifications.

    Paths: ``/encoded/...`` echoes the token URL-encoded (a wrong answer), ``/slow/...`` answers
    after 10.5 s; ``fail[path] = n`` answers the next n notifications with 500; ``delay[path] = s``
    holds each notification s seconds before answering, and ``max_in_flight[path]`` records how many
    notifications to a path were being handled at once."""

    def __init__(self) -> None:
        self.validations: list[dict[str, Any]] = []
        self.notifications: list[dict[str, Any]] = []
        self.fail: dict[str, int] = {}
        self.delay: dict[str, float] = {}
        self.in_flight: dict[str, int] = {}
        self.max_in_flight: dict[str, int] = {}
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        token = request.query.get("validationToken")
        if token is not None and request.path.startswith("/slow"):
            await asyncio.sleep(10.5)  # past Graph's 10-second validation limit
        if token is not None:
            self.validations.append(
                {"path": request.path, "token": token, "contentType": request.headers.get("Content-Type")}
            )
            answer = quote(token) if request.path.startswith("/encoded") else token
            return web.Response(text=answer, content_type="text/plain")
        path = request.path
        self.in_flight[path] = self.in_flight.get(path, 0) + 1
        self.max_in_flight[path] = max(self.max_in_flight.get(path, 0), self.in_flight[path])
        try:
            raw = await request.read()
            self.notifications.append({"path": path, "query": dict(request.query), "body": json.loads(raw), "raw": raw})
            if path in self.delay:
                await asyncio.sleep(self.delay[path])
        finally:
            self.in_flight[path] -= 1
        if self.fail.get(path, 0) > 0:
            self.fail[path] -= 1
            return web.Response(status=500)
        return web.Response(status=202)

    def items(self, path: str) -> list[dict[str, Any]]:
        return [item for n in self.notifications if n["path"] == path for item in n["body"]["value"]]

    def posts(self, path: str) -> list[dict[str, Any]]:
        return [n for n in self.notifications if n["path"] == path]

    async def wait(self, check: Callable[[], bool], timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            assert time.monotonic() < deadline, "timed out waiting for a notification"
            await asyncio.sleep(0.05)


def make_certificate(
    subject: str = "azuresim-test", valid_days: int = 30
) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    """A self-signed RSA certificate, valid from a minute ago, as an app credential or a vault import."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(days=valid_days))
        .sign(key, hashes.SHA256())
    )
    return key, cert


def key_pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def cert_pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def sha1_thumbprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA1()).hex().upper()  # noqa: S303 - the thumbprint MSAL's x5t mode takes
