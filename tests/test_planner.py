"""The planner's modes and safety rules, as examples and as hypothesis properties."""

from datetime import datetime, timedelta, timezone

from hypothesis import given, settings, strategies as st

from r53lb.config import Pool
from r53lb.core.health import NodeHealth
from r53lb.core.planner import NodeFacts, plan_pool, vantage_hold
from r53lb.core.records import RecordSet
from r53lb.core.reputation import CLEAN, Reputation
from r53lb.core.signals import NO_SIGNALS, MetricVerdict, NodeSignals, agent_signal, fold_agent, fold_metric, metric_signal
from r53lb.core.weights import WarmupClock
from r53lb.probes.agent import parse_line

T0 = datetime(2026, 11, 24, 12, 0, tzinfo=timezone.utc)


def make_pool(n=4, **kw):
    nodes = [{"id": f"n{i}", "address": f"192.0.2.{10 + i}", "weight": 50} for i in range(n)]
    return Pool.model_validate({"name": "p", "zone": "example.com", "record": "mx.example.com",
                                "checks": [{"tcp": {"port": 25}}], "nodes": nodes, **kw})


def rec(node, weight, value=None):
    return RecordSet("mx.example.com", "A", node.id, weight, 60, (value or node.address[0],))


def facts(pool, up, weights=None, **kw):
    weights = weights or [n.weight for n in pool.nodes]
    out = []
    for node, u, w in zip(pool.nodes, up, weights):
        h = NodeHealth(up=u, since=T0 - timedelta(hours=1), reason="" if u else "no greeting within 10s")
        out.append(NodeFacts(node=node, health=h, records={"A": rec(node, w)}, **kw.get(node.id, {})))
    return out


def weights_after(plan, pool, current):
    w = dict(zip([n.id for n in pool.nodes], current))
    for c in plan.changes:
        w[c.node] = c.to_weight
    return w


def test_steady_state_makes_no_change():
    pool = make_pool()
    assert plan_pool(pool, "Z1", facts(pool, [True] * 4), T0).changes == []


def test_dead_node_goes_to_zero_with_reason():
    pool = make_pool()
    plan = plan_pool(pool, "Z1", facts(pool, [True, False, True, True]), T0)
    [c] = plan.changes
    assert (c.node, c.from_weight, c.to_weight) == ("n1", 50, 0)
    assert c.reason == "down: no greeting within 10s"
    assert c.record_change.current.weight == 50  # the exact current set, for the CAS DELETE


def test_all_dead_fails_open_to_base_weights():
    pool = make_pool()
    plan = plan_pool(pool, "Z1", facts(pool, [False] * 4, [0, 0, 50, 10]), T0)
    assert plan.fail_open and "failing open" in plan.alerts[0]
    assert weights_after(plan, pool, [0, 0, 50, 10]) == {"n0": 50, "n1": 50, "n2": 50, "n3": 50}


def test_floor_keeps_min_in_service_and_says_panic():
    pool = make_pool(min_in_service=3, max_drain_per_cycle=4)
    plan = plan_pool(pool, "Z1", facts(pool, [True, False, False, False]), T0)
    after = weights_after(plan, pool, [50] * 4)
    assert sum(1 for w in after.values() if w > 0) == 3
    assert plan.panic and any("panic" in a for a in plan.alerts)


def test_blast_radius_limits_new_drains_per_cycle():
    pool = make_pool(n=6, max_drain_per_cycle=1)
    plan = plan_pool(pool, "Z1", facts(pool, [True, False, False, False, True, True]), T0)
    assert [c.node for c in plan.changes] == ["n1"]
    assert "drain deferred" in plan.decisions["n2"].reason


def test_manual_drain_and_quarantine():
    pool = make_pool()
    f = facts(pool, [True] * 4, n1={"drained": "kernel upgrade"},
              n2={"reputation": Reputation(("zen.spamhaus.org",), "listed on zen.spamhaus.org (127.0.0.2)")})
    plan = plan_pool(pool, "Z1", f, T0)
    assert {c.node: (c.to_weight, c.reason) for c in plan.changes} == {
        "n1": (0, "drained: kernel upgrade"),
        "n2": (0, "quarantined: listed on zen.spamhaus.org (127.0.0.2)"),
    }


def test_listed_on_n_needs_agreement():
    pool = make_pool(quarantine="listed_on_n: 2")
    f = facts(pool, [True] * 4, n1={"reputation": Reputation(("a.example",)), "quarantine_n": 2})
    assert plan_pool(pool, "Z1", f, T0).changes == []


def test_slow_start_after_recovery():
    pool = make_pool(slow_start="100s")
    f = facts(pool, [True] * 4, [50, 0, 50, 50])
    f[1] = NodeFacts(node=f[1].node, health=NodeHealth(True, T0, recovered_at=T0), records=f[1].records)
    assert plan_pool(pool, "Z1", f, T0).changes[0].to_weight == 5
    assert plan_pool(pool, "Z1", f, T0 + timedelta(seconds=50)).changes[0].to_weight == 28
    assert plan_pool(pool, "Z1", f, T0 + timedelta(seconds=100)).changes[0].to_weight == 50


def test_drift_is_an_error_and_not_written():
    pool = make_pool()
    f = facts(pool, [True, False, True, True])
    f[1] = NodeFacts(node=f[1].node, health=f[1].health, records={"A": rec(f[1].node, 50, "198.51.100.9")})
    plan = plan_pool(pool, "Z1", f, T0)
    assert plan.changes == []
    assert "drift: Route 53 holds 198.51.100.9, config says 192.0.2.11; not written" in plan.errors[0]


def test_missing_set_is_error_unless_create_missing():
    pool = make_pool(n=2)
    f = facts(pool, [True, True])
    f[1] = NodeFacts(node=f[1].node, health=f[1].health, records={"A": None})
    assert "record set missing" in plan_pool(pool, "Z1", f, T0).errors[0]
    [c] = plan_pool(pool, "Z1", f, T0, create_missing=True).changes
    assert c.from_weight is None and c.to_weight == 50 and c.record_change.values == ("192.0.2.11",)


def test_failover_swaps_and_fails_back_after_preempt_delay():
    pool = make_pool(n=2, mode="failover", preempt_delay="5m")
    # primary dies: standby takes over
    plan = plan_pool(pool, "Z1", facts(pool, [False, True], [50, 0]), T0)
    assert weights_after(plan, pool, [50, 0]) == {"n0": 0, "n1": 50}
    # primary back for 1 minute: stays on standby
    f = facts(pool, [True, True], [0, 50])
    f[0] = NodeFacts(node=f[0].node, health=NodeHealth(True, T0 - timedelta(minutes=1)), records=f[0].records)
    plan = plan_pool(pool, "Z1", f, T0)
    assert plan.changes == [] and plan.active == "n1"
    # after 5 minutes: fail back
    plan = plan_pool(pool, "Z1", f, T0 + timedelta(minutes=5))
    assert weights_after(plan, pool, [0, 50]) == {"n0": 50, "n1": 0}


def test_failover_without_preempt_stays():
    pool = make_pool(n=2, mode="failover", preempt=False)
    plan = plan_pool(pool, "Z1", facts(pool, [True, True], [0, 50]), T0)
    assert plan.changes == [] and plan.active == "n1"


def test_vantage_hold():
    assert vantage_hold({("p", "a"): False, ("p", "b"): False}) is not None
    assert vantage_hold({("p", "a"): False}) is None  # one node is not enough to blame the network
    assert vantage_hold({("p", "a"): False, ("p", "b"): True}) is None
    assert "canary" in vantage_hold({("p", "a"): True}, ["canary-0 tcp: refused"])


# --- properties -----------------------------------------------------------------------------

# What a node's agent last said (None: no agent) and its metric rule's verdict (None: no rule).
AGENT_LINES = [None, None, "50%", "1%", "drain", "0%", "down#disk full", "maint", "ready 75%"]
METRICS = [None, None, MetricVerdict("ok", 0.01, None, "deferral 0.01"),
           MetricVerdict("ok", 10500, 0.55, "queue 10500 -> 55%"), MetricVerdict("ok", 30000, 0.0, "queue 30000 -> 0%"),
           MetricVerdict("fail", 0.083, None, "deferral 0.083 > 0.05")]

node_states = st.lists(
    st.tuples(st.booleans(), st.integers(0, 255), st.sampled_from([None, None, None, "maint"]),
              st.booleans(), st.integers(0, 255), st.sampled_from(AGENT_LINES), st.sampled_from(METRICS)),
    min_size=1, max_size=8,
)


def signals_of(line, metric):
    out = []
    if line is not None:
        state = fold_agent(None, "fail" if line.startswith(("down", "maint")) else "ok", parse_line(line))
        out.append(agent_signal("agent", state))
    if metric is not None:
        out.append(metric_signal("rule", metric))
    return NodeSignals(tuple(out)) if out else NO_SIGNALS


def build(states, **kw):
    nodes = [{"id": f"n{i}", "address": f"192.0.2.{10 + i}", "weight": st_[4]} for i, st_ in enumerate(states)]
    if "min_in_service" in kw:  # the config refuses a floor above the pool's node count
        kw["min_in_service"] = min(kw["min_in_service"], len(nodes))
    pool = Pool.model_validate({"name": "p", "zone": "example.com", "record": "mx.example.com",
                                "checks": [{"tcp": {"port": 25}}], "nodes": nodes, **kw})
    fs = []
    for node, (up, cur, drained, listed, _, line, metric) in zip(pool.nodes, states):
        fs.append(NodeFacts(node=node, health=NodeHealth(up, T0 - timedelta(hours=1)),
                            records={"A": rec(node, cur)}, drained=drained,
                            reputation=Reputation(("bl.example",)) if listed else CLEAN,
                            signals=signals_of(line, metric)))
    return pool, fs


OUT_FOR_HEALTH = ("down", "quarantined", "agent: down", "agent: maint")


@settings(max_examples=300, deadline=None)
@given(node_states, st.integers(0, 8), st.integers(1, 8), st.sampled_from(["weighted", "failover"]))
def test_property_safety_rules(states, min_in_service, max_drain, mode):
    pool, fs = build(states, min_in_service=min_in_service, max_drain_per_cycle=max_drain, mode=mode)
    plan = plan_pool(pool, "Z1", fs, T0)
    current = [f.current_weight for f in fs]
    after = weights_after(plan, pool, current)
    undrained = [f for f in fs if f.drained is None]
    # Never all zero: while some node is not manually drained and has a base weight, something carries weight.
    if any(f.node.weight > 0 for f in undrained):
        assert any(after[f.node.id] > 0 for f in undrained)
    # Manual drains are honoured; weights stay within 0..255; changes only where the weight differs.
    for f in fs:
        if f.drained:
            assert after[f.node.id] == 0
        assert 0 <= after[f.node.id] <= 255
    for c in plan.changes:
        assert c.from_weight != c.to_weight
        # Never above the base weight (failover's active node carries at least 1).
        base = pool.node(c.node).weight
        assert c.to_weight <= (max(base, 1) if mode == "failover" else base)
    if mode == "weighted" and not plan.fail_open:
        # Blast radius: at most max_drain_per_cycle nodes newly drained for health (an agent's
        # drain is the node's own wish, not a failure: it spends no budget).
        newly = [f for f in undrained if f.current_weight > 0 and after[f.node.id] == 0
                 and plan.decisions[f.node.id].reason.startswith(OUT_FOR_HEALTH)]
        assert len(newly) <= max_drain
        for f in undrained:
            d = plan.decisions[f.node.id]
            if f.signals.drain and f.health.up and not f.quarantined and not f.signals.out:
                assert (d.weight, d.reason) == (0, f.signals.drain)  # drained by the node itself, at once
            elif f.node.weight > 0 and d.reason in ("healthy", f"agent: {f.signals.share * 100:g}%",
                                                    getattr(f.signals.lowest(), "reason", None)):
                assert d.weight >= 1  # a share above 0 never rounds to weight 0
    # Idempotence: applying the plan and planning again changes nothing more (same health).
    again = [NodeFacts(node=f.node, health=f.health, records={"A": rec(f.node, after[f.node.id])},
                       drained=f.drained, reputation=f.reputation, signals=f.signals) for f in fs]
    second = plan_pool(pool, "Z1", again, T0)
    if mode == "failover" or not any(
        "deferred" in d.reason or "panic" in d.reason for d in plan.decisions.values()
    ):
        assert second.changes == []


@settings(max_examples=200, deadline=None)
@given(node_states, st.integers(1, 8))
def test_property_floor(states, min_in_service):
    pool, fs = build(states, min_in_service=min_in_service, max_drain_per_cycle=8)
    plan = plan_pool(pool, "Z1", fs, T0)
    after = weights_after(plan, pool, [f.current_weight for f in fs])
    drained_for_health = [f for f in fs if f.current_weight > 0 and after[f.node.id] == 0
                          and plan.decisions[f.node.id].reason.startswith(OUT_FOR_HEALTH)]
    if drained_for_health and not plan.fail_open:
        assert sum(1 for w in after.values() if w > 0) >= pool.min_in_service


def test_warmup_and_slow_start_lower_share_wins():
    pool = Pool.model_validate({
        "name": "p", "zone": "example.com", "record": "mx.example.com", "slow_start": "100s",
        "checks": [{"tcp": {"port": 25}}],
        "nodes": [{"id": "n0", "address": "192.0.2.10", "weight": 100},
                  {"id": "n1", "address": "192.0.2.11", "weight": 100,
                   "warmup": {"start": (T0 - timedelta(days=7)).isoformat(), "schedule": {"0d": "5%", "7d": "50%", "14d": "100%"}}}],
    })
    n0, n1 = pool.nodes
    recovered = NodeHealth(True, T0, recovered_at=T0)

    def plan_at(t):
        fs = [NodeFacts(node=n0, health=NodeHealth(True, T0 - timedelta(days=1)), records={"A": rec(n0, 100)}),
              NodeFacts(node=n1, health=recovered, records={"A": rec(n1, 0)})]
        return plan_pool(pool, "Z1", fs, t).decisions["n1"]

    assert plan_at(T0) == type(plan_at(T0))(10, "slow start 10%")  # slow start 10% < warm-up 50%
    d = plan_at(T0 + timedelta(seconds=100))  # slow start done: warm-up 50% holds
    assert (d.weight, d.reason) == (50, "warm-up 50%")
    d = plan_at(T0 + timedelta(seconds=80))  # 82% slow start vs 50.0x% warm-up
    assert d.weight == 50 and d.reason.startswith("warm-up")


# --- properties over Route 53 contents x health (drift, missing sets, drain budget) ----------

# Per node: (healthy, weight held, record state, manual drain, base weight), where the record
# state is "ok", "drift" (another value) or "missing".
odd_states = st.lists(
    st.tuples(st.booleans(), st.integers(0, 255), st.sampled_from(["ok", "ok", "ok", "drift", "missing"]),
              st.sampled_from([None, None, None, "maint"]), st.integers(0, 255)),
    min_size=1, max_size=8,
)


def build_odd(states, **kw):
    nodes = [{"id": f"n{i}", "address": f"192.0.2.{10 + i}", "weight": base}
             for i, (_, _, _, _, base) in enumerate(states)]
    if "min_in_service" in kw:  # the config refuses a floor above the pool's node count
        kw["min_in_service"] = min(kw["min_in_service"], len(nodes))
    pool = Pool.model_validate({"name": "p", "zone": "example.com", "record": "mx.example.com",
                                "checks": [{"tcp": {"port": 25}}], "nodes": nodes, **kw})
    fs = []
    for node, (up, cur, kind, drained, _) in zip(pool.nodes, states):
        if kind == "missing":
            records = {"A": None}
        elif kind == "drift":
            records = {"A": RecordSet("mx.example.com", "A", node.id, cur, 60, ("198.51.100.1",))}
        else:
            records = {"A": rec(node, cur)}
        fs.append(NodeFacts(node=node, health=NodeHealth(up, T0 - timedelta(hours=1)), records=records,
                            drained=drained))
    return pool, fs


@settings(max_examples=400, deadline=None)
@given(odd_states, st.integers(0, 8), st.integers(0, 8), st.sampled_from(["weighted", "failover"]))
def test_property_odd_route53_contents(states, min_in_service, budget, mode):
    pool, fs = build_odd(states, min_in_service=min_in_service, max_drain_per_cycle=8, mode=mode)
    plan = plan_pool(pool, "Z1", fs, T0, drain_budget=budget)
    held = {f.node.id: f.current_weight for f in fs}
    after = dict(held)
    for c in plan.changes:
        after[c.node] = c.to_weight
    blocked = {f.node.id for f in fs if states[int(f.node.id[1:])][2] in ("drift", "missing")}
    # A node that cannot be written is never written.
    assert not {c.node for c in plan.changes} & blocked
    # Never all zero by health: if some node that is not drained by hand could carry weight
    # (a writable node with a base weight, or a blocked one holding weight), the pool ends with weight.
    could = [f for f in fs if f.drained is None and (
        (f.node.id not in blocked and f.node.weight > 0) or (f.node.id in blocked and held[f.node.id] > 0))]
    if could:
        assert any(after[f.node.id] > 0 for f in fs), (plan.decisions, held)
    # Never more newly drained for health than the budget allows.
    newly = [f for f in fs if held[f.node.id] > 0 and after[f.node.id] == 0 and f.drained is None
             and plan.decisions[f.node.id].reason.startswith(("down", "quarantined"))]
    if mode == "weighted" and not plan.fail_open:
        assert len(newly) <= budget
    # Failover: at most one writable node carries weight, unless failing open.
    if mode == "failover" and not plan.fail_open:
        assert sum(1 for f in fs if f.node.id not in blocked and after[f.node.id] > 0) <= 1


def test_drifted_at_zero_then_the_last_node_dies_fails_open():
    pool = make_pool(n=2)
    a, b = pool.nodes
    fs = [NodeFacts(node=a, health=NodeHealth(True, T0), records={"A": RecordSet("mx.example.com", "A", "n0", 0, 60, ("198.51.100.1",))}),
          NodeFacts(node=b, health=NodeHealth(False, T0, reason="refused"), records={"A": rec(b, 50)})]
    plan = plan_pool(pool, "Z1", fs, T0)
    assert plan.fail_open and plan.changes == [] and plan.decisions["n1"].weight == 50


def test_ipv6_compared_by_value():
    pool = Pool.model_validate({"name": "p", "zone": "example.com", "record": "mx.example.com", "type": "AAAA",
                                "checks": [{"tcp": {"port": 25}}],
                                "nodes": [{"id": "n0", "address": "2001:db8::1", "weight": 10},
                                          {"id": "n1", "address": "2001:db8::2", "weight": 10}]})
    n0, n1 = pool.nodes
    fs = [NodeFacts(node=n0, health=NodeHealth(False, T0), records={"AAAA": RecordSet("mx.example.com", "AAAA", "n0", 10, 60, ("2001:0DB8:0:0:0:0:0:1",))}),
          NodeFacts(node=n1, health=NodeHealth(True, T0), records={"AAAA": RecordSet("mx.example.com", "AAAA", "n1", 10, 60, ("2001:db8::2",))})]
    plan = plan_pool(pool, "Z1", fs, T0)
    assert plan.errors == [] and [(c.node, c.to_weight) for c in plan.changes] == [("n0", 0)]


@settings(max_examples=200, deadline=None)
@given(node_states, st.integers(0, 8), st.sampled_from(["weighted", "failover"]), st.data())
def test_property_unknown_signal_changes_nothing(states, min_in_service, mode, data):
    """A node's signal that could not be read this time plans exactly as its last known state."""
    pool, fs = build(states, min_in_service=min_in_service, mode=mode)
    first = plan_pool(pool, "Z1", fs, T0)
    again = []
    for f, state in zip(fs, states):
        line, metric = state[5], state[6]
        out = []
        if line is not None:
            before = fold_agent(None, "fail" if line.startswith(("down", "maint")) else "ok", parse_line(line))
            out.append(agent_signal("agent", fold_agent(before, "unknown", None)))
        if metric is not None:
            why = data.draw(st.sampled_from(["no data", "connection refused", "NaN"]))
            out.append(metric_signal("rule", fold_metric(metric, "unknown", None, None, why)))
        again.append(NodeFacts(node=f.node, health=f.health, records=f.records, drained=f.drained,
                               reputation=f.reputation, signals=NodeSignals(tuple(out)) if out else NO_SIGNALS))
    assert plan_pool(pool, "Z1", again, T0).decisions == first.decisions


def signal_facts(pool, lines=(), metrics=(), up=None):
    fs = facts(pool, up or [True] * len(pool.nodes))
    lines = list(lines) + [None] * len(fs)
    metrics = list(metrics) + [None] * len(fs)
    return [NodeFacts(node=f.node, health=f.health, records=f.records, signals=signals_of(lines[i], metrics[i]))
            for i, f in enumerate(fs)]


def test_agent_share_scales_the_weight():
    pool = make_pool()
    plan = plan_pool(pool, "Z1", signal_facts(pool, ["50%", "1%"]), T0)
    assert (plan.decisions["n0"].weight, plan.decisions["n0"].reason) == (25, "agent: 50%")
    assert plan.decisions["n1"].weight == 1  # 0.5 rounds to 1: a share above 0 never gives weight 0


def test_agent_drain_is_not_a_failure():
    pool = make_pool(max_drain_per_cycle=1)
    plan = plan_pool(pool, "Z1", signal_facts(pool, ["drain", "0%", "drain # deploy"]), T0)
    assert [plan.decisions[n].weight for n in ("n0", "n1", "n2", "n3")] == [0, 0, 0, 50]
    assert plan.decisions["n2"].reason == "agent: drain (deploy)"
    assert plan.alerts == [] and not plan.panic and plan.deferred == 0 and plan.newly_drained == []


def test_agent_drained_nodes_do_not_count_in_service():
    pool = make_pool(n=3, min_in_service=1)
    # n0 drains itself, n1 dies: n2 alone serves. Then n2 dies too: nobody is left to serve
    # (the drained node does not count), so the pool fails open to every base weight.
    plan = plan_pool(pool, "Z1", signal_facts(pool, ["drain"], up=[True, False, True]), T0)
    assert [plan.decisions[n].weight for n in ("n0", "n1", "n2")] == [0, 0, 50]
    plan = plan_pool(pool, "Z1", signal_facts(pool, ["drain"], up=[True, False, False]), T0)
    assert plan.fail_open and [plan.decisions[n].weight for n in ("n0", "n1", "n2")] == [50, 50, 50]
    assert plan.decisions["n0"].reason == "fail open (agent: drain)"
    plan = plan_pool(pool, "Z1", signal_facts(pool, ["drain", "drain", "0%"]), T0)
    assert plan.fail_open and "drained by their agents" in plan.alerts[0]


def test_agent_down_and_maint_take_the_node_out_with_its_text():
    pool = make_pool()
    plan = plan_pool(pool, "Z1", signal_facts(pool, ["down#disk full", "maint"]), T0)
    assert (plan.decisions["n0"].weight, plan.decisions["n0"].reason) == (0, "agent: down (disk full)")
    assert plan.decisions["n1"].reason == "agent: maint"
    assert plan.newly_drained == ["n0", "n1"]  # a failure: it spends the drain budget


def test_metric_out_of_bounds_quarantines_and_scale_scales():
    pool = make_pool()
    out = MetricVerdict("fail", 0.083, None, "deferral 0.083 > 0.05")
    scaled = MetricVerdict("ok", 10500, 0.55, "queue 10500 -> 55%")
    plan = plan_pool(pool, "Z1", signal_facts(pool, ["50%"], [scaled, out]), T0)
    assert (plan.decisions["n0"].weight, plan.decisions["n0"].reason) == (25, "agent: 50%")  # the lowest wins
    assert plan.decisions["n1"] == type(plan.decisions["n1"])(0, "quarantined by metric: deferral 0.083 > 0.05")


def test_share_applies_after_warmup_and_slow_start_lowest_wins():
    pool = Pool.model_validate({
        "name": "p", "zone": "example.com", "record": "mx.example.com", "checks": [{"tcp": {"port": 25}}],
        "nodes": [{"id": "n0", "address": "192.0.2.10", "weight": 100},
                  {"id": "n1", "address": "192.0.2.11", "weight": 100,
                   "warmup": {"start": (T0 - timedelta(days=7)).isoformat(),
                              "schedule": {"0d": "5%", "7d": "20%", "14d": "100%"}}}],
    })
    n0, n1 = pool.nodes
    h = NodeHealth(True, T0 - timedelta(days=1))

    def decide(line, clock=None):
        fs = [NodeFacts(node=n0, health=h, records={"A": rec(n0, 100)}),
              NodeFacts(node=n1, health=h, records={"A": rec(n1, 20)}, signals=signals_of(line, None),
                        warmup_clock=clock)]
        return plan_pool(pool, "Z1", fs, T0).decisions["n1"]

    assert (decide("50%").weight, decide("50%").reason) == (20, "warm-up 20%")
    assert (decide("10%").weight, decide("10%").reason) == (10, "agent: 10%")
    # A closed gate: the warm-up stood still for 2 of its 7 days.
    paused = WarmupClock(0.0, T0 - timedelta(days=2), "listed on bl.example")
    d = decide(None, paused)
    assert d.reason == "warm-up 16% (paused: listed on bl.example)" and d.weight == 16


def test_every_node_quarantined_says_so_when_failing_open():
    pool = make_pool(n=2)
    rep = Reputation(("zen.example",), "listed on zen.example (127.0.0.2)")
    plan = plan_pool(pool, "Z1", facts(pool, [True, True], n0={"reputation": rep}, n1={"reputation": rep}), T0)
    assert plan.fail_open
    assert plan.alerts == ["pool p: every node is quarantined; failing open to base weights"]
    # A dead node among them: then it is not only reputation, and the alert says no healthy node.
    plan = plan_pool(pool, "Z1", facts(pool, [True, False], n0={"reputation": rep}), T0)
    assert plan.alerts == ["pool p: no healthy node; failing open to base weights"]
