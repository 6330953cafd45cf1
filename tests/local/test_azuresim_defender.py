"""The simulator's Defender for Storage: verdicts as Defender gives them, the index tags, the scan result event
through a custom topic to a Storage queue, and the control API's checks."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import uuid
import zipfile
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from azure.storage.blob.aio import BlobServiceClient
from azure.storage.queue.aio import QueueClient

from local.azuresim.content import BytesContent
from local.azuresim.defender import PASSWORD, eicar, judge
from local.azuresim.runner import SimulatorProcess
from local.azuresim.zips import ZipContent, ZipEntry

from .test_azuresim_arm import arm, grant

SUB, GROUP, TOPIC = "00000000-0000-4000-8000-0000000000d4", "rg-defender", "scan-results-topic"
TOPIC_ID = f"/subscriptions/{SUB}/resourceGroups/{GROUP}/providers/Microsoft.EventGrid/topics/{TOPIC}"


def zipped(*members: tuple[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, data in members:
            archive.writestr(name, data)
    return out.getvalue()


def test_verdicts() -> None:
    assert judge(b"%PDF-1.7 an invoice") == ("No threats found", [], None)
    assert judge(b"junk " + eicar() + b" junk") == ("Malicious", ["DOS/EICAR_Test_File"], None)
    assert judge(zipped(("a.pdf", b"%PDF"), ("t.com", eicar())))[0] == "Malicious"  # archives are scanned
    locked = b"".join(ZipContent([ZipEntry("secret.pdf", BytesContent(b"%PDF-1.7"), encrypted=True)]).chunks())
    assert judge(locked) == ("Not Scanned", [], PASSWORD)


@pytest.fixture(scope="module")
async def account(http: httpx.AsyncClient, azurite: str) -> AsyncIterator[tuple[str, str]]:
    """Defender on the Azurite account, its results to a fresh queue; (connection string, queue name)."""
    queue = f"scans-{uuid.uuid4().hex[:8]}"
    async with QueueClient.from_connection_string(azurite, queue) as client:
        await client.create_queue()
    topic = await http.put(f"/_sim/eventgrid/topics/{SUB}/{GROUP}/{TOPIC}", json={"location": "westeurope"})
    topic.raise_for_status()
    subscription = {"connectionString": azurite, "queueName": queue, "eventDeliverySchema": "EventGridSchema",
                    "includedEventTypes": ["Microsoft.Security.MalwareScanningResult"]}  # fmt: skip
    answer = await http.put(f"/_sim/eventgrid/topics/{SUB}/{GROUP}/{TOPIC}/eventSubscriptions/q", json=subscription)
    answer.raise_for_status()
    settings = {"isEnabled": True, "malwareScanning": {"onUpload": {"isEnabled": True, "capGBPerMonth": 100},
                "scanResultsEventGridTopicResourceId": TOPIC_ID}}  # fmt: skip
    answer = await http.put(
        "/_sim/defender/storageAccounts/devstoreaccount1", json={"properties": settings, "connectionString": azurite}
    )
    answer.raise_for_status()
    await http.post("/_sim/defender/options", json={"delaySeconds": 0.1, "maxBlobBytes": 1024})
    await asyncio.sleep(0.5)  # the watcher's first look: what is there already is not scanned
    yield azurite, queue
    await http.put("/_sim/defender/storageAccounts/devstoreaccount1", json={"properties": {"isEnabled": False}})


async def events(connection: str, queue: str, count: int, timeout: float = 15) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    async with QueueClient.from_connection_string(connection, queue) as client:
        for _ in range(int(timeout / 0.2)):
            async for message in client.receive_messages():
                found.append(json.loads(base64.b64decode(message.content)))
                await client.delete_message(message)
            if len(found) >= count:
                break
            await asyncio.sleep(0.2)
    return found


async def test_uploads_are_scanned_tagged_and_published(account: tuple[str, str]) -> None:
    connection, queue = account
    container = f"c{uuid.uuid4().hex[:10]}"
    async with BlobServiceClient.from_connection_string(connection) as blobs:
        await blobs.create_container(container)
        uploads = {"clean.pdf": b"%PDF-1.7 fine", "eicar.txt": eicar(), "big.bin": bytes(2048)}
        etags = {}
        for name, data in uploads.items():
            etags[name] = (await blobs.get_blob_client(container, name).upload_blob(data))["etag"].strip('"')
        full = blobs.get_blob_client(container, "full.pdf")
        await full.upload_blob(b"%PDF-1.7", tags={f"t{i}": "x" for i in range(10)})
        found = {e["data"]["blobUri"].rsplit("/", 1)[1]: e for e in await events(connection, queue, 4)}
        tags = await blobs.get_blob_client(container, "eicar.txt").get_blob_tags()
        full_tags = await full.get_blob_tags()
    assert set(found) == {"clean.pdf", "eicar.txt", "big.bin", "full.pdf"}
    bad = found["eicar.txt"]
    assert bad["eventType"] == "Microsoft.Security.MalwareScanningResult" and bad["topic"] == TOPIC_ID
    assert bad["subject"] == f"storageAccounts/devstoreaccount1/containers/{container}/blobs/eicar.txt"
    assert bad["data"]["scanResultType"] == "Malicious" and bad["data"]["eTag"] == etags["eicar.txt"]
    assert bad["data"]["scanResultDetails"]["malwareNamesFound"] == ["DOS/EICAR_Test_File"]
    assert found["clean.pdf"]["data"]["scanResultType"] == "No threats found"
    big = found["big.bin"]["data"]
    assert big["scanResultType"] == "Not Scanned"
    assert big["scanResultDetails"]["notScannedReason"].startswith("SAM259206")
    assert tags["Malware Scanning scan result"] == "Malicious" and "Malware Scanning scan time UTC" in tags
    assert "Malware Scanning scan result" not in full_tags  # no room: not written, the event still sent


async def test_switched_off_it_scans_nothing(account: tuple[str, str], http: httpx.AsyncClient) -> None:
    connection, queue = account
    await http.post("/_sim/defender/options", json={"scanning": False})
    try:
        async with BlobServiceClient.from_connection_string(connection) as blobs:
            container = f"c{uuid.uuid4().hex[:10]}"
            await blobs.create_container(container)
            await blobs.get_blob_client(container, "late.pdf").upload_blob(b"%PDF")
        assert await events(connection, queue, 1, timeout=2) == []
    finally:
        await http.post("/_sim/defender/options", json={"scanning": True})


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"properties": {"isEnabled": True, "malwareScanning": {"onUpload": {"isEnabled": True},
          "scanResultsEventGridTopicResourceId": TOPIC_ID + "-nope"}}, "connectionString": "AccountName=x"},
         "custom topic"),
        ({"properties": {"malwareScanning": {"onUpload": {"capGBPerMonth": 0}}}}, "capGBPerMonth"),
        ({"properties": {"malwareScanning": {"blobScanResultsOptions": "Metadata"}}}, "blobScanResultsOptions"),
    ],
)  # fmt: skip
async def test_settings_are_checked(http: httpx.AsyncClient, body: dict[str, Any], words: str) -> None:
    answer = await http.put("/_sim/defender/storageAccounts/other", json=body)
    assert answer.status_code == 400 and words in answer.text


async def test_arm_shows_what_the_scanner_obeys(
    http: httpx.AsyncClient, sim: SimulatorProcess, account: tuple[str, str]
) -> None:
    """`check` reads Defender through ARM: with nothing set through /_sim/arm, it sees the scanner's own setting,
    topic and event subscription, and on-upload scanning off while the scanner is switched off."""
    _, queue = account
    headers = await arm(http, sim)
    app = (await http.get(f"/_sim/apps/{sim.info['client_id']}")).json()
    await grant(http, str(app["servicePrincipalId"]), "Reader", f"/subscriptions/{SUB}/resourceGroups/{GROUP}")
    setting_url = (
        f"/subscriptions/{SUB}/resourceGroups/{GROUP}/providers/Microsoft.Storage/storageAccounts/devstoreaccount1"
        "/providers/Microsoft.Security/defenderForStorageSettings/current"
    )
    security, grid = {"api-version": "2025-06-01"}, {"api-version": "2025-02-15"}
    scanning = (await http.get(setting_url, params=security, headers=headers)).json()["properties"]["malwareScanning"]
    assert scanning["onUpload"]["isEnabled"] is True and scanning["scanResultsEventGridTopicResourceId"] == TOPIC_ID
    topic = (await http.get(TOPIC_ID, params=grid, headers=headers)).json()
    assert topic["properties"]["provisioningState"] == "Succeeded" and topic["location"] == "westeurope"
    (only,) = (await http.get(f"{TOPIC_ID}/eventSubscriptions", params=grid, headers=headers)).json()["value"]
    destination = only["properties"]["deliveryWithResourceIdentity"]["destination"]["properties"]
    assert destination["queueName"] == queue and destination["resourceId"].endswith("/storageAccounts/devstoreaccount1")
    await http.post("/_sim/defender/options", json={"scanning": False})
    try:
        off = (await http.get(setting_url, params=security, headers=headers)).json()["properties"]["malwareScanning"]
        assert off["onUpload"]["isEnabled"] is False
    finally:
        await http.post("/_sim/defender/options", json={"scanning": True})
