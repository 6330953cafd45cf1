"""A new user's first run: subscriptions exist at once, not at the timer's first occurrence.

- The azd postdeploy hook (infra/hooks/postdeploy.sh) against a freshly started app whose timer is a
  year away: one maintain pass through the host's admin endpoint, what it did printed per folder.
- The local run of docs/setup.md ("Running the app on your machine against a real tenant"), followed
  literally: local.settings.json from the example, the dev host started from the app's folder,
  `python -m shared.cli maintain`, subscriptions at Graph.
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from local.mailcheck import subscriptions
from local.processes import terminate
from local.stack import ROOT, Stack, StackConfig, free_port

from .conftest import wait_until

MAILBOXES = ("invoices@contoso.com", "scans@contoso.com/Inbox/Delivery notes")
NEVER = "0 0 0 1 1 *"  # the timer's schedule: once a year, so only the pass under test can subscribe


def _fresh(tmp_path: Path, devhost: bool) -> Stack:
    settings = {"MAINTAIN_SCHEDULE": NEVER}
    return Stack(StackConfig(mailboxes=MAILBOXES, data_dir=tmp_path / "stack", app_settings=settings, devhost=devhost))


def _postdeploy(stack: Stack) -> subprocess.CompletedProcess[str]:
    """The hook as azd runs it, with the app's URL and master key given instead of looked up with az."""
    env = {
        "PATH": "/usr/bin:/bin:/usr/local/bin",
        "FUNCTION_APP_URL": stack.app_url,
        "FUNCTION_APP_MASTER_KEY": stack.keys.master,
        "MAINTAIN_WAIT_SECONDS": "60",
    }
    hook = str(ROOT / "infra/hooks/postdeploy.sh")
    return subprocess.run(["sh", hook], env=env, capture_output=True, text=True, timeout=90)


def test_postdeploy_hook_subscribes_every_folder_within_a_minute(tmp_path: Path):
    with _fresh(tmp_path, devhost=True) as stack:
        assert subscriptions(stack) == []
        started = time.monotonic()
        done = _postdeploy(stack)
        assert done.returncode == 0, done.stdout + done.stderr
        assert time.monotonic() - started < 60
        subs = subscriptions(stack)
        assert len(subs) == len(MAILBOXES)
        for folder in ("invoices@contoso.com/Inbox", "scans@contoso.com/Inbox/Delivery notes"):
            assert f"OK   {folder}: created" in done.stdout, done.stdout
        assert "2 of 2 mailbox folders done, 0 failed" in done.stdout
        assert stack.keys.master not in done.stdout + done.stderr
        # One pass, the hook's (the timer is a year away).
        log = (stack.data_dir / "devhost.log").read_text()
        assert log.count("Executed 'Functions.maintain'") == 1


def test_postdeploy_hook_reports_a_folder_it_cannot_subscribe(tmp_path: Path):
    with _fresh(tmp_path, devhost=True) as stack:
        stack.control("POST", "/_sim/roles", {"roles": []})  # no Mail.Read: Graph answers 403
        done = _postdeploy(stack)
        assert done.returncode == 1, done.stdout + done.stderr
        assert "FAIL invoices@contoso.com/Inbox: failed:" in done.stdout
        assert "0 of 2 mailbox folders done, 2 failed" in done.stdout
        assert "azd hooks run postdeploy" in done.stdout


@pytest.fixture
def user_endpoints(tmp_path: Path) -> Iterator[Stack]:
    """Storage, identity, Graph and Key Vault the user's settings name (here: Azurite and the simulator)."""
    with _fresh(tmp_path, devhost=False) as stack:
        yield stack


def _copy_app(target: Path) -> Path:
    """The project as a fresh clone has it (no venv, no local settings, no state of earlier runs)."""
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for name in files.splitlines():
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


def test_readme_local_run_subscribes_with_one_command(tmp_path: Path, user_endpoints: Stack):
    stack = user_endpoints
    app = _copy_app(tmp_path / "app")
    port = free_port()
    # Step 4 of "Running it against a real tenant": copy the example, fill in the settings.
    example = json.loads((app / "local.settings.json.example").read_text())
    values = example["Values"]
    for name in ("GRAPH_TENANT_ID", "GRAPH_CLIENT_ID", "GRAPH_CLIENT_SECRET", "KEY_VAULT_URL"):
        values[name] = stack.env[name]
    values.update(
        {
            "AzureWebJobsStorage": stack.env["AzureWebJobsStorage"],
            "MAILBOXES": ",".join(MAILBOXES),
            "WEBHOOK_BASE_URL": f"http://127.0.0.1:{port}",  # what a tunnel in front of the port would forward
            "WEBHOOK_FUNCTION_KEY": secrets.token_urlsafe(32),  # any long random string, as docs/setup.md says
            "MAINTAIN_SCHEDULE": NEVER,
            # Endpoints other than Microsoft's, as the settings table allows.
            **{k: stack.env[k] for k in ("GRAPH_AUTHORITY_HOST", "GRAPH_API_URL", "GRAPH_SCOPE")},
            "KEY_VAULT_VERIFY_CHALLENGE_RESOURCE": "false",
        }
    )
    (app / "local.settings.json").write_text(json.dumps(example, indent=2))
    # The user's shell: trust for the endpoints' certificates and a sign-in for Key Vault (`az login`).
    shell = {k: v for k, v in stack.env.items() if k.startswith(("AZURE_", "SSL_", "REQUESTS_")) or k == "PATH"}
    shell["PYTHONIOENCODING"] = "utf-8"
    log = (tmp_path / "devhost.log").open("w")
    host = subprocess.Popen(
        [sys.executable, "-m", "local.devhost", "--port", str(port)], cwd=app, env=shell, stdout=log, stderr=log
    )
    try:
        wait_until(lambda: _answers(port), 60, "the dev host")
        done = subprocess.run(
            [sys.executable, "-m", "shared.cli", "maintain"], cwd=app, env=shell, capture_output=True, text=True,
            timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr + (tmp_path / "devhost.log").read_text()[-3000:]
        assert "invoices@contoso.com/Inbox: created" in done.stdout
        assert "scans@contoso.com/Inbox/Delivery notes: created" in done.stdout
        subs = subscriptions(stack)
        assert len(subs) == 2
        assert all(s["notificationUrl"].startswith(f"http://127.0.0.1:{port}/api/notifications?code=") for s in subs)
        keys = json.loads((app / ".devhost" / "keys.json").read_text())
        assert {"name": "graphwebhook", "value": values["WEBHOOK_FUNCTION_KEY"], "encrypted": False} in keys[
            "functionKeys"
        ]
    finally:
        terminate(host)
        log.close()


def _answers(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=2).status_code == 401
    except httpx.HTTPError:
        return False
