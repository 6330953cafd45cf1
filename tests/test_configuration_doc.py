"""docs/configuration.md's settings table matches the code: every setting the app reads has a row, every row
names a setting the app reads, and where a row gives a literal default the code's default is that value.

The names are found by the code's own parsing, not a grep: `parse_settings` runs over a set of environments that
take each of its branches (Graph by secret and by certificate, delegated, Event Grid, accounts only, storage by
connection string and by service URI) with a mapping that records every name looked up; the few settings read
outside it (the timers' schedules in function_app.py, telemetry, the host's dequeue count, the TLS bundle) are read
the same way from the functions that read them. A default is checked by parsing without the setting and with the
table's value: the two Settings must be equal.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from shared import hostqueues
from shared.ops import telemetry
from shared.settings import parse_settings
from shared.sources import common

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "configuration.md"
# Read by the Functions host or its Python worker, not by the app's code: documented because infra/ sets them.
READ_BY_THE_HOST = {"PYTHON_ENABLE_OPENTELEMETRY"}

BASE = {
    "MAILBOXES": "invoices@contoso.com, scans@contoso.com/Inbox/Scans",
    "GRAPH_TENANT_ID": "00000000-0000-0000-0000-000000000001",
    "GRAPH_CLIENT_ID": "00000000-0000-0000-0000-000000000002",
    "GRAPH_CLIENT_SECRET": "s",
    "AzureWebJobsStorage": "UseDevelopmentStorage=true",
    "KEY_VAULT_URL": "https://kv-demo.vault.azure.net/",
    "WEBSITE_HOSTNAME": "func-demo.azurewebsites.net",
}
EVENTGRID = {
    **BASE,
    "GRAPH_DELIVERY": "eventgrid",
    "WEBSITE_SITE_NAME": "func-demo",
    "EVENTGRID_AZURE_SUBSCRIPTION_ID": "00000000-0000-0000-0000-000000000003",
    "EVENTGRID_RESOURCE_GROUP": "rg-demo",
    "EVENTGRID_LOCATION": "westeurope",
}
# One environment per branch of the parsing; together they read every setting parse_settings knows.
SCENARIOS: dict[str, dict[str, str]] = {
    "graph, secret": BASE,
    "graph, certificate": {**BASE, "GRAPH_CLIENT_SECRET": "", "GRAPH_CLIENT_CERTIFICATE": "graph-cert"},
    "delegated": {**BASE, "GRAPH_AUTH_MODE": "delegated", "WEBHOOK_BASE_URL": "https://func-demo.example"},
    "eventgrid": EVENTGRID,
    "accounts only": {
        "MAILBOXES": "imaps://ap%40example.org@mail.example.org/INBOX?secret=ap-password",
        "AzureWebJobsStorage": "UseDevelopmentStorage=true",
        "KEY_VAULT_URL": "https://kv-demo.vault.azure.net/",
    },
    "storage by service URI": {
        **{k: v for k, v in BASE.items() if k != "AzureWebJobsStorage"},
        "AzureWebJobsStorage__blobServiceUri": "https://stdemo.blob.core.windows.net",
        "AzureWebJobsStorage__queueServiceUri": "https://stdemo.queue.core.windows.net",
    },
    "routes from a blob": {**BASE, "ROUTES_BLOB": "config/routes.json"},
}
# What function_app.py reads at import (the timers' schedules, the Event Grid queue's trigger), and its defaults.
FUNCTION_APP = """
import json, os, sys
class Reads(dict):
    read = set()
    def __getitem__(self, k): Reads.read.add(k); return super().__getitem__(k)
    def get(self, k, default=None): Reads.read.add(k); return super().get(k, default)
names = sys.argv[1:]
os.environ = Reads({k: v for k, v in os.environ.items() if k not in names})
import function_app
print(json.dumps({"read": sorted(Reads.read), "defaults": {n: getattr(function_app, n, None) for n in names}}))
"""


class Reads(Mapping[str, str]):
    """An environment that records every name the code looks up."""

    def __init__(self, values: Mapping[str, str]) -> None:
        self._values = dict(values)
        self.read: set[str] = set()

    def __getitem__(self, name: str) -> str:
        self.read.add(name)
        return self._values[name]

    def __contains__(self, name: object) -> bool:
        if isinstance(name, str):
            self.read.add(name)
        return name in self._values

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)


def table() -> dict[str, str]:
    """The settings table: each name in a row's first cell, with that row's default cell."""
    rows: dict[str, str] = {}
    for line in DOC.read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if not line.startswith("| `") or len(cells) < 3:
            continue
        for name in re.findall(r"`([A-Za-z_][A-Za-z0-9_]*)`", cells[0]):
            rows[name] = cells[-1]
    return rows


def parsed_reads() -> set[str]:
    read: set[str] = set()
    for scenario, env in SCENARIOS.items():
        recorded = Reads(env)
        parse_settings(recorded)
        assert recorded.read, scenario
        read |= recorded.read
    return read


def function_app_reads(names: tuple[str, ...] = ()) -> dict[str, object]:
    env = {**BASE, "PATH": os.environ.get("PATH", "")}
    command = [sys.executable, "-c", FUNCTION_APP, *names]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=True)
    answer: dict[str, object] = json.loads(done.stdout.splitlines()[-1])
    return answer


def other_reads(monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """Settings read from os.environ by the functions that use them: telemetry, the host's dequeue count, TLS."""
    recorded = Reads(
        {"APPLICATIONINSIGHTS_CONNECTION_STRING": "InstrumentationKey=00000000-0000-0000-0000-000000000000"}
    )
    monkeypatch.setattr(os, "environ", recorded)
    telemetry.azure_monitor_options()
    for option in (hostqueues.max_dequeue_count, hostqueues.message_encoding):
        option.cache_clear()
        option()
        option.cache_clear()
    common.tls_context()
    monkeypatch.undo()
    # Python's ssl module reads a few variables of its own (SSL_CERT_DIR, SSLKEYLOGFILE): only the names these
    # modules spell out are the app's.
    named = {
        node.value
        for module in (telemetry, hostqueues, common)
        for node in ast.walk(ast.parse(Path(module.__file__ or "").read_text()))
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    }
    # hostqueues spells its names as the override's prefix and host.json's option.
    named |= {hostqueues.OVERRIDE + option for option in ("maxDequeueCount", "messageEncoding")}
    return recorded.read & named


@pytest.fixture(scope="module")
def app_reads() -> dict[str, object]:
    return function_app_reads(("MAINTAIN_SCHEDULE", "MAIL_POLL_SCHEDULE", "EVENTGRID_QUEUE", "MALWARE_SCAN_QUEUE"))


def read_by_the_app(app_reads: dict[str, object], monkeypatch: pytest.MonkeyPatch) -> set[str]:
    read = app_reads["read"]
    assert isinstance(read, list)
    return parsed_reads() | other_reads(monkeypatch) | {str(name) for name in read}


def row(name: str) -> str:
    return f"| `{name}` | <what it does> | <its default> |"


def test_every_setting_the_app_reads_has_a_row(app_reads: dict[str, object], monkeypatch: pytest.MonkeyPatch):
    missing = sorted(read_by_the_app(app_reads, monkeypatch) - set(table()))
    assert not missing, "docs/configuration.md's settings table lacks a row; add:\n" + "\n".join(map(row, missing))


def test_every_row_names_a_setting_the_app_reads(app_reads: dict[str, object], monkeypatch: pytest.MonkeyPatch):
    unknown = sorted(set(table()) - read_by_the_app(app_reads, monkeypatch) - READ_BY_THE_HOST)
    assert not unknown, f"docs/configuration.md's settings table names settings nothing reads; remove: {unknown}"


def literal(cell: str, env: Mapping[str, str]) -> str | None:
    """The default a cell gives as a literal (`value` first in the cell), with `$NAME` as that setting's value."""
    found = re.match(r"`([^`]*)`", cell)
    if found is None:
        return None
    return re.sub(r"\$([A-Z_]+)", lambda m: env.get(m.group(1), ""), found.group(1))


def test_the_defaults_in_the_table_are_the_codes():
    wrong: list[str] = []
    checked = 0
    for name, cell in table().items():
        for env in SCENARIOS.values():
            recorded = Reads(env)
            without = parse_settings(recorded)
            value = literal(cell, env)
            if name not in recorded.read or name in env or value is None:
                continue
            if parse_settings({**env, name: value}) != without:
                wrong.append(f"{name}: the table says {value!r}, which is not the code's default")
            checked += 1
            break
    assert not wrong, "docs/configuration.md's settings table: " + "; ".join(wrong)
    assert checked >= 30  # the check ran over the table, not over nothing


def test_the_schedules_defaults_in_the_table_are_function_apps(app_reads: dict[str, object]):
    rows = table()
    defaults = app_reads["defaults"]
    assert isinstance(defaults, dict)
    for name, value in defaults.items():
        assert literal(rows[name], {}) == value, f"docs/configuration.md: the default of {name} is {value!r}"
