"""`r53lb demo` end to end in a subprocess (no terminal: plain lines), and the example configs."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from r53lb.cli import main

ROOT = Path(__file__).resolve().parent.parent
R53LB = Path(sys.executable).with_name("r53lb")


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_demo_tells_its_story_and_exits_0(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["HOME"] = str(tmp_path)  # nothing from ~/.aws; the demo brings its own fake credentials
    env["TMPDIR"] = str(tmp_path)
    proc = subprocess.run(
        [str(R53LB), "demo", "--duration", "12s"],
        capture_output=True, text=True, env=env, timeout=80, stdin=subprocess.DEVNULL,
    )
    out = proc.stdout
    assert proc.returncode == 0, f"exit {proc.returncode}\n{out}\n{proc.stderr}"

    # Not a terminal: plain progress lines, no live table.
    assert "\x1b[" not in out
    # A killed balancer goes to 0, with the probe's reason.
    assert re.search(r"smtp-inbound/hlb-2 weight 100 -> 0: down: smtp: .*connection refused", out)
    assert re.search(r"tracking/click-1 weight 50 -> 0: down: http: status 503", out)
    # It comes back through slow start, in steps, to its full weight.
    assert "smtp-inbound/hlb-2 weight 0 -> 10: slow start 10%" in out
    ramp = [int(w) for w in re.findall(r"smtp-inbound/hlb-2 weight \d+ -> (\d+): slow start", out)]
    assert len(ramp) >= 2 and ramp == sorted(ramp)
    assert re.search(r"smtp-inbound/hlb-2 weight \d+ -> 100: healthy", out)
    # The HA pair fails over to the standby, then back to the primary.
    assert re.search(r"mta-ha/primary weight 1 -> 0: down: smtp: ", out)
    assert "mta-ha/standby weight 0 -> 1: active (first healthy node)" in out
    assert "mta-ha/primary weight 0 -> 1: active (preempt: first node healthy again)" in out
    assert "mta-ha/standby weight 1 -> 0: standing by; primary is active" in out
    # A node's own agent drains it, a metric rule quarantines another; both stay healthy and come back.
    assert "smtp-inbound/hlb-3 weight 50 -> 0: agent: drain (postfix queue above 20000)" in out
    assert "injection-api/api-2 weight 50 -> 0: quarantined by metric: deferral 0.08 > 0.05" in out
    assert "smtp-inbound/hlb-3 weight 0 -> 50: healthy" in out and "injection-api/api-2 weight 0 -> 50: healthy" in out
    assert "stand-in for Prometheus's query API" in out
    # The summary, and no write once nothing changes.
    assert re.search(r"demo ok in [\d.]+s: \d+ cycles, \d+ writes", out)
    assert re.search(r"steady\s+-> 0 writes", out)
    # The status page of `r53lb run` showed the fleet while it ran.
    assert re.search(r"status page: http://127\.0\.0\.1:\d+/ \(live while the demo runs", out)
    assert re.search(r"status page +-> http://127\.0\.0\.1:\d+/ \(gone now; r53lb demo --serve keeps it up\)", out)
    # Cleaned up: the temporary directory is gone.
    assert not list(tmp_path.glob("r53lb-demo-*")) and not list(tmp_path.glob("r53lb-certs-*"))


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_demo_serve_keeps_the_status_page_up_until_ctrl_c(tmp_path: Path) -> None:
    import httpx

    from r53lb.demo import FLEET, at_rest

    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["HOME"] = str(tmp_path)
    env["TMPDIR"] = str(tmp_path)
    proc = subprocess.Popen(
        [str(R53LB), "demo", "--duration", "10s", "--serve"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env=env, stdin=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if "serving the demo fleet until Ctrl-C" in line:
                m = re.search(r"(http://127\.0\.0\.1:\d+/)", line)
                assert m, line
                url = m.group(1)
                break
        else:
            pytest.fail(f"the demo ended without serving: exit {proc.wait(5)} {proc.stderr.read() if proc.stderr else ''}")
        doc = httpx.get(f"{url}api/status", timeout=10).json()
        assert [p["name"] for p in doc["pools"]] == [p.name for p in FLEET]
        weights = {(r["pool"], r["node"]): r["weight"] for r in doc["nodes"]}
        assert weights == {(p.name, n.node): w for p in FLEET for n, w in at_rest(p)}
        assert all(r["health"] == "up" and r["probes"] and all(x["ok"] for x in r["probes"]) for r in doc["nodes"])
        # The latest history: the fail-back of the HA pair, newest first.
        assert any(e["kind"] == "weight" and (e["pool"], e["node"], e["to"]) == ("mta-ha", "primary", "1")
                   for e in doc["history"]), doc["history"]
        assert doc["history"] == sorted(doc["history"], key=lambda e: e["at"], reverse=True)
        page = httpx.get(url, timeout=10)
        assert page.status_code == 200 and "smtp-inbound" in page.text and "mta-ha" in page.text
        # The page's /metrics link shows this fleet, not an empty registry.
        from prometheus_client.parser import text_string_to_metric_families

        samples = {(s.name, s.labels.get("pool"), s.labels.get("node")): s.value
                   for fam in text_string_to_metric_families(httpx.get(f"{url}metrics", timeout=10).text)
                   for s in fam.samples}
        assert {(p.name, n.node): samples.get(("r53lb_node_weight", p.name, n.node)) for p in FLEET
                for n, _ in at_rest(p)} == {(p.name, n.node): w for p in FLEET for n, w in at_rest(p)}
        assert all(samples.get(("r53lb_node_up", p.name, n.node)) == 1 for p in FLEET for n, _ in at_rest(p))
        assert samples.get(("r53lb_build_info", None, None)) == 1
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "stopped serving" in out
    assert not list(tmp_path.glob("r53lb-demo-*")) and not list(tmp_path.glob("r53lb-certs-*"))


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_demo_with_three_replicas_survives_the_leaders_death(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["HOME"] = str(tmp_path)
    env["TMPDIR"] = str(tmp_path)
    proc = subprocess.run([str(R53LB), "demo", "--replicas", "3"], capture_output=True, text=True, env=env,
                          timeout=80, stdin=subprocess.DEVNULL)
    out = proc.stdout
    assert proc.returncode == 0, f"exit {proc.returncode}\n{out}\n{proc.stderr}"
    first = re.search(r"== (ctl-\d) holds the lease \(epoch 1\)", out)
    assert first, out
    assert re.search(rf"== kill the leader {first.group(1)} \(SIGKILL\) mid-story", out)
    new = re.search(r"(ctl-\d) holds the lease after ([\d.]+)s \(lease 3s\), epoch 2", out)
    assert new and new.group(1) != first.group(1) and float(new.group(2)) <= 5.0, out
    assert "hlb-3 weight 0 after" in out and "restored after" in out
    batches = re.search(r"demo ok in [\d.]+s: hand-over [\d.]+s; (\d+) change batches.*: (.*)$", out, re.M)
    assert batches, out
    writers = batches.group(2).split(", ")
    assert writers[0] == f"{first.group(1)} epoch 1" and set(writers[1:]) == {f"{new.group(1)} epoch 2"}
    assert not list(tmp_path.glob("r53lb-demo-*"))


@pytest.mark.timeout(60)
def test_demo_cleans_up_on_ctrl_c(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["HOME"] = str(tmp_path)
    env["TMPDIR"] = str(tmp_path)
    proc = subprocess.Popen(
        [str(R53LB), "demo"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        stdin=subprocess.DEVNULL, start_new_session=True,  # SIGINT not ignored, as in a terminal
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # the demo is under way once its first step starts
            if "== kill hlb-2" in line:
                break
        else:
            pytest.fail(f"the demo ended before its first step: {proc.stderr.read() if proc.stderr else ''}")
        assert list(tmp_path.glob("r53lb-demo-*"))
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "interrupted" in err
    assert not list(tmp_path.glob("r53lb-demo-*")) and not list(tmp_path.glob("r53lb-certs-*"))


@pytest.mark.timeout(60)
def test_demo_fails_loudly_when_a_step_does_not_happen(tmp_path: Path) -> None:
    # The balancer is never really killed: the step's deadline passes and the demo says so.
    script = (
        "from r53lb import demo\n"
        "demo.World.set_server = lambda self, pool, node, mode: None\n"
        "demo.Timeline.detect = property(lambda self: 1.0)\n"
        "from r53lb.cli import main\n"
        "main(['demo', '--duration', '10s'])\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["HOME"] = env["TMPDIR"] = str(tmp_path)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                          timeout=50, stdin=subprocess.DEVNULL)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert re.search(r"r53lb: demo failed: smtp-inbound/hlb-2 and tracking/click-1 weight 0: not seen within 1s; "
                     r"Route 53 shows smtp-inbound/hlb-2=100 \(healthy\)", proc.stderr), proc.stderr
    assert "demo ok" not in proc.stdout
    assert not list(tmp_path.glob("r53lb-demo-*"))


def test_demo_refuses_serve_with_replicas() -> None:
    p = subprocess.run([str(R53LB), "demo", "--replicas", "3", "--serve"], capture_output=True, text=True, timeout=30)
    assert p.returncode == 2
    assert p.stderr.strip().splitlines() == [
        "r53lb: demo: --serve shows one controller's status page; it works with --replicas 1 only"]


def test_demo_refuses_a_duration_too_short() -> None:
    result = CliRunner().invoke(main, ["demo", "--duration", "2s"])
    assert result.exit_code == 2
    assert "between 10s and 1h" in result.output


@pytest.mark.parametrize("path", sorted((ROOT / "examples").glob("*.yaml")), ids=lambda p: p.name)
def test_example_configs_validate(path: Path) -> None:
    result = CliRunner().invoke(main, ["-c", str(path), "validate"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("ok: ")
