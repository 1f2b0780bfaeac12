"""Run a command as an unprivileged user (nobody), the way an operator's account meets a file made by root.

The tests run as root, who may write any file: only another user sees a state file's owner and mode.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys

import pytest

from programs import require

NOBODY = 65534


@functools.cache
def _prefix() -> tuple[str, ...]:
    if os.geteuid() != 0:
        pytest.fail("this test plays an unprivileged operator with setpriv: run it as root (make test does)",
                    pytrace=False)
    prefix = (require("setpriv", "util-linux"), "--reuid=nobody", "--regid=nogroup", "--clear-groups")
    p = subprocess.run([*prefix, sys.executable, "-c", "import r53lb"], capture_output=True, text=True,
                       timeout=60, cwd="/")
    if p.returncode != 0:
        last = (p.stderr.strip().splitlines() or ["?"])[-1]
        pytest.fail(f"user nobody cannot run {sys.executable} with r53lb ({last}); keep the checkout and "
                    f"its .venv readable by others (mode 755 up to /)", pytrace=False)
    return prefix


def as_nobody(cmd: list[str]) -> list[str]:
    """`cmd` prefixed to run as nobody:nogroup with no supplementary groups."""
    return [*_prefix(), *cmd]
