"""Credentials and delegated-mode settings, certificates from a Key Vault backing secret, the consent
flow's server-side state (Azurite), and the auth status record."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from shared.certificates import PEM_CONTENT_TYPE, PKCS12_CONTENT_TYPE
from shared.errors import AuthError, SettingsError
from shared.pipeline.layout import graph_time
from shared.pipeline.storage import BlobStore
from shared.settings import parse_settings
from shared.sources.graph import authstatus, consent
from shared.sources.graph.auth import ClientCredential, credential_from_secret
from tests.local.simclient import cert_pem, key_pem, make_certificate, sha1_thumbprint


def pem(key: Any, *certs: Any) -> str:
    return (key_pem(key) if key is not None else "") + "".join(cert_pem(c) for c in certs)


# -- settings -------------------------------------------------------------------------------------
def test_delegated_mode_and_its_scopes(env):
    env["GRAPH_AUTH_MODE"] = "Delegated"
    s = parse_settings(env)
    assert s.auth_mode == "delegated" and s.delegated_scopes == ("Mail.Read",)
    assert s.consent_redirect_uri == "https://ingest.example.net/api/consent/callback"
    assert s.consent_url("a@contoso.com") == "https://ingest.example.net/api/consent?mailbox=a%40contoso.com"
    assert s.delegated_mailboxes == ("invoices@contoso.com", "scans@contoso.com")
    assert s.token_refresh_hours == 24
    env["AFTER_INGEST_BY_MAILBOX"] = "scans@contoso.com=mark-read"
    assert parse_settings(env).delegated_scopes == ("Mail.ReadWrite",)


def test_a_certificate_alone_is_a_credential(env):
    del env["GRAPH_CLIENT_SECRET"]
    env["GRAPH_CLIENT_CERTIFICATE"] = "graph-app-cert"
    s = parse_settings(env)
    assert s.client_certificate == "graph-app-cert" and s.client_secret is None
    env["GRAPH_CLIENT_CERTIFICATE"] = ""  # infra always sets it, empty when unused
    with pytest.raises(SettingsError, match="GRAPH_CLIENT_SECRET: required"):
        parse_settings(env)


@pytest.mark.parametrize(
    ("changes", "name", "needle"),
    [
        ({"GRAPH_CLIENT_CERTIFICATE": "my cert/1"}, "GRAPH_CLIENT_CERTIFICATE", "not a Key Vault certificate name"),
        ({"GRAPH_AUTH_MODE": "delegated", "WEBHOOK_BASE_URL": ""}, "WEBHOOK_BASE_URL", "required in delegated mode"),
        ({"GRAPH_AUTH_MODE": "user"}, "GRAPH_AUTH_MODE", "must be application or delegated"),
        ({"TOKEN_REFRESH_HOURS": "2400"}, "TOKEN_REFRESH_HOURS", "between 1 and 720"),
        ({"TOKEN_REFRESH_HOURS": "0"}, "TOKEN_REFRESH_HOURS", "between 1 and 720"),
    ],
)
def test_bad_auth_settings_are_refused_in_one_line(env, changes, name, needle):
    env.update(changes)
    with pytest.raises(SettingsError) as caught:
        parse_settings(env)
    assert str(caught.value).startswith(f"setting {name}: ") and needle in str(caught.value)
    assert "\n" not in str(caught.value)


# -- certificates ---------------------------------------------------------------------------------
def test_pem_backing_secret_with_a_chain():
    _, ca = make_certificate("issuing CA")
    key, leaf = make_certificate("mail-ingest")
    credential = credential_from_secret(pem(key, ca, leaf), PEM_CONTENT_TYPE)  # the leaf need not come first
    loaded = x509.load_pem_x509_certificate(credential["public_certificate"].encode())
    assert loaded == leaf
    assert serialization.load_pem_private_key(credential["private_key"].encode(), None).public_key() == key.public_key()
    # This MSAL takes the certificate and computes the SHA-256 thumbprint itself; older ones want SHA-1.
    assert "thumbprint" not in credential or credential["thumbprint"] == sha1_thumbprint(leaf)


def test_pkcs12_backing_secret():
    key, cert = make_certificate("mail-ingest")
    pfx = pkcs12.serialize_key_and_certificates(None, key, cert, None, serialization.NoEncryption())
    credential = credential_from_secret(base64.b64encode(pfx).decode(), PKCS12_CONTENT_TYPE)
    assert x509.load_pem_x509_certificate(credential["public_certificate"].encode()) == cert
    # Without a content type the format is read from the value.
    assert credential_from_secret(pem(key, cert), None)["public_certificate"] == credential["public_certificate"]


@pytest.mark.parametrize(
    ("value", "content_type", "needle"),
    [
        ("not base64 pkcs12", PKCS12_CONTENT_TYPE, "not a readable PKCS#12"),
        ("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", PEM_CONTENT_TYPE, "not a readable PEM"),
    ],
)
def test_unreadable_backing_secrets(value, content_type, needle):
    with pytest.raises(AuthError, match=needle):
        credential_from_secret(value, content_type)


def test_a_certificate_without_its_key_or_for_another_key_is_refused():
    _, cert = make_certificate("mail-ingest")
    other_key, _ = make_certificate("other")
    only_cert = [pkcs12.PKCS12Certificate(cert, None)]
    pfx = pkcs12.serialize_key_and_certificates(None, None, None, only_cert, serialization.NoEncryption())
    with pytest.raises(AuthError, match="no private key"):
        credential_from_secret(base64.b64encode(pfx).decode(), PKCS12_CONTENT_TYPE)
    with pytest.raises(AuthError, match="no certificate for its private key"):
        credential_from_secret(pem(other_key, cert), PEM_CONTENT_TYPE)


class FakeVault:
    def __init__(self, secrets: dict[str, tuple[str, str | None]]) -> None:
        self.secrets = secrets
        self.reads: list[str] = []

    async def get_typed(self, name: str) -> tuple[str, str | None] | None:
        self.reads.append(name)
        return self.secrets.get(name)


async def test_the_certificate_wins_over_a_secret_and_is_read_once(env):
    key, cert = make_certificate("mail-ingest")
    env["GRAPH_CLIENT_CERTIFICATE"] = "graph-app-cert"  # GRAPH_CLIENT_SECRET is set too
    vault = FakeVault({"graph-app-cert": (pem(key, cert), PEM_CONTENT_TYPE)})
    credential = ClientCredential(parse_settings(env), vault)  # type: ignore[arg-type]
    first = await credential.get()
    assert isinstance(first, dict) and await credential.get() is first and vault.reads == ["graph-app-cert"]
    env["GRAPH_CLIENT_CERTIFICATE"] = "missing-cert"
    with pytest.raises(AuthError, match="Key Vault has no certificate missing-cert"):
        await ClientCredential(parse_settings(env), vault).get()  # type: ignore[arg-type]
    del env["GRAPH_CLIENT_CERTIFICATE"]
    assert await ClientCredential(parse_settings(env), vault).get() == "s3cret"  # type: ignore[arg-type]


# -- consent flow state and auth status (Azurite) ----------------------------------------------------
async def test_a_saved_flow_serves_one_answer(store: BlobStore):
    rt: Any = SimpleNamespace(state=store)
    record = {"mailbox": "a@contoso.com", "created_at": "2026-01-01T00:00:00Z", "flow": {"state": "abcdefgh12"}}
    await store.write_json(consent.flow_path("abcdefgh12"), record, None)
    assert await consent._take_flow(rt, "abcdefgh12") == record
    assert await store.read_json(consent.flow_path("abcdefgh12")) is None
    for bad in ("abcdefgh12", "../folders/x", "short", "x" * 200):
        with pytest.raises(consent.ConsentProblem, match="unknown, expired or already used"):
            await consent._take_flow(rt, bad)


async def test_auth_status_record(store: BlobStore):
    assert await authstatus.load(store, "A@contoso.com") is None
    await authstatus.update(store, "A@contoso.com", status="needs_consent", reason="AADSTS700082", consent_url="u")
    await authstatus.update(store, "a@contoso.com", status="ok", reason=None, consented_at="2026-01-01T00:00:00Z")
    record = await store.read_json("auth/a@contoso.com.json")
    assert record is not None and record[0] == {
        "mailbox": "a@contoso.com",
        "status": "ok",
        "reason": None,
        "consented_at": "2026-01-01T00:00:00Z",
        "refreshed_at": None,
        "consent_url": "u",
    }


async def test_flows_nobody_finished_are_purged(store: BlobStore):
    now = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
    for name, age in (("stale12345", 11), ("fresh12345", 9)):
        created = graph_time(now - timedelta(minutes=age))
        await store.write_json(consent.flow_path(name), {"mailbox": "a@contoso.com", "created_at": created}, None)
    await store.write_json(consent.flow_path("taken12345"), {"used": True}, None)  # its taker died mid-way
    assert await consent.purge_stale_flows(store, now) == 2
    assert await store.names(consent.FLOW_PREFIX) == [consent.flow_path("fresh12345")]
