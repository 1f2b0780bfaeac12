"""What the CLI prints and how it exits, through the installed `r53lb` command in a subprocess.

An error is never "no changes"; every output a program would parse parses; waits are bounded.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest
import yaml

from moto_fixtures.spec import build, weights
from r53lb.demo.loopback import SmtpServer

pytestmark = pytest.mark.timeout(120)

R53LB = str(Path(sys.executable).parent / "r53lb")
NO_CREDENTIALS = {"AWS_CONFIG_FILE": "/nonexistent/r53lb-tests/config",
                  "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/r53lb-tests/credentials",
                  "AWS_EC2_METADATA_DISABLED": "true", "AWS_REGION": "us-east-1"}
FAKE_CREDENTIALS = {**NO_CREDENTIALS, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


def run(*args: str, env: dict[str, str] | None = None, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    return subprocess.run([R53LB, *args], capture_output=True, text=True, timeout=timeout,
                          env={**base, **(env if env is not None else FAKE_CREDENTIALS)})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(path: Path, endpoint: str, nodes: dict[str, str], port: int, **pool: object) -> Path:
    path.write_text(yaml.safe_dump({
        "aws": {"endpoint_url": endpoint, "region": "us-east-1"},
        "state": {"path": str(path.parent / "state.db")},
        "defaults": {"timeout": "1s", "fastinter": "50ms", "rise": 1, "fall": 1, "helo": "probe.r53lb.test"},
        "pools": [{"name": "mx", "zone": "example.com", "record": "mx.example.com",
                   "checks": [{"smtp": {"port": port}}],
                   "nodes": [{"id": k, "address": v, "weight": 50} for k, v in nodes.items()], **pool}],
    }))
    return path


class BlackHole:
    """A loopback port whose accept queue is full: a connect is never answered (a dropped SYN)."""

    def __init__(self) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(0)
        self.port = self.listener.getsockname()[1]
        self.fill = []
        for _ in range(4):
            c = socket.socket()
            c.setblocking(False)
            c.connect_ex(("127.0.0.1", self.port))
            self.fill.append(c)

    def close(self) -> None:
        for c in [*self.fill, self.listener]:
            c.close()


@pytest.fixture
def black_hole():
    hole = BlackHole()
    yield f"http://127.0.0.1:{hole.port}"
    hole.close()


@pytest.fixture
def closed_port():
    return f"http://127.0.0.1:{free_port()}"


MX = {"hlb-1": "127.0.0.61", "hlb-2": "127.0.0.62", "hlb-3": "127.0.0.63"}


@pytest.fixture
def fleet(tmp_path, moto_server):
    """A pool of three live SMTP nodes at weight 50 in a strict moto server."""
    port = free_port()
    client = boto3.client("route53", endpoint_url=moto_server.endpoint_url, region_name="us-east-1")
    zones = build(client, {"example.com": {
        "mx.example.com": {"type": "A", "sets": {k: (v, 50) for k, v in MX.items()}}}})
    servers = {k: SmtpServer(v, port).start() for k, v in MX.items()}
    cfg = write_config(tmp_path / "r53lb.yaml", moto_server.endpoint_url, MX, port)
    yield type("Fleet", (), {"config": str(cfg), "servers": servers, "client": client,
                             "zone_id": zones["example.com"], "dir": tmp_path})
    for s in servers.values():
        s.stop()


# --- 1. no false all-clear ----------------------------------------------------------------


@pytest.mark.parametrize("where", ["closed_port", "no_credentials"])
@pytest.mark.parametrize("args", [("plan",), ("plan", "--detailed-exitcode", "--json"), ("sync",)])
def test_route53_unreadable_is_an_error_never_no_changes(tmp_path, closed_port, where, args):
    cfg = write_config(tmp_path / "r53lb.yaml", closed_port, {"a": "127.0.0.1"}, free_port())
    env = FAKE_CREDENTIALS if where == "closed_port" else NO_CREDENTIALS
    p = run("-c", str(cfg), *args, env=env)
    assert p.returncode == 1, (p.stdout, p.stderr)
    assert "no changes" not in p.stdout + p.stderr
    if args[0] == "plan":
        assert p.stdout == ""  # no plan it did not establish
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr  # one line, not a log line and then the same error again
    assert lines[0].startswith("r53lb: ") and "zone example.com" in lines[0]
    assert ("no AWS credentials" if where == "no_credentials" else "Could not connect") in lines[0]


def test_plan_detailed_exitcode_follows_terraform_for_an_invalid_config(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("pools: [{name: mx, zone: example.com, record: mx.example.com, nodes: [{id: a, address: "
                   "127.0.0.1, weight: 300}]}]\n")
    p = run("-c", str(bad), "plan", "--detailed-exitcode")
    assert p.returncode == 1 and "weight: 300 is above 255" in p.stderr  # 2 would read "changes pending"
    p = run("-c", str(bad), "plan")
    assert p.returncode == 2 and "weight: 300 is above 255" in p.stderr


def test_status_that_cannot_read_route53_fails_within_seconds(tmp_path, black_hole):
    cfg = write_config(tmp_path / "r53lb.yaml", black_hole, {"a": "127.0.0.1"}, free_port())
    started = time.monotonic()
    p = run("-c", str(cfg), "status")
    took = time.monotonic() - started
    assert p.returncode == 1, p.stderr
    assert p.stdout == "" and "Connect timeout" in p.stderr
    assert took < 20, took  # two 3 s connect timeouts and a backoff, not 81 s of a cron job's retries


def test_plan_with_changes_and_without(fleet):
    p = run("-c", fleet.config, "plan", "--detailed-exitcode")
    assert p.returncode == 0 and "no changes" in p.stdout, p.stderr
    fleet.servers["hlb-1"].set_mode("refuse")
    p = run("-c", fleet.config, "plan", "--detailed-exitcode")
    assert p.returncode == 2 and "hlb-1" in p.stdout, p.stderr


# --- 2. --log-format json: every line on either stream one JSON object ----------------------


def json_lines(text: str) -> list[dict]:
    out = []
    for line in text.splitlines():
        doc = json.loads(line)  # raises on a table, a plain "r53lb: ..." line, an indented document
        assert isinstance(doc, dict), line
        out.append(doc)
    return out


def test_json_logs_carry_the_event_fields_and_nothing_else(fleet):
    fleet.servers["hlb-2"].set_mode("refuse")
    p = run("--log-format", "json", "-c", fleet.config, "sync")
    assert p.returncode == 0, p.stderr
    [doc] = json_lines(p.stdout)  # the result, one object on one line
    assert [c["node"] for c in doc["changes"]] == ["hlb-2"]
    logs = json_lines(p.stderr)
    [weight] = [d for d in logs if d.get("event") == "weight"]
    assert weight["pool"] == "mx" and weight["node"] == "hlb-2" and weight["zone"] == "example.com"
    assert weight["from_weight"] == 50 and weight["to_weight"] == 0 and "refused" in weight["reason"]
    [health] = [d for d in logs if d.get("event") == "health"]
    assert (health["node"], health["from"], health["to"]) == ("hlb-2", "up", "down")
    assert all("." in d["ts"].split("T")[1] for d in logs)  # sub-second timestamps
    for args in (("status",), ("history",), ("validate",), ("probe",), ("plan",),
                 ("drain", "mx/hlb-3", "--reason", "disk swap")):
        p = run("--log-format", "json", "-c", fleet.config, *args)
        assert p.returncode in (0, 3), (args, p.stderr)
        assert json_lines(p.stdout) and not p.stderr or json_lines(p.stderr), args


def test_json_logs_an_error_is_one_object_with_its_class(tmp_path, closed_port):
    cfg = write_config(tmp_path / "r53lb.yaml", closed_port, {"a": "127.0.0.1"}, free_port())
    p = run("--log-format", "json", "-c", str(cfg), "sync", env=NO_CREDENTIALS)
    assert p.returncode == 1
    [err] = json_lines(p.stderr)  # once, not a log line and the same error again
    assert err["level"] == "error" and err["error_class"] == "NoCredentials" and "no AWS credentials" in err["msg"]
    assert p.stdout == "" or json_lines(p.stdout)


# --- 3. off a terminal: plain columns, never cut to 80 ------------------------------------


def test_tables_off_a_terminal_are_plain_columns_never_cut(fleet):
    fleet.servers["hlb-1"].set_mode("refuse")
    reason = "a reason long enough to pass the eighty columns of a terminal that is not there at all"
    assert run("-c", fleet.config, "drain", "mx/hlb-2", "--reason", reason).returncode == 0
    outputs = [run("-c", fleet.config, "sync")]
    outputs += [run("-c", fleet.config, *args) for args in (("status",), ("history",), ("probe",))]
    for p in outputs:
        assert p.returncode in (0, 3), p.stderr
        assert not any(ch in p.stdout for ch in "┏┃│─…━"), p.stdout  # no box, no ellipsis
        header = next(line for line in p.stdout.splitlines() if not line.startswith("#"))
        assert header.split()[:2] in (["pool", "node"], ["time", "(UTC)"]), p.stdout
    assert all(reason in p.stdout for p in outputs[:3]), [p.stdout for p in outputs]
    assert max(len(line) for line in outputs[1].stdout.splitlines()) > 100  # one row, not wrapped at 80


# --- 5. drain of the last healthy node --------------------------------------------------


def test_drain_of_the_last_healthy_node_asks_for_force(fleet):
    fleet.servers["hlb-1"].set_mode("refuse")
    p = run("-c", fleet.config, "sync")
    assert p.returncode == 0 and weights(fleet.client, fleet.zone_id, "mx.example.com", "A")["hlb-1"] == 0, p.stderr
    assert run("-c", fleet.config, "drain", "mx/hlb-2", "--reason", "disk swap").returncode == 0
    p = run("-c", fleet.config, "drain", "mx/hlb-3", "--reason", "kernel")
    assert p.returncode == 1
    assert p.stderr.strip().splitlines() == [
        "r53lb: mx/hlb-3 is the last healthy node of pool mx (hlb-1 is down, hlb-2 drained): drained, the pool "
        "has no healthy node and fails open, handing mail to hlb-1 again; nothing recorded (--force drains it "
        "anyway)"]
    p = run("-c", fleet.config, "history", "--json", "--node", "mx/hlb-3")
    assert [e["kind"] for e in json.loads(p.stdout)["events"]] == []  # nothing recorded
    p = run("-c", fleet.config, "drain", "mx/hlb-3", "--reason", "kernel", "--force")
    assert p.returncode == 0 and "warning: mx/hlb-3 is the last healthy node" in p.stderr
    assert "mx/hlb-3 drained: kernel" in p.stdout
    # A node that is down itself, or a pool with another healthy node, drains without a word.
    assert run("-c", fleet.config, "enable", "mx/hlb-3").returncode == 0
    p = run("-c", fleet.config, "drain", "mx/hlb-1", "--reason", "dead anyway")
    assert p.returncode == 0 and p.stderr == ""


# --- 6. validate: every error, its key path and YAML line, in plain words --------------------

BAD = """\
aws: {region: useast1}
defaults:
  intervall: 10s
  timeout: 1m30s
  fastinter: 1m30
pools:
  - name: mx
    zone: example.com
    record: mx.example.com
    checks: [{tcp: {port: 25}}]
    nodes:
      - {id: a, address: 192.0.2.1, wieght: 5}
      - {id: b, address: 192.0.2.2, weight: 300}
"""


def test_validate_names_every_error_with_its_line_and_a_suggestion(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(BAD)
    p = run("-c", str(cfg), "validate")
    assert p.returncode == 2
    assert p.stderr.splitlines() == [
        f"r53lb: {cfg}:1: aws.region: 'useast1' is not an AWS region name (like us-east-1)",
        f"r53lb: {cfg}:3: defaults.intervall: unknown key (did you mean interval?)",
        f"r53lb: {cfg}:5: defaults.fastinter: '1m30' is not a duration (use 250ms, 10s, 5m, 1m30s, 1h, 30d)",
        f"r53lb: {cfg}:12: pools[0].nodes[0].wieght: unknown key (did you mean weight?)",
        f"r53lb: {cfg}:13: pools[0].nodes[1].weight: 300 is above 255",
    ], p.stderr
    assert "should" not in p.stderr and "pattern" not in p.stderr  # no pydantic phrasing
    cfg.write_text(BAD.replace("useast1", "us-east-1").replace("intervall", "interval").replace(
        "fastinter: 1m30", "fastinter: 1.5s").replace("wieght: 5", "weight: 5").replace("300", "30"))
    p = run("-c", str(cfg), "validate")
    assert p.returncode == 0 and p.stdout == "ok: 1 pool(s), 2 node(s)\n", p.stderr  # 1m30s is a duration


def test_validate_checks_cluster_timing_prometheus_files_and_secrets(tmp_path):
    def validate(extra: dict, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        doc = {"pools": [{"name": "mx", "zone": "example.com", "record": "mx.example.com",
                          "checks": [{"tcp": {"port": 25}}], "nodes": [{"id": "a", "address": "192.0.2.1"}]}],
               "defaults": {"helo": "probe.example.com"}, **extra}
        cfg = tmp_path / "c.yaml"
        cfg.write_text(yaml.safe_dump(doc))
        return run("-c", str(cfg), "validate", env={**FAKE_CREDENTIALS, **(env or {})})

    cluster = {"table": "r53lb", "region": "us-east-1", "heartbeat": "1s", "lease": "15s"}
    p = validate({"cluster": {**cluster, "region": "eu-west"}})
    assert p.returncode == 2 and "cluster.region: 'eu-west' is not an AWS region name (like us-east-1)" in p.stderr
    p = validate({"cluster": {**cluster, "heartbeat": 1e-7}})
    assert p.returncode == 2 and "cluster.heartbeat: 1e-07s is below 100ms" in p.stderr, p.stderr
    p = validate({"cluster": {**cluster, "heartbeat": "10s", "lease": "15s"}})
    assert p.returncode == 2 and "cluster.lease: 15s is shorter than 3 heartbeats (30s)" in p.stderr, p.stderr
    p = validate({"cluster": {**cluster, "quorum": 99}})
    assert p.returncode == 0 and "r53lb: warning: cluster.quorum: 99 replicas must agree" in p.stderr, p.stderr
    prom = {"url": "http://127.0.0.1:9090", "query": "up", "ca_file": str(tmp_path / "nope.pem")}
    p = validate({"pools": [{"name": "mx", "zone": "example.com", "record": "mx.example.com",
                             "checks": [{"tcp": {"port": 25}}, {"prometheus": prom}],
                             "nodes": [{"id": "a", "address": "192.0.2.1"}]}]})
    assert p.returncode == 2 and f"prometheus.ca_file: '{tmp_path}/nope.pem' is not a file" in p.stderr, p.stderr
    hook = {"notify": {"webhooks": [{"url_env": "R53LB_HOOK_URL", "headers_env": {"Authorization": "R53LB_TOKEN"}}]}}
    p = validate(hook)
    assert p.returncode == 0 and "environment variable R53LB_HOOK_URL is not set here" in p.stderr, p.stderr
    p = validate(hook, env={"R53LB_HOOK_URL": "https://hooks.example.com/x", "R53LB_TOKEN": "t"})
    assert p.returncode == 0 and p.stderr == "", p.stderr
    p = validate({"notify": {"webhooks": [{"url": "https://hooks.example.com/x", "url_env": "X"}]}})
    assert p.returncode == 2 and "give url or url_env" in p.stderr


def test_a_token_in_the_prometheus_url_is_never_shown(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({
        "defaults": {"helo": "probe.example.com", "timeout": "1s"},
        "pools": [{"name": "mx", "zone": "example.com", "record": "mx.example.com",
                   "checks": [{"prometheus": {"url": f"http://127.0.0.1:{free_port()}/?token=sekrit", "query": "up"}}],
                   "nodes": [{"id": "a", "address": "192.0.2.1"}]}]}))
    p = run("-c", str(cfg), "probe", "--json")
    [r] = json.loads(p.stdout)["results"]
    assert r["check"] == "prometheus" and "?…" in r["detail"], r
    assert "sekrit" not in p.stdout + p.stderr


# --- 7. CLI habits ------------------------------------------------------------------------


def test_global_options_after_the_subcommand_and_completion(fleet, tmp_path):
    p = run("validate", "-c", fleet.config)
    assert p.returncode == 0 and p.stdout.startswith("ok: 1 pool(s)"), p.stderr
    p = run("history", "--json", "-c", fleet.config, "--log-format", "json", "-v")
    assert p.returncode == 0 and json_lines(p.stdout), p.stderr
    env = {**FAKE_CREDENTIALS, "_R53LB_COMPLETE": "bash_complete", "COMP_WORDS": f"r53lb drain -c {fleet.config} mx/h",
           "COMP_CWORD": "4"}
    p = run(env=env)
    assert p.stdout.split() == ["plain,mx/hlb-1", "plain,mx/hlb-2", "plain,mx/hlb-3"], p.stdout + p.stderr
    assert "http://HOST:PORT/" in run("run", "--help").stdout  # where the status page is


def test_history_newest_first_weights_as_numbers_and_a_created_record(fleet):
    fleet.servers["hlb-1"].set_mode("refuse")
    assert run("-c", fleet.config, "sync").returncode == 0
    fleet.servers["hlb-1"].set_mode("ok")
    assert run("-c", fleet.config, "sync").returncode == 0
    table = [line for line in run("-c", fleet.config, "history").stdout.splitlines() if "mx/hlb-1" in line]
    assert [line.split()[3] for line in table] == ["weight", "health", "weight", "health"], table  # newest first
    events = json.loads(run("-c", fleet.config, "history", "--json").stdout)["events"]
    weight = [e for e in events if e["kind"] == "weight"]
    assert [(e["from_weight"], e["to_weight"]) for e in weight] == [(50, 0), (0, 50)]  # in the order they happened
    # A record set created by --create-missing logs "(none)", never "None".
    fleet.client.change_resource_record_sets(HostedZoneId=fleet.zone_id, ChangeBatch={"Changes": [{
        "Action": "DELETE", "ResourceRecordSet": next(
            r for r in fleet.client.list_resource_record_sets(HostedZoneId=fleet.zone_id)["ResourceRecordSets"]
            if r.get("SetIdentifier") == "hlb-3")}]})
    p = run("-c", fleet.config, "sync", "--create-missing")
    assert p.returncode == 0, p.stderr
    assert "mx/hlb-3 A weight (none) -> 50" in p.stderr and "None" not in p.stderr


def test_a_reason_names_its_check_once(tmp_path):
    port = free_port()
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({
        "aws": {"endpoint_url": f"http://127.0.0.1:{free_port()}"},
        "defaults": {"helo": "probe.example.com", "timeout": "1s"},
        "pools": [{"name": "mx", "zone": "example.com", "record": "mx.example.com",
                   "checks": [{"tcp": {"port": port}}], "nodes": [{"id": "a", "address": "127.0.0.1"}]}]}))
    p = run("-c", str(cfg), "probe", "--json")
    [r] = json.loads(p.stdout)["results"]
    assert r["detail"] == f"connect to port {port}: connection refused"  # shown after "tcp: " in reasons


def test_a_rebuilt_state_file_is_said_once(fleet):
    assert run("-c", fleet.config, "sync").returncode == 0
    (fleet.dir / "state.db").write_bytes(b"\x00garbage" * 1000)
    p = run("--log-format", "json", "-c", fleet.config, "sync")
    assert p.returncode == 0, p.stderr
    said = [d for d in json_lines(p.stderr) if "unreadable" in d["msg"]]
    assert len(said) == 1 and said[0]["event"] == "state_rebuilt" and said[0]["level"] == "warning", said


def test_json_logs_a_usage_error_is_json_too(tmp_path):
    p = run("--log-format", "json", "status", "--bogus")
    assert p.returncode == 2 and p.stdout == ""
    [err] = json_lines(p.stderr)
    assert err["level"] == "error" and "No such option '--bogus'" in err["msg"]


def test_a_hold_is_said_once_by_sync(fleet):
    for s in fleet.servers.values():
        s.set_mode("refuse")
    p = run("-c", fleet.config, "sync")
    assert p.returncode == 3
    said = [line for line in p.stderr.splitlines() if "hold" in line]
    assert said == [line for line in said if line.startswith("r53lb: hold: ")] and len(said) == 1, p.stderr
