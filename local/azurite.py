"""Start and stop Azurite (blobs, queues, tables) on free loopback ports.

Used by the local stack, the demo and the tests:

    with Azurite(data_dir) as azurite:
        conn = azurite.connection_string

or, from async code, ``await asyncio.to_thread(azurite.start)`` and ``azurite.stop()``.

Azurite is asked for port 0 on each service; it prints the port it actually bound
("... successfully listening at http://127.0.0.1:PORT"), which we read back from its
stdout. That avoids the race of picking a free port first and binding it later.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from local.processes import terminate

# Azurite's well-known development account (published in the Azurite and Azure Storage docs).
ACCOUNT_NAME = "devstoreaccount1"
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="

_PROJECT_ROOT = Path(__file__).resolve().parent.parent
_LISTENING = re.compile(r"Azurite (Blob|Queue|Table) service is successfully listening at \S+:(\d+)")


def azurite_executable() -> Path:
    """The project's pinned Azurite (``npm ci`` puts it in node_modules/.bin)."""
    return _PROJECT_ROOT / "node_modules" / ".bin" / "azurite"


def connection_string(host: str, blob_port: int, queue_port: int, table_port: int) -> str:
    """A full connection string for the dev account with explicit endpoints.

    Explicit endpoints (rather than ``UseDevelopmentStorage=true``) let every port be chosen freely.
    """
    base = f"http://{host}"
    return (
        f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT_NAME};AccountKey={ACCOUNT_KEY};"
        f"BlobEndpoint={base}:{blob_port}/{ACCOUNT_NAME};"
        f"QueueEndpoint={base}:{queue_port}/{ACCOUNT_NAME};"
        f"TableEndpoint={base}:{table_port}/{ACCOUNT_NAME};"
    )


@dataclass(frozen=True)
class AzuriteEndpoints:
    host: str
    blob_port: int
    queue_port: int
    table_port: int

    @property
    def connection_string(self) -> str:
        return connection_string(self.host, self.blob_port, self.queue_port, self.table_port)


class AzuriteError(RuntimeError):
    pass


class Azurite:
    """One Azurite process bound to loopback, its data kept in ``data_dir``."""

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        host: str = "127.0.0.1",
        executable: str | os.PathLike[str] | None = None,
        startup_timeout: float = 30.0,
        log_file: str | os.PathLike[str] | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.host = host
        self.executable = Path(executable) if executable else azurite_executable()
        self.startup_timeout = startup_timeout
        self.log_file = Path(log_file) if log_file else self.data_dir / "azurite.log"
        self._process: subprocess.Popen[str] | None = None
        self._endpoints: AzuriteEndpoints | None = None
        self._reader: threading.Thread | None = None

    @property
    def endpoints(self) -> AzuriteEndpoints:
        if self._endpoints is None:
            raise AzuriteError("Azurite is not running")
        return self._endpoints

    @property
    def connection_string(self) -> str:
        return self.endpoints.connection_string

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def start(self, reuse: AzuriteEndpoints | None = None) -> str:
        """Start Azurite, wait until every service answers, return the connection string. With `reuse`
        (a previous run's endpoints), on those ports, so clients holding the connection string reconnect."""
        if self._process is not None:
            return self.connection_string
        if not self.executable.exists() and shutil.which(str(self.executable)) is None:
            raise AzuriteError(f"Azurite not found at {self.executable} (run `npm ci` in {_PROJECT_ROOT})")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [
            str(self.executable),
            "--blobHost", self.host, "--queueHost", self.host, "--tableHost", self.host,
            "--blobPort", str(reuse.blob_port if reuse else 0),
            "--queuePort", str(reuse.queue_port if reuse else 0),
            "--tablePort", str(reuse.table_port if reuse else 0),
            "--skipApiVersionCheck", "--disableTelemetry", "--silent",
            "--location", str(self.data_dir),
        ]  # fmt: skip
        self._process = subprocess.Popen(
            args,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            # Own process group: a Ctrl-C meant for the caller does not kill Azurite mid-test.
            start_new_session=True,
        )
        ports: dict[str, int] = {}
        found = threading.Event()
        self._reader = threading.Thread(
            target=self._read_output, args=(self._process, ports, found), daemon=True, name="azurite-log"
        )
        self._reader.start()
        if not found.wait(self.startup_timeout):
            self.stop()
            raise AzuriteError(f"Azurite did not start within {self.startup_timeout:.0f}s; see {self.log_file}")
        self._endpoints = AzuriteEndpoints(self.host, ports["Blob"], ports["Queue"], ports["Table"])
        self._wait_until_answering()
        return self.connection_string

    def _read_output(self, process: subprocess.Popen[str], ports: dict[str, int], found: threading.Event) -> None:
        # Drains Azurite's stdout for its whole life (a full pipe would block it) into the log file.
        assert process.stdout is not None
        with open(self.log_file, "a", encoding="utf-8") as log:
            for line in process.stdout:
                log.write(line)
                log.flush()
                match = _LISTENING.search(line)
                if match:
                    ports[match.group(1)] = int(match.group(2))
                    if len(ports) == 3:
                        found.set()

    def _wait_until_answering(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        endpoints = self.endpoints
        for port in (endpoints.blob_port, endpoints.queue_port, endpoints.table_port):
            while True:
                try:
                    with socket.create_connection((self.host, port), timeout=1):
                        break
                except OSError:
                    if time.monotonic() > deadline:
                        self.stop()
                        raise AzuriteError(f"Azurite port {port} does not answer") from None
                    time.sleep(0.05)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop Azurite (SIGTERM, then SIGKILL after ``timeout``). Safe to call twice."""
        process, self._process = self._process, None
        self._endpoints = None
        if process is None:
            return
        terminate(process, timeout)
        if self._reader is not None:
            self._reader.join(timeout)
            self._reader = None

    def restart(self, down_seconds: float = 0.0) -> str:
        """Stop Azurite and start it again on the same ports with the same data (an outage of the storage
        account), after `down_seconds`; the connection string is unchanged."""
        ports = self.endpoints
        self.stop()
        time.sleep(down_seconds)
        return self.start(ports)

    def __enter__(self) -> Azurite:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
