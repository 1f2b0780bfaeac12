"""`r53lb probe --json` end to end over every scenario: right verdicts, in time, flat memory."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

import hostile
from test_probe_http import CASES as HTTP_CASES
from test_probe_http import _spec as http_spec
from test_probe_smtp import CASES as SMTP_CASES
from test_probe_smtp import _spec as smtp_spec

TIMEOUT = 1.0
R53LB = [sys.executable, "-m", "r53lb"]


@pytest.fixture(scope="module")
def fleets():
    with hostile.smtp_scenarios() as smtp, hostile.http_scenarios() as http:
        yield smtp, http


def _check(spec: Any) -> dict[str, Any]:
    return json.loads(spec.model_dump_json(exclude_defaults=True))


def _config(tmp: Path, fleets, only_ok: bool = False) -> Path:
    (smtp_certs, smtp_suite), (http_certs, http_suite) = fleets
    pools = []
    for name, cases, suite, build, kind in (
        ("mail", SMTP_CASES, smtp_suite, lambda o: smtp_spec(smtp_certs, smtp_suite.port, o), "smtp"),
        ("web", HTTP_CASES, http_suite, lambda o: http_spec(http_certs, http_suite.port, o), "http"),
    ):
        nodes = [
            {"id": case, "address": suite.addresses[server], "checks": [{kind: _check(build(options))}]}
            for case, (server, options, status, _) in cases.items()
            if status == "ok" or not only_ok
        ]
        pools.append({"name": name, "zone": "example.test", "record": f"{name}.example.test", "nodes": nodes})
    cfg = {"defaults": {"timeout": f"{TIMEOUT}s", "helo": "probe.r53lb.test"}, "pools": pools}
    path = tmp / ("healthy.yaml" if only_ok else "all.yaml")
    path.write_text(yaml.safe_dump(cfg))
    return path


def _run_measured(args: list[str]) -> tuple[int, str, float, int]:
    started = time.perf_counter()
    proc = subprocess.Popen(R53LB + args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    out = proc.stdout.read() if proc.stdout else b""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    return proc.returncode, out.decode(), wall, usage.ru_maxrss


@pytest.mark.slow
def test_probe_json_over_every_scenario(tmp_path: Path, fleets) -> None:
    cfg = _config(tmp_path, fleets)
    _, _, startup, _ = _run_measured(["-c", str(cfg), "validate"])  # interpreter and imports
    code, out, wall, rss_all = _run_measured(["-c", str(cfg), "probe", "--json"])
    results = {(r["pool"], r["node"]): r for r in json.loads(out)["results"]}

    assert code == 3  # some checks failed
    for pool, cases in (("mail", SMTP_CASES), ("web", HTTP_CASES)):
        for case, (_, _, status, pattern) in cases.items():
            r = results[(pool, case)]
            assert r["ok"] is (status == "ok"), (case, r["detail"])
            assert re.search(pattern, r["detail"]), (case, r["detail"])
    assert wall <= startup + TIMEOUT + 1.0, f"probe took {wall:.2f}s (start-up {startup:.2f}s)"

    healthy = _config(tmp_path, fleets, only_ok=True)
    code_ok, _, _, rss_ok = _run_measured(["-c", str(healthy), "probe", "--json"])
    assert code_ok == 0
    # Flat memory: the hostile servers (megabytes on offer) cost no more than healthy ones.
    assert rss_all - rss_ok < 20 * 1024, f"{rss_all // 1024} MB vs {rss_ok // 1024} MB"
