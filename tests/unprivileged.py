"""Run a command as an unprivileged user (nobody), the way an operator's account meets a file made by root.

The tests run as root, who may write any file: only another user sees a state file's owner and mode.

nobody must not need to read the checkout: it may be a clone in a directory only root can enter
(`/root`, or any 0700 home directory as Debian 12 makes them). So nobody runs r53lb from a
throwaway copy: r53lb and its runtime dependencies (not the test tools), hard-linked (copied
across file systems) into a temporary directory everyone can read, put first on PYTHONPATH of
the base interpreter.
"""

from __future__ import annotations

import atexit
import functools
import os
import re
import shutil
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from programs import require

NOBODY = 65534


def _runtime_distributions(root: str = "r53lb") -> list[metadata.Distribution]:
    """`root` and everything it requires to run (extras left out), each distribution once."""
    seen: dict[str, metadata.Distribution] = {}
    todo = [root]
    while todo:
        name = re.sub(r"[-_.]+", "-", todo.pop()).lower()
        if name in seen:
            continue
        dist = seen[name] = metadata.distribution(name)
        for spec in dist.requires or ():
            req = Requirement(spec)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return list(seen.values())


def _place(src: Path, dst: Path) -> None:
    if dst.exists():  # two distributions may list one file (a namespace package's __init__)
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)  # instant on one file system; the file's own mode (0644) is what nobody meets
    except OSError:
        shutil.copy2(src, dst)


def _build_site(site: Path) -> None:
    import r53lb

    for dist in _runtime_distributions():
        for f in dist.files or ():
            if f.parts[0] == ".." or f.name.startswith("__editable__") or f.suffix == ".pth":
                continue  # console scripts, and the editable install's hooks into the checkout
            src = Path(f.locate())
            if src.is_file():
                _place(src, site / f)
    package = Path(r53lb.__file__).resolve().parent  # an editable install lists none of its modules
    for src in package.rglob("*"):
        if src.is_file() and "__pycache__" not in src.parts:
            _place(src, site / "r53lb" / src.relative_to(package))


@functools.cache
def _prefix() -> tuple[str, ...]:
    if os.geteuid() != 0:
        pytest.fail("this test plays an unprivileged operator with setpriv: run it as root (make test does)",
                    pytrace=False)
    d = Path(tempfile.mkdtemp(prefix="r53lb-nobody-"))
    atexit.register(shutil.rmtree, d, True)
    d.chmod(0o755)
    site = d / "site"
    _build_site(site)
    for p in [site, *site.rglob("*")]:
        if p.is_dir():
            p.chmod(0o755)
    who = (require("setpriv", "util-linux"), "--reuid=nobody", "--regid=nogroup", "--clear-groups", "/usr/bin/env",
           f"PYTHONPATH={site}", "PYTHONNOUSERSITE=1", "PYTHONDONTWRITEBYTECODE=1")
    # The base interpreter of the venv; when nobody cannot reach it (pyenv under /root), the
    # system's of the same version (the compiled modules' ABI is the minor version's).
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    candidates = dict.fromkeys(p for p in (os.path.realpath(sys.executable), getattr(sys, "_base_executable", None),
                                           shutil.which(version, path="/usr/local/bin:/usr/bin:/bin")) if p)
    why = []
    for python in candidates:
        p = subprocess.run([*who, python, "-c", "import r53lb.cli, r53lb.state.sqlite"], capture_output=True,
                           text=True, timeout=60, cwd="/")
        if p.returncode == 0:
            return (*who, python)
        why.append(f"{python}: {(p.stderr.strip().splitlines() or ['?'])[-1]}")
    pytest.fail(f"user nobody can run no {version} with r53lb from {site} ({'; '.join(why)}); install "
                f"Debian's {version} or keep the interpreter readable by others", pytrace=False)


def as_nobody(cmd: list[str]) -> list[str]:
    """`cmd` (a Python command line: `sys.executable` first) run as nobody:nogroup with no
    supplementary groups, by an interpreter and an r53lb that nobody can read."""
    if cmd[0] != sys.executable:
        raise ValueError(f"as_nobody runs Python command lines (sys.executable first), not {cmd[0]!r}")
    return [*_prefix(), *cmd[1:]]
