"""Stopping a child process politely: SIGTERM, a grace period, then SIGKILL (demo, bench, tests)."""

from __future__ import annotations

import signal
import subprocess
from typing import Any


def stop_process(proc: "subprocess.Popen[Any] | None", grace: float = 15.0) -> int | None:
    """SIGTERM, wait up to `grace` seconds, then SIGKILL; the exit code (None when there was no process)."""
    if proc is None:
        return None
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait(5)
