"""The cluster's pure parts (lease arithmetic, quorum), its config and its DynamoDB store (in-process moto)."""

from __future__ import annotations

import socket
import textwrap
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from r53lb.config import ConfigError, loads
from r53lb.core.health import NodeHealth
from r53lb.core.lease import RELEASED, LeaseRecord, held_from, may_take, may_write, observe, takeover_at, write_margin
from r53lb.core.quorum import Opinion, fresh, needed, quorum_health, track

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)
KEYS = [("mx", f"n{i}") for i in range(5)]

# --- lease ---------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    lease=st.floats(3, 60),
    send=st.floats(0, 1e6),  # when (real time) the holder's last renewal left
    land=st.floats(0, 5),  # how long the write took to land
    read_delay=st.floats(0, 5),  # when after landing the follower first read it
    offset_holder=st.floats(-1e6, 1e6),  # each machine's monotonic clock has its own origin ...
    offset_follower=st.floats(-1e6, 1e6),
    skew=st.floats(-2, 2),  # ... and the wall clocks may be seconds apart: never read
)
def test_the_holders_lease_ends_before_anyone_may_take_it(lease, send, land, read_delay, offset_holder,
                                                           offset_follower, skew):
    rec = LeaseRecord("a", 7, "rev-1")
    held = held_from(7, "rev-1", send + offset_holder, lease)
    seen_at = send + land + read_delay  # real time of the follower's first read of rev-1
    obs = observe(None, rec, seen_at + offset_follower)
    # The earliest real time the follower may take it, and the last the holder believes it holds it:
    takes = obs.since - offset_follower + lease
    holds_until = held.deadline - offset_holder
    assert holds_until < takes
    assert not may_take(obs, obs.since + lease * 0.999, lease)
    assert may_take(obs, takeover_at(obs, lease), lease)


def test_renewals_restart_the_followers_clock_and_a_free_lease_is_free():
    a = observe(None, LeaseRecord("a", 1, "r1"), 10.0)
    assert observe(a, LeaseRecord("a", 1, "r1"), 12.0) is a  # same revision: the clock runs on
    b = observe(a, LeaseRecord("a", 1, "r2"), 12.0)
    assert b.since == 12.0 and not may_take(b, 14.9, 3.0) and may_take(b, 15.0, 3.0)
    assert may_take(observe(None, None, 0.0), 0.0, 3.0)
    released = observe(b, LeaseRecord(RELEASED, 1, "r3"), 13.0)  # its holder stopped: free at once
    assert may_take(released, 13.0, 3.0)


def test_the_holder_writes_only_with_time_to_spare():
    held = held_from(3, "r", 100.0, 15.0)
    assert may_write(held, 101.0, 15.0) is None
    assert "lease ends in" in (may_write(held, 100.0 + 15.0 - write_margin(15.0) + 0.1, 15.0) or "")
    assert may_write(None, 0.0, 15.0) == "not the lease holder"
    assert "lease ends in 0.0s" in (may_write(held, 200.0, 15.0) or "")


# --- quorum --------------------------------------------------------------------------------


def up(key=None) -> NodeHealth:
    return NodeHealth(True, T0)


def op(name: str, *down: str, voting: bool = True) -> Opinion:
    return Opinion(name, 1, voting, {("mx", n): "smtp: refused" for n in down})


def test_majority_drains_one_blind_replica_does_not():
    prev = {k: up() for k in KEYS}
    view, votes, tr = quorum_health(prev, [op("a"), op("b", "n1"), op("c", "n1", "n2")], "majority", T0)
    assert not view[("mx", "n1")].up and view[("mx", "n2")].up
    assert [k for k, _ in tr] == [("mx", "n1")]
    assert "2 of 3 replicas see it down" in tr[0][1].reason and "b: smtp: refused" in tr[0][1].reason
    assert votes[("mx", "n2")].down == 1 and votes[("mx", "n2")].needed == 2


def test_restored_on_a_quorum_up_with_slow_start_from_then():
    later = T0 + timedelta(minutes=5)
    prev = {("mx", "n1"): NodeHealth(False, T0)}
    view, _, _ = quorum_health(prev, [op("a"), op("b", "n1"), op("c", "n1")], "majority", later)
    assert not view[("mx", "n1")].up  # only one sees it up
    view, _, tr = quorum_health(prev, [op("a"), op("b"), op("c", "n1")], "majority", later)
    assert view[("mx", "n1")].up and view[("mx", "n1")].recovered_at == later and tr[0][1].up


def test_starting_replicas_count_but_do_not_vote():
    prev = {k: up() for k in KEYS}
    view, _, tr = quorum_health(prev, [op("a", "n1"), op("b", voting=False), op("c", voting=False)], "majority", T0)
    assert view[("mx", "n1")].up and not tr
    view, _, tr = quorum_health(prev, [op("a", "n1")], "majority", T0)  # alone: it decides alone
    assert not view[("mx", "n1")].up


def test_a_fixed_quorum_needs_that_many():
    prev = {k: up() for k in KEYS}
    assert needed(2, 5) == 2 and needed("majority", 4) == 3 and needed("majority", 1) == 1
    view, _, _ = quorum_health(prev, [op("a", "n1")], 2, T0)
    assert view[("mx", "n1")].up


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.sampled_from([k[1] for k in KEYS]), max_size=5), min_size=1, max_size=7),
       st.sets(st.sampled_from([k[1] for k in KEYS])))
def test_a_node_only_flips_when_more_than_half_agree(downs, was_down):
    prev = {k: NodeHealth(k[1] not in was_down, T0) for k in KEYS}
    ops = [op(f"r{i}", *d) for i, d in enumerate(downs)]
    view, votes, tr = quorum_health(prev, ops, "majority", T0)
    for k in KEYS:
        v = votes[k]
        if view[k].up != prev[k].up:
            agree = v.up if view[k].up else v.down
            assert agree * 2 > len(ops)
        # One replica alone never drains a node while at least two others count.
        if len(ops) >= 3 and sum(1 for o in ops if k in o.down) <= 1 and prev[k].up:
            assert view[k].up


def test_freshness_runs_on_our_clock_from_a_moving_sequence():
    beats = track({}, [Opinion("b", 5, True, {})], 100.0)
    beats = track(beats, [Opinion("b", 5, True, {})], 103.0)  # not moved
    assert fresh(beats, 103.0, 2.5) == set()
    beats = track(beats, [Opinion("b", 6, True, {})], 103.5)
    assert fresh(beats, 104.0, 2.5) == {"b"}


# --- config -------------------------------------------------------------------------------

BASE = textwrap.dedent("""
    pools:
      - name: mx
        zone: example.com
        record: mx.example.com
        checks: [{tcp: {port: 25}}]
        nodes: [{id: a, address: 192.0.2.1}]
""")


def test_cluster_config_defaults_and_validation():
    cfg = loads("cluster: {table: r53lb}\n" + BASE)
    c = cfg.cluster
    assert c is not None and c.lease == 15.0 and c.heartbeat == 1.0 and c.quorum == "majority"
    assert c.replica == (socket.gethostname() or "r53lb") and c.backend == "dynamodb"
    assert loads("cluster: {table: r53lb, quorum: 2, lease: 3s, heartbeat: 500ms}\n" + BASE).cluster.quorum == 2
    assert loads(BASE).cluster is None


@pytest.mark.parametrize("cluster,message", [
    ("{table: r53lb, backend: etcd}", "cluster.backend: 'etcd'"),
    ("{table: 'no way'}", "cluster.table: 'no way' is not a DynamoDB table name"),
    ("{table: r53lb, quorum: 0}", "cluster.quorum: 0 is not `majority` nor a number"),
    ("{table: r53lb, quorum: most}", "cluster.quorum: 'most' is not `majority`"),
    ("{table: r53lb, lease: 2s}", "cluster.lease: 2s is shorter than 3 heartbeats (3s)"),
    ("{table: r53lb, heartbeat: 0s}", "cluster.heartbeat: '0s' must be above 0s"),
    ("{table: r53lb, leader: me}", "cluster.leader: unknown key"),
    ("{lease: 15s}", "cluster.table: is required"),
])
def test_bad_cluster_config_is_one_line(cluster, message):
    with pytest.raises(ConfigError) as e:
        loads(f"cluster: {cluster}\n" + BASE)
    assert str(e.value).startswith(message), str(e.value)


def test_cluster_and_state_are_exclusive():
    with pytest.raises(ConfigError, match=r"^cluster: `cluster` and `state` are exclusive"):
        loads("cluster: {table: r53lb}\nstate: {path: /tmp/x.db}\n" + BASE)


# --- the store on DynamoDB (in-process moto) ------------------------------------------------


@pytest.fixture
def table(aws_env):
    from moto import mock_aws

    from r53lb.aws.dynamodb import DynamoDB, create_table
    from r53lb.config import AwsConfig

    with mock_aws():
        db = DynamoDB(AwsConfig(region="us-east-1"))
        assert create_table(db, "r53lb") is True
        assert create_table(db, "r53lb") is False  # idempotent
        ttl = db.call("DescribeTimeToLive", TableName="r53lb")["TimeToLiveDescription"]
        assert ttl["AttributeName"] == "expires"
        yield db


def test_a_drain_on_one_replica_is_seen_by_all(table):
    from r53lb.state.dynamodb import DynamoStore

    a, b = DynamoStore(table, "r53lb", "ctl-a"), DynamoStore(table, "r53lb", "ctl-b")
    a.drain("mx", "n1", "disk full", T0)
    assert b.drains() == {("mx", "n1"): ("disk full", T0)}
    assert b.enable("mx", "n1", T0 + timedelta(seconds=1)) and a.drains() == {}
    assert not a.enable("mx", "n1", T0)
    b.epoch = 4
    b.add_event(T0 + timedelta(seconds=2), "mx", "n1", "weight", "50", "0", "A: down")
    ev = a.events()
    assert [(e.kind, e.replica, e.epoch) for e in ev] == [("drain", "ctl-a", None), ("enable", "ctl-b", None),
                                                          ("weight", "ctl-b", 4)]
    assert [e.kind for e in a.events(limit=1)] == ["weight"]
    assert a.events(node="n2") == []


def test_meta_is_per_replica_and_snapshots_write_nothing(table):
    from r53lb.state.dynamodb import DynamoStore

    a, b = DynamoStore(table, "r53lb", "ctl-a"), DynamoStore(table, "r53lb", "ctl-b")
    a.put_meta("watcher", '{"x": 1}')
    assert DynamoStore(table, "r53lb", "ctl-a").get_meta("watcher") == '{"x": 1}'
    assert b.get_meta("watcher") is None
    snap = a.snapshot()
    snap.drain("mx", "n1", "dry", T0)
    snap.put_check_result("mx", "n1", "dnsbl:0", T0, {"listed_on": []})
    assert a.drains() == {} and a.check_results() == {}
    a.put_check_result("mx", "n1", "dnsbl:0", T0, {"listed_on": ["zen"]})
    # Check state is per replica: each runs its own checks, none overwrites another's.
    assert DynamoStore(table, "r53lb", "ctl-a").check_results() == {("mx", "n1", "dnsbl:0"): (T0, {"listed_on": ["zen"]})}
    b.put_check_result("mx", "n1", "dnsbl:0", T0, {"listed_on": []})
    assert b.check_results() == {("mx", "n1", "dnsbl:0"): (T0, {"listed_on": []})}
    assert a.check_results() == {("mx", "n1", "dnsbl:0"): (T0, {"listed_on": ["zen"]})}


def test_lease_and_heartbeats_through_the_table(table):
    from r53lb.aws.dynamodb import ConditionFailed
    from r53lb.state.dynamodb import DynamoStore

    a, b = DynamoStore(table, "r53lb", "ctl-a"), DynamoStore(table, "r53lb", "ctl-b")
    for s in (a, b):
        s.digest, s.order = "d1", tuple(KEYS)
    assert a.take_lease(None, "r1", T0) == 1
    with pytest.raises(ConditionFailed):
        b.take_lease(None, "x", T0)  # taken meanwhile
    a.heartbeat(Opinion("ctl-a", 1, True, {("mx", "n1"): "refused"}, "d1"), T0, renew=(1, "r1"), rev="r2")
    b.heartbeat(Opinion("ctl-b", 1, False, {}, "d1"), T0)
    lease, beats = b.read_live()
    assert lease == LeaseRecord("ctl-a", 1, "r2")
    assert beats["ctl-a"].opinion.down == {("mx", "n1"): "refused"} and not beats["ctl-b"].opinion.voting
    assert b.take_lease(lease, "r3", T0) == 2  # expired on b's clock: b takes it, epoch 2
    with pytest.raises(ConditionFailed):  # a's renewal is refused: its epoch is old
        a.heartbeat(Opinion("ctl-a", 2, True, {}), T0, renew=(1, "r2"), rev="r4")
    with pytest.raises(ConditionFailed):  # and so is a takeover from a stale read
        a.take_lease(lease, "r5", T0)
    assert b.read_live()[0] == LeaseRecord("ctl-b", 2, "r3")


def test_throttling_is_retried_then_reported(table, monkeypatch):
    from moto_fixtures.dynamodb import dynamodb_controls, install
    from r53lb.aws.dynamodb import DynamoDBError

    install()
    dynamodb_controls.reset()
    dynamodb_controls.throttle("Query", 2)
    table.call("Query", TableName="r53lb", KeyConditionExpression="pk = :p",
               ExpressionAttributeValues={":p": {"S": "live"}})
    assert dynamodb_controls.counts["Query"] == 3
    dynamodb_controls.throttle("Query", 50)
    with pytest.raises(DynamoDBError, match=r"ThrottlingException.*gave up after 5 attempts"):
        table.call("Query", TableName="r53lb", KeyConditionExpression="pk = :p",
                   ExpressionAttributeValues={":p": {"S": "live"}})
    dynamodb_controls.reset()


# --- the window that remains: a stale leader's batch against the new leader's write ---------


def test_a_stale_leaders_batch_fails_when_the_new_leader_changed_the_record(mock_route53, tmp_path):
    """The old leader checked its lease (still valid), then stalled; meanwhile the new leader
    wrote the same record set. Route 53 refuses the old batch (compare-and-swap); on the re-plan
    the guard finds the lease gone and nothing more is written."""
    import boto3

    from moto_fixtures.spec import build, set_weight, weights
    from r53lb.aws.route53 import Route53
    from r53lb.engine.cycle import Controller
    from r53lb.state.sqlite import StateStore

    client = boto3.client("route53", region_name="us-east-1")
    zid = build(client, {"example.com": {"mx.example.com": {"type": "A", "sets": {
        "a": ("192.0.2.1", 50), "b": ("192.0.2.2", 50), "c": ("192.0.2.3", 50)}}}})["example.com"]
    cfg = loads(textwrap.dedent("""
        pools:
          - name: mx
            zone: example.com
            record: mx.example.com
            checks: [{tcp: {port: 25}}]
            nodes:
              - {id: a, address: 192.0.2.1, weight: 50}
              - {id: b, address: 192.0.2.2, weight: 50}
              - {id: c, address: 192.0.2.3, weight: 50}
    """))
    store = StateStore.open(tmp_path / "state.db")
    old = Controller(cfg, store, Route53(cfg.aws, attempts=1))
    view = {("mx", n): NodeHealth(n != "b", T0) for n in "abc"}  # the old leader's (stale) view: b is down
    answers = iter([None, "lease ends in 0.0s, under the 1.0s a write needs"])
    # The new leader's write lands between the old leader's check and its batch.
    mock_route53.before_change(lambda: set_weight(client, zid, "mx.example.com", "A", "b", 20))
    out = old.reconcile_zone("example.com", guard=lambda: next(answers), health=view,
                             comment="r53lb replica=ctl-old epoch=3")
    assert out.conflicts == 1 and out.applied == []
    assert out.held == "lease ends in 0.0s, under the 1.0s a write needs"
    assert weights(client, zid, "mx.example.com", "A") == {"a": 50, "b": 20, "c": 50}  # the new leader's
    # The fixture's, the new leader's and the refused one: the old leader wrote nothing.
    assert mock_route53.counts["ChangeResourceRecordSets"] == 3
    store.close()


# --- lease timing: from the first attempt, on a clock that counts suspend ---------------------


def _replica(table, name: str, lease: float = 3.0):
    from r53lb.config import ClusterConfig
    from r53lb.engine.cluster import Cluster
    from r53lb.state.dynamodb import DynamoStore

    cfg = ClusterConfig.model_validate({"table": "r53lb", "replica": name, "lease": f"{lease:g}s",
                                        "heartbeat": "500ms"})
    return Cluster(cfg, DynamoStore(table, "r53lb", name))


@pytest.fixture
def ddb(table):
    from moto_fixtures.dynamodb import dynamodb_controls, install

    install()
    dynamodb_controls.reset()
    yield dynamodb_controls
    dynamodb_controls.reset()


@pytest.mark.timeout(60)
def test_a_renewal_whose_answers_are_lost_never_leaves_two_writers(table, ddb):
    """The renewal lands at its first attempt; two answers are lost and it is retried. Another
    replica reads the new revision meanwhile and counts a lease from then: the holder must have
    stopped writing before that replica may take over."""
    import threading
    import time

    a, b = _replica(table, "ctl-a"), _replica(table, "ctl-b")
    assert a.beat({}, True, T0).took and a.is_leader()
    b.beat({}, True, T0)
    ddb.lose_answer("TransactWriteItems", 2, delay=0.3)
    renewal = threading.Thread(target=a.beat, args=({}, True, T0))
    renewal.start()
    while renewal.is_alive():  # b beats on, and reads the revision that landed
        b.beat({}, True, T0)
        time.sleep(0.05)
    renewal.join()
    assert ddb.counts["TransactWriteItems"] == 3 and a.is_leader() and a.error is None
    # a renews no more (paused); b takes over once the revision has not moved for a lease on its clock.
    deadline = time.monotonic() + 10
    while not b.is_leader():
        assert time.monotonic() < deadline, "b never took the lease"
        b.beat({}, True, T0)
        time.sleep(0.02)
    assert not a.is_leader() and a.guard() is not None  # never both allowed to write
    assert b.epoch == 2


def test_a_take_whose_answer_is_lost_is_settled_by_reading_the_lease(table, ddb):
    a, b = _replica(table, "ctl-a"), _replica(table, "ctl-b")
    ddb.lose_answer("UpdateItem", 1)  # the take lands; its retry is refused by our own write
    out = a.beat({}, True, T0)
    assert out.took and a.is_leader() and a.epoch == 1
    assert b.beat({}, True, T0).took is False and not b.is_leader()
    # A renewal whose every answer is lost: the read-back finds our revision, the lease is renewed.
    ddb.lose_answer("TransactWriteItems", 5)
    before = a.held.deadline
    out = a.beat({}, True, T0)
    assert out.error is None and a.is_leader() and a.held.deadline > before
    # One that never landed (DynamoDB away): the lease ticks down from the last renewal.
    ddb.fail("TransactWriteItems", 5)
    held = a.held
    out = a.beat({}, True, T0)
    assert out.error and a.held == held


def test_the_lease_runs_on_a_clock_that_counts_suspend(table):
    import time

    from r53lb.engine.cluster import boottime

    a = _replica(table, "ctl-a")
    assert a.monotonic is boottime
    if hasattr(time, "CLOCK_BOOTTIME"):
        assert abs(boottime() - time.clock_gettime(time.CLOCK_BOOTTIME)) < 1.0


def test_a_replica_on_its_way_out_never_takes_the_lease_back(table, ddb):
    """SIGTERM: the release frees the lease; a beat after it (one that was in flight) finds the
    lease free and must not take it: another replica does."""
    a, b = _replica(table, "ctl-a"), _replica(table, "ctl-b")
    assert a.beat({}, True, T0).took
    b.beat({}, True, T0)
    a.release(T0)
    out = a.beat({}, True, T0)
    assert not out.took and not a.is_leader()
    assert b.beat({}, True, T0).took and b.epoch == 2
