"""What Exchange Online checks when an app signs in to IMAP or POP with OAuth, as an RFC 7662
token-introspection endpoint for Dovecot's oauth2 passdb (`introspection_mode = post`).

A token is active when the simulator's identity platform signed it (its published keys), it is not
expired, its audience is Exchange Online, and it carries `IMAP.AccessAsApp` or `POP.AccessAsApp`.
The username it answers is the mailbox the app's service principal was given access to (Exchange's
`Add-MailboxPermission`): Dovecot refuses a login as any other user. Loopback only.

    async with Introspection(sim_info, {client_id: "ap@example.org"}) as endpoint:
        endpoint.url  # http://127.0.0.1:PORT/introspect
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Mapping
from types import TracebackType
from typing import Any

import httpx
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa

from local.azuresim import jose
from local.azuresim.identity import EXCHANGE_RESOURCE, EXCHANGE_ROLES


class Introspection:
    def __init__(self, sim_info: Mapping[str, Any], grants: Mapping[str, str]) -> None:
        self._sim = sim_info
        self.grants = dict(grants)  # app (client) id -> the mailbox it may open
        self._runner: web.AppRunner | None = None
        self.url = ""
        self.answers: list[dict[str, Any]] = []

    async def _keys(self) -> dict[str, rsa.RSAPublicKey]:
        context = ssl.create_default_context(cafile=str(self._sim["ca_file"]))
        async with httpx.AsyncClient(verify=context) as client:
            response = await client.get(f"{self._sim['authority_host']}/{self._sim['tenant_id']}/discovery/v2.0/keys")
        keys: dict[str, rsa.RSAPublicKey] = {}
        for key in response.json()["keys"]:
            n = int.from_bytes(jose.b64url_decode(key["n"]), "big")
            e = int.from_bytes(jose.b64url_decode(key["e"]), "big")
            keys[key["kid"]] = rsa.RSAPublicNumbers(e, n).public_key()
        return keys

    async def _check(self, token: str) -> dict[str, Any]:
        try:
            jws = jose.parse(token)
        except ValueError:
            return {"active": False}
        key = (await self._keys()).get(str(jws.header.get("kid")))
        claims = jws.claims
        roles = set(claims.get("roles", ()))
        mailbox = self.grants.get(str(claims.get("appid")))
        if (
            key is None
            or not jose.verify(jws, key)
            or claims.get("aud") != EXCHANGE_RESOURCE
            or float(claims.get("exp", 0)) < time.time()
            or not roles & EXCHANGE_ROLES
            or mailbox is None
        ):
            return {"active": False}
        return {"active": True, "username": mailbox, "scope": " ".join(sorted(roles))}

    async def _introspect(self, request: web.Request) -> web.Response:
        form = await request.post()
        answer = await self._check(str(form.get("token", "")))
        self.answers.append(answer)
        return web.json_response(answer)

    async def __aenter__(self) -> Introspection:
        app = web.Application()
        app.router.add_post("/introspect", self._introspect)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/introspect"
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


def dovecot_oauth2_config(conf_file: str, introspection_url: str) -> tuple[str, str]:
    """Dovecot settings for an oauth2 passdb using the endpoint: (dovecot.conf part, the passdb's args file)."""
    main = (
        "auth_mechanisms = plain login xoauth2 oauthbearer\n"
        "passdb {\n  driver = oauth2\n  mechanisms = xoauth2 oauthbearer\n"
        f"  args = {conf_file}\n}}\n"
    )
    args = (
        "introspection_mode = post\n"
        f"introspection_url = {introspection_url}\n"
        "force_introspection = yes\n"
        "username_attribute = username\n"
        "active_attribute = active\n"
        "active_value = true\n"
    )
    return main, args
