"""Azurite restarted on the same ports keeps its data: the soak's storage outage."""

from __future__ import annotations

from pathlib import Path

from azure.storage.blob import BlobServiceClient

from local.azurite import Azurite


def test_a_restart_keeps_ports_and_data(tmp_path: Path) -> None:
    with Azurite(tmp_path / "azurite") as azurite:
        before = azurite.connection_string
        with BlobServiceClient.from_connection_string(before) as service:
            service.create_container("kept").upload_blob("a.txt", b"still here")
        assert azurite.restart(down_seconds=0.2) == before
        with BlobServiceClient.from_connection_string(before) as service:
            assert service.get_blob_client("kept", "a.txt").download_blob().readall() == b"still here"
