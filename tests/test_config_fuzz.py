"""Fuzz the config: whatever the file holds, `r53lb validate` accepts it (exit 0) or refuses
it in one line (exit 2); never a traceback, never another exit code.

Most examples go through `r53lb.config.load` (what every command calls first); a sample goes
through the click command in process, and a few through the installed `r53lb` program."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from r53lb.cli import main
from r53lb.config import ConfigError, load, loads
from tests.test_config import BOMB, GOOD

MAX_LINE = 400  # one line, bounded (r53lb.config.MAX_LINE)
VALID = yaml.safe_load(GOOD)
def fast(n: int) -> settings:
    return settings(max_examples=n, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

# Values a hostile or careless operator types: wrong types, edges, overflows, injections.
ODD = st.sampled_from([
    "", " ", "0s", "-1s", "0ms", "nan", ".inf", "-.inf", "1e999", "9" * 400 + "d", "%", "100%", "-5%", "nan%",
    "2026-13-45", "9999-12-31", "fe80::1%eth0", "::ffff:192.0.2.1", "2001:0DB8::1", "192.0.2.300", "a/b",
    "vantage", "probe.example.com\r\nMAIL FROM:<a@b>", "\x00", "\ufeff", "*.example.com", "a*.example.com",
    "Z123", "http://", "ftp://x", "https://{address}/", "[::1]:99999", "listed_on_n: 0", "x" * 5000,
    "smtp", "tcp", "weighted", "failover", "AAAA", "CNAME",
])
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.integers(-(10**400), 10**400),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=30), ODD,
)
KEYS = st.one_of(st.text(max_size=12), st.sampled_from(
    ["pools", "nodes", "checks", "id", "address", "weight", "interval", "timeout", "helo", "smtp",
     "http", "tcp", "dnsbl", "url", "warmup", "start", "schedule", "min_in_service", "type", "name"]))
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(KEYS, inner, max_size=4)),
    max_leaves=16,
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, prefix + (i,))
    return out


PATHS = _paths(VALID)[1:]


def _mutate(doc: Any, path: tuple[Any, ...], action: str, value: Any) -> Any:
    doc = copy.deepcopy(doc)
    parent = doc
    for step in path[:-1]:
        parent = parent[step]
    last = path[-1]
    if action == "delete":
        del parent[last]
    elif action == "replace":
        parent[last] = value
    elif action == "wrap":
        parent[last] = [parent[last], value]
    elif action == "add" and isinstance(parent, dict):
        parent[str(value)[:20] if not isinstance(value, (dict, list)) else "extra"] = value
    elif action == "copy":  # the same subtree twice: duplicate ids, records, pools
        if isinstance(parent, list):
            parent.append(copy.deepcopy(parent[last]))
    return doc


def _dump(doc: Any) -> str:
    return yaml.safe_dump(doc, allow_unicode=True, sort_keys=False)


def accepted_or_refused_in_one_line(text: str) -> None:
    try:
        loads(text)
    except ConfigError as e:
        msg = str(e)
        assert msg and "\n" not in msg and "\r" not in msg and len(msg) <= MAX_LINE, msg


@fast(600)
@given(st.data())
def test_mutations_of_a_valid_config(data: st.DataObject) -> None:
    doc = VALID
    for _ in range(data.draw(st.integers(1, 3))):
        paths = _paths(doc)[1:]
        if not paths:
            break
        path = data.draw(st.sampled_from(paths))
        doc = _mutate(doc, path, data.draw(st.sampled_from(["delete", "replace", "replace", "wrap", "add", "copy"])),
                      data.draw(VALUES))
    accepted_or_refused_in_one_line(_dump(doc))


@fast(300)
@given(st.one_of(VALUES, st.dictionaries(KEYS, VALUES, max_size=5),
                 st.fixed_dictionaries({"pools": st.lists(st.dictionaries(KEYS, VALUES, max_size=6), max_size=3)})))
def test_random_documents(doc: Any) -> None:
    accepted_or_refused_in_one_line(_dump(doc))


YAML_CHARS = list("ab01:-[]{},&*!|>'\"#%@ \n\t.?<=~") + ["\n  ", "&a ", "*a", "!!int ", "!!binary ", "<<: ", "pools:"]


@fast(300)
@given(st.lists(st.sampled_from(YAML_CHARS), max_size=80).map("".join))
def test_random_yaml_text(text: str) -> None:
    accepted_or_refused_in_one_line(text)


@fast(100)
@given(st.binary(max_size=200), st.sampled_from([b"", GOOD.encode()]))
def test_random_bytes_in_a_file(tmp_path: Path, junk: bytes, prefix: bytes) -> None:
    p = tmp_path / "fuzz.yaml"
    p.write_bytes(prefix + junk)
    try:
        load(p)
    except ConfigError as e:
        assert "\n" not in str(e) and len(str(e)) <= MAX_LINE


@fast(30)
@given(st.data())
def test_cli_validate_exits_0_or_2_in_one_line(tmp_path: Path, data: st.DataObject) -> None:
    path = data.draw(st.sampled_from(PATHS))
    doc = _mutate(VALID, path, data.draw(st.sampled_from(["delete", "replace", "wrap"])), data.draw(VALUES))
    p = tmp_path / "c.yaml"
    p.write_text(_dump(doc))
    result = CliRunner().invoke(main, ["-c", str(p), "validate"])
    assert result.exit_code in (0, 2), (result.exit_code, result.stderr, result.exception)
    if result.exit_code == 0:
        # A valid config may still draw warnings (a HELO name without a dot), each one line.
        assert result.stdout.startswith("ok: "), result.stdout
        assert all(line.startswith("r53lb: warning: ") for line in result.stderr.splitlines()), result.stderr
    else:
        # Every error found, one line each (issue 19: not the first alone).
        lines = result.stderr.splitlines()
        assert lines and all(line.startswith("r53lb: ") for line in lines), result.stderr


def test_the_installed_program_refuses_in_one_line(tmp_path: Path) -> None:
    cases = {
        "bomb.yaml": BOMB.encode(),
        "bytes.yaml": b"pools: \xff\xfe\x00",
        "ok.yaml": GOOD.encode(),
        "deep.yaml": b"pools: " + b"[" * 10_000 + b"]" * 10_000,
    }
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        proc = subprocess.run([sys.executable, "-m", "r53lb", "-c", str(tmp_path / name), "validate"],
                              capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONWARNINGS": "ignore"})
        if name == "ok.yaml":
            assert proc.returncode == 0 and proc.stdout.startswith("ok: 3 pool(s)"), proc.stderr
        else:
            assert proc.returncode == 2 and len(proc.stderr.splitlines()) == 1, (name, proc.stderr)
            assert proc.stderr.startswith("r53lb: ") and "Traceback" not in proc.stderr
