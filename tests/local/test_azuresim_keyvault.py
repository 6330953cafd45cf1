"""The simulator's Key Vault beyond plain secrets, through the real azure-keyvault-secrets client:
certificate import and the backing secret (read back and used as an MSAL credential), soft delete,
recovery, purge and paged lists."""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import msal
import pytest
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.keyvault.secrets.aio import SecretClient
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from local.azuresim.runner import SimulatorProcess, secret_client
from tests.local.simclient import (
    VAULT_SCOPE,
    cert_pem,
    get_token,
    key_pem,
    make_certificate,
    sha1_thumbprint,
)

API = {"api-version": "7.5"}
PKCS12 = "application/x-pkcs12"
PEM = "application/x-pem-file"
DAY = 86400


@pytest.fixture(scope="module")
async def vault(sim: SimulatorProcess, ca_env: None) -> AsyncIterator[SecretClient]:
    async with secret_client(sim) as client:
        yield client


@pytest.fixture(scope="module")
async def vault_auth(http: httpx.AsyncClient, sim: SimulatorProcess) -> dict[str, str]:
    return {"Authorization": f"Bearer {await get_token(http, sim, VAULT_SCOPE)}"}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def import_certificate(
    http: httpx.AsyncClient, auth: dict[str, str], name: str, value: str, content_type: str, **extra: Any
) -> httpx.Response:
    body = {"value": value, "policy": {"secret_props": {"contentType": content_type}, **extra.pop("policy", {})}}
    return await http.post(f"/certificates/{name}/import", params=API, json={**body, **extra}, headers=auth)


def token_with(sim: SimulatorProcess, credential: dict[str, str]) -> dict[str, Any]:
    info = sim.info
    app = msal.ConfidentialClientApplication(
        info["client_id"],
        client_credential=credential,
        authority=f"{sim.url}/{info['tenant_id']}",
        instance_discovery=False,
    )
    result: dict[str, Any] = app.acquire_token_for_client(["https://graph.microsoft.com/.default"])
    return result


# -- certificates -----------------------------------------------------------------------------------
async def test_pfx_import_backing_secret_and_msal(
    http: httpx.AsyncClient,
    sim: SimulatorProcess,
    vault: SecretClient,
    vault_auth: dict[str, str],
    tmp_path: Path,
) -> None:
    key, cert = make_certificate("graph-credential")
    pfx = pkcs12.serialize_key_and_certificates(
        b"app", key, cert, None, serialization.BestAvailableEncryption(b"pfx-pass")
    )
    imported = await import_certificate(
        http, vault_auth, "graph-credential", b64(pfx), PKCS12, pwd="pfx-pass", tags={"use": "graph"}
    )
    assert imported.status_code == 200, imported.text
    bundle = imported.json()
    version = bundle["id"].rsplit("/", 1)[1]
    assert bundle["id"] == f"{sim.url}/certificates/graph-credential/{version}"
    assert bundle["sid"] == f"{sim.url}/secrets/graph-credential/{version}"
    assert bundle["kid"] == f"{sim.url}/keys/graph-credential/{version}"
    assert bundle["x5t"] == base64.urlsafe_b64encode(cert.fingerprint(hashes.SHA1())).decode().rstrip("=")  # noqa: S303
    assert bundle["cer"] == b64(cert.public_bytes(serialization.Encoding.DER))
    assert bundle["attributes"]["exp"] == int(cert.not_valid_after_utc.timestamp())
    assert bundle["policy"]["secret_props"] == {"contentType": PKCS12}
    assert bundle["policy"]["key_props"] == {"exportable": True, "reuse_key": False, "kty": "RSA", "key_size": 2048}
    assert bundle["policy"]["x509_props"]["subject"] == "CN=graph-credential" and bundle["tags"] == {"use": "graph"}
    latest = await http.get("/certificates/graph-credential/", params=API, headers=vault_auth)
    assert latest.json()["id"] == bundle["id"]
    listed = await http.get("/certificates", params=API, headers=vault_auth)
    assert [c["id"] for c in listed.json()["value"]] == [f"{sim.url}/certificates/graph-credential"]

    # The backing secret, as azure-keyvault-secrets reads it: a PFX without a password.
    secret = await vault.get_secret("graph-credential")
    assert secret.properties.content_type == PKCS12 and secret.properties.managed is True
    assert secret.properties.key_id == bundle["kid"] and secret.properties.version == version
    assert secret.value is not None
    own_key, own_cert, _ = pkcs12.load_key_and_certificates(base64.b64decode(secret.value), None)
    assert own_cert == cert and own_key is not None
    assert own_key.private_numbers() == key.private_numbers()  # type: ignore[union-attr]

    # ... good enough for MSAL once the certificate is on the app registration.
    await http.post(f"/_sim/apps/{sim.info['client_id']}/certificates", json={"certificate": bundle["cer"]})
    path = tmp_path / "from-vault.pfx"
    path.write_bytes(base64.b64decode(secret.value))
    assert "access_token" in token_with(sim, {"private_key_pfx_path": str(path)})

    # Key Vault manages the backing secret's lifetime.
    for attempt in (vault.set_secret("graph-credential", "overwrite"), vault.delete_secret("graph-credential")):
        with pytest.raises(HttpResponseError) as refused:
            await attempt
        assert refused.value.status_code == 403


async def test_pem_import_rules(
    http: httpx.AsyncClient, sim: SimulatorProcess, vault: SecretClient, vault_auth: dict[str, str]
) -> None:
    key, cert = make_certificate("pem-credential")
    imported = await import_certificate(http, vault_auth, "pem-credential", key_pem(key) + cert_pem(cert), PEM)
    assert imported.status_code == 200, imported.text
    secret = await vault.get_secret("pem-credential")
    assert secret.properties.content_type == PEM and secret.value is not None
    assert secret.value.startswith("-----BEGIN PRIVATE KEY-----") and cert_pem(cert) in secret.value
    await http.post(f"/_sim/apps/{sim.info['client_id']}/certificates", json={"certificate": cert_pem(cert)})
    assert "access_token" in token_with(sim, {"private_key": secret.value, "thumbprint": sha1_thumbprint(cert)})

    # Not exportable: the secret holds the certificate only.
    other_key, other_cert = make_certificate("sealed")
    sealed = await import_certificate(
        http,
        vault_auth,
        "sealed",
        key_pem(other_key) + cert_pem(other_cert),
        PEM,
        policy={"key_props": {"exportable": False}},
    )
    assert sealed.status_code == 200 and sealed.json()["policy"]["key_props"]["exportable"] is False
    assert (await vault.get_secret("sealed")).value == cert_pem(other_cert)

    pkcs1 = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    ).decode()
    pfx = pkcs12.serialize_key_and_certificates(None, key, cert, None, serialization.BestAvailableEncryption(b"pw"))
    refused = {
        "PKCS#1 key": await import_certificate(http, vault_auth, "bad-1", pkcs1 + cert_pem(cert), PEM),
        "PEM under a PFX policy": await import_certificate(
            http, vault_auth, "bad-2", key_pem(key) + cert_pem(cert), PKCS12
        ),
        "wrong PFX password": await import_certificate(http, vault_auth, "bad-3", b64(pfx), PKCS12, pwd="nope"),
        "someone else's key": await import_certificate(
            http, vault_auth, "bad-4", key_pem(other_key) + cert_pem(cert), PEM
        ),
    }
    for why, response in refused.items():
        assert response.status_code == 400 and response.json()["error"]["code"] == "BadParameter", why
    await vault.set_secret("plain-secret", "value")
    taken = await import_certificate(http, vault_auth, "plain-secret", key_pem(key) + cert_pem(cert), PEM)
    assert taken.status_code == 409


# -- secrets: soft delete and paging ----------------------------------------------------------------
async def test_soft_delete_recover_and_purge(http: httpx.AsyncClient, vault: SecretClient) -> None:
    name = f"deleted-{uuid.uuid4().hex[:8]}"
    await vault.set_secret(name, "first")
    deleted = await vault.delete_secret(name)
    assert deleted.recovery_id is not None and deleted.recovery_id.endswith(f"/deletedsecrets/{name}")
    assert deleted.deleted_date is not None and deleted.scheduled_purge_date is not None
    assert deleted.scheduled_purge_date - deleted.deleted_date == timedelta(days=90)
    with pytest.raises(ResourceNotFoundError):
        await vault.get_secret(name)
    assert (await vault.get_deleted_secret(name)).name == name
    assert name in {d.name async for d in vault.list_deleted_secrets()}
    with pytest.raises(ResourceExistsError):  # "deleted but recoverable": the name cannot be reused
        await vault.set_secret(name, "second")

    await vault.recover_deleted_secret(name)
    assert (await vault.get_secret(name)).value == "first"
    with pytest.raises(ResourceNotFoundError):
        await vault.get_deleted_secret(name)

    await vault.delete_secret(name)
    await vault.purge_deleted_secret(name)
    with pytest.raises(ResourceNotFoundError):
        await vault.get_deleted_secret(name)
    assert (await vault.set_secret(name, "again")).value == "again"

    # Past scheduledPurgeDate the vault forgets the deleted secret by itself.
    await vault.delete_secret(name)
    assert (await http.post("/_sim/clock", json={"advanceSeconds": 91 * DAY})).status_code == 200
    with pytest.raises(ResourceNotFoundError):
        await vault.get_deleted_secret(name)
    assert (await vault.set_secret(name, "fresh")).value == "fresh"


async def test_lists_are_paged(http: httpx.AsyncClient, vault: SecretClient, vault_auth: dict[str, str]) -> None:
    names = {f"paged-{i:02d}" for i in range(30)}
    await asyncio.gather(*(vault.set_secret(name, "x") for name in names))
    pages = [[p.name async for p in page] async for page in vault.list_properties_of_secrets(max_page_size=7).by_page()]
    assert all(len(page) == 7 for page in pages[:-1]) and 1 <= len(pages[-1]) <= 7
    seen = [name for page in pages for name in page]
    assert names <= set(seen) and len(seen) == len(set(seen))

    first = (await http.get("/secrets", params=API, headers=vault_auth)).json()
    assert len(first["value"]) == 25 and first["nextLink"]  # Key Vault's default page
    small = (await http.get("/secrets", params={**API, "maxresults": "3"}, headers=vault_auth)).json()
    assert "$skiptoken=" in small["nextLink"] and "maxresults=3" in small["nextLink"]
    following = (await http.get(small["nextLink"], headers=vault_auth)).json()
    assert len(following["value"]) == 3 and following["value"][0]["id"] not in {v["id"] for v in small["value"]}
    too_big = await http.get("/secrets", params={**API, "maxresults": "26"}, headers=vault_auth)
    assert too_big.status_code == 400

    for value in ("2", "3", "4"):
        await vault.set_secret("paged-00", value)
    versions = vault.list_properties_of_secret_versions("paged-00", max_page_size=3).by_page()
    sizes = [len([v async for v in page]) async for page in versions]
    assert sizes == [3, 1]
