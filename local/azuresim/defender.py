"""Microsoft Defender for Storage's on-upload malware scanning, against the Azurite account the app writes to.

What the docs say ("Malware scanning in Defender for Storage", "Understand malware scanning results", "Set up
automated remediation for malware detection"), and what this simulates:
- A scan starts on every operation that makes a BlobCreated event (Put Blob, Put Block List, a copy), for block
  blobs only; it is near real time (here after `delay_seconds`). Blobs there before scanning was enabled are not
  scanned (on-upload only).
- The result goes to the blob as two index tags, `Malware Scanning scan result` and `Malware Scanning scan time
  UTC` (unless `blobScanResultsOptions` is `None`), and as an event to the Event Grid custom topic
  `scanResultsEventGridTopicResourceId` names, in the Event Grid event schema: `eventType`
  `Microsoft.Security.MalwareScanningResult`, `subject` `storageAccounts/{account}/containers/{c}/blobs/{name}`,
  `data` with `correlationId`, `blobUri`, `eTag` (the version scanned), `scanFinishedTimeUtc`, `scanResultType`
  and `scanResultDetails` (`malwareNamesFound` and `sha256`; for `Not Scanned`, `notScannedReason`, a SAM code).
- Verdicts: `Malicious` (`DOS/EICAR_Test_File`) for the EICAR test file, also inside a zip (archives are scanned);
  `Not Scanned` for a blob over the size limit (`SAM259206`, 50 GB; settable here), and for a password-protected
  one (`SAM259210`: here a zip with an encrypted entry); else `No threats found`.
- A blob has at most 10 index tags, and Set Blob Tags refuses an eleventh: what Defender does then is not
  documented; here the tags are not written (the record says so) and the event is still sent.
- Switched off (`scanning: false`), nothing is scanned and no event sent: what an app sees when Defender is late
  or its monthly cap (`capGBPerMonth`) is reached.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import uuid
import zipfile
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from azure.core.exceptions import AzureError, ResourceNotFoundError
from azure.storage.blob.aio import BlobServiceClient

from .clock import Clock, graph_datetime_7
from .errors import ControlError
from .eventgrid import CustomTopic, EventGrid

EVENT_TYPE = "Microsoft.Security.MalwareScanningResult"
RESULT_TAG, TIME_TAG = "Malware Scanning scan result", "Malware Scanning scan time UTC"
MAX_TAGS = 10
MAX_BLOB_BYTES = 50 * 1024**3
EICAR_NAME = "DOS/EICAR_Test_File"
POLL_SECONDS = 0.3
TOO_LARGE = "SAM259206: Scan aborted - the requested blob exceeded the maximum allowed size of 50GB."
PASSWORD = "SAM259210: Scan aborted - the requested blob is protected by password."


def eicar() -> bytes:
    """The EICAR anti-malware test file, put together here so that no file of this repository is one."""
    parts = ("X5O!P%@AP[4\\PZX54(P^)7CC)7}$", "EICAR-STANDARD-ANTIVIRUS", "-TEST-FILE!$H+H*")
    return "".join(parts).encode()


def _zip_members(data: bytes) -> tuple[list[bytes], bool]:
    """A zip's member contents (one level) and whether any member is encrypted; ([], False) if it is no zip."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError):
        return [], False
    with archive:
        infos = archive.infolist()
        if any(info.flag_bits & 0x1 for info in infos):
            return [], True
        members = []
        for info in infos:
            with contextlib.suppress(zipfile.BadZipFile, ValueError, NotImplementedError, OSError):
                members.append(archive.read(info))
        return members, False


def judge(data: bytes) -> tuple[str, list[str], str | None]:
    """(scanResultType, malwareNamesFound, notScannedReason) of a blob's bytes, as Defender would give them."""
    members, encrypted = _zip_members(data)
    if encrypted:
        return "Not Scanned", [], PASSWORD
    if any(eicar() in part for part in (data, *members)):
        return "Malicious", [EICAR_NAME], None
    return "No threats found", [], None


@dataclass
class Protected:
    """One storage account with on-upload scanning: where it is, and where its results go."""

    account: str
    connection_string: str
    topic: CustomTopic
    tags: bool = True
    seen: dict[tuple[str, str], str] = field(default_factory=dict)  # (container, blob) → ETag scanned or queued
    task: asyncio.Task[None] | None = None


class Defender:
    def __init__(self, clock: Clock, eventgrid: EventGrid) -> None:
        self.clock = clock
        self.eventgrid = eventgrid
        self.accounts: dict[str, Protected] = {}
        # Each account's setting as last put, by lower-case name (storage account names are global): what ARM shows.
        self.settings: dict[str, dict[str, Any]] = {}
        self.scanning = True
        self.delay_seconds = 0.5
        self.max_blob_bytes = MAX_BLOB_BYTES
        self.records: list[dict[str, Any]] = []
        self._scans: set[asyncio.Task[None]] = set()

    # -- watching uploads ---------------------------------------------------------------------------
    async def _snapshot(self, blobs: BlobServiceClient) -> dict[tuple[str, str], tuple[str, str, int]]:
        found: dict[tuple[str, str], tuple[str, str, int]] = {}
        async for container in blobs.list_containers():
            client = blobs.get_container_client(container.name)
            async for blob in client.list_blobs():
                kind = str(getattr(blob.blob_type, "value", blob.blob_type))  # BlobType is a str enum
                found[(container.name, blob.name)] = (str(blob.etag), kind, int(blob.size or 0))
        return found

    async def _watch(self, account: Protected) -> None:
        async with BlobServiceClient.from_connection_string(account.connection_string) as blobs:
            account.seen = {k: v[0] for k, v in (await self._snapshot(blobs)).items()}
            while True:
                await asyncio.sleep(POLL_SECONDS)
                try:
                    current = await self._snapshot(blobs)
                except (AzureError, OSError):
                    continue  # Azurite restarting or a container deleted mid-listing: look again
                for key, (etag, blob_type, size) in current.items():
                    if account.seen.get(key) == etag:
                        continue
                    account.seen[key] = etag
                    if not self.scanning or blob_type != "BlockBlob":
                        continue
                    task = asyncio.get_running_loop().create_task(self._scan(account, blobs, key, etag, size))
                    self._scans.add(task)
                    task.add_done_callback(self._scans.discard)

    async def _scan(
        self, account: Protected, blobs: BlobServiceClient, key: tuple[str, str], etag: str, size: int
    ) -> None:
        await asyncio.sleep(self.delay_seconds)
        container, name = key
        blob = blobs.get_blob_client(container, name)
        names: list[str] = []
        sha: str | None = None
        reason: str | None
        try:
            if size > self.max_blob_bytes:
                result, reason = "Not Scanned", TOO_LARGE
            else:
                data = await (await blob.download_blob(etag=etag, match_condition=_if_match())).readall()
                result, names, reason = judge(data)
                sha = hashlib.sha256(data).hexdigest().upper()
        except ResourceNotFoundError:
            return  # deleted before its scan: SAM259204, not sent here
        except AzureError:
            return  # overwritten meanwhile (SAM259205): the new version has its own scan
        finished = self.clock.now()
        record: dict[str, Any] = {"container": container, "blob": name, "result": result, "tags": "none"}
        if account.tags:
            record["tags"] = await self._tag(blob, result, graph_datetime_7(finished))
        details: dict[str, Any] = (
            {"malwareNamesFound": names, "sha256": sha} if reason is None else {"notScannedReason": reason}
        )
        event = {
            "id": str(uuid.uuid4()),
            "subject": f"storageAccounts/{account.account}/containers/{container}/blobs/{name}",
            "data": {
                "correlationId": str(uuid.uuid4()),
                "blobUri": blob.url,
                "eTag": etag.strip('"'),
                "scanFinishedTimeUtc": graph_datetime_7(finished),
                "scanResultType": result,
                "scanResultDetails": details,
            },
            "eventType": EVENT_TYPE,
            "dataVersion": "1.0",
            "metadataVersion": "1",
            "eventTime": graph_datetime_7(finished),
            "topic": account.topic.resource_id,
        }
        self.eventgrid.publish_custom(account.topic, event)
        self.records.append(record)

    async def _tag(self, blob: Any, result: str, when: str) -> str:
        try:
            tags = dict(await blob.get_blob_tags())
            tags.update({RESULT_TAG: result, TIME_TAG: when})
            if len(tags) > MAX_TAGS:
                return "not written: the blob has no room for them"
            await blob.set_blob_tags(tags)
        except AzureError as exc:
            return f"not written: {type(exc).__name__}"
        return "written"

    async def close(self) -> None:
        tasks = [a.task for a in self.accounts.values() if a.task is not None] + list(self._scans)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # -- control API (what the infra's defenderForStorageSettings and the tests do) ------------------
    def routes(self) -> list[web.RouteDef]:
        base = "/_sim/defender"
        return [
            web.put(base + "/storageAccounts/{account}", self.put_settings),
            web.post(base + "/options", self.set_options),
            web.get(base + "/scans", self.list_scans),
        ]

    async def put_settings(self, request: web.Request) -> web.Response:
        """`properties` as defenderForStorageSettings takes them, and the account's connection string (where the
        simulated scanner reads)."""
        body = await request.json()
        account_name = request.match_info["account"]
        props = body.get("properties") or {}
        scanning = props.get("malwareScanning") or {}
        on_upload = scanning.get("onUpload") or {}
        cap = on_upload.get("capGBPerMonth", 5000)
        if not isinstance(cap, int) or isinstance(cap, bool) or not (cap == -1 or cap >= 1):
            raise ControlError(400, "BadRequest", "capGBPerMonth must be -1 (no cap) or a positive number of GB")
        options = scanning.get("blobScanResultsOptions", "BlobIndexTags")
        if options not in ("BlobIndexTags", "None"):
            raise ControlError(400, "BadRequest", "blobScanResultsOptions must be BlobIndexTags or None")
        self.settings[account_name.lower()] = props
        old = self.accounts.pop(account_name, None)
        if old is not None and old.task is not None:
            old.task.cancel()
        enabled = props.get("isEnabled") is True and on_upload.get("isEnabled") is True
        if not enabled:
            return web.json_response({"account": account_name, "malwareScanning": False})
        topic_id = scanning.get("scanResultsEventGridTopicResourceId")
        topic = self.eventgrid.custom_topic(topic_id) if isinstance(topic_id, str) else None
        if topic is None:
            raise ControlError(400, "BadRequest", "scanResultsEventGridTopicResourceId names no custom topic")
        connection = body.get("connectionString")
        if not isinstance(connection, str) or "AccountName=" not in connection:
            raise ControlError(400, "BadRequest", "connectionString (the account to scan) is required")
        account = Protected(account_name, connection, topic, tags=options == "BlobIndexTags")
        account.task = asyncio.get_running_loop().create_task(self._watch(account))
        self.accounts[account_name] = account
        return web.json_response({"account": account_name, "malwareScanning": True, "topic": topic.resource_id})

    def setting(self, account: str) -> dict[str, Any] | None:
        """The account's defenderForStorageSettings properties as this scanner obeys them: on-upload scanning shows
        as off while the scanner is switched off (as when the monthly cap is reached)."""
        props = self.settings.get(account.lower())
        if props is None:
            return None
        scanning = dict(props.get("malwareScanning") or {})
        on_upload = dict(scanning.get("onUpload") or {})
        on_upload["isEnabled"] = on_upload.get("isEnabled") is True and self.scanning
        return {**props, "malwareScanning": {**scanning, "onUpload": on_upload}}

    async def set_options(self, request: web.Request) -> web.Response:
        body = await request.json()
        if "scanning" in body:
            if not isinstance(body["scanning"], bool):
                raise ControlError(400, "BadRequest", "'scanning' must be true or false")
            self.scanning = body["scanning"]
        if "delaySeconds" in body:
            delay = body["delaySeconds"]
            if not isinstance(delay, int | float) or isinstance(delay, bool) or delay < 0:
                raise ControlError(400, "BadRequest", "'delaySeconds' must be a number, 0 or more")
            self.delay_seconds = float(delay)
        if "maxBlobBytes" in body:
            limit = body["maxBlobBytes"]
            if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
                raise ControlError(400, "BadRequest", "'maxBlobBytes' must be a positive whole number")
            self.max_blob_bytes = limit
        return web.json_response(
            {"scanning": self.scanning, "delaySeconds": self.delay_seconds, "maxBlobBytes": self.max_blob_bytes}
        )

    async def list_scans(self, request: web.Request) -> web.Response:
        return web.json_response({"value": self.records})


def _if_match() -> Any:
    from azure.core import MatchConditions

    return MatchConditions.IfNotModified
