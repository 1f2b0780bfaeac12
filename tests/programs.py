"""Real programs from Debian's packages (scripts/system-packages.txt): find one, or fail in one line."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


def require(program: str, package: str | None = None) -> str:
    """The program's path; the test fails (never skips) with one line when it is not installed."""
    found = shutil.which(program) or (program if Path(program).is_file() else None)
    if found is None:
        for d in ("/usr/sbin", "/sbin", "/usr/lib/postfix/sbin"):
            if Path(d, program).is_file():
                return str(Path(d, program))
        pytest.fail(
            f"{program} is not installed (Debian package {package or program}; "
            f"scripts/install-system-packages installs it as root, make test runs it)",
            pytrace=False,
        )
    return found
