"""Start the simulator as a child process and wait until it is ready (for tests and the stack).

with start_simulator(tmp_path / "sim") as sim:
    httpx.get(f"{sim.url}/_sim/clock", verify=sim.ssl_context())
"""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any

from local.processes import terminate

if TYPE_CHECKING:
    from azure.keyvault.secrets.aio import SecretClient

PROJECT_ROOT = Path(__file__).resolve().parents[2]


class SimulatorProcess:
    def __init__(self, process: subprocess.Popen[bytes], info: dict[str, Any], log_path: Path) -> None:
        self.process = process
        self.info = info
        self.log_path = log_path

    @property
    def url(self) -> str:
        return str(self.info["url"])

    @property
    def ca_file(self) -> str:
        return str(self.info["ca_file"])

    @property
    def graph_url(self) -> str:
        return str(self.info["graph_url"])

    @property
    def key_vault_url(self) -> str:
        return str(self.info["key_vault_url"])

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.ca_file)

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM, then SIGKILL if it does not exit within ``timeout``; returns the exit code."""
        return terminate(self.process, timeout)

    def __enter__(self) -> SimulatorProcess:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def start_simulator(
    data_dir: str | os.PathLike[str],
    *,
    tenant_id: str | None = None,
    client_id: str | None = None,
    client_secret: str | None = None,
    port: int = 0,
    log: IO[bytes] | None = None,
    timeout: float = 30.0,
) -> SimulatorProcess:
    """Run ``python -m local.azuresim`` and wait for ``azuresim.json``.

    Its stderr goes to ``log`` if given, else to ``DATA_DIR/azuresim.log``."""
    directory = Path(data_dir).resolve()
    directory.mkdir(parents=True, exist_ok=True)
    ready = directory / "azuresim.json"
    ready.unlink(missing_ok=True)
    command = [sys.executable, "-m", "local.azuresim", "--data-dir", str(directory), "--port", str(port)]
    for flag, value in (
        ("--tenant-id", tenant_id),
        ("--client-id", client_id),
        ("--client-secret", client_secret),
    ):
        if value:
            command += [flag, value]
    log_path = directory / "azuresim.log"
    sink = log if log is not None else open(log_path, "ab")  # noqa: SIM115 - the child process owns it
    try:
        process = subprocess.Popen(command, cwd=PROJECT_ROOT, stdin=subprocess.DEVNULL, stdout=sink, stderr=sink)
    finally:
        if log is None:
            sink.close()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"azuresim exited with {process.returncode}; see {log_path}")
        if ready.exists():
            info: dict[str, Any] = json.loads(ready.read_text(encoding="utf-8"))
            if info.get("pid") == process.pid:
                return SimulatorProcess(process, info, log_path)
        time.sleep(0.05)
    process.kill()
    process.wait()
    raise TimeoutError(f"azuresim was not ready within {timeout} s; see {log_path}")


@asynccontextmanager
async def secret_client(sim: SimulatorProcess) -> AsyncIterator[SecretClient]:
    """azure-keyvault-secrets on the simulator's vault, as the app's own credential."""
    from azure.identity.aio import ClientSecretCredential
    from azure.keyvault.secrets.aio import SecretClient

    info = sim.info
    async with (
        ClientSecretCredential(
            info["tenant_id"],
            info["client_id"],
            info["client_secret"],
            authority=sim.url,
            connection_verify=sim.ca_file,
        ) as credential,
        SecretClient(
            sim.key_vault_url, credential, verify_challenge_resource=False, connection_verify=sim.ca_file
        ) as client,
    ):
        yield client
