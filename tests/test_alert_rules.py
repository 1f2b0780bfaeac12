"""deploy/prometheus/r53lb.rules.yml: the alert rules, checked and unit-tested by Debian's promtool."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml

from programs import require
from r53lb.engine.metrics import Metrics

RULES = Path(__file__).resolve().parent.parent / "deploy" / "prometheus" / "r53lb.rules.yml"
RULE_TESTS = RULES.with_name("r53lb.rules.test.yml")


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([require("promtool", "prometheus"), *args], capture_output=True, text=True, timeout=60,
                          cwd=RULES.parent)


def test_promtool_checks_the_rules() -> None:
    p = promtool("check", "rules", RULES.name)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "SUCCESS" in p.stdout


def test_promtool_unit_tests_of_the_rules_pass() -> None:
    p = promtool("test", "rules", RULE_TESTS.name)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "SUCCESS" in p.stdout


def test_the_rules_use_only_exported_series_and_every_alert_is_tested() -> None:
    rules = [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
    exported = {m.name for m in Metrics(cluster=True).registry.collect()}
    exported |= {n + "_total" for n in exported}  # counters are collected without the suffix
    used = {n for r in rules for n in re.findall(r"\br53lb_\w+", r["expr"])}
    assert used <= exported, used - exported
    tested = {t["alertname"] for case in yaml.safe_load(RULE_TESTS.read_text())["tests"]
              for t in case.get("alert_rule_test", ())}
    assert {r["alert"] for r in rules} <= tested
    for r in rules:
        assert r["labels"]["severity"] in ("critical", "warning"), r["alert"]
        assert r["annotations"]["summary"] and r["annotations"]["description"], r["alert"]
