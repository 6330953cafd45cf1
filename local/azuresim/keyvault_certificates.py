"""Key Vault certificates (REST API 7.x): import, get, list (import-certificate, get-certificate,
about-certificates).

Import takes a PFX (base64, ``pwd`` if it is encrypted) or a PEM holding a PKCS#8 private key and the
certificates; the format must match the policy's ``secret_props.contentType`` (``application/x-pkcs12``,
the default, or ``application/x-pem-file``). As in Key Vault, the certificate gets an addressable
secret of the same name and version: ``GET /secrets/{name}`` returns it (``managed``, with ``kid``),
base64 PFX without a password or PEM, and holds the private key only when ``key_props.exportable``
is not false. Keys (``/keys``) are not simulated; ``kid`` names where the key would be.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from .certificates import PEM, PKCS12, CertificateError, KeyAndChain, check_pair, parse_import, secret_value, x5t
from .clock import Clock
from .errors import KeyVaultError
from .identity import origin
from .keyvault import RECOVERABLE_DAYS, KeyVault, epoch
from .store import SecretVersion, Store, new_secret_version

_KEY_USAGE = (
    ("digital_signature", "digitalSignature"),
    ("content_commitment", "nonRepudiation"),
    ("key_encipherment", "keyEncipherment"),
    ("data_encipherment", "dataEncipherment"),
    ("key_agreement", "keyAgreement"),
    ("key_cert_sign", "keyCertSign"),
    ("crl_sign", "cRLSign"),
)


@dataclass
class CertificateVersion:
    name: str
    version: str
    chain: list[x509.Certificate]
    key_props: dict[str, Any]
    content_type: str
    enabled: bool
    tags: dict[str, str] | None
    created: datetime


def _key_props(imported: KeyAndChain, exportable: bool) -> dict[str, Any]:
    key = imported.key
    props: dict[str, Any] = {"exportable": exportable, "reuse_key": False}
    if isinstance(key, rsa.RSAPrivateKey):
        props.update(kty="RSA", key_size=key.key_size)
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        props.update(
            kty="EC", crv={"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}.get(key.curve.name)
        )
    return props


def _x509_props(cert: x509.Certificate) -> dict[str, Any]:
    props: dict[str, Any] = {"subject": cert.subject.rfc4514_string(), "ekus": [], "key_usage": []}
    before, after = cert.not_valid_before_utc, cert.not_valid_after_utc
    props["validity_months"] = (after.year - before.year) * 12 + after.month - before.month
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        props["ekus"] = [oid.dotted_string for oid in eku]
    except x509.ExtensionNotFound:
        pass
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        props["key_usage"] = [name for attr, name in _KEY_USAGE if getattr(usage, attr)]
    except x509.ExtensionNotFound:
        pass
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        props["sans"] = {"dns_names": sans.get_values_for_type(x509.DNSName)}
    except x509.ExtensionNotFound:
        pass
    return props


class Certificates:
    def __init__(self, store: Store, clock: Clock, vault: KeyVault) -> None:
        self.store = store
        self.clock = clock
        self.vault = vault
        self.certificates: dict[str, list[CertificateVersion]] = {}  # by lower-case name, oldest first

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/certificates/{name}/import", self.import_certificate),
            web.get("/certificates", self.list_certificates),
            web.get("/certificates/{name}", self.get_certificate),
            web.get("/certificates/{name}/", self.get_certificate),
            web.get("/certificates/{name}/{version}", self.get_certificate),
        ]

    def _attributes(self, cert: CertificateVersion) -> dict[str, Any]:
        leaf = cert.chain[0]
        return {
            "enabled": cert.enabled,
            "nbf": epoch(leaf.not_valid_before_utc),
            "exp": epoch(leaf.not_valid_after_utc),
            "created": epoch(cert.created),
            "updated": epoch(cert.created),
            "recoveryLevel": "Recoverable+Purgeable",
            "recoverableDays": RECOVERABLE_DAYS,
        }

    def _bundle(self, request: web.Request, cert: CertificateVersion) -> dict[str, Any]:
        base = origin(request)
        first = self.certificates[cert.name.lower()][0]
        bundle: dict[str, Any] = {
            "id": f"{base}/certificates/{cert.name}/{cert.version}",
            "kid": f"{base}/keys/{cert.name}/{cert.version}",
            "sid": f"{base}/secrets/{cert.name}/{cert.version}",
            "x5t": x5t(cert.chain[0]),
            "cer": base64.b64encode(cert.chain[0].public_bytes(serialization.Encoding.DER)).decode(),
            "attributes": self._attributes(cert),
            "policy": {
                "id": f"{base}/certificates/{cert.name}/policy",
                "key_props": cert.key_props,
                "secret_props": {"contentType": cert.content_type},
                "x509_props": _x509_props(cert.chain[0]),
                "lifetime_actions": [
                    {"trigger": {"lifetime_percentage": 80}, "action": {"action_type": "EmailContacts"}}
                ],
                "issuer": {"name": "Unknown"},
                "attributes": {"enabled": True, "created": epoch(first.created), "updated": epoch(cert.created)},
            },
        }
        if cert.tags is not None:
            bundle["tags"] = cert.tags
        return bundle

    async def import_certificate(self, request: web.Request) -> web.Response:
        self.vault.authorize(request)
        name = self.vault.name(request)
        try:
            body = json.loads(await request.read() or b"null")
        except ValueError as exc:
            raise KeyVaultError(400, "BadParameter", "The request body is not valid JSON.") from exc
        if not isinstance(body, dict) or not isinstance(body.get("value"), str):
            raise KeyVaultError(400, "BadParameter", "Property 'value' is required and must be a string.")
        policy = body.get("policy") or {}
        content_type = (policy.get("secret_props") or {}).get("contentType") or PKCS12
        if content_type not in (PKCS12, PEM):
            raise KeyVaultError(400, "BadParameter", f"Unsupported content type '{content_type}'.")
        try:
            imported = parse_import(body["value"], body.get("pwd"))
            check_pair(imported)
        except CertificateError as exc:
            raise KeyVaultError(400, "BadParameter", f"The certificate cannot be imported: {exc}") from exc
        if imported.content_type != content_type:
            raise KeyVaultError(
                400,
                "BadParameter",
                f"The value is {imported.content_type} content but the policy's contentType is {content_type}.",
            )
        if self.vault.deleted(name) is not None:
            raise self.vault.in_recoverable_state(name)
        secrets = self.store.secrets.setdefault(name.lower(), [])
        if secrets and not secrets[-1].managed:
            raise KeyVaultError(409, "Conflict", f"A secret named {name} exists; a certificate cannot take its name.")
        exportable = (policy.get("key_props") or {}).get("exportable", True) is not False
        attributes = body.get("attributes") or {}
        tags = body.get("tags")
        now = self.clock.now()
        versions = self.certificates.setdefault(name.lower(), [])
        cert = CertificateVersion(
            name=versions[0].name if versions else name,
            version=new_secret_version(),
            chain=imported.chain,
            key_props=_key_props(imported, exportable),
            content_type=content_type,
            enabled=bool(attributes.get("enabled", True)),
            tags={str(k): str(v) for k, v in tags.items()} if isinstance(tags, dict) else None,
            created=now,
        )
        versions.append(cert)
        # "When a Key Vault certificate is created, an addressable key and secret are also created with the same name."
        secrets.append(
            SecretVersion(
                name=cert.name,
                version=cert.version,
                value=secret_value(content_type, imported.key if exportable else None, imported.chain),
                content_type=content_type,
                tags=cert.tags,
                enabled=cert.enabled,
                created=now,
                updated=now,
                not_before=imported.chain[0].not_valid_before_utc,
                expires=imported.chain[0].not_valid_after_utc,
                managed=True,
            )
        )
        return web.json_response(self._bundle(request, cert))

    async def get_certificate(self, request: web.Request) -> web.Response:
        self.vault.authorize(request)
        name = self.vault.name(request)
        versions = self.certificates.get(name.lower(), [])
        wanted = request.match_info.get("version", "").lower()
        if wanted:
            cert = next((v for v in versions if v.version == wanted), None)
        else:
            cert = versions[-1] if versions else None
        if cert is None:
            raise KeyVaultError(
                404,
                "CertificateNotFound",
                f"A certificate with (name/id) {name}{'/' + wanted if wanted else ''} was not found in this key vault.",
            )
        return web.json_response(self._bundle(request, cert))

    async def list_certificates(self, request: web.Request) -> web.Response:
        self.vault.authorize(request)
        latest = sorted((v[-1] for v in self.certificates.values() if v), key=lambda c: c.name.lower())
        items = []
        for cert in latest:
            item = {
                "id": f"{origin(request)}/certificates/{cert.name}",
                "x5t": x5t(cert.chain[0]),
                "attributes": self._attributes(cert),
            }
            if cert.tags is not None:
                item["tags"] = cert.tags
            items.append(item)
        return web.json_response(self.vault.page(request, items))
