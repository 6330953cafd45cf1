from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from azure.storage.blob.aio import BlobServiceClient

from shared.pipeline.storage import BlobStore, blob_service
from shared.settings import Settings, StorageSettings, parse_settings

BASE_ENV = {
    "GRAPH_TENANT_ID": "11111111-1111-1111-1111-111111111111",
    "GRAPH_CLIENT_ID": "22222222-2222-2222-2222-222222222222",
    "GRAPH_CLIENT_SECRET": "s3cret",
    "MAILBOXES": "invoices@contoso.com, scans@contoso.com/Inbox/Delivery notes",
    "AzureWebJobsStorage": "UseDevelopmentStorage=true",
    "KEY_VAULT_URL": "https://kv-test.vault.azure.net",
    "WEBHOOK_BASE_URL": "https://ingest.example.net",
}


@pytest.fixture
def env() -> dict[str, str]:
    return dict(BASE_ENV)


@pytest.fixture
def settings(env: dict[str, str]) -> Settings:
    return parse_settings(env)


@pytest.fixture
async def service(azurite: str) -> AsyncIterator[BlobServiceClient]:
    """A blob service client on the shared Azurite."""
    service = blob_service(StorageSettings(connection_string=azurite), None)
    yield service
    await service.close()


@pytest.fixture
async def store(azurite: str) -> AsyncIterator[BlobStore]:
    """A fresh container in the shared Azurite."""
    service = blob_service(StorageSettings(connection_string=azurite), None)
    yield BlobStore(service, f"t{uuid.uuid4().hex[:12]}")
    await service.close()
