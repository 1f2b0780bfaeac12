"""A HELO name without a dot is warned about at `validate` and `probe`; exit codes do not change."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from r53lb.config import Config, helo_warnings
from r53lb.demo.loopback import SmtpServer

R53LB = [sys.executable, "-m", "r53lb"]


def _config(defaults: dict[str, Any], check: dict[str, Any], port: int = 25, address: str = "127.0.80.1") -> dict[str, Any]:
    return {
        "defaults": {"timeout": "2s", **defaults},
        "pools": [{
            "name": "mail", "zone": "example.test", "record": "mx.example.test",
            "checks": [{"smtp": {"port": port, **check}}],
            "nodes": [{"id": "mx-1", "address": address}],
        }],
    }


def _run(tmp: Path, cfg: dict[str, Any], *args: str) -> subprocess.CompletedProcess[str]:
    path = tmp / "r53lb.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return subprocess.run(R53LB + ["-c", str(path), *args], capture_output=True, text=True, timeout=30)


def test_validate_warns_about_a_dotless_helo_and_still_exits_0(tmp_path: Path) -> None:
    out = _run(tmp_path, _config({"helo": "localhost"}, {}), "validate")
    assert out.returncode == 0
    assert out.stdout.startswith("ok: 1 pool(s), 1 node(s)")
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("r53lb: warning: HELO name 'localhost' (defaults.helo) has no dot")
    assert "set defaults.helo" in lines[0]


def test_a_checks_own_helo_is_named_by_its_key_path(tmp_path: Path) -> None:
    out = _run(tmp_path, _config({"helo": "probe.example.com"}, {"helo": "mx"}), "validate")
    assert out.returncode == 0
    assert "HELO name 'mx' (pools[0].checks[0].smtp.helo) has no dot" in out.stderr


def test_no_warning_for_a_dotted_name_or_without_smtp_checks(tmp_path: Path) -> None:
    out = _run(tmp_path, _config({"helo": "probe.example.com"}, {}), "validate")
    assert (out.returncode, out.stderr) == (0, "")
    out = _run(tmp_path, _config({"helo": "[IPv6:2001:db8::1]"}, {}), "validate")  # an address literal
    assert (out.returncode, out.stderr) == (0, "")
    cfg = _config({"helo": "localhost"}, {})
    cfg["pools"][0]["checks"] = [{"tcp": {"port": 25}}]
    assert helo_warnings(Config.model_validate(cfg)) == []


def test_the_machine_name_is_the_fallback() -> None:
    cfg = Config.model_validate(_config({}, {}))
    (line,) = helo_warnings(cfg, machine="localhost")
    assert line.startswith("HELO name 'localhost' (this machine's name, socket.getfqdn()) has no dot")
    assert helo_warnings(cfg, machine="probe.example.com") == []


def test_probe_warns_and_keeps_its_exit_code(tmp_path: Path) -> None:
    mx = SmtpServer("127.0.80.2", _free_port("127.0.80.2")).start()
    try:
        out = _run(tmp_path, _config({"helo": "localhost"}, {}, port=mx.port, address="127.0.80.2"), "probe")
        assert out.returncode == 0, out.stdout + out.stderr
        assert "r53lb: warning: HELO name 'localhost' (defaults.helo) has no dot" in out.stderr
    finally:
        mx.stop()
    out = _run(tmp_path, _config({"helo": "localhost"}, {}, port=mx.port, address="127.0.80.2"), "probe")
    assert out.returncode == 3 and "has no dot" in out.stderr


def _free_port(host: str) -> int:
    import socket

    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]
