"""Human output: rich tables on stdout. JSON output is built elsewhere and never passes here."""

from __future__ import annotations

from datetime import timezone
from typing import TYPE_CHECKING, Any, Iterable

from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from .engine.cycle import CycleResult
    from .engine.maintenance import Step
    from .state.base import Event
    from .core.verify import Verdict

console = Console(highlight=False, soft_wrap=True)


def _print(table: Table) -> None:
    """A rich table on a terminal; elsewhere (cron mail, a pipe) plain columns, never cut or wrapped."""
    if console.is_terminal:
        console.print(table)
        return
    from rich.markup import render

    cols = [[render(str(c.header)).plain] + [render(str(v)).plain if isinstance(v, str) else str(v) for v in c.cells]
            for c in table.columns]
    widths = [max(len(v) for v in col) for col in cols]
    right = [c.justify == "right" for c in table.columns]
    lines = []
    for row in zip(*cols):
        cells = [v.rjust(w) if r else v.ljust(w) for v, w, r in zip(row, widths, right)]
        lines.append("  ".join(cells).rstrip())
    if table.title:
        print(f"# {table.title}")
    print("\n".join(lines), flush=True)

_STATUS = {"ok": "[green]ok[/]", "fail": "[red]FAIL[/]", "unknown": "[yellow]unknown[/]"}


def probe_table(rows: Iterable[dict[str, Any]]) -> None:
    """One row per check: pool, node, check, status, latency_ms, detail (engine/commands.py's rows)."""
    t = Table(title="probe results")
    for col in ("pool", "node", "check", "result", "ms", "detail"):
        t.add_column(col, justify="right" if col == "ms" else "left")
    for r in rows:
        t.add_row(r["pool"], r["node"], r["check"], _STATUS[r["status"]], f"{r['latency_ms']:.0f}", r["detail"])
    _print(t)


def plan_view(result: "CycleResult") -> None:
    plan = result.plan
    if plan.hold:
        console.print(f"[bold red]HOLD[/]: {plan.hold}; nothing written")
    changes = plan.changes
    if changes:
        t = Table(title="changes" + (" applied" if plan.applied else " (not applied)"))
        for col in ("pool", "node", "type", "weight", "reason"):
            t.add_column(col)
        for c in changes:
            frm = "new" if c.from_weight is None else str(c.from_weight)
            t.add_row(c.pool, c.node, c.type, f"{frm} -> {c.to_weight}", c.reason)
        _print(t)
    elif not plan.hold:
        console.print("no changes: Route 53 matches the measured health")
    for alert in plan.alerts:
        if not alert.startswith("hold:"):
            console.print(f"[yellow]alert[/]: {alert}")
    if result.insync_seconds is not None:
        console.print(f"Route 53 INSYNC after {result.insync_seconds:.1f}s")


def status_table(rows: list[dict[str, Any]]) -> None:
    t = Table(title="r53lb status")
    for col in ("pool", "node", "type", "health", "weight", "desired", "notes"):
        t.add_column(col)
    for r in rows:
        notes = []
        if r["drained"]:
            notes.append(f"drained: {r['drained']}")
        if r["quarantined"]:
            notes.append(f"quarantined: {r['listed_detail'] or ', '.join(r['listed_on'])}")
        if r["warmup_share"] is not None and r["warmup_share"] < 1:
            nxt = r["warmup_next"]
            step = f", next {nxt['share']:.0%} at {nxt['at'][:16]}" if nxt else ""
            if r.get("warmup_paused"):
                step = f", paused: {r['warmup_paused']}"
            notes.append(f"warm-up {r['warmup_share']:.0%}{step}")
        for sig in r.get("signals", []):
            if sig["out"] or sig["drain"] or sig["share"] < 1:
                notes.append(sig["out"] or sig["reason"])
        if r.get("dane") and r["dane"]["state"] not in ("match", "none"):
            notes.append(f"DANE {r['dane']['state']}: {r['dane']['detail']}")
        if r["panic"]:
            notes.append("pool in panic")
        if r["active"] == r["node"]:
            notes.append("active")
        if "votes_down" in r:
            notes.append(f"votes down {r['votes_down']}/{r['votes_down'] + r['votes_up']}")
        if r["health"] == "down":
            notes.append(r["last_result"])
        health = {"up": "[green]up[/]", "down": "[red]down[/]"}.get(r["health"], r["health"])
        weight = "missing" if r["weight"] is None else str(r["weight"])
        t.add_row(r["pool"], r["node"], r["type"], health, weight, str(r["desired_weight"]), "; ".join(notes) or r["reason"] or "")
    _print(t)


def fence_lines(fences: list[dict[str, Any]]) -> None:
    """One line per zone: the fence's writer, and the drains still in their pool's budget window."""
    for f in fences:
        if f["error"]:
            console.print(f"fence {f['name']}: {f['error']}", markup=False)
        elif f["epoch"] is None:
            console.print(f"fence {f['name']}: none yet (the first write to {f['zone']} creates it)", markup=False)
        else:
            drains = "; ".join(f"{p}: {len(a)} ({', '.join(f'{x:.0f}s' for x in a)} old when written)"
                               for p, a in f["drains"].items())
            console.print(f"fence {f['name']}: epoch {f['epoch']}, seq {f['seq']}, replica {f['replica']}"
                          + (f"; recent drains {drains}" if drains else ""), markup=False)


def history_table(events: list["Event"]) -> None:
    t = Table(title="history")
    cluster = any(e.replica is not None for e in events)
    for col in ("time (UTC)", "pool/node", "kind", "change", *(("replica", "epoch") if cluster else ()), "reason"):
        t.add_column(col)
    for e in events:
        change = " -> ".join(s for s in (e.from_state, e.to_state) if s)
        who = (e.replica or "", "" if e.epoch is None else str(e.epoch)) if cluster else ()
        t.add_row(e.at.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S"), f"{e.pool}/{e.node}", e.kind, change,
                  *who, e.reason)
    _print(t)


def cluster_table(cluster: dict[str, Any]) -> None:
    t = Table(title=f"cluster {cluster['table']}: leader {cluster['leader'] or '-'}, epoch {cluster['epoch']}, "
                    f"quorum {cluster['quorum']}")
    for col in ("replica", "heartbeat age", "fresh", "voting", "sees down"):
        t.add_column(col)
    for r in cluster["replicas"]:
        age = "-" if r["heartbeat_age_s"] is None else f"{r['heartbeat_age_s']:.1f}s"
        t.add_row(r["replica"] + (" (leader)" if r["replica"] == cluster["leader"] else ""), age,
                  "yes" if r["fresh"] else "no", "yes" if r["voting"] else "no", ", ".join(r["sees_down"]) or "-")
    _print(t)


def verify_table(checks: list[tuple[str, "Verdict"]], tolerance: str, ok: bool) -> None:
    """What each authoritative server hands out beside the share Route 53's weights give."""
    t = Table(title="what the authoritative name servers hand out")
    for col in ("pool", "type", "server", "node", "weight", "expected", "served", "result"):
        t.add_column(col, justify="right" if col in ("weight", "expected", "served") else "left")
    for pool, v in checks:
        if v.silent:  # nothing is known of what it serves: one row, not every node "WRONG 0.0%"
            t.add_row(pool, v.type, v.server, "-", "-", "-", "no answer", "[red]NO ANSWER[/]")
            continue
        for n in v.nodes:
            served = f"{n.share:.1%} ({n.count})"
            expected = "never" if n.weight == 0 and n.expected == 0 else f"{n.expected:.1%} ±{n.band:.1%}"
            t.add_row(pool, v.type, v.server, n.node, str(n.weight), expected, served,
                      "[green]ok[/]" if n.ok else "[red]WRONG[/]")
        for values, count in v.unexpected.items():
            t.add_row(pool, v.type, v.server, values, "-", "never", f"({count})", "[red]UNKNOWN[/]")
    _print(t)
    console.print(f"tolerance: {tolerance}")
    for pool, v in checks:
        for p in v.problems:
            console.print(f"[red]{pool}[/] {v.type} {v.server}: {p}")
    silent = sorted({v.server for _, v in checks if v.silent})
    disagree = any(not v.ok and not v.silent for _, v in checks)
    if ok:
        console.print("[green]DNS serves what Route 53 holds[/]")
    elif disagree:
        more = f"; no answer from {', '.join(silent)}" if silent else ""
        console.print(f"[bold red]DNS disagrees with Route 53[/]{more}")
    else:
        console.print(f"[bold red]no answer from {', '.join(silent)}[/]: what DNS serves is not known")


def wait_step(step: "Step") -> None:
    """One finished step of drain/enable --wait, as it finishes."""
    console.print(f"  {step.name:<7} {step.seconds:6.1f} s  {step.detail}")
