"""The import rules of docs/architecture.md, read from the source (ast), so the picture stays true.

Every import counts, at module level or inside a function. An import under `if TYPE_CHECKING:`
never runs: it is exempt from the layer rules, not from the rule against circles (a circle of
types is still a circle a reader has to untangle).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "r53lb"

# Never imported by core/: it takes `now` and the facts, and returns decisions.
IO_LIBRARIES = ("boto3", "botocore", "socket", "sqlite3", "asyncio", "httpx", "aiosmtplib", "dns.resolver",
                "urllib.request", "subprocess")
BELOW_ENGINE = ("r53lb.core", "r53lb.probes", "r53lb.aws", "r53lb.state", "r53lb.config", "r53lb.notify")
CLI = ("r53lb.cli", "r53lb.render")


@dataclass(frozen=True)
class Import:
    module: str  # the importing module, e.g. r53lb.engine.cycle
    target: str  # what it imports, as absolute a name as can be told (r53lb.core.health, asyncio)
    line: int
    type_only: bool  # under `if TYPE_CHECKING:`

    def __str__(self) -> str:
        return f"{self.module} (line {self.line}) imports {self.target}"


def _modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _type_checking(node: ast.AST) -> bool:
    test = node.test if isinstance(node, ast.If) else None
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _targets(module: str, node: ast.Import | ast.ImportFrom) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if node.level:
        package = module.split(".") if MODULES[module].name == "__init__.py" else module.split(".")[:-1]
        base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
    else:
        base = node.module or ""
    # `from . import signals` imports a module; `from .cycle import Controller` imports from one.
    return [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]


def _imports(module: str) -> list[Import]:
    tree = ast.parse(MODULES[module].read_text(), str(MODULES[module]))
    type_only: set[int] = set()
    for node in ast.walk(tree):
        if _type_checking(node):
            type_only.update(id(n) for stmt in node.body for n in ast.walk(stmt))  # type: ignore[attr-defined]
    return [Import(module, t, node.lineno, id(node) in type_only)
            for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))
            for t in _targets(module, node)]


IMPORTS = {m: _imports(m) for m in sorted(MODULES)}


def _within(name: str, prefixes: tuple[str, ...] | str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in ((prefixes,) if isinstance(prefixes, str) else prefixes))


def _owner(target: str) -> str | None:
    """The module of r53lb a name belongs to (r53lb.engine.cycle.Controller -> r53lb.engine.cycle)."""
    while target and target not in MODULES:
        target = target.rpartition(".")[0]
    return target or None


def _breaking(importers: tuple[str, ...], forbidden: tuple[str, ...], type_only_counts: bool = False) -> list[str]:
    return [str(i) for m, imps in IMPORTS.items() if _within(m, importers) for i in imps
            if _within(i.target, forbidden) and (type_only_counts or not i.type_only)]


def test_the_rules_see_the_tree() -> None:
    # A guard on the guard: a parser that found nothing would pass every rule below.
    assert {"r53lb.cli", "r53lb.engine.cycle", "r53lb.core.planner", "r53lb.config"} <= set(MODULES)
    assert any(i.target == "r53lb.core.planner" for i in IMPORTS["r53lb.engine.cycle"])
    assert any(i.type_only for imps in IMPORTS.values() for i in imps)


def test_no_import_circles() -> None:
    graph = {m: {o for i in imps if (o := _owner(i.target)) is not None and o != m} for m, imps in IMPORTS.items()}
    # A package's __init__ is its own module here: `r53lb.config` re-exporting `r53lb.config.pools`
    # is a downward edge, and `r53lb.config.pools` importing `r53lb.config.loader` never goes through it.
    circles, index, low, stack, on, counter = [], {}, {}, [], set(), [0]

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                circles.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert circles == [], f"import circles: {circles}"


def test_the_parts_below_the_engine_never_import_it() -> None:
    assert _breaking(BELOW_ENGINE, ("r53lb.engine",)) == []


def test_the_cli_asks_the_engine_and_never_aws_or_the_probes() -> None:
    assert _breaking(CLI, ("r53lb.aws", "r53lb.probes"), type_only_counts=True) == []


def test_core_imports_no_io_library() -> None:
    assert _breaking(("r53lb.core",), IO_LIBRARIES) == []


def test_core_imports_no_other_part_but_config() -> None:
    # core/ reads the config's models (a pool's mode, a node's warm-up); nothing that does I/O.
    others = ("r53lb.probes", "r53lb.aws", "r53lb.state", "r53lb.engine", "r53lb.notify", "r53lb.cli", "r53lb.demo")
    assert _breaking(("r53lb.core",), others) == []


@pytest.mark.parametrize("source, broken", [
    ("from ..engine.cycle import Controller\n", True),
    ("def f():\n    from ..engine import cycle\n", True),  # a hidden runtime import is still an import
    ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..engine.cycle import Controller\n", False),
])
def test_the_checker_reads_every_import(tmp_path: Path, source: str, broken: bool) -> None:
    MODULES["r53lb.probes._probe_for_the_test"] = path = tmp_path / "x.py"
    path.write_text(source)
    try:
        found = [i for i in _imports("r53lb.probes._probe_for_the_test") if not i.type_only]
        assert any(_within(i.target, "r53lb.engine") for i in found) is broken
    finally:
        del MODULES["r53lb.probes._probe_for_the_test"]
