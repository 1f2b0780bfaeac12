"""The SQLite state store: real files, corruption and what is not corruption, read-only opens, two runs at once."""

import hashlib
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import pytest

from r53lb.config import Pool
from r53lb.core.health import NodeHealth
from r53lb.core.planner import held_after_state_loss
from r53lb.state.base import STATE_LOST, Store
from r53lb.state.sqlite import StateError, StateStore
from unprivileged import NOBODY, as_nobody

T0 = datetime(2026, 11, 24, 12, 0, tzinfo=timezone.utc)


def test_roundtrip(tmp_path):
    store = StateStore.open(tmp_path / "s.db")
    h = NodeHealth(False, T0, 0, 3, "no greeting", None)
    with store.transaction():
        store.put_health("p", "n", h)
    store.drain("p", "n", "maintenance", T0)
    store.put_check_result("p", "n", "dnsbl:0", T0, {"status": "fail", "listed_on": ["bl.example"]})
    store.close()
    again = StateStore.open(tmp_path / "s.db")
    assert again.health()[("p", "n")] == h
    assert again.drains()[("p", "n")] == ("maintenance", T0)
    assert again.check_results()[("p", "n", "dnsbl:0")][1]["listed_on"] == ["bl.example"]
    assert again.enable("p", "n", T0) and not again.enable("p", "n", T0)
    assert [e.kind for e in again.events()] == ["drain", "enable"]


def test_corrupted_file_is_moved_aside_and_rebuilt_loudly(tmp_path):
    path = tmp_path / "s.db"
    path.write_bytes(b"this is not a database" * 100)
    store = StateStore.open(path, now=T0)
    assert store.rebuilt and "unreadable" in store.rebuilt and "rebuilt from Route 53" in store.rebuilt
    assert list(tmp_path.glob("s.db.corrupt-*"))  # nothing lost: the old file is kept
    assert store.events()[0].kind == "state"


def test_snapshot_records_nothing(tmp_path):
    store = StateStore.open(tmp_path / "s.db")
    snap = store.snapshot()
    snap.drain("p", "n", "x", T0)
    assert store.drains() == {} and snap.drains()


def _hold(path, ready, release):
    store = StateStore.open(path)
    with store.exclusive():
        ready.set()
        release.wait(30)


def test_second_run_waits_then_fails_clearly(tmp_path):
    path = tmp_path / "s.db"
    ctx = multiprocessing.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    proc = ctx.Process(target=_hold, args=(path, ready, release))
    proc.start()
    try:
        assert ready.wait(30)
        store = StateStore.open(path)
        with pytest.raises(StateError, match="another r53lb run holds"):
            with store.exclusive(wait=0.2):
                pass
        release.set()
        proc.join(30)
        with store.exclusive(wait=5):
            pass
    finally:
        release.set()
        proc.join(30)


# --- what is corruption and what is not (issue 10, item 4) ---------------------------------



def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def listing(d: Path) -> dict[str, str]:
    return {p.name: digest(p) for p in sorted(d.iterdir()) if p.is_file()}


def python_as_nobody(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(as_nobody([sys.executable, "-c", code, *args]), capture_output=True, text=True,
                          timeout=60, cwd="/")


@pytest.fixture
def shared_dir():
    """A directory an unprivileged user can reach (pytest's own tmp_path is 0700 to root)."""
    d = Path(tempfile.mkdtemp(prefix="r53lb-state-"))
    d.chmod(0o755)
    yield d
    for p in [d, *d.rglob("*")]:
        if p.is_dir():
            p.chmod(0o755)
    subprocess.run(["rm", "-rf", str(d)], check=True)


OPEN_AS_NOBODY = """
import json, sys
from datetime import datetime, timezone
from r53lb.state.sqlite import StateError, StateStore
out = {}
try:
    StateStore.open(sys.argv[1])
    out["open"] = "opened"
except StateError as e:
    out["open"] = str(e)
ro = StateStore.open_readonly(sys.argv[1])
out["drains"] = {"/".join(k): v[0] for k, v in ro.drains().items()}
print(json.dumps(out))
"""


@pytest.mark.parametrize("layout", ["file 0444, dir 0555", "root's file in the user's directory"])
def test_unwritable_state_is_one_line_and_nothing_is_renamed(shared_dir, layout):
    d = shared_dir / "state"
    d.mkdir()
    path = d / "state.db"
    store = StateStore.open(path)
    store.drain("mx", "hlb-1", "kernel upgrade", T0)
    store.close()
    if layout == "file 0444, dir 0555":
        path.chmod(0o444)
        d.chmod(0o555)
        why = "(owned by root, mode 0444)"
    else:
        os.chown(d, NOBODY, NOBODY)  # the operator's directory; the file in it made by root
        why = "(owned by root, mode 0644)"
    before = listing(d)
    p = python_as_nobody(OPEN_AS_NOBODY, str(path))
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["open"] == (f"state: {path} is not writable by uid {NOBODY} {why}; "
                           f"fix its owner or mode, or set state.path")
    assert listing(d) == before  # nothing renamed, rebuilt or created
    assert out["drains"] == {"mx/hlb-1": "kernel upgrade"}  # and a read-only look still works


def test_a_write_failing_mid_run_is_a_state_error_and_rolls_back(tmp_path):
    path = tmp_path / "s.db"
    store = StateStore.open(path)
    store.drain("p", "n", "kept", T0)
    pages = store.conn.execute("PRAGMA page_count").fetchone()[0]
    store.conn.execute(f"PRAGMA max_page_count = {pages}")  # the disk is full from here on
    full = r"^state: cannot write .*s\.db: the disk is full; free space \(the file is kept as it is"
    with pytest.raises(StateError, match=full):
        with store.transaction():
            store.put_health("p", "n", NodeHealth(True, T0, reason="x" * 100))
            for i in range(1000):
                store.add_event(T0, "p", "n", "health", None, None, "y" * 1000)
    assert not list(tmp_path.glob("*corrupt*"))
    assert store.health() == {}  # all or nothing
    store.close()
    again = StateStore.open(path)
    assert again.rebuilt is None and again.drains()[("p", "n")][0] == "kept"


def test_a_really_corrupt_file_is_rebuilt_and_remembered_until_cleared(tmp_path):
    path = tmp_path / "s.db"
    store = StateStore.open(path)
    with store.transaction():
        for i in range(2000):
            store.add_event(T0, "p", f"n{i}", "health", None, None, "x" * 200)
    store.close()
    raw = bytearray(path.read_bytes())
    raw[4096 * 3:4096 * 3 + 4096] = b"\xa5" * 4096  # one b-tree page turned to noise: the header is fine
    path.write_bytes(bytes(raw))
    store = StateStore.open(path, now=T0)
    assert store.rebuilt and "rebuilt from Route 53" in store.rebuilt
    assert [p.name for p in tmp_path.glob("s.db.corrupt-*")]
    assert store.state_lost() == store.rebuilt
    store.close()
    again = StateStore.open(path)  # the marker outlives a run that never got to adopt the nodes
    assert again.rebuilt is None and again.state_lost()
    again.clear_state_lost()
    assert again.state_lost() is None


def test_read_only_open_touches_nothing_on_disk(tmp_path):
    missing = tmp_path / "new" / "state.db"
    ro = StateStore.open_readonly(missing)  # a first run: an empty store, nothing created
    assert ro.health() == {} and ro.events() == [] and not missing.parent.exists()
    with ro.exclusive():
        ro.drain("p", "n", "only in memory", T0)
    assert not missing.parent.exists()

    path = tmp_path / "s.db"
    store = StateStore.open(path)
    store.drain("p", "n", "kept", T0)
    store.close()
    before = listing(tmp_path)
    ro = StateStore.open_readonly(path)
    ro.enable("p", "n", T0)
    assert ro.drains() == {} and listing(tmp_path) == before
    assert StateStore.open(path).drains()[("p", "n")][0] == "kept"

    path.write_bytes(b"\x00garbage" * 1000)
    before = listing(tmp_path)
    with pytest.raises(StateError, match=r"is corrupt \(file is not a database\); run `r53lb sync` to move it aside"):
        StateStore.open_readonly(path)
    assert listing(tmp_path) == before


def test_transactions_nest_and_the_store_meets_the_protocol(tmp_path):
    store = StateStore.open(tmp_path / "s.db")
    assert isinstance(store, Store) and isinstance(store.snapshot(), Store)
    with pytest.raises(RuntimeError):
        with store.transaction():
            store.drain("p", "n", "inner", T0)  # drain opens its own transaction: it joins this one
            store.put_meta("watcher", "x")
            raise RuntimeError("boom")
    assert store.drains() == {} and store.get_meta("watcher") is None and store.events() == []
    store.put_meta("watcher", json.dumps({"firing": ["a"]}))
    assert json.loads(store.get_meta("watcher")) == {"firing": ["a"]}
    store.put_meta("watcher", None)
    assert store.get_meta("watcher") is None


def _pool(mode="weighted", weights=(50, 50, 50), **kw):
    nodes = [{"id": f"n{i}", "address": f"192.0.2.{10 + i}", "weight": w} for i, w in enumerate(weights)]
    return Pool.model_validate({"name": "p", "zone": "example.com", "record": "mx.example.com", "mode": mode,
                                "checks": [{"tcp": {"port": 25}}], "nodes": nodes, **kw})


def test_which_nodes_are_held_after_the_state_was_lost():
    pool = _pool()
    assert held_after_state_loss(pool, {"n0": 50, "n1": 0, "n2": 0}, T0) == ["n1", "n2"]
    assert held_after_state_loss(pool, {"n0": 50, "n1": 0}, T0) == ["n1"]  # no record set: nothing found
    # a base weight of 0 asks for 0
    assert held_after_state_loss(_pool(weights=(50, 0, 50)), {"n0": 50, "n1": 0, "n2": 50}, T0) == []
    # failover: a standby after the active node is at 0 by design; a preferred node before it is held
    ha = _pool("failover", (1, 1, 1))
    assert held_after_state_loss(ha, {"n0": 1, "n1": 0, "n2": 0}, T0) == []
    assert held_after_state_loss(ha, {"n0": 0, "n1": 1, "n2": 0}, T0) == ["n0"]
    assert held_after_state_loss(ha, {"n0": 0, "n1": 0, "n2": 0}, T0) == ["n0", "n1", "n2"]
    assert STATE_LOST == "state was lost"


def test_a_cycle_whose_state_write_fails_raises_state_error_and_renames_nothing(tmp_path, mock_route53):
    """The disk fills up between two cycles: the next health change cannot be recorded."""
    import asyncio
    import socket

    import boto3

    from moto_fixtures.spec import build, weights
    from r53lb.aws.route53 import Route53
    from r53lb.config import Config
    from r53lb.demo.loopback import SmtpServer
    from r53lb.engine.cycle import Controller

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    nodes = {"n1": "127.0.0.71", "n2": "127.0.0.72"}
    servers = {k: SmtpServer(v, port).start() for k, v in nodes.items()}
    try:
        client = boto3.client("route53", region_name="us-east-1")
        zid = build(client, {"example.com": {"mx.example.com": {
            "type": "A", "sets": {k: (v, 50) for k, v in nodes.items()}}}})["example.com"]
        cfg = Config.model_validate({
            "state": {"path": str(tmp_path / "state.db")},
            "defaults": {"timeout": "1s", "fastinter": "10ms", "rise": 1, "fall": 1, "helo": "probe.test"},
            "pools": [{"name": "mx", "zone": "example.com", "record": "mx.example.com",
                       "checks": [{"smtp": {"port": port}}],
                       "nodes": [{"id": k, "address": v, "weight": 50} for k, v in nodes.items()]}],
        })
        store = StateStore.open(tmp_path / "state.db")
        ctl = Controller(cfg, store, Route53(cfg.aws))
        assert asyncio.run(ctl.cycle()).exit_code == 0
        pages = store.conn.execute("PRAGMA page_count").fetchone()[0]
        store.conn.execute(f"PRAGMA max_page_count = {pages}")  # the disk is full from here on
        for size in (200, 20, 1):  # fill every page to the last byte
            with pytest.raises(StateError):
                while True:
                    store.add_event(T0, "-", "-", "filler", None, None, "z" * size)
        servers["n2"].set_mode("refuse")
        with pytest.raises(StateError, match=r"^state: cannot write .*state\.db: the disk is full"):
            asyncio.run(ctl.cycle())
        assert store.health()[("mx", "n2")].up  # the health change was rolled back, not half recorded
        assert weights(client, zid, "mx.example.com") == {"n1": 50, "n2": 50}
        assert sorted(p.name for p in tmp_path.iterdir()) == ["state.db", "state.db-shm", "state.db-wal"]
    finally:
        for s in servers.values():
            s.stop()
