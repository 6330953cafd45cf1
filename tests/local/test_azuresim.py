"""The Azure simulator, exercised as a separate process through real clients: httpx, MSAL,
azure-identity and azure-keyvault-secrets. A small aiohttp receiver on 127.0.0.1 plays the
subscriber's webhook endpoint."""

from __future__ import annotations

import asyncio
import base64
import email
import email.policy
import hashlib
import time
import uuid
from datetime import datetime, timedelta
from typing import Any

import httpx
import msal
import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.identity.aio import ClientSecretCredential
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from local.azuresim.content import GeneratedContent, sha256_hex
from local.azuresim.runner import SimulatorProcess, secret_client, start_simulator
from tests.local.simclient import (
    GRAPH_SCOPE,
    IMMUTABLE,
    VAULT_SCOPE,
    Receiver,
    claims_of,
    deliver,
    expiry,
    get_token,
    new_mailbox,
    sim_now,
    subscribe,
)


# -- identity -------------------------------------------------------------------------------------
async def test_ready_file_and_discovery(http: httpx.AsyncClient, sim: SimulatorProcess) -> None:
    info = sim.info
    assert info["graph_url"] == f"{sim.url}/v1.0" and info["key_vault_url"] == f"{sim.url}/"
    assert info["authority_host"] == sim.url and info["pid"] == sim.process.pid
    tenant = info["tenant_id"]
    for path in (
        f"/{tenant}/v2.0/.well-known/openid-configuration",
        f"/{tenant}/.well-known/openid-configuration",
    ):
        config = (await http.get(path)).json()
        assert config["issuer"] == f"{sim.url}/{tenant}/v2.0"
        assert config["token_endpoint"] == f"{sim.url}/{tenant}/oauth2/v2.0/token"
        assert config["authorization_endpoint"] == f"{sim.url}/{tenant}/oauth2/v2.0/authorize"
        assert config["jwks_uri"] == f"{sim.url}/{tenant}/discovery/v2.0/keys"
    assert (
        await http.get("/00000000-0000-0000-0000-000000000000/v2.0/.well-known/openid-configuration")
    ).status_code == 400


def test_cli_options_and_clean_shutdown(tmp_path: Any) -> None:
    with start_simulator(tmp_path, tenant_id="t-1", client_id="c-1", client_secret="s-1") as other:
        assert (other.info["tenant_id"], other.info["client_id"], other.info["client_secret"]) == (
            "t-1",
            "c-1",
            "s-1",
        )
        assert (tmp_path / "ca.pem").read_text().startswith("-----BEGIN CERTIFICATE-----")
        assert httpx.get(f"{other.url}/_sim/clock", verify=other.ssl_context()).status_code == 200
        assert other.stop() == 0
    assert not (tmp_path / "azuresim.json").exists()
    log = (tmp_path / "azuresim.log").read_text()
    assert "GET /_sim/clock 200" in log and "s-1" not in log


def test_msal_token_for_graph(sim: SimulatorProcess, ca_env: None) -> None:
    info = sim.info
    app = msal.ConfidentialClientApplication(
        info["client_id"],
        client_credential=info["client_secret"],
        authority=f"{sim.url}/{info['tenant_id']}",
        instance_discovery=False,
    )
    result = app.acquire_token_for_client([GRAPH_SCOPE])
    assert "access_token" in result, result
    claims = claims_of(result["access_token"])
    assert claims["aud"] == "https://graph.microsoft.com"
    assert claims["tid"] == info["tenant_id"] and claims["azp"] == info["client_id"]
    assert set(claims["roles"]) == {"Mail.Read", "Mail.ReadWrite"}
    assert app.acquire_token_for_client([GRAPH_SCOPE])["token_source"] == "cache"

    # The signature verifies with the published key.
    jwks = httpx.get(f"{sim.url}/{info['tenant_id']}/discovery/v2.0/keys", verify=sim.ssl_context()).json()
    key = jwks["keys"][0]

    def number(text: str) -> int:
        return int.from_bytes(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)), "big")

    public = rsa.RSAPublicNumbers(number(key["e"]), number(key["n"])).public_key()
    head, body, signature = result["access_token"].split(".")
    public.verify(
        base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)),
        f"{head}.{body}".encode(),
        padding.PKCS1v15(),
        hashes.SHA256(),
    )

    wrong = msal.ConfidentialClientApplication(
        info["client_id"],
        client_credential="not-the-secret",
        authority=f"{sim.url}/{info['tenant_id']}",
        instance_discovery=False,
    ).acquire_token_for_client([GRAPH_SCOPE])
    assert wrong["error"] == "invalid_client" and "AADSTS7000215" in wrong["error_description"]


async def test_azure_identity_token_for_vault(sim: SimulatorProcess, ca_env: None) -> None:
    info = sim.info
    async with ClientSecretCredential(
        info["tenant_id"],
        info["client_id"],
        info["client_secret"],
        authority=sim.url,
        connection_verify=sim.ca_file,
    ) as credential:
        token = await credential.get_token(VAULT_SCOPE)
    assert claims_of(token.token)["aud"] == "https://vault.azure.net"
    assert token.expires_on > time.time() + 3000


async def test_token_endpoint_errors(http: httpx.AsyncClient, sim: SimulatorProcess) -> None:
    info = sim.info
    form = {"grant_type": "client_credentials", "client_id": info["client_id"], "scope": GRAPH_SCOPE}
    url = f"/{info['tenant_id']}/oauth2/v2.0/token"
    wrong = await http.post(url, data={**form, "client_secret": "nope"})
    assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_client"
    assert wrong.json()["error_codes"] == [7000215]
    unknown_client = await http.post(url, data={**form, "client_id": str(uuid.uuid4()), "client_secret": "x"})
    assert unknown_client.status_code == 400
    unknown_tenant = await http.post(f"/{uuid.uuid4()}/oauth2/v2.0/token", data=form)
    assert unknown_tenant.status_code == 400
    bad_scope = await http.post(url, data={**form, "client_secret": info["client_secret"], "scope": "Mail.Read"})
    assert bad_scope.status_code == 400 and bad_scope.json()["error"] == "invalid_scope"


async def test_graph_requires_a_graph_token(http: httpx.AsyncClient, sim: SimulatorProcess) -> None:
    box = await new_mailbox(http)
    path = f"/v1.0/users/{box['id']}/mailFolders"
    missing = await http.get(path)
    assert missing.status_code == 401 and missing.json()["error"]["code"] == "InvalidAuthenticationToken"
    vault_token = await get_token(http, sim, VAULT_SCOPE)
    wrong_audience = await http.get(path, headers={"Authorization": f"Bearer {vault_token}"})
    assert wrong_audience.status_code == 401
    assert wrong_audience.json()["error"]["code"] == "InvalidAuthenticationToken"
    tampered = await get_token(http, sim)
    tampered = tampered[:-6] + ("AAAAAA" if not tampered.endswith("AAAAAA") else "BBBBBB")
    assert (await http.get(path, headers={"Authorization": f"Bearer {tampered}"})).status_code == 401
    by_app_id = await get_token(http, sim, "00000003-0000-0000-c000-000000000000/.default")
    assert (await http.get(path, headers={"Authorization": f"Bearer {by_app_id}"})).status_code == 200


@pytest.mark.parametrize("resource", ["{sim}", "https://graph-gateway.contoso.com", "api://unknown-app"])
async def test_client_credentials_refuse_a_resource_the_tenant_does_not_know(
    http: httpx.AsyncClient, sim: SimulatorProcess, resource: str
) -> None:
    """As Entra ID: the simulator's own host (like a gateway's) is no resource; the app must set GRAPH_SCOPE."""
    info = sim.info
    form = {
        "grant_type": "client_credentials",
        "client_id": info["client_id"],
        "client_secret": info["client_secret"],
        "scope": f"{resource.format(sim=sim.url)}/.default",
    }
    refused = await http.post(f"/{info['tenant_id']}/oauth2/v2.0/token", data=form)
    assert refused.status_code == 400
    body = refused.json()
    assert body["error"] == "invalid_resource" and "AADSTS500011" in body["error_description"]
    assert 500011 in body["error_codes"]
    for known in ("https://vault.azure.net", "cfa8b339-82a2-471a-a3c9-0fc0be7a4093", "https://graph.microsoft.com"):
        granted = await http.post(
            f"/{info['tenant_id']}/oauth2/v2.0/token", data={**form, "scope": f"{known}/.default"}
        )
        assert granted.status_code == 200, known


# -- mail -----------------------------------------------------------------------------------------
async def test_users_and_folders(http: httpx.AsyncClient, graph: dict[str, str]) -> None:
    box = await new_mailbox(http, ["Inbox/Invoices", "Inbox/Invoices/2024", "Inbox/Receipts"])
    by_id = (await http.get(f"/v1.0/users/{box['id']}", headers=graph)).json()
    by_upn = (await http.get(f"/v1.0/users/{box['address'].upper()}", headers=graph)).json()
    assert by_id["id"] == by_upn["id"] == box["id"] and by_upn["mail"] == box["address"]
    assert (await http.get("/v1.0/users/nobody@contoso.com", headers=graph)).status_code == 404

    top = (await http.get(f"/v1.0/users/{box['id']}/mailFolders", headers=graph)).json()
    names = {f["displayName"] for f in top["value"]}
    assert {"Inbox", "Archive", "Deleted Items", "Drafts", "Sent Items", "Junk Email"} <= names
    inbox = (await http.get(f"/v1.0/users/{box['address']}/mailFolders/INBOX", headers=graph)).json()
    assert inbox["displayName"] == "Inbox" and inbox["childFolderCount"] == 2
    keyed = (await http.get(f"/v1.0/users/{box['id']}/mailFolders('Inbox')", headers=graph)).json()
    assert keyed["id"] == inbox["id"]

    children = await http.get(
        f"/v1.0/users/{box['id']}/mailFolders/inbox/childFolders",
        params={"$filter": "displayName eq 'invoices'"},
        headers=graph,
    )
    [invoices] = children.json()["value"]
    assert invoices["displayName"] == "Invoices" and invoices["parentFolderId"] == inbox["id"]
    first = (await http.get(f"/v1.0/users/{box['id']}/mailFolders/inbox/childFolders?$top=1", headers=graph)).json()
    assert len(first["value"]) == 1
    rest = (await http.get(first["@odata.nextLink"], headers=graph)).json()
    assert len(rest["value"]) == 1 and "@odata.nextLink" not in rest
    nested = await http.get(f"/v1.0/users/{box['id']}/mailFolders/{invoices['id']}/childFolders", headers=graph)
    assert [f["displayName"] for f in nested.json()["value"]] == ["2024"]
    missing = await http.get(f"/v1.0/users/{box['id']}/messages/AAMkAnotthere=", headers=graph)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "ErrorItemNotFound"


async def test_message_select_expand_and_ids(http: httpx.AsyncClient, graph: dict[str, str]) -> None:
    box = await new_mailbox(http, ["Inbox/Invoices"])
    mail = await deliver(
        http,
        box["address"],
        folder="Inbox/Invoices",
        body="Please find the invoice attached.",
        attachments=[
            {
                "name": "invoice.pdf",
                "contentType": "application/pdf",
                "contentBase64": base64.b64encode(b"%PDF-1").decode(),
            },
            {"name": "logo.png", "contentType": "image/png", "size": 100, "isInline": True},
        ],
    )
    base = f"/v1.0/users/{box['id']}/messages/{mail['id']}"
    message = (await http.get(base, headers={**graph, **IMMUTABLE})).json()
    assert message["id"] == mail["id"] and message["internetMessageId"] == mail["internetMessageId"]
    assert message["from"]["emailAddress"] == {"name": "Supplier", "address": "ap@supplier.example"}
    assert message["hasAttachments"] is True and message["body"]["contentType"] == "text"
    assert message["@odata.etag"].startswith('W/"')

    regular = await http.get(base, headers=graph)
    assert regular.json()["id"] == mail["restId"] and "Preference-Applied" not in regular.headers
    immutable = await http.get(base, headers={**graph, **IMMUTABLE})
    assert immutable.headers["Preference-Applied"] == 'IdType="ImmutableId"'

    selected = (await http.get(base, params={"$select": "subject,receivedDateTime"}, headers=graph)).json()
    assert {k for k in selected if not k.startswith("@")} == {"id", "subject", "receivedDateTime"}
    bad = await http.get(base, params={"$select": "nonsense"}, headers=graph)
    assert bad.status_code == 400

    expanded = (await http.get(base, params={"$expand": "attachments"}, headers={**graph, **IMMUTABLE})).json()
    pdf, logo = expanded["attachments"]
    assert (
        pdf["@odata.type"] == "#microsoft.graph.fileAttachment" and base64.b64decode(pdf["contentBytes"]) == b"%PDF-1"
    )
    assert pdf["id"] == mail["attachments"][0]["id"] and logo["isInline"] is True and logo["size"] == 100
    lean = await http.get(
        base, params={"$expand": "attachments($select=id,name,size,contentType,isInline)"}, headers=graph
    )
    assert all("contentBytes" not in a for a in lean.json()["attachments"])
    derived = await http.get(base, params={"$expand": "attachments($select=id,contentId)"}, headers=graph)
    assert derived.status_code == 400

    folder_path = f"/v1.0/users/{box['address']}/mailFolders/inbox/childFolders"
    invoices = (await http.get(folder_path, headers=graph)).json()["value"][0]
    listed = (await http.get(f"/v1.0/users/{box['id']}/mailFolders/{invoices['id']}/messages", headers=graph)).json()
    assert [m["id"] for m in listed["value"]] == [mail["restId"]]

    # A move changes the regular id; the immutable id stays and still finds the message.
    moved = await http.post(f"{base}/move", json={"destinationId": "archive"}, headers=graph)
    assert moved.status_code == 201 and moved.json()["id"] != mail["restId"]
    assert (await http.get(f"/v1.0/users/{box['id']}/messages/{mail['restId']}", headers=graph)).status_code == 404
    assert (await http.get(base, headers=graph)).status_code == 200


async def test_large_attachment_streams_and_hashes(http: httpx.AsyncClient, graph: dict[str, str]) -> None:
    box = await new_mailbox(http)
    size = 30 * 1024 * 1024
    mail = await deliver(
        http,
        box["address"],
        attachments=[
            {"name": "scan.tif", "contentType": "image/tiff", "size": size, "seed": "scan-1"},
            {"name": "small.bin", "size": 200_001, "seed": "small"},
        ],
    )
    big, small = mail["attachments"]
    assert big["size"] == size and big["sha256"] == sha256_hex(GeneratedContent(size, "scan-1"))
    url = f"/v1.0/users/{box['id']}/messages/{mail['id']}/attachments/{big['id']}/$value"
    digest, received = hashlib.sha256(), 0
    async with http.stream("GET", url, headers=graph) as response:
        assert response.status_code == 200
        assert response.headers["Content-Type"] == "image/tiff"
        assert int(response.headers["Content-Length"]) == size
        async for chunk in response.aiter_bytes():
            digest.update(chunk)
            received += len(chunk)
    assert received == size and digest.hexdigest() == big["sha256"]

    one = await http.get(f"/v1.0/users/{box['id']}/messages/{mail['id']}/attachments/{small['id']}", headers=graph)
    assert hashlib.sha256(base64.b64decode(one.json()["contentBytes"])).hexdigest() == small["sha256"]
    assert one.json()["size"] == 200_001


async def test_item_and_reference_attachments(http: httpx.AsyncClient, graph: dict[str, str]) -> None:
    box = await new_mailbox(http)
    inner_pdf = base64.b64encode(b"%PDF-inner").decode()
    mail = await deliver(
        http,
        box["address"],
        attachments=[
            {
                "name": "Forwarded invoice",
                "kind": "item",
                "item": {
                    "subject": "Original invoice",
                    "from": "vendor@example.com",
                    "body": "see attachment",
                    "attachments": [
                        {"name": "inner.pdf", "contentType": "application/pdf", "contentBase64": inner_pdf}
                    ],
                },
            },
            {"name": "Contract", "kind": "reference", "url": "https://contoso.sharepoint.com/contract.docx"},
        ],
    )
    item, reference = mail["attachments"]
    base = f"/v1.0/users/{box['id']}/messages/{mail['id']}/attachments"
    raw = await http.get(f"{base}/{item['id']}/$value", headers=graph)
    assert raw.status_code == 200 and raw.headers["Content-Type"].startswith("message/rfc822")
    assert hashlib.sha256(raw.content).hexdigest() == item["sha256"]
    parsed = email.message_from_bytes(raw.content, policy=email.policy.default)
    assert parsed["Subject"] == "Original invoice"
    [part] = list(parsed.iter_attachments())
    assert part.get_filename() == "inner.pdf" and part.get_content() == b"%PDF-inner"

    listed = (await http.get(base, headers=graph)).json()["value"]
    kinds = {a["@odata.type"] for a in listed}
    assert kinds == {"#microsoft.graph.itemAttachment", "#microsoft.graph.referenceAttachment"}
    expanded = (
        await http.get(f"{base}/{item['id']}", params={"$expand": "microsoft.graph.itemattachment/item"}, headers=graph)
    ).json()
    assert expanded["item"]["subject"] == "Original invoice"

    ref = (await http.get(f"{base}/{reference['id']}", headers=graph)).json()
    assert ref["sourceUrl"] == "https://contoso.sharepoint.com/contract.docx" and ref["isFolder"] is False
    value = await http.get(f"{base}/{reference['id']}/$value", headers=graph)
    assert value.status_code == 405


# -- subscriptions --------------------------------------------------------------------------------
async def test_subscription_lifecycle(http: httpx.AsyncClient, graph: dict[str, str], receiver: Receiver) -> None:
    box = await new_mailbox(http)
    resource = f"users/{box['id']}/mailFolders('inbox')/messages"
    created = await subscribe(
        http,
        graph,
        resource,
        f"{receiver.url}/hook?code=abc",
        lifecycleNotificationUrl=f"{receiver.url}/life",
    )
    assert created.status_code == 201, created.text
    sub = created.json()
    assert sub["resource"] == resource and sub["changeType"] == "created" and sub["clientState"] == "s3cret-state"
    assert sub["applicationId"] and sub["creatorId"] and sub["latestSupportedTlsVersion"] == "v1_2"
    assert sub["includeResourceData"] is False
    checks = [v for v in receiver.validations if v["path"] in ("/hook", "/life")]
    assert {v["path"] for v in checks} == {"/hook", "/life"}
    assert all(" " in v["token"] and "+" in v["token"] for v in checks)  # decoded by the receiver
    assert all(v["contentType"].startswith("text/plain") for v in checks)

    again = await subscribe(http, graph, f"users/{box['address']}/mailFolders/inbox/messages", f"{receiver.url}/hook")
    assert again.status_code == 409
    assert (
        again.json()["error"]["message"] == f"Subscription Id {sub['id']} already exists for the requested combination"
    )

    path = f"/v1.0/subscriptions/{sub['id']}"
    renewed = await http.patch(path, json={"expirationDateTime": await expiry(http, 5000)}, headers=graph)
    assert renewed.status_code == 200 and renewed.json()["expirationDateTime"] != sub["expirationDateTime"]
    lifecycle = await http.patch(path, json={"lifecycleNotificationUrl": f"{receiver.url}/x"}, headers=graph)
    assert lifecycle.status_code == 400
    assert (await http.post(f"{path}/reauthorize", headers=graph)).status_code == 204
    listed = (await http.get("/v1.0/subscriptions", headers=graph)).json()["value"]
    assert sub["id"] in {s["id"] for s in listed}
    assert (await http.delete(path, headers=graph)).status_code == 204
    assert (await http.get(path, headers=graph)).status_code == 404


async def test_subscription_writes_are_throttled_per_app(http: httpx.AsyncClient, graph: dict[str, str]) -> None:
    """500 POST/PATCH/DELETE per 20 s per app and tenant (graph_facts §6); lowered here to 3 to see the 4th."""
    assert (await http.post("/_sim/options", json={"subscriptionWritesPer20Seconds": 3})).status_code == 200
    try:
        gone = "00000000-0000-4000-8000-00000000dead"
        answers = [await http.delete(f"/v1.0/subscriptions/{gone}", headers=graph) for _ in range(4)]
        assert [a.status_code for a in answers] == [404, 404, 404, 429]
        assert answers[3].json()["error"]["code"] == "TooManyRequests"
        assert 1 <= int(answers[3].headers["Retry-After"]) <= 20
        assert (await http.get("/v1.0/subscriptions", headers=graph)).status_code == 200  # reads do not count
    finally:
        await http.post("/_sim/options", json={"subscriptionWritesPer20Seconds": 500})
    assert (await http.get("/_sim/options")).json()["subscriptionWritesPer20Seconds"] == 500


async def test_subscription_validation_and_limits(
    http: httpx.AsyncClient, graph: dict[str, str], receiver: Receiver
) -> None:
    box = await new_mailbox(http)
    resource = f"users/{box['id']}/messages"
    failed = await subscribe(http, graph, resource, f"{receiver.url}/encoded/hook")
    assert failed.status_code == 400 and failed.json()["error"]["code"] == "InvalidRequest"
    assert "validation" in failed.json()["error"]["message"].lower()
    slow = await subscribe(http, graph, resource, f"{receiver.url}/slow/hook")
    assert slow.status_code == 400
    assert slow.json()["error"]["message"] == "Subscription validation request timed out."
    unreachable = await subscribe(http, graph, resource, "http://127.0.0.1:9/hook")
    assert unreachable.status_code == 400
    absolute = await subscribe(http, graph, f"https://graph.microsoft.com/v1.0/{resource}", f"{receiver.url}/h")
    assert absolute.status_code == 400
    missing = await http.post("/v1.0/subscriptions", json={"resource": resource}, headers=graph)
    assert missing.status_code == 400
    long_state = await subscribe(http, graph, resource, f"{receiver.url}/h", clientState="x" * 129)
    assert long_state.status_code == 400

    too_long = await subscribe(http, graph, resource, f"{receiver.url}/h", expirationDateTime=await expiry(http, 10100))
    assert too_long.status_code == 400
    short = await subscribe(http, graph, resource, f"{receiver.url}/h", expirationDateTime=await expiry(http, 5))
    assert short.status_code == 201
    expires = datetime.fromisoformat(short.json()["expirationDateTime"])
    assert expires - await sim_now(http) > timedelta(minutes=44)

    # Expiry on the simulated clock removes it.
    await http.post("/_sim/clock", json={"advanceSeconds": 46 * 60})
    assert (await http.get(f"/v1.0/subscriptions/{short.json()['id']}", headers=graph)).status_code == 404


async def test_notifications_are_delivered_with_ids(
    http: httpx.AsyncClient, graph: dict[str, str], receiver: Receiver, sim: SimulatorProcess
) -> None:
    box = await new_mailbox(http, ["Inbox/Invoices"])
    folder_sub = await subscribe(
        http,
        graph,
        f"users/{box['address']}/mailFolders/inbox/messages",
        f"{receiver.url}/n1?code=k%2By",
        headers=IMMUTABLE,
    )
    mailbox_sub = await subscribe(http, graph, f"users/{box['id']}/messages", f"{receiver.url}/n2")
    assert folder_sub.status_code == mailbox_sub.status_code == 201
    mail = await deliver(http, box["address"])
    await receiver.wait(lambda: bool(receiver.items("/n1")) and bool(receiver.items("/n2")))

    [immutable] = receiver.items("/n1")
    assert immutable["subscriptionId"] == folder_sub.json()["id"] and immutable["clientState"] == "s3cret-state"
    assert immutable["changeType"] == "created" and immutable["tenantId"] == sim.info["tenant_id"]
    assert immutable["resource"] == f"Users/{box['id']}/Messages/{mail['id']}"
    assert immutable["resourceData"]["id"] == mail["id"]
    assert immutable["resourceData"]["@odata.type"] == "#Microsoft.Graph.Message"
    assert immutable["subscriptionExpirationDateTime"] == folder_sub.json()["expirationDateTime"]
    assert [n["query"] for n in receiver.notifications if n["path"] == "/n1"] == [{"code": "k+y"}]
    [regular] = receiver.items("/n2")
    assert regular["resourceData"]["id"] == mail["restId"]

    # The resource path works as a Graph URL, casing and all.
    fetched = await http.get(f"/v1.0/{immutable['resource']}", headers=graph)
    assert fetched.status_code == 200 and fetched.json()["subject"] == "Invoice"

    # Mail into a subfolder reaches the mailbox subscription only.
    await deliver(http, box["address"], folder="Inbox/Invoices")
    await receiver.wait(lambda: len(receiver.items("/n2")) == 2)
    assert len(receiver.items("/n1")) == 1


async def test_delivery_retries_and_gives_up(
    http: httpx.AsyncClient, graph: dict[str, str], receiver: Receiver
) -> None:
    await http.post("/_sim/delivery", json={"retryBaseSeconds": 0.2})
    box = await new_mailbox(http)
    sub = (await subscribe(http, graph, f"users/{box['id']}/messages", f"{receiver.url}/flaky")).json()
    receiver.fail["/flaky"] = 1
    await deliver(http, box["address"])
    await receiver.wait(lambda: len(receiver.items("/flaky")) == 2)
    records = [
        r for r in (await http.get("/_sim/deliveries")).json()["deliveries"] if sub["id"] in r["subscriptionIds"]
    ]
    assert [(r["attempt"], r["status"], r["outcome"]) for r in records] == [
        (1, 500, "failed"),
        (2, 202, "delivered"),
    ]

    # Always failing: once 4 hours of simulated time have passed, Graph stops retrying.
    await http.post("/_sim/delivery", json={"retryBaseSeconds": 1})
    receiver.fail["/flaky"] = 1000
    await deliver(http, box["address"])
    await receiver.wait(lambda: len(receiver.items("/flaky")) == 3)
    await http.post("/_sim/clock", json={"advanceSeconds": 4 * 3600 + 60})
    # The subscription outlives the jump (it was created for 4,000 minutes).

    async def outcomes() -> list[str]:
        rows = (await http.get("/_sim/deliveries")).json()["deliveries"]
        return [r["outcome"] for r in rows if sub["id"] in r["subscriptionIds"]]

    deadline = time.monotonic() + 10
    while "dropped" not in await outcomes():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.1)
    assert (await outcomes())[-1] == "dropped"
    await http.post("/_sim/delivery", json={"retryBaseSeconds": 2})


async def test_lifecycle_events(http: httpx.AsyncClient, graph: dict[str, str], receiver: Receiver) -> None:
    box = await new_mailbox(http)
    sub = (
        await subscribe(
            http,
            graph,
            f"users/{box['id']}/messages",
            f"{receiver.url}/n3",
            lifecycleNotificationUrl=f"{receiver.url}/lc",
        )
    ).json()
    for event in ("missed", "subscriptionRemoved"):
        response = await http.post("/_sim/lifecycle", json={"subscriptionId": sub["id"], "event": event})
        assert response.status_code == 202
    await receiver.wait(lambda: len(receiver.items("/lc")) == 2)
    events = receiver.items("/lc")
    assert [e["lifecycleEvent"] for e in events] == ["missed", "subscriptionRemoved"]
    assert all(e["subscriptionId"] == sub["id"] and e["clientState"] == "s3cret-state" for e in events)
    assert "resource" not in events[0]
    assert (await http.get(f"/v1.0/subscriptions/{sub['id']}", headers=graph)).status_code == 404


async def test_delta_rounds(http: httpx.AsyncClient, graph: dict[str, str]) -> None:
    box = await new_mailbox(http)
    first = [await deliver(http, box["address"], subject=f"m{i}") for i in range(3)]
    url = f"/v1.0/users/{box['id']}/mailFolders/inbox/messages/delta"
    headers = {**graph, **IMMUTABLE, "Prefer": 'IdType="ImmutableId", odata.maxpagesize=2'}

    async def round_from(link: str) -> tuple[list[dict[str, Any]], str]:
        seen: list[dict[str, Any]] = []
        while True:
            page = (await http.get(link, headers=headers)).json()
            seen += page["value"]
            if "@odata.deltaLink" in page:
                return seen, page["@odata.deltaLink"]
            link = page["@odata.nextLink"]

    initial, delta_link = await round_from(f"{url}?$select=subject")
    assert [m["id"] for m in initial] == [m["id"] for m in first]
    assert {k for k in initial[0] if not k.startswith("@")} == {"id", "subject"}

    later = await deliver(http, box["address"], subject="m3")
    moved = await http.post(
        f"/v1.0/users/{box['id']}/messages/{first[0]['id']}/move",
        json={"destinationId": "archive"},
        headers=graph,
    )
    assert moved.status_code == 201
    changes, delta_link = await round_from(delta_link)
    assert {m["id"]: "@removed" in m for m in changes} == {later["id"]: False, first[0]["id"]: True}
    assert (await round_from(delta_link))[0] == []

    await http.delete("/_sim/deltatokens")
    gone = await http.get(delta_link, headers=headers)
    assert gone.status_code == 410 and gone.headers["Location"].endswith("$deltatoken=")


async def test_updates_notify_updated_subscriptions(
    http: httpx.AsyncClient, graph: dict[str, str], receiver: Receiver
) -> None:
    box = await new_mailbox(http)
    sub = await subscribe(http, graph, f"users/{box['id']}/messages", f"{receiver.url}/upd", changeType="updated")
    assert sub.status_code == 201
    mail = await deliver(http, box["address"])
    patched = await http.patch(
        f"/v1.0/users/{box['id']}/messages/{mail['id']}",
        json={"isRead": True, "categories": ["Ingested"]},
        headers=graph,
    )
    assert patched.status_code == 200 and patched.json()["isRead"] is True
    await receiver.wait(lambda: len(receiver.items("/upd")) == 1)
    assert receiver.items("/upd")[0]["changeType"] == "updated"


# -- faults and request log -----------------------------------------------------------------------
async def test_faults_and_request_counts(http: httpx.AsyncClient, graph: dict[str, str], sim: SimulatorProcess) -> None:
    box = await new_mailbox(http)
    mail = await deliver(http, box["address"])
    await http.delete("/_sim/requests")
    fault = await http.post(
        "/_sim/faults", json={"method": "GET", "path": r"/messages/[^/]+$", "status": 429, "retryAfter": 7}
    )
    assert fault.status_code == 201
    url = f"/v1.0/users/{box['id']}/messages/{mail['id']}"
    throttled = await http.get(url, headers=graph)
    assert throttled.status_code == 429 and throttled.headers["Retry-After"] == "7"
    assert throttled.json()["error"]["code"] == "TooManyRequests"
    assert (await http.get(url, headers=graph)).status_code == 200

    await http.post("/_sim/faults", json={"path": "/oauth2/", "status": 503, "count": 1})
    token_url = f"/{sim.info['tenant_id']}/oauth2/v2.0/token"
    unavailable = await http.post(token_url, data={"grant_type": "client_credentials"})
    assert unavailable.status_code == 503 and unavailable.json()["error"] == "temporarily_unavailable"

    await http.post("/_sim/faults", json={"path": "/mailFolders$", "latencyMs": 300, "count": 2})
    started = time.monotonic()
    for _ in range(2):
        assert (await http.get(f"/v1.0/users/{box['id']}/mailFolders", headers=graph)).status_code == 200
    assert time.monotonic() - started >= 0.6
    assert (await http.get("/_sim/faults")).json()["faults"] == []

    log = (await http.get("/_sim/requests")).json()
    assert [(r["method"], r["route"], r["status"]) for r in log["requests"]] == [
        ("GET", "/v1.0/users/{id}/messages/{id}", 429),
        ("GET", "/v1.0/users/{id}/messages/{id}", 200),
        ("POST", "/{id}/oauth2/v2.0/token", 503),
        ("GET", "/v1.0/users/{id}/mailFolders", 200),
        ("GET", "/v1.0/users/{id}/mailFolders", 200),
    ]
    assert log["counts"]["GET /v1.0/users/{id}/messages/{id}"] == 2
    await http.delete("/_sim/faults")


async def test_a_rate_fault_hits_that_share_of_requests_until_deleted(
    http: httpx.AsyncClient, graph: dict[str, str]
) -> None:
    box = await new_mailbox(http)
    body = {"path": r"^/v1\.0/users/[^/]+/mailFolders$", "status": 503, "retryAfter": 1, "rate": 0.25, "seed": 7}
    fault = (await http.post("/_sim/faults", json=body)).json()["id"]
    statuses = [(await http.get(f"/v1.0/users/{box['id']}/mailFolders", headers=graph)).status_code for _ in range(200)]
    hit = statuses.count(503)
    assert 25 <= hit <= 75 and statuses.count(200) == 200 - hit  # 50 expected; the seed makes it repeatable
    [listed] = (await http.get("/_sim/faults")).json()["faults"]
    assert (listed["rate"], listed["hits"], listed["seen"], listed["remaining"]) == (0.25, hit, 200, None)
    removed = await http.delete(f"/_sim/faults/{fault}")
    assert removed.json()["hits"] == hit
    assert (await http.delete(f"/_sim/faults/{fault}")).status_code == 404
    assert (await http.get(f"/v1.0/users/{box['id']}/mailFolders", headers=graph)).status_code == 200
    for bad in ({"status": 503, "rate": 0}, {"status": 503, "rate": 1.5}, {"status": 503, "rate": True}):
        assert (await http.post("/_sim/faults", json=bad)).status_code == 400


# -- Key Vault ------------------------------------------------------------------------------------
async def test_key_vault_through_the_sdk(http: httpx.AsyncClient, sim: SimulatorProcess, ca_env: None) -> None:
    challenge = await http.get("/secrets/anything", params={"api-version": "7.5"})
    assert challenge.status_code == 401
    assert challenge.headers["WWW-Authenticate"] == (
        f'Bearer authorization="{sim.url}/{sim.info["tenant_id"]}", resource="https://vault.azure.net"'
    )
    async with secret_client(sim) as client:
        first = await client.set_secret("client-state", "one", content_type="text/plain", tags={"app": "ingest"})
        second = await client.set_secret("client-state", "two")
        assert first.id == f"{sim.url}/secrets/client-state/{first.properties.version}"
        assert (await client.get_secret("client-state")).value == "two"
        assert (await client.get_secret("client-state", first.properties.version)).value == "one"
        assert (await client.get_secret("client-state", first.properties.version)).properties.tags == {"app": "ingest"}
        versions = {p.version async for p in client.list_properties_of_secret_versions("client-state")}
        assert versions == {first.properties.version, second.properties.version}
        names = {p.name async for p in client.list_properties_of_secrets()}
        assert "client-state" in names
        with pytest.raises(ResourceNotFoundError):
            await client.get_secret("no-such-secret")
