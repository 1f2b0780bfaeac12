"""The wheel `make wheel` builds: what an operator installs on the controller host (README)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def test_the_wheel_builds_without_a_deprecation_banner_and_installs_the_command(tmp_path: Path) -> None:
    p = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", str(tmp_path), str(ROOT)],
                       capture_output=True, text=True, timeout=280, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "project.license" not in p.stdout + p.stderr and "deprecated" not in (p.stdout + p.stderr).lower()
    [wheel] = tmp_path.glob("r53lb-*-py3-none-any.whl")
    with zipfile.ZipFile(wheel) as z:
        info = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = z.read(info).decode()
        entry_points = z.read(info.replace("METADATA", "entry_points.txt")).decode()
        names = z.namelist()
    assert "License-Expression: Apache-2.0" in metadata.splitlines()
    assert "r53lb = r53lb.cli:main" in entry_points
    assert "r53lb/engine/httpserver.py" in names and "r53lb/cli.py" in names
    assert not [n for n in names if n.startswith("tests/")]
