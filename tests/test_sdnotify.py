"""sd_notify against a real AF_UNIX datagram socket (a path and an abstract name), and the
systemd unit that uses it, checked by systemd-analyze."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from r53lb.engine.sdnotify import notify, watchdog_interval
from tests.programs import require

UNIT = Path(__file__).resolve().parent.parent / "deploy" / "systemd" / "r53lb.service"


@pytest.fixture
def short_dir() -> Iterator[Path]:
    # AF_UNIX paths are limited to 107 bytes: pytest's tmp_path can be longer.
    d = Path(tempfile.mkdtemp(prefix="r53lb-", dir="/tmp"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _receiver(address: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(5)
    return sock


def test_notify_sends_one_datagram_to_a_socket_path(short_dir: Path) -> None:
    path = str(short_dir / "notify")
    with _receiver(path) as rx:
        assert notify("READY=1", {"NOTIFY_SOCKET": path})
        assert rx.recv(4096) == b"READY=1"
        assert notify("STATUS=3 pools, 9 nodes\nWATCHDOG=1", {"NOTIFY_SOCKET": path})
        assert rx.recv(4096) == b"STATUS=3 pools, 9 nodes\nWATCHDOG=1"


def test_notify_reaches_an_abstract_socket_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"r53lb-test-{os.getpid()}-{id(object())}"
    with _receiver("\0" + name) as rx:
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert notify("WATCHDOG=1")
        assert rx.recv(4096) == b"WATCHDOG=1"


def test_notify_outside_systemd_or_without_a_listener_is_a_quiet_no(short_dir: Path) -> None:
    assert notify("READY=1", {}) is False
    assert notify("READY=1", {"NOTIFY_SOCKET": ""}) is False
    assert notify("READY=1", {"NOTIFY_SOCKET": "vsock:2:1234"}) is False
    assert notify("READY=1", {"NOTIFY_SOCKET": str(short_dir / "nobody-listens")}) is False


def test_watchdog_interval() -> None:
    me = str(os.getpid())
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": me}) == 30.0
    assert watchdog_interval({"WATCHDOG_USEC": "500000"}) == 0.5  # no PID given: for us
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None  # another process's
    assert watchdog_interval({}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "soon"}) is None


def _unit() -> dict[str, list[str]]:
    unit: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            k, _, v = line.partition("=")
            unit.setdefault(k.strip(), []).append(v.strip())
    return unit


def test_unit_has_a_watchdog_and_a_memory_limit() -> None:
    unit = _unit()
    assert unit["Type"] == ["notify"]
    assert unit["NotifyAccess"] == ["main"]
    assert re.fullmatch(r"\d+s", unit["WatchdogSec"][0])
    assert unit["Restart"] == ["on-failure"]  # a watchdog kill counts as a failure: restarted
    assert re.fullmatch(r"\d+[MG]", unit["MemoryMax"][0])
    assert unit["RestrictAddressFamilies"][0].split().count("AF_UNIX") == 1  # the notify socket


def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = require("systemd-analyze", "systemd")
    # verify wants ExecStart's program to exist: point it at one that does.
    text = UNIT.read_text().replace("/usr/local/bin/r53lb", shutil.which("true") or "/bin/true")
    unit = tmp_path / "r53lb.service"
    unit.write_text(text)
    proc = subprocess.run([analyze, "verify", "--man=no", str(unit)], capture_output=True, text=True, timeout=60)
    problems = [line for line in proc.stderr.splitlines() if "r53lb.service" in line]
    assert proc.returncode == 0 and problems == [], proc.stderr
