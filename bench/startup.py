"""Start-up: `r53lb --help` wall time, beside a bare interpreter's (`python -c pass`)."""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from bench.common import PYTHON, ROOT, median


@dataclass
class Result:
    help_s: float
    python_s: float
    runs: int


def _wall(args: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL, cwd=ROOT)
    return time.perf_counter() - started


def run(runs: int = 10) -> Result:
    r53lb = str(Path(PYTHON).parent / "r53lb")
    _wall([r53lb, "--help"])  # the first run warms the page cache and writes .pyc files
    help_s = median([_wall([r53lb, "--help"]) for _ in range(runs)])
    python_s = median([_wall([PYTHON, "-c", "pass"]) for _ in range(runs)])
    print(f"  start-up: r53lb --help {help_s * 1000:.0f} ms, python -c pass {python_s * 1000:.0f} ms", flush=True)
    return Result(help_s, python_s, runs)
