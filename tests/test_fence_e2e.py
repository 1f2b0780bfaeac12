"""The fence between real processes: a cron `r53lb sync` beside an `r53lb run`, each planning
from the same zone version, on the strict moto server and loopback SMTP servers."""

from __future__ import annotations

import copy
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from moto_fixtures.spec import record_sets
from r53lb.core.fence import Fence
from test_daemon import wait_until
from test_safety_modes import ZONE, World

pytestmark = [pytest.mark.timeout(150), pytest.mark.slow]


def test_sync_beside_run_cannot_empty_the_pool_between_them(tmp_path: Path, moto_server: Any) -> None:
    """`run` sees a die and drains it while `sync`'s batch (b drained, planned when a was still
    in) is on its way: Route 53 refuses that batch whole, sync re-reads and keeps a node in."""
    w = World(tmp_path, moto_server, "run")
    nodes = {"a": "127.0.1.91", "b": "127.0.1.92"}
    w.zone({"mx.example.com": {"type": "A", "sets": {k: (v, 50) for k, v in nodes.items()}}})
    w.serve(*nodes.values())
    w.pool("mx", "mx.example.com", nodes, max_drain_per_cycle=1, min_in_service=1)
    # sync's own view of the fleet: it probes b where nothing listens (it sees b down).
    cron = copy.deepcopy(w.doc)
    cron["state"]["path"] = str(tmp_path / "cron.db")
    cron["pools"][0]["nodes"][1]["probe_address"] = "127.0.1.93"
    cron_config = tmp_path / "cron.yaml"
    cron_config.write_text(yaml.safe_dump(cron))

    samples: list[dict[str, int]] = []
    stop = threading.Event()

    def sample() -> None:  # what DNS would hand out, every 50 ms, for the whole test
        while not stop.is_set():
            try:
                samples.append(w.weights("mx.example.com"))
            except Exception:
                pass
            stop.wait(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    try:
        w.start()
        sampler.start()

        def run_drains_a() -> None:  # inside the server, just before sync's batch is applied
            w.smtp[nodes["a"]].set_mode("refuse")
            wait_until("run drained a", lambda: w.weights("mx.example.com")["a"] == 0, timeout=30)

        moto_server.before_change(run_drains_a)
        main_config, w.config = w.config, cron_config
        try:
            p = w.cli("sync", "--json")
        finally:
            w.config = main_config
        out = json.loads(p.stdout)
        after = w.weights("mx.example.com")
        assert any(v > 0 for v in after.values()), after  # without the fence: {a: 0, b: 0} until run's next pass
        assert p.returncode == 0, p.stderr
        assert out["conflicts"] == 1, out
        assert moto_server.controls.hook_errors == []
        # run takes its own view back (a down, b up) in one batch, never through all-zero.
        wait_until("run's view", lambda: w._alive() and w.weights("mx.example.com") == {"a": 0, "b": 50}, timeout=30)
        w.stop()
    finally:
        stop.set()
        sampler.join(5)
        if w.daemon is not None and w.daemon.proc.poll() is None:
            w.daemon.proc.kill()
            w.daemon.proc.wait(5)
        for s in w.smtp.values():
            s.stop()
    assert samples and all(any(v > 0 for v in s.values()) for s in samples), [s for s in samples if not any(s.values())]
    fence = [rs for rs in record_sets(w.client, w.zone_ids[ZONE], "_r53lb.example.com", "TXT")]
    assert len(fence) == 1
    f = Fence.parse(rr["Value"] for rr in fence[0]["ResourceRecords"])
    assert f.epoch == 0 and f.seq >= 3  # run's drain, sync's re-planned batch, run's answer


def test_restarts_of_run_within_one_interval_drain_at_most_max_drain(tmp_path: Path, moto_server: Any) -> None:
    """A rolling restart: `r53lb run` stopped and started twice inside one 30 s interval while
    four of six nodes are dead. The budget comes from the zone's fence, not the process."""
    w = World(tmp_path, moto_server, "run")
    nodes = {f"n{i}": f"127.0.2.{10 + i}" for i in range(1, 7)}
    w.zone({"mx.example.com": {"type": "A", "sets": {k: (v, 50) for k, v in nodes.items()}}})
    w.serve(*nodes.values())
    w.pool("mx", "mx.example.com", nodes, max_drain_per_cycle=1, interval="30s")
    zero = lambda: sum(1 for v in w.weights("mx.example.com").values() if v == 0)  # noqa: E731
    try:
        for n in ("n1", "n2", "n3", "n4"):
            w.smtp[nodes[n]].set_mode("refuse")
        started = time.monotonic()
        w.start()
        wait_until("the first drain", lambda: w._alive() and zero() >= 1, timeout=30)
        for _ in range(2):
            w.stop()
            w.start()
            w.passes(2)  # the new process read the zone and planned with the nodes it knows down
            assert zero() == 1, w.weights("mx.example.com")
        assert time.monotonic() - started < 30, "the restarts took longer than the interval: nothing proven"
        w.stop()
    finally:
        if w.daemon is not None and w.daemon.proc.poll() is None:
            w.daemon.proc.kill()
            w.daemon.proc.wait(5)
        for s in w.smtp.values():
            s.stop()
