"""What a heartbeat carries and how the quorum reads it; the check state's reads and writes.

Against the cluster's real table code on in-process moto (DynamoDB): an unreadable heartbeat
item, replicas with another config, a fleet of 10,000 nodes in an outage, agent checks of
1,000 nodes (counting DynamoDB requests) and two replicas writing their check state.
"""

from __future__ import annotations

import asyncio
import logging
import textwrap
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from r53lb.config import ClusterConfig, loads
from r53lb.core.health import NodeHealth
from r53lb.core.quorum import Opinion, quorum_health, quorum_out
from r53lb.core.signals import NodeSignals, agent_signal, fold_agent
from r53lb.probes.agent import parse_line

pytestmark = pytest.mark.timeout(120)

T0 = datetime(2026, 12, 4, 12, 0, tzinfo=timezone.utc)
KEYS = tuple(("mx", f"n{i}") for i in range(5))


@pytest.fixture
def table(aws_env):
    from moto import mock_aws

    from r53lb.aws.dynamodb import DynamoDB, create_table
    from r53lb.config import AwsConfig

    with mock_aws():
        db = DynamoDB(AwsConfig(region="us-east-1"))
        create_table(db, "r53lb")
        yield db


class Clock:
    """Our monotonic clock, moved on by the test (the lease counts from DynamoDB's send times)."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.t


def store(db: Any, name: str, order: tuple = KEYS, digest: str = "cfg-1") -> Any:
    from r53lb.state.dynamodb import DynamoStore

    s = DynamoStore(db, "r53lb", name)
    s.digest, s.order = digest, order
    return s


def replica(db: Any, name: str, clock: Clock, order: tuple = KEYS, digest: str = "cfg-1", quorum: Any = "majority"):
    from r53lb.engine.cluster import Cluster

    cfg = ClusterConfig(table="r53lb", replica=name, lease=15, heartbeat=1, quorum=quorum)
    return Cluster(cfg, store(db, name, order, digest), monotonic=clock)


def health(*down: str, keys: tuple = KEYS) -> dict[tuple[str, str], NodeHealth]:
    return {k: NodeHealth(k[1] not in down, T0, reason="smtp: refused" if k[1] in down else "") for k in keys}


# --- item 5: one unreadable item makes that replica not vote, never the whole read ----------


def test_an_unreadable_heartbeat_item_never_freezes_the_quorum(table, caplog):
    clock = Clock()
    a, b = replica(table, "ctl-a", clock), replica(table, "ctl-b", clock)
    assert a.beat(health("n1"), True, T0).took
    b.beat(health("n1"), True, T0)
    # ctl-c: an item of another version (or garbage): no `v`, a list where a map was.
    table.call("PutItem", TableName="r53lb", Item={
        "pk": {"S": "live"}, "sk": {"S": "replica#ctl-c"}, "replica": {"S": "ctl-c"}, "seq": {"S": "many"},
        "down": {"S": "{{{not json"}})
    caplog.set_level(logging.WARNING, "r53lb.cluster")
    out = a.beat(health("n1"), True, T0)
    assert out.error is None and out.lost is None and a.is_leader()  # the read did not fail as a whole
    a.beat(health("n1"), True, T0)
    assert sorted(o.replica for o in a.opinions) == ["ctl-a", "ctl-b", "ctl-c"]
    c = next(o for o in a.opinions if o.replica == "ctl-c")
    assert not c.voting and c.down == {}  # counts towards the majority, votes neither way
    a.view = health()  # the quorum view had n1 up
    transitions = a.decide(health("n1"), T0)
    assert [k for k, _ in transitions] == [("mx", "n1")] and not a.view[("mx", "n1")].up
    assert a.votes[("mx", "n1")].down == 2 and a.votes[("mx", "n1")].needed == 2
    told = [r for r in caplog.records if "ctl-c cannot be read" in r.getMessage()]
    assert len(told) == 1, [r.getMessage() for r in caplog.records]  # logged once, not once per beat
    # Its item never moves: after stale_after it no longer counts at all (a dead replica).
    clock.t += 10
    b.beat(health("n1"), True, T0)
    a.beat(health("n1"), True, T0)
    assert sorted(o.replica for o in a.opinions) == ["ctl-a", "ctl-b"]
    assert a.mismatch == []


# --- item 6: config identity ----------------------------------------------------------------

CONFIG = """
cluster: {table: r53lb, replica: %(replica)s, heartbeat: 1s, lease: 15s}
defaults: {interval: %(interval)s}
pools:
  - name: mx
    zone: example.com
    record: mx.example.com
    checks: [{smtp: {port: 25}}]
    nodes:
%(nodes)s
"""


def config(replica: str, nodes: str = "n0 n1 n2 n3 n4", interval: str = "10s", comment: str = "") -> Any:
    ns = "\n".join(f"      - {{id: {n}, address: 192.0.2.{i + 1}, weight: 50}}" for i, n in enumerate(nodes.split()))
    return loads(comment + CONFIG % {"replica": replica, "interval": interval, "nodes": ns})


def test_the_config_digest_is_the_loaded_model_not_the_file():
    from r53lb.state.dynamodb import config_digest

    base = config_digest(config("ctl-a"))
    assert config_digest(config("ctl-b", comment="# another host\n")) == base  # name, comments: same
    assert config_digest(config("ctl-a", interval="10000ms")) == base  # spelling of a duration: same
    assert config_digest(config("ctl-a", interval="5s")) != base
    assert config_digest(config("ctl-a", nodes="n0 n1 n2 n3")) != base


def test_a_replica_with_another_config_does_not_vote_and_is_named_once(table):
    from r53lb.state.dynamodb import config_digest, node_order

    clock = Clock()
    full, short = config("ctl-a"), config("ctl-c", nodes="n0 n1 n2 n3")  # ctl-c lacks n4
    a = replica(table, "ctl-a", clock, node_order(full), config_digest(full))
    b = replica(table, "ctl-b", clock, node_order(full), config_digest(full))
    c = replica(table, "ctl-c", clock, node_order(short), config_digest(short))
    was = health("n4")  # n4 was drained by the quorum; now ctl-b sees it up again, ctl-a does not
    for r in (a, b, c):
        r.beat(health(), True, T0)
    a.beat(was, True, T0)
    a.view = dict(was)
    b.beat(health(), True, T0)
    c.beat(health(keys=node_order(short)), True, T0)  # it does not know n4: before, an "up" vote for it
    a.beat(was, True, T0)
    assert a.is_leader() and a.mismatch == ["ctl-c"]
    a.decide(was, T0)
    assert not a.view[("mx", "n4")].up  # 1 up vote of the 2 needed: ctl-c's does not count
    assert a.votes[("mx", "n4")] .up == 1 and a.votes[("mx", "n4")].voters == 3
    assert a.new_mismatches() == [("ctl-c", config_digest(short))]
    assert a.new_mismatches() == []  # the alert names it once
    assert b.new_mismatches() == []  # a follower does not alert
    b.beat(health(), True, T0)
    assert b.mismatch == ["ctl-c"]  # the metric counts it on every replica
    c.beat(health(keys=node_order(short)), True, T0)
    assert c.mismatch == ["ctl-c"]  # and the replica itself knows it is the odd one


def test_signal_verdicts_that_take_a_node_out_are_quorum_decisions(table):
    clock = Clock()
    a, b, c = (replica(table, n, clock) for n in ("ctl-a", "ctl-b", "ctl-c"))
    down = "agent: down (disk full)"
    a.beat(health(), True, T0, out={})
    for r in (b, c):
        r.beat(health(), True, T0, out={})
    a.beat(health(), True, T0, out={("mx", "n2"): down})  # only ctl-a's agent check says out
    a.beat(health(), True, T0, out={("mx", "n2"): down})
    assert a.is_leader()
    a.decide(health(), T0)
    assert a.out_view[("mx", "n2")] is None  # a quorum sees it in: the writer keeps it in
    own = NodeSignals((agent_signal("agent", fold_agent(None, "fail", parse_line("down#disk full"))),))
    from r53lb.engine.signals import quorum_signals

    assert own.out and quorum_signals(own, a.out_view[("mx", "n2")]).out is None
    b.beat(health(), True, T0, out={("mx", "n2"): down})
    a.beat(health(), True, T0, out={("mx", "n2"): down})
    a.decide(health(), T0)
    assert a.out_view[("mx", "n2")].startswith("2 of 3 replicas: ctl-a: agent: down")
    ok = NodeSignals((agent_signal("agent", fold_agent(None, "ok", parse_line("ready"))),))
    assert quorum_signals(ok, a.out_view[("mx", "n2")]).out == a.out_view[("mx", "n2")]
    assert quorum_signals(ok, False) is ok  # no quorum view (a single controller): its own
    # Without a quorum either way a node keeps its say (one replica starting, one blind).
    keep = quorum_out({("mx", "n2"): "x"}, [Opinion("a", 1, True, {}), Opinion("b", 1, False, {})], "majority")
    assert keep == {("mx", "n2"): "x"}


# --- item 7: a heartbeat is bounded whatever the outage --------------------------------------


def item_size(item: dict[str, Any]) -> int:
    """DynamoDB's item size: attribute names plus values (strings and numbers as text)."""
    return sum(len(k.encode()) + len(str(next(iter(v.values()))).encode()) for k, v in item.items())


def test_a_heartbeat_stays_under_64kb_in_a_big_outage_and_every_vote_counts(table):
    order = tuple(("mx", f"node-{i:05d}") for i in range(10_000))
    down = {k: f"smtp {k[1]}: " + "x" * 200 for k in order[:2_000]}  # 2,000 down, 200-char reasons
    clock = Clock()
    a, b, c = (replica(table, n, clock, order) for n in ("ctl-a", "ctl-b", "ctl-c"))
    every = {k: NodeHealth(k not in down, T0, reason=down.get(k, "")) for k in order}
    half = {k: NodeHealth(k not in down or k in order[1_000:2_000], T0, reason=down.get(k, "")) for k in order}
    size = item_size(a.store._beat_item(Opinion("ctl-a", 1, True, down, "cfg-1", dict(down)), T0, ("ctl-a",)))
    assert size < 64 * 1024, size
    big = tuple(("mx", f"node-{i:06d}") for i in range(100_000))  # the bitmaps grow, the reasons make room
    s = store(table, "ctl-a", big)
    worst = {k: "x" * 200 for k in big[:30_000]}
    size = item_size(s._beat_item(Opinion("ctl-a", 1, True, worst, "cfg-1", dict(worst)), T0, ("ctl-a", "ctl-b")))
    assert size < 64 * 1024, size
    a.beat(every, True, T0)
    b.beat(every, True, T0)
    c.beat(half, True, T0)
    a.beat(every, True, T0)
    assert a.is_leader()
    got = {o.replica: o for o in a.opinions}
    assert set(got["ctl-b"].down) == set(down)  # every node's vote, listed with a reason or not
    assert set(got["ctl-c"].down) == set(order[:1_000])
    carried = [r for r in got["ctl-b"].down.values() if r.startswith("smtp ")]
    assert 0 < len(carried) < 2_000 and all(len(r) <= 40 for r in carried)
    rest = [r for r in got["ctl-b"].down.values() if not r.startswith("smtp ")]
    assert rest and all(r.startswith("down (reason not carried: ") for r in rest)
    # The quorum is right for all of them: every node seen down by 2 of 3 goes down, whether
    # its reason travelled or not; the rest stay up. A summarised node is neither an up vote
    # nor a down vote it was not.
    view, votes, _ = quorum_health({k: NodeHealth(True, T0) for k in order}, a.opinions, "majority", T0)
    assert {k for k, h in view.items() if not h.up} == set(down)
    assert votes[order[1_500]].down == 2 and votes[order[500]].down == 3 and votes[order[5_000]].down == 0
    # And recovery: nodes down in the view that 2 of 3 now see up come back, the others stay down.
    b.beat(half, True, T0)
    a.beat(half, True, T0)
    view, _, _ = quorum_health(view, a.opinions, "majority", T0)
    assert {k for k, h in view.items() if not h.up} == set(order[:1_000])


# --- item 8: check state read once, written per replica --------------------------------------


def closed_port() -> int:
    """A port nobody listens on (the agents of this fleet refuse at once: each check is unknown)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def agent_config(replica: str, n: int, port: int, addr: Any = None) -> Any:
    addr = addr or (lambda i: f"127.0.{10 + i // 250}.{i % 250 + 1}")
    nodes = "\n".join(f"      - {{id: n{i}, address: {addr(i)}, weight: 50}}" for i in range(n))
    return loads(textwrap.dedent(f"""
        cluster: {{table: r53lb, replica: {replica}}}
        defaults: {{interval: 10s, timeout: 1s}}
        pools:
          - name: mx
            zone: example.com
            record: mx.example.com
            checks: [{{tcp: {{port: 25}}}}, {{agent: {{port: {port}, interval: 10s}}}}]
            nodes:
        """) + nodes + "\n")


def test_check_state_is_read_once_not_once_per_node_at_1000_nodes(table):
    from r53lb.engine.cycle import Controller

    cfg = agent_config("ctl-a", 1_000, closed_port())
    s = store(table, "ctl-a")
    ctl = Controller(cfg, s, None)
    pool = cfg.pools[0]
    before = dict(table.request_counts)

    async def each_node(now: datetime) -> None:
        for node in pool.nodes:  # as `run` does: the signals of a node after each of its probes
            await ctl.refresh_verdicts([(pool, node)], now)

    asyncio.run(each_node(T0))
    used = {op: table.request_counts[op] - before.get(op, 0) for op in table.request_counts}
    assert used.get("Query", 0) == 1, used  # one read of this replica's check partition
    assert used.get("PutItem", 0) == 1_000, used  # each new result once
    asyncio.run(each_node(T0 + timedelta(seconds=10)))  # the next round: nothing changed
    used2 = {op: table.request_counts[op] - before.get(op, 0) - used.get(op, 0) for op in table.request_counts}
    assert used2.get("Query", 0) == 0 and used2.get("PutItem", 0) == 0, used2
    ctl.plan({}, T0)  # planning reads the check state from memory as well
    assert table.request_counts["Query"] - before.get("Query", 0) - used.get("Query", 0) == 1  # drains only


def test_two_replicas_keep_their_own_check_state_and_the_leader_records_once(table):
    from r53lb.demo.loopback import AgentServer
    from r53lb.engine.cycle import Controller

    agent = AgentServer("127.0.2.31", 0, "drain").start()
    try:
        cfgs = {n: agent_config(n, 1, agent.port, addr=lambda i: "127.0.2.31") for n in ("ctl-a", "ctl-b")}
        a = Controller(cfgs["ctl-a"], store(table, "ctl-a"), None)
        b = Controller(cfgs["ctl-b"], store(table, "ctl-b"), None)
        a.records, b.records = (lambda: True), (lambda: False)  # ctl-a holds the lease
        pool, node = cfgs["ctl-a"].pools[0], cfgs["ctl-a"].pools[0].nodes[0]
        assert asyncio.run(a.refresh_verdicts([(pool, node)], T0))
        agent.set_line("ready")
        asyncio.run(b.refresh_verdicts([(pool, node)], T0))  # ctl-b saw it ready, in its own state
        agent.set_line("drain")
        # ctl-b's write did not revert ctl-a's drain: a restarted ctl-a reads its own state.
        again = Controller(cfgs["ctl-a"], store(table, "ctl-a"), None)
        state = again.checks_cached()[("mx", "n0", "agent:1")][1]["state"]
        assert state["admin"] == "drain"
        assert not asyncio.run(again.refresh_verdicts([(pool, node)], T0 + timedelta(seconds=10)))  # no change
        events = [e for e in again.store.events() if e.kind == "agent"]
        assert [(e.to_state, e.replica) for e in events] == [("drain", "ctl-a")]  # recorded once
    finally:
        agent.stop()
