"""The read-only status page of `r53lb run`: `/` (HTML), `/api/status` (JSON), `/status.css`.

Served by the metrics HTTP server (engine/metrics.py) in its own thread. Each request
builds the status document (engine/status.py) from copies of the daemon's live state
(health, records, latest probes) and a read-only SQLite connection of its own (drains,
reputation, hold, zone errors, history), so it never blocks the event loop and shows a
drain made from another shell on the next refresh.

The page is server-rendered: no script at all, CSS from this server only, a strict CSP,
no forms. It refreshes itself with `<meta http-equiv="refresh">`.
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timezone
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from .status import document, fences, plan_now, read_store

if TYPE_CHECKING:
    from ..config import Config
    from ..core.records import RecordKey, RecordSet
    from ..probes.base import ProbeResult
    from .cycle import Controller, NodeKey

__all__ = ["REFRESH_SECONDS", "SECURITY_HEADERS", "DaemonView", "StatusDoc", "daemon_document", "live_document", "public", "render",
           "status_app"]

log = logging.getLogger("r53lb.engine.web")

REFRESH_SECONDS = 5  # the page reloads itself this often; a probe interval is typically 10 s

# No script may run, styles only from this server, no frames, forms or plug-ins.
CSP = ("default-src 'none'; style-src 'self'; img-src 'self'; base-uri 'none'; "
       "form-action 'none'; frame-ancestors 'none'")
SECURITY_HEADERS: tuple[tuple[str, str], ...] = (
    ("Content-Security-Policy", CSP),
    ("X-Content-Type-Options", "nosniff"),
    ("Cache-Control", "no-store"),
    ("Referrer-Policy", "no-referrer"),
    ("X-Frame-Options", "DENY"),
)

StatusDoc = Callable[[], dict[str, Any]]
StartResponse = Callable[..., Any]


class DaemonView(Protocol):
    """What the page reads of a running daemon (engine/daemon.py's Daemon is one); read only."""

    cfg: "Config"
    ctl: "Controller"
    store: Any
    cluster: Any
    records: Mapping[str, Mapping["RecordKey", "RecordSet"]]
    latest: Mapping["NodeKey", Sequence["ProbeResult"]]
    zones: Mapping[str, Any]

    def clock(self) -> datetime: ...


def live_document(*, cfg: "Config", ctl: "Controller", records: Mapping[str, Mapping["RecordKey", "RecordSet"]],
                  probes: Mapping[NodeKey, Sequence["ProbeResult"]], state_path: Path, now: datetime) -> dict[str, Any]:
    """The status document of a running engine; called from the HTTP thread.

    Only copies of the engine's dicts are read (a dict copy is atomic under the GIL); the
    state store is read through a read-only connection of this request's own.
    """
    from ..state.sqlite import StateStore

    health, records, probes = dict(ctl.health), dict(records), dict(probes)
    reader = StateStore.reader(state_path)
    try:
        facts = read_store(reader)
    finally:
        reader.close()
    plan = plan_now(ctl, records, health, facts, now)
    doc = document(cfg, records=records, health=health, plan=plan, store=facts, now=now, probes=probes)
    doc["fences"] = fences(ctl)
    return doc


def daemon_document(daemon: DaemonView) -> dict[str, Any]:
    """`r53lb run`'s status document: its live health, records and latest probes; a failing
    zone shows its error's class (the page passes everything through `public` too)."""
    assert daemon.store is not None
    if daemon.cluster is not None:
        doc = cluster_document(daemon)
    else:
        doc = live_document(cfg=daemon.cfg, ctl=daemon.ctl, records=daemon.records, probes=daemon.latest,
                            state_path=daemon.store.path, now=daemon.clock())
    classes = {name: z.error_class for name, z in list(daemon.zones.items())}
    for zone, err in doc["zone_errors"].items():
        # The watcher keeps Route 53's whole message for alerts and the log; the page gets its class.
        err["error"] = f"{classes.get(zone) or 'Route 53 error'} (the controller's log has the details)"
    return doc


# An AWS message names the caller: "User: arn:aws:sts::123456789012:assumed-role/...".
_ARN = re.compile(r"\barn:aws[a-z-]*:[^\s\"'<>,;()]*")
_ACCOUNT_ID = re.compile(r"(?<![0-9])[0-9]{12}(?![0-9])")


def public(value: Any) -> Any:
    """A status document as the HTTP port may show it: no ARN or account id in any text (an alert or
    history line may quote an AWS error), and +Inf/-Inf/NaN (a Prometheus rule's value) as the
    strings Prometheus writes, so /api/status stays JSON (json.dumps would write `Infinity`)."""
    if isinstance(value, str):
        if "arn:" in value:
            value = _ARN.sub("arn:…", value)
        return _ACCOUNT_ID.sub("…", value) if any(c.isdigit() for c in value) else value
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("+Inf" if value > 0 else "-Inf")
    if isinstance(value, dict):
        return {k: public(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [public(v) for v in value]
    return value


def cluster_document(daemon: DaemonView) -> dict[str, Any]:
    """A replica's status document: the quorum view it plans with, the table's drains and history,
    and the cluster (replicas, leader, epoch, votes per node), read from the shared table."""
    from .status import cluster_view

    assert daemon.cluster is not None
    ctl, now = daemon.ctl, daemon.clock()
    health = daemon.cluster.planning_health(dict(ctl.health))
    records, probes = dict(daemon.records), dict(daemon.latest)
    facts = read_store(daemon.store)  # type: ignore[arg-type]
    plan = plan_now(ctl, records, health, facts, now)
    doc = document(daemon.cfg, records=records, health=health, plan=plan, store=facts, now=now, probes=probes)
    doc["fences"] = fences(ctl)
    doc["cluster"] = cluster_view(daemon.cfg, daemon.store, doc["nodes"])
    return doc


# --- rendering -------------------------------------------------------------------------------

CSS = """\
:root { --ok: #1a7f37; --bad: #c62828; --warn: #9a6700; --muted: #57606a; --line: #d0d7de; --bg: #ffffff;
        --fg: #1f2328; --band: #f6f8fa; }
@media (prefers-color-scheme: dark) {
  :root { --ok: #3fb950; --bad: #ff7b72; --warn: #d29922; --muted: #8b949e; --line: #30363d; --bg: #0d1117;
          --fg: #e6edf3; --band: #161b22; }
}
* { box-sizing: border-box; }
body { margin: 0; padding: 1rem; font: 15px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif;
       background: var(--bg); color: var(--fg); }
header { display: flex; flex-wrap: wrap; gap: .25rem 1rem; align-items: baseline; margin-bottom: 1rem; }
h1 { font-size: 1.3rem; margin: 0; }
h2 { font-size: 1.1rem; margin: 1.5rem 0 .25rem; }
.meta, .muted { color: var(--muted); font-size: .9em; }
.banner { border: 2px solid var(--bad); border-left-width: .6rem; padding: .5rem .75rem; margin: .5rem 0;
          background: var(--band); font-weight: 600; }
.banner.warn { border-color: var(--warn); }
.flags { margin: .25rem 0; }
.flag { display: inline-block; border: 1px solid currentColor; border-radius: .25rem; padding: 0 .35rem;
        margin-right: .35rem; font-size: .85em; font-weight: 600; }
table { border-collapse: collapse; width: 100%; margin: .25rem 0 1rem; }
th, td { text-align: left; vertical-align: top; padding: .35rem .5rem; border-bottom: 1px solid var(--line); }
th { font-size: .85em; color: var(--muted); font-weight: 600; }
tr.row-down td, tr.row-drained td, tr.row-unknown td { background: var(--band); }
.up { color: var(--ok); font-weight: 600; }
.down { color: var(--bad); font-weight: 600; }
.drained, .unknown, .warn { color: var(--warn); font-weight: 600; }
.num { font-variant-numeric: tabular-nums; white-space: nowrap; }
.probe { display: block; }
.probe.ok { color: var(--ok); }
.probe.fail { color: var(--bad); }
code { font-size: .9em; }
/* A phone: every row becomes a card, each cell labelled by its column. */
@media (max-width: 760px) {
  body { padding: .5rem; }
  table, thead, tbody, tr, th, td { display: block; width: 100%; }
  thead { position: absolute; left: -9999px; }
  tr { border: 1px solid var(--line); border-radius: .35rem; margin: 0 0 .6rem; padding: .25rem 0; }
  td { border: 0; padding: .2rem .6rem; }
  td::before { content: attr(data-label); display: block; font-size: .75em; color: var(--muted);
               text-transform: uppercase; letter-spacing: .03em; }
}
"""

OK, FAIL = "\u2714", "\u2716"  # words beside every colour: a mark, then the check's detail
_HEALTH = {"up": ("up", "\u25b2 up"), "down": ("down", "\u25bc down"), "unknown": ("unknown", "? unknown")}


def _e(value: Any) -> str:
    return escape("" if value is None else str(value), quote=True)


def _pct(share: float | None) -> str:
    return "" if share is None else f"{share:.0%}"


def _when(iso: str | None) -> str:
    if not iso:
        return ""
    try:
        return datetime.fromisoformat(iso).astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return iso


def _td(label: str, inner: str, cls: str = "") -> str:
    c = f' class="{cls}"' if cls else ""
    return f'<td data-label="{_e(label)}"{c}>{inner}</td>'


def _node_row(r: Mapping[str, Any]) -> str:
    cls, word = _HEALTH.get(r["health"], ("unknown", _e(r["health"])))
    health = f'<span class="{cls}">{word}</span>'
    row_cls = "drained" if r["drained"] else cls
    if r["drained"]:
        health += ' <span class="drained">\u2298 drained</span>'
    if r["active"] == r["node"]:
        health += ' <span class="flag">active</span>'
    weight = "missing" if r["weight"] is None else str(r["weight"])
    desired = "?" if r["desired_weight"] is None else str(r["desired_weight"])
    change = "" if r["weight"] == r["desired_weight"] else " <span class=\"warn\">(pending)</span>"
    weights = f'<span class="num">{_e(weight)} \u2192 {_e(desired)}</span>{change}' \
              f'<br><span class="muted">base {_e(r["base_weight"])}</span>'
    # The weight's reason first (it usually names the cause), then what it does not say.
    notes = [_e(r["reason"])] if r["reason"] else []
    if r["health"] == "down" and r["last_result"] and r["last_result"] not in (r["reason"] or ""):
        notes.append(f'<span class="down">last probe</span>: {_e(r["last_result"])}')
    if r["drained"] and r["drained"] not in (r["reason"] or ""):
        notes.append(f'<span class="drained">drained</span>: {_e(r["drained"])}')
    if r["health"] == "down":
        notes.append(f'<span class="muted">down since {_e(_when(r["since"]))}</span>')
    if r["drained"]:
        notes.append(f'<span class="muted">drained since {_e(_when(r["drained_at"]))}</span>')
    reason = "<br>".join(notes)
    if r["probes"] is None:
        probes = f'<span class="muted">{_e(r["last_result"])}</span>'
    elif not r["probes"]:
        probes = '<span class="muted">not probed yet</span>'
    else:
        probes = "".join(
            f'<span class="probe {"ok" if p["ok"] else "fail"}">{OK if p["ok"] else FAIL} '
            f'{_e(p["check"])} <span class="num">{p["latency_ms"]:.0f} ms</span>'
            + ("" if p["ok"] else f": {_e(p['detail'])}") + "</span>"
            for p in r["probes"])
    shares = []
    if r["slow_start_share"] is not None and r["slow_start_share"] < 1:
        shares.append(f"slow start {_pct(r['slow_start_share'])}")
    if r["warmup_share"] is not None:
        nxt = r["warmup_next"]
        step = f", next {_pct(nxt['share'])} at {_when(nxt['at'])}" if nxt else ""
        paused = f" (paused: {r['warmup_paused']})" if r.get("warmup_paused") else ""
        shares.append(f"warm-up {_pct(r['warmup_share'])}{step}{paused}")
    for sig in r.get("signals") or ():
        # Agent and metric signals: a share below 100%, a drain, or out with the signal's own reason.
        if sig.get("out") or sig.get("drain") or (sig.get("share") is not None and sig["share"] < 1):
            shares.append(sig.get("out") or sig.get("reason") or f"{sig.get('check')} {_pct(sig.get('share') or 0)}")
        elif sig.get("kind") in ("mta_sts", "tlsrpt", "sending") and sig.get("reason"):
            shares.append(sig["reason"])  # mail security: TLS-RPT counts, an MTA-STS testing warning
    if r.get("dane"):  # smtp `dane`: the node's state against the pool record's TLSA set
        shares.append("DANE " + {"match": "ok", "none": "no TLSA published", "unusable": "no usable TLSA"}
                      .get(r["dane"]["state"], f"{r['dane']['state']}: {r['dane']['detail']}"))
    rep = ('<span class="down">\u2716 listed</span> on ' + _e(r["listed_detail"] or ", ".join(r["listed_on"]))
           + (" (quarantined)" if r["quarantined"] else "")) if r["listed_on"] else "clean"
    return (f'<tr class="row-{row_cls}">'
            + _td("node", f'<strong>{_e(r["node"])}</strong> <span class="muted">{_e(r["type"])}</span>')
            + _td("health", health)
            + _td("weight now \u2192 desired", weights)
            + _td("reason", reason)
            + _td("last probe", probes)
            + _td("slow start / warm-up / signals", _e("; ".join(shares)) or '<span class="muted">full</span>')
            + _td("reputation", rep)
            + "</tr>")


def _pool_section(pool: Mapping[str, Any], rows: list[Mapping[str, Any]]) -> str:
    flags = []
    if pool["panic"]:
        flags.append('<span class="flag down">\u26a0 PANIC: held at min_in_service</span>')
    if pool["fail_open"]:
        flags.append('<span class="flag down">\u26a0 FAIL OPEN: no healthy node, base weights</span>')
    if not pool["read"]:
        flags.append('<span class="flag warn">? Route 53 not read yet</span>')
    by_node = {r["node"]: r for r in rows}
    up = sum(1 for r in by_node.values() if r["health"] == "up")
    serving = len({r["node"] for r in rows if r["weight"]})
    notes = "".join(f'<div class="banner warn">{_e(a)}</div>' for a in pool["alerts"] + pool["errors"])
    head = ("<tr>" + "".join(f"<th>{h}</th>" for h in (
        "node", "health", "weight now \u2192 desired", "reason", "last probe", "slow start / warm-up / signals",
        "reputation")) + "</tr>")
    return (f'<section><h2>{_e(pool["name"])} <span class="muted">{_e(pool["record"])} \u00b7 '
            f'{_e(pool["mode"])} \u00b7 zone {_e(pool["zone"])} \u00b7 {up}/{len(by_node)} up \u00b7 '
            f'{serving} carrying weight</span></h2>'
            + (f'<div class="flags">{"".join(flags)}</div>' if flags else "") + notes
            + f"<table><thead>{head}</thead><tbody>"
            + "".join(_node_row(r) for r in rows) + "</tbody></table></section>")


def _history(events: list[Mapping[str, Any]]) -> str:
    if not events:
        return '<p class="muted">no events yet</p>'
    body = "".join(
        "<tr>" + _td("time (UTC)", f'<span class="num">{_e(_when(e["at"]))}</span>')
        + _td("pool/node", "\u2014" if e["pool"] == "-" else _e(f'{e["pool"]}/{e["node"]}')) + _td("kind", _e(e["kind"]))
        + _td("change", _e(" \u2192 ".join(s for s in (e["from"], e["to"]) if s)))
        + _td("reason", _e(e["reason"])) + "</tr>"
        for e in events)
    head = "<tr><th>time (UTC)</th><th>pool/node</th><th>kind</th><th>change</th><th>reason</th></tr>"
    return f"<table><thead>{head}</thead><tbody>{body}</tbody></table>"


def render(doc: Mapping[str, Any], refresh: int = REFRESH_SECONDS) -> str:
    """The status page for one status document. Every value from the document is escaped."""
    banners = []
    if doc["hold"]:
        banners.append(f'<div class="banner" role="alert">\u26a0 HOLD: {_e(doc["hold"])} \u2014 '
                       "nothing is written to Route 53 until it clears</div>")
    for zone, err in doc["zone_errors"].items():
        banners.append(f'<div class="banner" role="alert">\u2716 zone {_e(zone)}: Route 53 failing since '
                       f'{_e(_when(err["since"]))}: {_e(err["error"])}</div>')
    by_pool: dict[str, list[Mapping[str, Any]]] = {}
    for r in doc["nodes"]:
        by_pool.setdefault(r["pool"], []).append(r)
    sections = "".join(_pool_section(p, by_pool.get(p["name"], [])) for p in doc["pools"])
    title = ("HOLD \u00b7 " if doc["hold"] else "") + "r53lb status"
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="refresh" content="{int(refresh)}">
<title>{title}</title>
<link rel="stylesheet" href="/status.css">
</head>
<body>
<header><h1>r53lb status</h1>
<span class="meta">at {_e(_when(doc["generated_at"]))} UTC \u00b7 refreshes every {int(refresh)} s \u00b7
read-only \u00b7 <a href="/api/status">JSON</a> \u00b7 <a href="/metrics">metrics</a></span></header>
{"".join(banners)}
{sections}
<h2>History <span class="muted">latest first</span></h2>
{_history(doc["history"])}
</body>
</html>
"""


# --- HTTP --------------------------------------------------------------------------------------


def _respond(start_response: StartResponse, status: str, body: bytes, ctype: str, method: str,
             extra: Iterable[tuple[str, str]] = ()) -> list[bytes]:
    headers = [("Content-Type", ctype), ("Content-Length", str(len(body))), *SECURITY_HEADERS, *extra]
    start_response(status, headers)
    return [] if method == "HEAD" else [body]


class _Bodies:
    """The page and the JSON of one status document, built at most once at a time and reused
    for REUSE_FACTOR times what building them cost.

    The HTTP thread shares the GIL with the event loop: with 10,000 nodes a build takes about a
    second, so any number of viewers costs at most 1/(1 + REUSE_FACTOR) of a core, while a small
    fleet (a build in milliseconds) is rebuilt on every request and shows a drain at once.
    """

    REUSE_FACTOR = 5.0

    def __init__(self, status: StatusDoc, refresh: int) -> None:
        self.status, self.refresh = status, refresh
        self.lock = threading.Lock()  # one build at a time; other viewers wait for it and share it
        self.doc: dict[str, Any] | None = None
        self.bodies: dict[str, bytes] = {}
        self.built_at = 0.0
        self.cost = 0.0  # seconds spent on the current document: building and rendering it

    def get(self, kind: str) -> bytes:
        """'html' or 'json'."""
        with self.lock:
            started = time.monotonic()
            if self.doc is None or started - self.built_at > self.cost * self.REUSE_FACTOR:
                self.doc, self.bodies, self.built_at, self.cost = public(self.status()), {}, started, 0.0
            if kind not in self.bodies:
                self.bodies[kind] = (json.dumps(self.doc, indent=2, default=str, allow_nan=False) if kind == "json"
                                     else render(self.doc, self.refresh)).encode()
            self.cost += time.monotonic() - started
            return self.bodies[kind]


def status_app(status: StatusDoc, refresh: int = REFRESH_SECONDS) -> Callable[[dict[str, Any], StartResponse],
                                                                               list[bytes] | None]:
    """A WSGI handler for the page's paths; returns None for a path it does not serve."""
    css = CSS.encode()
    bodies = _Bodies(status, refresh)

    def app(environ: dict[str, Any], start_response: StartResponse) -> list[bytes] | None:
        path, method = environ.get("PATH_INFO", "/"), environ.get("REQUEST_METHOD", "GET")
        if path not in ("/", "/index.html", "/api/status", "/status.css", "/favicon.ico"):
            return None
        if path == "/status.css":
            return _respond(start_response, "200 OK", css, "text/css; charset=utf-8", method)
        if path == "/favicon.ico":  # browsers ask; an empty answer keeps the console clean
            start_response("204 No Content", list(SECURITY_HEADERS))
            return []
        kind = "json" if path == "/api/status" else "html"
        try:
            body = bodies.get(kind)
        except Exception as e:  # the page must answer, whatever broke; the log has the details
            log.exception("status page: cannot build the status document")
            body = f"status unavailable: {type(e).__name__} (the controller's log has the details)\n".encode()
            return _respond(start_response, "503 Service Unavailable", body, "text/plain; charset=utf-8", method)
        ctype = "application/json" if kind == "json" else "text/html; charset=utf-8"
        return _respond(start_response, "200 OK", body, ctype, method)

    return app
