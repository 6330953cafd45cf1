"""Run checkov over Bicep files, offline.

checkov lives in its own virtual environment (.venv-infra, made by `make setup`): its pins (packaging<24) clash
with pytest's. `--skip-download` and BC_SKIP_MAPPING keep it off the Prisma Cloud API, and
CKV_SKIP_PACKAGE_UPDATE_CHECK stops its version check, so a run reaches no network.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any, cast

from .bicep_checks import REPO

CHECKOV = Path(os.environ.get("CHECKOV_BIN", str(REPO / ".venv-infra" / "bin" / "checkov")))
OFFLINE_ENV = {"CKV_SKIP_PACKAGE_UPDATE_CHECK": "true", "BC_SKIP_MAPPING": "TRUE"}


def run_checkov(directory: Path) -> dict[str, Any]:
    """checkov's JSON report for the Bicep files under `directory`."""
    if not CHECKOV.exists():
        raise FileNotFoundError(f"{CHECKOV} is missing: run `make setup` (or set CHECKOV_BIN)")
    command = [str(CHECKOV), "--directory", str(directory), "--framework", "bicep", "--skip-download"]
    proc = subprocess.run(
        [*command, "--output", "json", "--soft-fail"],
        env={**os.environ, **OFFLINE_ENV},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"checkov exited {proc.returncode}: {proc.stderr[-2000:]}")
    report = json.loads(proc.stdout)
    # One framework gives one report object; checkov prints a bare summary when it finds no resource.
    if isinstance(report, list):
        (report,) = report
    return cast(dict[str, Any], report)
