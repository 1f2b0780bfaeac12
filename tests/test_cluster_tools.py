"""The cluster's tooling: `cluster init` on an existing table, `history` by key, a drain applied
by the lease holder within a heartbeat or two (not at its next resync).

`cluster init` and `drain` run as the CLI in subprocesses against the strict moto server; the
replicas are real `r53lb run` processes (tests/test_cluster.py's fixture, with a long resync).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import boto3
import pytest

from moto_fixtures.pytest_plugin import FAKE_ENV
from test_cluster import Cluster, Replica, cluster  # noqa: F401 - the fixture
from test_daemon import Daemon, free_port, wait_until

pytestmark = pytest.mark.timeout(120)

T0 = datetime(2026, 12, 4, 12, 0, tzinfo=timezone.utc)


def cli(c: Cluster, *args: str, table: str | None = None) -> subprocess.CompletedProcess[str]:
    config = c.config_for("ops")
    if table is not None:
        text = config.read_text().replace(f"table: {c.doc['cluster']['table']}", f"table: {table}")
        config.write_text(text)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(FAKE_ENV)
    return subprocess.run([sys.executable, "-m", "r53lb", "-c", str(config), *args],
                          capture_output=True, text=True, env=env, timeout=60)


def test_cluster_init_says_what_is_wrong_with_an_existing_table(cluster: Cluster) -> None:  # noqa: F811
    ddb = boto3.client("dynamodb", endpoint_url=cluster.endpoint, region_name="us-east-1")
    ddb.create_table(TableName="other-keys", BillingMode="PAY_PER_REQUEST",
                     AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
                     KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}])
    p = cli(cluster, "cluster", "init", table="other-keys")
    assert p.returncode == 1, (p.stdout, p.stderr)
    assert "other-keys" in p.stderr and "key schema is id HASH S, r53lb needs pk HASH S, sk RANGE S" in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1, p.stderr
    ddb.create_table(TableName="no-ttl", BillingMode="PAY_PER_REQUEST",
                     AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                                           {"AttributeName": "sk", "AttributeType": "S"}],
                     KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}])
    p = cli(cluster, "cluster", "init", table="no-ttl")
    assert p.returncode == 1 and "TTL is disabled" in p.stderr and "`expires`" in p.stderr, p.stderr
    p = cli(cluster, "cluster", "init")  # the fixture's table: created with TTL on, so fine
    assert p.returncode == 0 and "exists already" in p.stdout, p.stderr
    ttl = ddb.describe_time_to_live(TableName=cluster.doc["cluster"]["table"])["TimeToLiveDescription"]
    assert (ttl["TimeToLiveStatus"], ttl["AttributeName"]) == ("ENABLED", "expires")


def start(c: Cluster, name: str, resync: str = "60s", defaults: dict[str, Any] | None = None) -> Replica:
    """A replica whose resync is far away: only the table watch can make it apply a drain soon.
    `defaults`: changed in its config only (another config than the others')."""
    port = free_port()
    log_path = c.tmp / f"{name}.log"
    if defaults:
        doc, c.doc = c.doc, dict(c.doc, defaults=dict(c.doc["defaults"], **defaults))
        c.config_for(name)
        c.doc = doc
        config = c.tmp / f"{name}.yaml"
    else:
        config = c.config_for(name)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "R53LB_TEST_"))}
    env.update(FAKE_ENV, PYTHONUNBUFFERED="1")
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "r53lb", "-c", str(config), "run", "--resync",
                                 resync, "--metrics-addr", f"127.0.0.1:{port}"],
                                stdout=log, stderr=subprocess.STDOUT, text=True, env=env)
    r = Replica(name, Daemon(proc, f"http://127.0.0.1:{port}", log_path))
    c.replicas.append(r)
    return r


def test_the_leader_applies_a_drain_from_any_host_within_seconds(cluster: Cluster) -> None:  # noqa: F811
    for name in ("ctl-a", "ctl-b"):
        start(cluster, name)
    cluster.settled()
    wait_until("the leader's first pass", lambda: set(cluster.weights().values()) == {50}, timeout=20)
    time.sleep(2)  # past the start-up reconciles
    asked = time.monotonic()
    p = cli(cluster, "drain", "mx/hlb-1", "--reason", "disk swap")
    assert p.returncode == 0, p.stderr
    wait_until("the drain in Route 53", lambda: cluster.weights().get("hlb-1") == 0, timeout=20, every=0.1)
    took = time.monotonic() - asked
    assert took < 10, f"{took:.1f}s: not the 60 s resync"  # a heartbeat or two (plus the CLI's own start)
    p = cli(cluster, "history", "--node", "mx/hlb-1", "--json")
    assert p.returncode == 0 and '"disk swap"' in p.stdout, p.stderr
    p = cli(cluster, "history", "--pool", "nope")
    assert p.returncode == 2 and "no pool 'nope'" in p.stderr


def test_a_replica_with_another_config_is_counted_named_once_and_does_not_vote(cluster: Cluster) -> None:  # noqa: F811
    for name in ("ctl-a", "ctl-b"):
        start(cluster, name)
    odd = start(cluster, "ctl-odd", defaults={"rise": 7})  # one setting differs
    cluster.settled()
    leader = cluster.leaders()[0]
    if leader is odd:  # the odd one holds the lease: the other two are the odd ones to it
        wait_until("the mismatch counted", lambda: odd.daemon.sample("r53lb_replicas_config_mismatch") == 2)
        return
    wait_until("the mismatch counted on every replica", lambda: all(
        r.daemon.sample("r53lb_replicas_config_mismatch") == 1 for r in cluster.replicas), timeout=15)
    wait_until("the alert", lambda: "replica ctl-odd runs another config" in leader.daemon.log(), timeout=10)
    time.sleep(2)
    assert leader.daemon.log().count("replica ctl-odd runs another config") == 1  # named once
    assert "ctl-odd runs another config" in odd.daemon.log()  # it knows too


# --- history by key: a Query of the node's own items, not the whole event partition ---------


@pytest.fixture
def table(aws_env: Any) -> Any:
    from moto import mock_aws

    from r53lb.aws.dynamodb import DynamoDB, create_table
    from r53lb.config import AwsConfig

    with mock_aws():
        db = DynamoDB(AwsConfig(region="us-east-1"))
        create_table(db, "r53lb")
        yield db


def test_history_of_a_node_or_a_pool_reads_by_key(table: Any) -> None:
    from r53lb.state.dynamodb import DynamoStore

    s = DynamoStore(table, "r53lb", "ctl-a")
    for i in range(150):
        s.add_event(T0 + timedelta(seconds=i), "mx" if i % 2 else "web", f"n{i % 10}", "health", "up", "down", f"e{i}")
    scanned: list[int] = []
    call = table.call

    def counting(operation: str, **kw: Any) -> Any:
        out = call(operation, **kw)
        if operation == "Query":
            scanned.append(out.get("ScannedCount", 0))
        return out

    table.call = counting
    ev = s.events(limit=50, pool="mx", node="n1")
    assert [e.reason for e in ev] == [f"e{i}" for i in range(1, 150, 10)]  # 15 events, oldest first
    assert sum(scanned) == 15, scanned  # its own items only
    scanned.clear()
    ev = s.events(limit=5, pool="web")
    assert [e.reason for e in ev] == ["e140", "e142", "e144", "e146", "e148"] and sum(scanned) <= 5, scanned
    scanned.clear()
    ev = s.events(limit=3)
    assert [e.reason for e in ev] == ["e147", "e148", "e149"] and sum(scanned) <= 3, scanned


# --- drain --wait in a cluster: Route 53 looked at every few seconds, not every 0.5 s ---------


def test_drain_wait_in_a_cluster_looks_at_route53_every_few_seconds(mock_route53: Any) -> None:
    import textwrap

    from moto_fixtures.spec import build
    from r53lb.aws.dynamodb import DynamoDB, create_table
    from r53lb.aws.route53 import Route53
    from r53lb.config import loads
    from r53lb.core.verify import Tolerance
    from r53lb.engine.cycle import Controller
    from r53lb.engine.maintenance import CLUSTER_POLL, WaitFailed, apply_and_wait
    from r53lb.state.dynamodb import open_store

    client = boto3.client("route53", region_name="us-east-1")
    build(client, {"example.com": {"mx.example.com": {"type": "A", "sets": {
        "a": ("192.0.2.1", 50), "b": ("192.0.2.2", 50)}}}})
    cfg = loads(textwrap.dedent("""
        cluster: {table: r53lb, replica: ops-host}
        pools:
          - name: mx
            zone: example.com
            record: mx.example.com
            checks: [{tcp: {port: 25}}]
            nodes:
              - {id: a, address: 192.0.2.1, weight: 50}
              - {id: b, address: 192.0.2.2, weight: 50}
    """))
    create_table(DynamoDB(cfg.aws, "us-east-1"), "r53lb")
    store = open_store(cfg)
    ctl = Controller(cfg, store, Route53(cfg.aws, attempts=1))
    pool = cfg.pools[0]
    store.drain("mx", "a", "disk swap", T0)
    t = [0.0]
    naps: list[float] = []

    def sleep(s: float) -> None:
        naps.append(s)
        t[0] += s

    reads = mock_route53.counts["ListResourceRecordSets"]
    # No replica runs here: nobody writes, the wait gives up at its deadline, naming the step.
    with pytest.raises(WaitFailed, match="lease holder has not written weight 0 for mx/a"):
        apply_and_wait(ctl, pool, pool.node("a"), drained=True, servers=[], samples=1, tolerance=Tolerance(),
                       timeout=30.0, now=lambda: t[0], sleep=sleep)
    assert naps and all(n == CLUSTER_POLL for n in naps[:-1]) and CLUSTER_POLL >= 3, naps
    looks = mock_route53.counts["ListResourceRecordSets"] - reads
    assert looks <= 30 / CLUSTER_POLL + 2, looks
