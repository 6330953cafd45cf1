"""Access tokens for SASL XOAUTH2 (`auth=xoauth2` on an account URL).

- Without `secret=`: the app's own Entra ID credential, client credentials for Exchange Online's
  IMAP and POP (`https://outlook.office365.com/.default`; the app needs the application permission
  `IMAP.AccessAsApp` or `POP.AccessAsApp` and an Exchange service principal with mailbox access).
- With `secret=NAME`: the Key Vault secret holds a JSON object for another provider (Gmail):
  `{"token_url": ..., "client_id": ..., "client_secret": ..., "refresh_token": ...}`. The refresh
  token is redeemed for an access token (RFC 6749 6); a rotated refresh token is written back.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

from ..errors import MailAuthFailed
from ..settings import MailAccount

if TYPE_CHECKING:
    from ..runtime import Runtime

EXCHANGE_SCOPE = "https://outlook.office365.com/.default"


async def access_token(rt: Runtime, account: MailAccount) -> str:
    if account.secret is None:
        return await _app_token(rt, account)
    return await _refreshed_token(rt, account, account.secret)


# One MSAL application per app registration and process: its in-memory cache keeps the token until it expires.
_apps: dict[str, Any] = {}


async def _app_token(rt: Runtime, account: MailAccount) -> str:
    from .graph.auth import ClientCredential, msal_app, result_error

    key = f"{rt.settings.authority}|{rt.settings.client_id}"
    app = _apps.get(key)
    if app is None:
        credential = await ClientCredential(rt.settings, rt.vault).get()
        # Building it fetches the authority's metadata: off the event loop.
        app = _apps[key] = await asyncio.to_thread(msal_app, rt.settings, credential)
    result = await asyncio.to_thread(app.acquire_token_for_client, scopes=[EXCHANGE_SCOPE])
    if "access_token" not in result:
        code, description = result_error(result)
        raise MailAuthFailed(str(account), f"no token for {EXCHANGE_SCOPE}: {code}: {description}")
    return str(result["access_token"])


async def _refreshed_token(rt: Runtime, account: MailAccount, secret: str) -> str:
    import httpx

    raw = await rt.vault.get(secret)
    if raw is None:
        raise MailAuthFailed(str(account), f"Key Vault secret {secret} does not exist")
    try:
        grant: dict[str, Any] = json.loads(raw)
        form = {
            "grant_type": "refresh_token",
            "refresh_token": str(grant["refresh_token"]),
            "client_id": str(grant["client_id"]),
        }
        if grant.get("client_secret"):
            form["client_secret"] = str(grant["client_secret"])
        if grant.get("scope"):
            form["scope"] = str(grant["scope"])
        token_url = str(grant["token_url"])
    except (ValueError, KeyError, TypeError) as exc:
        raise MailAuthFailed(
            str(account), f"Key Vault secret {secret} is not a token_url/client_id/refresh_token JSON object"
        ) from exc
    async with httpx.AsyncClient(timeout=30) as client:
        response = await client.post(token_url, data=form)
    try:
        answer = response.json()
    except ValueError:
        answer = {}
    if response.status_code != 200 or "access_token" not in answer:
        error = answer.get("error", response.status_code) if isinstance(answer, dict) else response.status_code
        raise MailAuthFailed(str(account), f"the token endpoint refused the refresh token: {error}")
    rotated = answer.get("refresh_token")
    if rotated and rotated != grant["refresh_token"]:
        await rt.vault.set(secret, json.dumps({**grant, "refresh_token": rotated}))
    return str(answer["access_token"])
