"""Compact JWS (RFC 7515) as the identity platform uses it: base64url, parsing, RS256 signing and
RS256/PS256 verification. Shared by the tokens the simulator issues and the client assertions it checks."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

# RFC 7518 3.3 and 3.5: PKCS#1 v1.5 or PSS (MGF1, salt as long as the hash), both with SHA-256.
ALGORITHMS = ("RS256", "PS256")


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class Jws:
    header: dict[str, Any]
    claims: dict[str, Any]
    signing_input: bytes
    signature: bytes


def parse(token: str) -> Jws:
    """Split and decode a compact JWS; ValueError when it is not one (the signature is not checked)."""
    parts = token.split(".")
    if len(parts) != 3:
        raise ValueError("a JWT has three dot-separated parts")
    try:
        header = json.loads(b64url_decode(parts[0]))
        claims = json.loads(b64url_decode(parts[1]))
        signature = b64url_decode(parts[2])
    except (ValueError, binascii.Error) as exc:
        raise ValueError("the JWT parts are not base64url JSON") from exc
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise ValueError("the JWT header and claims must be JSON objects")
    return Jws(header, claims, f"{parts[0]}.{parts[1]}".encode(), signature)


def sign_rs256(key: rsa.RSAPrivateKey, header: dict[str, Any], claims: dict[str, Any]) -> str:
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
    signature = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{b64url(signature)}"


def verify(jws: Jws, key: rsa.RSAPublicKey) -> bool:
    """True when ``jws`` is signed by ``key`` with its header's ``alg`` (RS256 or PS256)."""
    algorithm = jws.header.get("alg")
    if algorithm == "RS256":
        scheme: padding.AsymmetricPadding = padding.PKCS1v15()
    elif algorithm == "PS256":
        scheme = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.DIGEST_LENGTH)
    else:
        return False
    try:
        key.verify(jws.signature, jws.signing_input, scheme, hashes.SHA256())
    except InvalidSignature:
        return False
    return True
