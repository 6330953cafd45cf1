"""The whole local stack in one object: Azurite, the Azure simulator and the dev host running the app.

Used by `make demo`, the end-to-end tests and the benchmarks. The app is wired to the simulator
only through settings (URLs, credentials) and the standard CA variables, as it would be to Azure.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import certifi
import httpx

from local import eventgrid, malware
from local.azuresim.runner import SimulatorProcess, start_simulator
from local.azurite import Azurite
from local.devhost.keys import HostKeys, new_key, write_keys
from local.processes import terminate

ROOT = Path(__file__).resolve().parent.parent
# The host key Graph calls the webhooks with, named as infra names it (infra/modules/functionapp.bicep).
WEBHOOK_KEY_NAME = "graphwebhook"


# One timer pass in its own process, its clock moved by argv[1] seconds (the simulator's clock offset).
_MAINTAIN_AT = """
import asyncio, json, sys
from datetime import timedelta
from shared.sources.graph import subscriptions
from shared.workers import maintain
offset = timedelta(seconds=float(sys.argv[1]))
real = subscriptions._now
subscriptions._now = lambda: real() + offset
print(json.dumps(asyncio.run(maintain())))
"""


def maintain_at(env: Mapping[str, str], offset_seconds: float, timeout: float = 120) -> dict[str, str]:
    """Run one `maintain` pass as a second instance of the app would, with its clock `offset_seconds` ahead
    (moved as far as the simulator's): the pass's report, or RuntimeError with the end of its stderr."""
    run = subprocess.run(
        [sys.executable, "-c", _MAINTAIN_AT, str(offset_seconds)],
        cwd=ROOT,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if run.returncode != 0:
        raise RuntimeError(run.stderr[-3000:])
    return dict(json.loads(run.stdout.splitlines()[-1]))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def write_ca_bundle(path: Path, own_ca: Path, env: Mapping[str, str]) -> Path:
    """A bundle of the CAs this machine already trusts (a corporate bundle included) plus the test CA."""
    parts: list[str] = []
    seen: set[str] = set()
    for source in (env.get("SSL_CERT_FILE"), env.get("REQUESTS_CA_BUNDLE"), certifi.where()):
        if source and source not in seen and Path(source).is_file():
            seen.add(source)
            parts.append(Path(source).read_text())
    parts.append(own_ca.read_text())
    path.write_text("\n".join(parts))
    return path


def simulator_settings(info: Mapping[str, str]) -> dict[str, str]:
    """The app's settings that point it at the simulator (its `info`: tenant, app, endpoints)."""
    return {
        "GRAPH_TENANT_ID": info["tenant_id"],
        "GRAPH_CLIENT_ID": info["client_id"],
        "GRAPH_CLIENT_SECRET": info["client_secret"],
        "GRAPH_AUTHORITY_HOST": info["authority_host"],
        "GRAPH_API_URL": info["graph_url"],
        # The simulator's host is not a resource the identity platform knows (as a gateway's would not be).
        "GRAPH_SCOPE": "https://graph.microsoft.com/.default",
        "KEY_VAULT_URL": info["key_vault_url"],
        "KEY_VAULT_VERIFY_CHALLENGE_RESOURCE": "false",
    }


def azure_credential_settings(info: Mapping[str, str]) -> dict[str, str]:
    """DefaultAzureCredential's environment credential, as the simulator's app: for Key Vault."""
    return {
        "AZURE_TENANT_ID": info["tenant_id"],
        "AZURE_CLIENT_ID": info["client_id"],
        "AZURE_CLIENT_SECRET": info["client_secret"],
        "AZURE_AUTHORITY_HOST": info["authority_host"],
    }


@dataclass
class StackConfig:
    mailboxes: tuple[str, ...] = ("invoices@contoso.com", "scans@contoso.com/Inbox/Delivery notes")
    data_dir: Path = ROOT / ".stack"
    devhost_port: int = 0
    # Settings the caller adds or overrides for the app (e.g. short queue retry delays in tests).
    app_settings: dict[str, str] = field(default_factory=dict)
    quiet: bool = True
    # False: Azurite and the simulator only, for a test that starts the app itself as a user would.
    devhost: bool = True
    # False: no Graph settings for the app (no GRAPH_*, no WEBHOOK_BASE_URL), as a deployment whose MAILBOXES
    # lists only IMAP and POP3 accounts has them; Key Vault is still the simulator's.
    graph: bool = True


class DevHost:
    """The dev host as a subprocess with the app's settings in its environment."""

    def __init__(self, env: dict[str, str], port: int, data_dir: Path, quiet: bool, keys_file: Path) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log_file = data_dir / "devhost.log"
        self.keys_file = keys_file
        self._env = env
        self._quiet = quiet
        self._ready = data_dir / "devhost.ready.json"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> None:
        self._ready.unlink(missing_ok=True)
        log = open(self.log_file, "ab")  # noqa: SIM115 (kept open for the child's life)
        args = [sys.executable, "-m", "local.devhost", "--app-dir", str(ROOT), "--port", str(self.port)]
        self._process = subprocess.Popen(
            [*args, "--ready-file", str(self._ready), "--keys-file", str(self.keys_file)],
            cwd=ROOT,
            env=self._env,
            stdout=log if self._quiet else None,
            stderr=log if self._quiet else None,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while not self._ready.exists():
            if self._process.poll() is not None:
                tail = self.log_file.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"dev host exited with {self._process.returncode}:\n{tail}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"dev host did not become ready in {timeout:.0f}s; see {self.log_file}")
            time.sleep(0.05)

    @property
    def pid(self) -> int:
        """The dev host's process, where the app's functions run."""
        assert self._process is not None, "the dev host is not running"
        return self._process.pid

    def stop(self, timeout: float = 15.0) -> None:
        process, self._process = self._process, None
        if process is not None:
            terminate(process, timeout)

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None


class Stack:
    """Start with `with Stack(config) as stack:`; everything started is stopped on exit."""

    def __init__(self, config: StackConfig | None = None) -> None:
        self.config = config or StackConfig()
        self.data_dir = self.config.data_dir
        self.azurite: Azurite | None = None
        self.sim: SimulatorProcess | None = None
        self.devhost: DevHost | None = None
        self.env: dict[str, str] = {}
        # The dev host's keys, as the Functions host has them: the master key (admin API) and the host key
        # Graph's URLs carry, which the app reads as WEBHOOK_FUNCTION_KEY, as in Azure.
        self.keys = HostKeys(master=new_key(), function_keys={WEBHOOK_KEY_NAME: new_key()})
        self._control: httpx.Client | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> Stack:
        # Every start is a fresh tenant (the simulator keeps nothing), so storage starts empty too.
        shutil.rmtree(self.data_dir, ignore_errors=True)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        try:
            self.azurite = Azurite(self.data_dir / "azurite")
            storage = self.azurite.start()
            self.sim = start_simulator(self.data_dir / "azuresim")
            self.env = self._app_env(storage)
            self._create_mailboxes()
            if eventgrid.uses_eventgrid(self.env):
                eventgrid.authorize_graph(self.control, self.env)
            if malware.uses_defender(self.env):
                malware.connect_defender(self.control, self.env, storage)
            if not self.config.devhost:
                return self
            port = self.config.devhost_port or free_port()
            keys_file = self.data_dir / "devhost-keys.json"
            write_keys(keys_file, self.keys)
            self.devhost = DevHost(self.env, port, self.data_dir, self.config.quiet, keys_file)
            if self.config.graph:
                self.env["WEBHOOK_BASE_URL"] = self.devhost.url
            if self.env.get("GRAPH_AUTH_MODE") == "delegated":
                # What an admin does on the app registration: the consent callback as a Web redirect URI.
                uris = {"redirectUris": [f"{self.devhost.url}/api/consent/callback"]}
                self.control("POST", f"/_sim/apps/{self.env['GRAPH_CLIENT_ID']}/redirectUris", uris)
            self.devhost.start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self._control is not None:
            self._control.close()
            self._control = None
        for part in (self.devhost, self.sim, self.azurite):
            if part is not None:
                part.stop()

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def another_host(self, name: str) -> DevHost:
        """One more dev host on the same storage, simulator, settings and keys (a second Functions instance
        of the app; Graph still calls the first one's URL, the app's one host name). Started; the caller
        stops it before the stack."""
        assert self.devhost is not None, "the stack has no first dev host"
        data_dir = self.data_dir / f"host-{name}"
        data_dir.mkdir(parents=True, exist_ok=True)
        host = DevHost(self.env, free_port(), data_dir, self.config.quiet, self.devhost.keys_file)
        host.start()
        return host

    # -- wiring --------------------------------------------------------------------------------
    def _app_env(self, storage: str) -> dict[str, str]:
        assert self.sim is not None
        info = self.sim.info
        bundle = write_ca_bundle(self.data_dir / "ca-bundle.pem", Path(info["ca_file"]), os.environ)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("GRAPH_", "AZURE_", "AzureWebJobs"))}
        sim = {k: v for k, v in simulator_settings(info).items() if self.config.graph or not k.startswith("GRAPH_")}
        env.update(
            {
                "FUNCTIONS_WORKER_RUNTIME": "python",
                "AzureWebJobsStorage": storage,
                **sim,
                **azure_credential_settings(info),
                "MAILBOXES": ",".join(self.config.mailboxes),
                "WEBHOOK_FUNCTION_KEY": self.keys.function_keys[WEBHOOK_KEY_NAME],
                "SSL_CERT_FILE": str(bundle),
                "REQUESTS_CA_BUNDLE": str(bundle),
                # The timer is fired on demand through the admin API; once a day otherwise.
                "MAINTAIN_SCHEDULE": "0 0 3 * * *",
            }
        )
        env.update(self.config.app_settings)
        if eventgrid.uses_eventgrid(env) or malware.uses_defender(env):
            # The deployment's subscription, group and region, which the infra sets in every deployment.
            env = {**eventgrid.LOCAL_SETTINGS, **env}
        return env

    def _create_mailboxes(self) -> None:
        by_mailbox: dict[str, list[str]] = {}
        for entry in self.config.mailboxes:
            if "://" in entry:
                continue  # an IMAP or POP3 account, served by its own server
            mailbox, _, folder = entry.partition("/")
            by_mailbox.setdefault(mailbox, [])
            if folder:
                by_mailbox[mailbox].append(folder)
        for mailbox, folders in by_mailbox.items():
            self.control("POST", "/_sim/mailboxes", {"address": mailbox, "folders": folders})

    # -- convenience ---------------------------------------------------------------------------
    @property
    def sim_url(self) -> str:
        assert self.sim is not None
        return str(self.sim.url)

    @property
    def app_url(self) -> str:
        """The dev host's base URL (the app's public URL in this stack)."""
        assert self.devhost is not None, "the stack is not running"
        return self.devhost.url

    def webhook_url(self, route: str) -> str:
        """`/api/{route}` with the webhook's function key, as the app gives it to Graph."""
        return f"{self.app_url}/api/{route}?code={self.keys.function_keys[WEBHOOK_KEY_NAME]}"

    @property
    def ca_bundle(self) -> str:
        return self.env["SSL_CERT_FILE"]

    def _client(self) -> httpx.Client:
        if self._control is None:
            self._control = httpx.Client(verify=ssl.create_default_context(cafile=self.ca_bundle), timeout=60)
        return self._control

    def control(self, method: str, path: str, body: Any = None) -> Any:
        """Call the simulator's control API synchronously."""
        response = self._client().request(method, f"{self.sim_url}{path}", json=body)
        response.raise_for_status()
        return response.json() if response.content else None

    def graph_token(self, scope: str | None = None) -> str:
        """An app-only access token from the simulated identity platform (Graph's scope unless told)."""
        env = self.env
        token = self._client().post(
            f"{env['GRAPH_AUTHORITY_HOST']}/{env['GRAPH_TENANT_ID']}/oauth2/v2.0/token",
            data={
                "grant_type": "client_credentials",
                "client_id": env["GRAPH_CLIENT_ID"],
                "client_secret": env["GRAPH_CLIENT_SECRET"],
                "scope": scope or env["GRAPH_SCOPE"],
            },
        )
        token.raise_for_status()
        return str(token.json()["access_token"])

    def graph(self, method: str, path: str, body: Any = None, **params: str) -> Any:
        """Call the simulated Graph as the app does (app-only token, immutable ids), to look at mail."""
        env = self.env
        response = self._client().request(
            method,
            f"{env['GRAPH_API_URL']}/{path}",
            params=params,
            json=body,
            headers={"Authorization": f"Bearer {self.graph_token()}", "Prefer": 'IdType="ImmutableId"'},
        )
        response.raise_for_status()
        return response.json() if response.content else None

    def run_function(self, name: str, body: str = "", timeout: float = 120) -> httpx.Response:
        """Run a non-HTTP function now through the dev host's admin API, waiting for it to finish."""
        return httpx.post(
            f"{self.app_url}/admin/functions/{name}",
            params={"wait": "true"},
            json={"input": body},
            headers={"x-functions-key": self.keys.master},
            timeout=timeout,
        )

    def connect_eventgrid(self, **options: Any) -> Any:
        """GRAPH_DELIVERY=eventgrid, after the first maintain pass: activate the partner topic and deliver it to
        the app's queue (local/eventgrid.py)."""
        return eventgrid.connect_topic(self.control, self.env, self.storage_connection_string, **options)

    @property
    def storage_connection_string(self) -> str:
        return self.env["AzureWebJobsStorage"]

    def dump(self) -> str:
        return json.dumps({"sim": self.sim_url, "devhost": self.devhost.url if self.devhost else None}, indent=1)
