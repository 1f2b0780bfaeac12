"""Root running `drain` or `sync` on the service's state (User=r53lb) must not take it over.

Files root would leave there (the database, its WAL and shared memory, the lock) are root's,
and the service could no longer write its state: root is told, in one line, whom to run as.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import pytest

from r53lb.state.sqlite import StateError, StateStore
from unprivileged import NOBODY, as_nobody

T0 = datetime(2026, 11, 24, 12, 0, tzinfo=timezone.utc)


@pytest.fixture
def service_dir():
    """/var/lib/r53lb as systemd's StateDirectory= makes it: the service user's, mode 0700."""
    d = Path(tempfile.mkdtemp(prefix="r53lb-owner-"))
    d.chmod(0o755)
    state = d / "state"
    state.mkdir(mode=0o700)
    os.chown(state, NOBODY, NOBODY)
    yield state
    shutil.rmtree(d)


def tree(d: Path) -> dict[str, tuple[int, str]]:
    return {p.name: (p.stat().st_uid, hashlib.sha256(p.read_bytes()).hexdigest()) for p in sorted(d.iterdir())}


def test_root_is_refused_on_the_service_users_state(service_dir: Path) -> None:
    path = service_dir / "state.db"
    code = ("import sys; from datetime import datetime, timezone; from r53lb.state.sqlite import StateStore\n"
            "s = StateStore.open(__import__('pathlib').Path(sys.argv[1]))\n"
            "s.drain('mx', 'hlb-1', 'kernel upgrade', datetime(2026, 11, 24, tzinfo=timezone.utc)); s.close()\n")
    p = subprocess.run(as_nobody([sys.executable, "-c", code, str(path)]), capture_output=True, text=True,
                       timeout=60, cwd="/")
    assert p.returncode == 0, p.stderr
    before = tree(service_dir)
    assert before and all(uid == NOBODY for uid, _ in before.values())

    with pytest.raises(StateError) as e:
        StateStore.open(path, T0)
    assert str(e.value) == (f"state: {path} belongs to nobody; as root r53lb would leave files there that nobody "
                            f"cannot write: run this command as that user (sudo -u nobody r53lb ...)")
    assert tree(service_dir) == before  # nothing of root's left behind

    path.unlink()  # no state yet: the directory's owner decides
    with pytest.raises(StateError, match=r"state: .*/state belongs to nobody; .*sudo -u nobody r53lb"):
        StateStore.open(path, T0)
    assert not path.exists()

    os.chown(service_dir, 0, 0)
    StateStore.open(path, T0).close()  # root's own directory: root's state, as before
