"""Delegated mode's consent: a mailbox's owner signs in once in a browser and the app keeps the token.

`GET /api/consent?mailbox=...[&prompt=login|consent]` starts MSAL's authorization code flow with PKCE
and redirects to the identity platform. The flow (state, PKCE verifier, nonce) stays on the server, in
the state container under `consent/{state}.json`, for ten minutes and one use: the browser carries
only `state`. `POST /api/consent/callback` (where the identity platform sends the browser back with
`code` and `state`, as a form post) redeems the code, checks that the signed-in user owns the mailbox, stores the
token cache in Key Vault and marks the mailbox `ok`. Any failure answers a 400 page with one line and
stores nothing.
"""

from __future__ import annotations

import asyncio
import html
import logging
import re
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import azure.functions as func

from ... import clock
from ...errors import IngestError, StateConflict
from ...logs import log_event
from ...pipeline.layout import graph_time, parse_graph_time
from . import authstatus
from .auth import result_error

if TYPE_CHECKING:
    from ...pipeline.storage import BlobStore
    from ...runtime import Runtime
    from .delegated import DelegatedTokens

logger = logging.getLogger(__name__)

FLOW_PREFIX = "consent/"
# About an authorization code's own lifetime: a sign-in left longer than this starts again.
FLOW_LIFETIME = timedelta(minutes=10)
PROMPTS = ("login", "consent")
# MSAL's state is a random URL-safe string; anything else is not ours (and never becomes a blob path).
_STATE = re.compile(r"^[A-Za-z0-9_-]{8,128}$")


class ConsentProblem(IngestError):
    """A consent request or answer that cannot be used; its text is the page's one line."""

    def __init__(self, message: str, mailbox: str | None = None, status: int = 400) -> None:
        # One line, whatever the identity platform's answer or the browser put into it.
        super().__init__(" ".join(message.split()))
        self.mailbox = mailbox
        self.status = status


def flow_path(state: str) -> str:
    return f"{FLOW_PREFIX}{state}.json"


def _delegated(rt: Runtime) -> DelegatedTokens:
    from .delegated import DelegatedTokens

    if not isinstance(rt.tokens, DelegatedTokens):
        raise ConsentProblem("Consent is only used in delegated mode (GRAPH_AUTH_MODE=delegated).", status=404)
    return rt.tokens


async def begin(rt: Runtime, mailbox: str, prompt: str | None) -> str:
    """Start the flow for a configured mailbox; the identity platform's authorize URL."""
    tokens = _delegated(rt)
    mailbox = mailbox.strip().lower()
    if mailbox not in rt.settings.delegated_mailboxes:
        raise ConsentProblem(f"{mailbox or 'No mailbox'} is not a configured mailbox (MAILBOXES).")
    if prompt and prompt not in PROMPTS:
        raise ConsentProblem("prompt must be login or consent.", mailbox)
    app = await tokens.new_app()
    flow: dict[str, Any] = await asyncio.to_thread(
        app.initiate_auth_code_flow,
        list(rt.settings.delegated_scopes),
        redirect_uri=rt.settings.consent_redirect_uri,
        login_hint=mailbox,
        prompt=prompt or None,
        # The code comes back in a POST body, not in a URL that browsers and proxies keep (RFC 9700 §4.3.1).
        response_mode="form_post",
    )
    record = {"mailbox": mailbox, "created_at": graph_time(clock.now()), "flow": flow}
    await rt.state.write_json(flow_path(str(flow["state"])), record, None)
    log_event(logger, "auth.consent_started", mailbox=mailbox, prompt=prompt)
    return str(flow["auth_uri"])


async def _take_flow(rt: Runtime, state: str) -> dict[str, Any]:
    """The flow saved for `state`, claimed by ETag so that it serves one answer only, then deleted."""
    gone = ConsentProblem("This sign-in is unknown, expired or already used; start the consent again.")
    if not _STATE.match(state):
        raise gone
    found = await rt.state.read_json(flow_path(state))
    if found is None or found[0].get("used"):
        raise gone
    record, etag = found
    try:
        etag = await rt.state.write_json(flow_path(state), {"used": True}, etag)
    except StateConflict:
        raise gone from None
    await rt.state.delete(flow_path(state), etag)
    return record


async def purge_stale_flows(store: BlobStore, now: datetime) -> int:
    """Delete flows nobody finished within their lifetime (the consent page is anonymous, so they must not
    pile up); a flow claimed or changed meanwhile is left to its taker. The number deleted."""
    purged = 0
    for name in await store.names(FLOW_PREFIX):
        found = await store.read_json(name)
        if found is None:
            continue
        record, etag = found
        created = record.get("created_at")
        if created and now - parse_graph_time(str(created)) <= FLOW_LIFETIME:
            continue
        try:
            await store.delete(name, etag)
        except StateConflict:
            continue
        purged += 1
    return purged


async def finish(rt: Runtime, params: dict[str, str]) -> str:
    """Complete the flow from the identity platform's answer; the mailbox now consented."""
    tokens = _delegated(rt)
    record = await _take_flow(rt, params.get("state", ""))
    mailbox = str(record["mailbox"])
    again = rt.settings.consent_url(mailbox)
    if clock.now() - parse_graph_time(str(record["created_at"])) > FLOW_LIFETIME:
        raise ConsentProblem(f"This sign-in took too long; start again at {again}.", mailbox)
    if "error" in params:
        detail = params.get("error_description", "").splitlines()[0] if params.get("error_description") else ""
        raise ConsentProblem(f"No consent was given ({params['error']}: {detail}); start again at {again}.", mailbox)
    app = await tokens.new_app()
    try:
        result = await asyncio.to_thread(app.acquire_token_by_auth_code_flow, record["flow"], params)
    except ValueError as exc:  # MSAL's own checks of the answer against the flow (state, nonce)
        raise ConsentProblem(f"The sign-in answer does not match its request ({exc}).", mailbox) from None
    if "access_token" not in result:
        error, detail = result_error(result)
        raise ConsentProblem(f"The identity platform refused the sign-in ({error}: {detail}).", mailbox)
    claims = result.get("id_token_claims") or {}
    user = str(claims.get("preferred_username") or claims.get("upn") or "")
    if mailbox not in (user.lower(), str(claims.get("oid", "")).lower()):
        raise ConsentProblem(
            f"Signed in as {user or 'an unknown user'}, but this consent is for {mailbox}: nothing was stored. "
            f"Sign in as {mailbox} at {again}&prompt=login.",
            mailbox,
        )
    await tokens.store_consent(mailbox, app.token_cache.serialize())
    now = graph_time(clock.now())
    await authstatus.update(
        rt.state, mailbox, status="ok", reason=None, consented_at=now, refreshed_at=now, consent_url=again
    )
    log_event(logger, "auth.consented", mailbox=mailbox, scopes=" ".join(rt.settings.delegated_scopes))
    return mailbox


def _page(status: int, title: str, line: str, outcome: str) -> func.HttpResponse:
    title, line = html.escape(title), html.escape(line)
    body = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title></head><body>"
        f"<h1>{title}</h1><p id='outcome' data-outcome='{outcome}'>{line}</p></body></html>"
    )
    headers = {"Cache-Control": "no-store", "Content-Security-Policy": "default-src 'none'"}
    return func.HttpResponse(body, status_code=status, mimetype="text/html", charset="utf-8", headers=headers)


def _refused(exc: ConsentProblem, title: str) -> func.HttpResponse:
    log_event(logger, "auth.consent_failed", logging.WARNING, mailbox=exc.mailbox, reason=str(exc))
    return _page(exc.status, title, str(exc), "refused")


async def start(req: func.HttpRequest) -> func.HttpResponse:
    from ...runtime import get_runtime

    try:
        url = await begin(get_runtime(), req.params.get("mailbox", ""), req.params.get("prompt"))
    except ConsentProblem as exc:
        return _refused(exc, "Consent not started")
    return func.HttpResponse(status_code=302, headers={"Location": url, "Cache-Control": "no-store"})


async def callback(req: func.HttpRequest) -> func.HttpResponse:
    from ...runtime import get_runtime

    try:
        # form_post answers in the body; an answer in the query is read the same way.
        mailbox = await finish(get_runtime(), {**req.params, **req.form})
    except ConsentProblem as exc:
        return _refused(exc, "Consent not recorded")
    return _page(200, "Consent recorded", f"The app can now read the mail of {mailbox}. You may close this page.", "ok")
