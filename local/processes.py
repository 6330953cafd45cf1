"""Child processes of the local stack."""

from __future__ import annotations

import signal
import subprocess
from typing import Any


def terminate(process: subprocess.Popen[Any], timeout: float = 10.0) -> int:
    """SIGTERM (each part shuts down cleanly on it), SIGKILL if still running after `timeout`; the exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)
    return process.returncode
