"""scripts/install-system-packages leaves the host's services as it found them.

The script runs for real (bash), against stub `id`, `apt-get`, `systemctl` and `service` that log
their calls and keep the services' state in a file: no package is installed, no real service is
asked anything.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "install-system-packages"

STUBS = {
    "id": 'echo 0\n',
    "debconf-set-selections": 'cat >/dev/null\n',
    # is-active --quiet SVC | stop SVC
    "systemctl": '''echo "systemctl $*" >> "$FAKE/calls"
case "$1" in
  is-active) grep -qx "$3" "$FAKE/active" ;;
  stop) grep -vx "$2" "$FAKE/active" > "$FAKE/active.new"; mv "$FAKE/active.new" "$FAKE/active" ;;
  *) exit 1 ;;
esac
''',
    "service": '''echo "service $*" >> "$FAKE/calls"
case "$2" in
  status) grep -qx "$1" "$FAKE/active" ;;
  stop) grep -vx "$1" "$FAKE/active" > "$FAKE/active.new"; mv "$FAKE/active.new" "$FAKE/active" ;;
esac
''',
    # A package's maintainer script asks policy-rc.d before it starts its service (deb-systemd-invoke);
    # with FAKE_IGNORES_POLICY the package starts it all the same.
    "apt-get": '''echo "apt-get $*" >> "$FAKE/calls"
for a in "$@"; do [ "$a" = install ] && installing=1; done
[ -n "${installing:-}" ] || exit 0
for pkg in "$@"; do
  case "$pkg" in -*|install|DPkg::*) continue ;; esac
  if [ -x "$R53LB_POLICY_RC_D" ]; then "$R53LB_POLICY_RC_D" "$pkg" start; rc=$?; else rc=none; fi
  echo "policy-rc.d $pkg start -> $rc" >> "$FAKE/calls"
  if [ "$rc" != 101 ] || [ -n "${FAKE_IGNORES_POLICY:-}" ]; then
    grep -qx "$pkg" "$FAKE/active" || echo "$pkg" >> "$FAKE/active"
  fi
done
''',
}


class Host:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.fake = root / "fake"
        self.policy = root / "sbin" / "policy-rc.d"

    def run(self, active: list[str], **env: str) -> subprocess.CompletedProcess[str]:
        (self.fake / "active").write_text("".join(f"{s}\n" for s in active))
        (self.fake / "calls").write_text("")
        e = {"PATH": f"{self.root / 'bin'}:/usr/bin:/bin", "FAKE": str(self.fake), "TMPDIR": str(self.root),
             "R53LB_POLICY_RC_D": str(self.policy), **env}
        return subprocess.run(["bash", str(self.root / "scripts" / "install-system-packages")], env=e,
                              capture_output=True, text=True, timeout=30)

    def calls(self) -> list[str]:
        return (self.fake / "calls").read_text().splitlines()

    def active(self) -> set[str]:
        return set((self.fake / "active").read_text().split())


@pytest.fixture
def host(tmp_path: Path) -> Host:
    for d in ("bin", "fake", "sbin", "scripts"):
        (tmp_path / d).mkdir()
    for name, body in STUBS.items():
        p = tmp_path / "bin" / name
        p.write_text("#!/bin/sh\n" + body)
        p.chmod(p.stat().st_mode | stat.S_IXUSR)
    shutil.copy(SCRIPT, tmp_path / "scripts")
    # Two packages whose program is "missing", so the script installs them.
    (tmp_path / "scripts" / "system-packages.txt").write_text(
        "postfix r53lb-test-no-such-postfix\nnginx r53lb-test-no-such-nginx\nutil-linux sh\n")
    return Host(tmp_path)


def stops(calls: list[str]) -> list[str]:
    return [c for c in calls if c.startswith("systemctl stop") or c.startswith("service") and c.endswith(" stop")]


def test_a_service_running_before_the_install_is_never_stopped(host):
    p = host.run(active=["postfix", "haproxy"])
    assert p.returncode == 0, p.stderr
    calls = host.calls()
    assert [c for c in calls if c.startswith("apt-get") and " install " in f" {c} "]
    # The packages were kept from starting their services while they installed ...
    assert "policy-rc.d postfix start -> 101" in calls
    assert "policy-rc.d nginx start -> 101" in calls
    # ... and nothing was stopped: the host's postfix and haproxy run on.
    assert stops(calls) == []
    assert host.active() == {"postfix", "haproxy"}
    assert not host.policy.exists()  # the policy lasts the install only


def test_only_a_service_the_install_started_is_stopped(host):
    p = host.run(active=["postfix"], FAKE_IGNORES_POLICY="1")
    assert p.returncode == 0, p.stderr
    calls = host.calls()
    assert "systemctl stop nginx" in calls
    assert not [c for c in calls if "stop" in c and "postfix" in c]
    assert host.active() == {"postfix"}
    assert "stopping nginx (started by this install)" in p.stderr


def test_an_operators_policy_rc_d_is_put_back(host):
    host.policy.write_text("#!/bin/sh\n# the operator's\nexit 0\n")
    host.policy.chmod(0o755)
    before = host.policy.read_bytes()
    p = host.run(active=[])
    assert p.returncode == 0, p.stderr
    assert "policy-rc.d postfix start -> 101" in host.calls()
    assert host.policy.read_bytes() == before
    assert os.access(host.policy, os.X_OK)
    assert [p.name for p in host.policy.parent.iterdir()] == ["policy-rc.d"]


def test_nothing_missing_means_nothing_run(host):
    (host.root / "scripts" / "system-packages.txt").write_text("util-linux sh\n")
    p = host.run(active=["postfix"])
    assert p.returncode == 0 and p.stderr == ""
    assert host.calls() == []
