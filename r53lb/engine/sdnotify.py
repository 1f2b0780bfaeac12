"""systemd's notification protocol (sd_notify) without libsystemd: one datagram to the
socket named in $NOTIFY_SOCKET.

The daemon sends READY=1 once it runs, WATCHDOG=1 while its probes keep their schedule and
STOPPING=1 on its way out; with `Type=notify` and `WatchdogSec=` in the unit, systemd then
restarts a controller that has wedged (a stuck event loop sends no WATCHDOG=1).
Outside systemd (no NOTIFY_SOCKET) every call is a no-op that returns False.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

__all__ = ["notify", "watchdog_interval"]


def _address(env: Mapping[str, str]) -> str | None:
    path = env.get("NOTIFY_SOCKET", "")
    if path.startswith("@"):  # an abstract socket: a leading NUL instead of the @
        return "\0" + path[1:]
    if path.startswith("/"):
        return path
    return None  # unset, or a vsock: address this module does not speak


def notify(state: str, env: Mapping[str, str] | None = None) -> bool:
    """Send one state ("READY=1", "WATCHDOG=1", "STOPPING=1", "STATUS=..."); True if sent.

    Never raises: a lost notification must not stop the controller (systemd's own
    sd_notify behaves the same way)."""
    address = _address(os.environ if env is None else env)
    if address is None:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(state.encode("utf-8"))
    except OSError:
        return False
    return True


def watchdog_interval(env: Mapping[str, str] | None = None) -> float | None:
    """WatchdogSec= in seconds when systemd expects WATCHDOG=1 from this process, else None.

    Send WATCHDOG=1 at least twice per interval (systemd's advice: every half of it)."""
    env = os.environ if env is None else env
    usec = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID", "")
    # WATCHDOG_PID names the process the watchdog is for: a child that inherited the
    # environment must not ping on its parent's behalf.
    if pid and pid != str(os.getpid()):
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 1_000_000 if value > 0 else None
