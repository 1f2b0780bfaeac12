"""deploy/: the service user is one operators can run commands as (systemd-sysusers, for real)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from programs import require

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"


def unit_keys() -> dict[str, list[str]]:
    unit: dict[str, list[str]] = {}
    for line in (DEPLOY / "systemd" / "r53lb.service").read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            k, _, v = line.partition("=")
            unit.setdefault(k.strip(), []).append(v.strip())
    return unit


def test_the_unit_runs_as_the_user_sysusers_creates(tmp_path: Path) -> None:
    unit = unit_keys()
    assert "DynamicUser" not in unit and unit["User"] == ["r53lb"] and unit["Group"] == ["r53lb"]
    # systemd-sysusers creates the user in a scratch root, never on this host.
    (tmp_path / "etc").mkdir()
    p = subprocess.run([require("systemd-sysusers", "systemd"), f"--root={tmp_path}",
                        str(DEPLOY / "systemd" / "r53lb.sysusers")], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    passwd = {line.split(":")[0]: line.split(":") for line in (tmp_path / "etc" / "passwd").read_text().splitlines()}
    groups = {line.split(":")[0] for line in (tmp_path / "etc" / "group").read_text().splitlines()}
    assert "r53lb" in groups
    name, _, uid, gid, _, home, shell = passwd["r53lb"]
    assert int(uid) < 1000 and home == "/var/lib/r53lb" and shell == "/usr/sbin/nologin"


def test_operators_are_told_to_run_commands_as_the_service_user() -> None:
    text = (DEPLOY / "systemd" / "r53lb.service").read_text()
    assert "sudo -u r53lb r53lb -c /etc/r53lb/r53lb.yaml drain" in text
    assert "state.path: /var/lib/r53lb/state.db" in text
    cron = [line for line in (DEPLOY / "cron" / "r53lb.cron").read_text().splitlines()
            if line and not line.startswith("#") and "=" not in line.split()[0]]
    assert cron[0].split()[5] == "r53lb"  # the cron job's user: the service's
