"""End to end: the state file's failures, through `r53lb` in a subprocess against the strict moto server.

Only a file that is really corrupt is moved aside, and only by a command that writes; after that,
a node found at weight 0 stays at 0 ("state was lost") until `r53lb enable`. A state file the
user cannot write is one line and exit 1, with nothing renamed and the drains in it kept.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from moto_fixtures.spec import set_weight
from test_e2e_sync import Fleet, fleet, history  # noqa: F401  (the fleet fixture)
from unprivileged import NOBODY, as_nobody

pytestmark = pytest.mark.timeout(180)


def listing(d: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.iterdir()) if p.is_file()}


def one_line(p: subprocess.CompletedProcess[str]) -> str:
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    return lines[0]


@pytest.fixture
def shared(fleet):  # noqa: F811
    """The fleet's config with its state in a directory an unprivileged user can reach."""
    d = Path(tempfile.mkdtemp(prefix="r53lb-e2e-state-"))
    d.chmod(0o755)
    (d / "state").mkdir()
    cfg = yaml.safe_load(fleet.config.read_text())
    cfg["state"]["path"] = str(d / "state" / "state.db")
    config = d / "r53lb.yaml"
    config.write_text(yaml.safe_dump(cfg))
    config.chmod(0o644)
    yield config
    for p in [d, *d.rglob("*")]:
        if p.is_dir():
            p.chmod(0o755)
    shutil.rmtree(d)


def cli(config: Path, *args: str, nobody: bool = False) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "r53lb", "-c", str(config), *args]
    if nobody:
        cmd = as_nobody(cmd)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=90, cwd="/")


def drained(config: Path, ref: str, nobody: bool = False) -> str | None:
    p = cli(config, "status", "--json", nobody=nobody)
    assert p.returncode == 0, p.stderr
    pool, node = ref.split("/")
    return next(r for r in json.loads(p.stdout)["nodes"] if (r["pool"], r["node"]) == (pool, node))["drained"]


@pytest.mark.parametrize("layout", ["file 0444 in a 0555 directory", "root's file in the user's directory"])
def test_unwritable_state_file_is_one_line_exit_1_and_keeps_its_drains(fleet, shared, layout):  # noqa: F811
    assert cli(shared, "sync").returncode == 0
    assert cli(shared, "drain", "mx/hlb-1", "--reason", "kernel upgrade").returncode == 0
    p = cli(shared, "sync")
    assert p.returncode == 0, p.stderr
    assert fleet.weights("mx.example.com")["hlb-1"] == 0
    state = shared.parent / "state" / "state.db"
    if layout.startswith("file 0444"):
        state.chmod(0o444)
        state.parent.chmod(0o555)
        owner = "owned by root, mode 0444"
    else:
        os.chown(state.parent, NOBODY, NOBODY)
        owner = "owned by root, mode 0644"
    before = listing(state.parent)
    writes = fleet.writes()

    expected = (f"r53lb: state: {state} is not writable by uid {NOBODY} ({owner}); "
                f"fix its owner or mode, or set state.path")
    for args in (["sync"], ["drain", "mx/hlb-2", "--reason", "x"], ["enable", "mx/hlb-1"],
                 ["run", "--no-metrics"]):
        p = cli(shared, *args, nobody=True)
        assert (p.returncode, one_line(p)) == (1, expected), args
        assert listing(state.parent) == before, args  # nothing renamed, rebuilt or created
    assert fleet.writes() == writes and fleet.weights("mx.example.com")["hlb-1"] == 0

    # The read-only commands still work for that user, and see the drain.
    assert drained(shared, "mx/hlb-1", nobody=True) == "kernel upgrade"
    p = cli(shared, "history", "--json", "--node", "mx/hlb-1", nobody=True)
    assert p.returncode == 0, p.stderr
    assert [e["kind"] for e in json.loads(p.stdout)["events"]][:2] == ["drain", "weight"]
    p = cli(shared, "plan", "--json", nobody=True)
    assert p.returncode == 0 and json.loads(p.stdout)["changes"] == [], p.stderr
    assert listing(state.parent) == before

    # The owner (root here) still syncs, and the drain holds though hlb-1 answers its probes.
    p = cli(shared, "sync")
    assert p.returncode == 0, p.stderr
    assert fleet.weights("mx.example.com")["hlb-1"] == 0 and not list(state.parent.glob("*corrupt*"))


def test_read_only_commands_never_rename_or_rebuild_a_corrupt_file(fleet):  # noqa: F811
    assert fleet.sync()[0].returncode == 0
    state = fleet.dir / "state.db"
    state.write_bytes(b"\x00garbage" * 1000)
    before = listing(fleet.dir)
    expected = (f"r53lb: state: {state} is corrupt (file is not a database); run `r53lb sync` to move it "
                f"aside and rebuild it from Route 53")
    for args in (["history"], ["status"], ["plan"], ["sync", "--dry-run"], ["status", "--json"]):
        p = fleet.r53lb(*args)
        assert (p.returncode, one_line(p)) == (1, expected), args
        assert p.stdout == ""
    p = fleet.r53lb("probe")  # probe never opens the state
    assert p.returncode == 0, p.stderr
    assert listing(fleet.dir) == before and fleet.writes() == 0


def test_after_a_real_rebuild_a_node_at_zero_stays_drained_until_enable(fleet):  # noqa: F811
    assert fleet.sync()[0].returncode == 0
    assert fleet.r53lb("drain", "mx/hlb-1", "--reason", "kernel upgrade").returncode == 0
    p, out = fleet.sync()
    assert p.returncode == 0 and fleet.weights("mx.example.com")["hlb-1"] == 0, p.stderr

    state = fleet.dir / "state.db"
    state.write_bytes(b"\x00garbage" * 1000)  # the drain was in here
    p, out = fleet.sync()  # hlb-1 answers its probes: only the lost drain kept it out
    assert p.returncode == 0, p.stderr
    assert "was unreadable (file is not a database)" in p.stderr and list(fleet.dir.glob("state.db.corrupt-*"))
    assert "mx/hlb-1: found at weight 0 after the state file was lost; held at 0 (state was lost); " \
           "run `r53lb enable mx/hlb-1`" in p.stderr
    assert out["changes"] == []
    assert fleet.weights("mx.example.com")["hlb-1"] == 0
    assert fleet.weights("smtp.example.com") == {"primary": 1, "standby": 0}  # a standby is no drain
    assert drained(fleet.config, "mx/hlb-1") == "state was lost"
    assert drained(fleet.config, "ha/standby") is None
    [ev] = [e for e in history(fleet, "mx/hlb-1") if e["kind"] == "drain"]
    assert ev["reason"] == "state was lost"

    p, out = fleet.sync()  # and on the next run too: the drain is stored, not a one-off
    assert p.returncode == 0 and out["changes"] == [], p.stderr
    assert fleet.weights("mx.example.com")["hlb-1"] == 0

    assert fleet.r53lb("enable", "mx/hlb-1").returncode == 0
    p, out = fleet.sync()
    assert p.returncode == 0, p.stderr
    assert fleet.weights("mx.example.com")["hlb-1"] == 50


def test_first_run_adopts_from_route53_as_before(fleet):  # noqa: F811
    """No state file ever: a node at 0 is adopted as down and restored when healthy; nothing is held."""
    set_weight(fleet.client, fleet.zone_id, "mx.example.com", "A", "hlb-1", 0)
    assert not (fleet.dir / "state.db").exists()
    p, out = fleet.sync()
    assert p.returncode == 0, p.stderr
    assert "state was lost" not in p.stderr
    assert fleet.weights("mx.example.com")["hlb-1"] == 50
    assert drained(fleet.config, "mx/hlb-1") is None
