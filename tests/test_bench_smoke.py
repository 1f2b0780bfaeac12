"""`make bench-smoke`: the benchmark harness runs end to end at small sizes (numbers are not judged here)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.slow, pytest.mark.timeout(170)]


def test_bench_smoke_runs_every_section(tmp_path: Path) -> None:
    out = tmp_path / "benchmarks.md"
    p = subprocess.run([sys.executable, "-m", "bench", "--smoke", "--out", str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=160)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    text = out.read_text()
    for heading in ("## 1. Probe fan-out", "## 2. Route 53 calls", "## 4. Scale", "## 5. Start-up", "## 6. Daemon cost",
                    "## 7. Several controllers", "## Budgets"):
        assert heading in text
    assert "| NO |" not in text  # every probe of the fan-out answered
    assert "Command: `python -m bench --smoke --out" in text
