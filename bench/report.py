"""The Markdown report: one table per comparison, each budget from DESIGN.md beside its number."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bench import blackbox, cluster, daemon, fanout, route53_calls, scale, startup, time_to_dns

OK, MISSED = "met", "**missed**"


@dataclass
class Report:
    machine: dict[str, str]
    date: str
    command: str
    seconds: float = 0.0
    fanout: list[fanout.Row] = field(default_factory=list)
    route53: route53_calls.Result | None = None
    ttd: list[time_to_dns.Measured] = field(default_factory=list)
    scale: scale.Result | None = None
    startup: startup.Result | None = None
    daemon: list[daemon.Row] = field(default_factory=list)
    cluster: cluster.Result | None = None
    blackbox: blackbox.Result | None = None
    profile: dict[str, Any] | None = None  # bench/profile.py's shares of the daemon's CPU, this run
    verdicts: list[tuple[str, bool, str]] = field(default_factory=list)  # (budget, met, detail)

    def verdict(self, budget: str, met: bool, detail: str) -> str:
        self.verdicts.append((budget, met, detail))
        return OK if met else MISSED


def _s(x: float) -> str:
    return f"{x * 1000:.0f} ms" if x < 1 else f"{x:.2f} s"


def fanout_section(r: Report) -> list[str]:
    out = ["## 1. Probe fan-out", "",
           "SMTP nodes on loopback (a separate farm process answering on 127.77.x.y, greeting, EHLO, QUIT), "
           "each side in a fresh worker process at the same concurrency (512, r53lb's default). "
           "The worker probes one node untimed first (imports, first use of the loop: the process's start-up, "
           "taken off), then times the whole cycle; the two asyncio sides alternate, median of the runs. "
           "The sequential `smtplib` loop (connect, EHLO, QUIT, one node after the other) is timed on "
           f"{r.fanout[0].smtplib_n if r.fanout else 100} nodes and scaled to N.", "",
           "| nodes | server delay | r53lb | bare asyncio (floor) | r53lb ÷ floor | sequential smtplib (scaled) "
           "| r53lb speed-up vs sequential | all probes ok |",
           "|---:|---:|---:|---:|---:|---:|---:|:---:|"]
    for row in r.fanout:
        out.append(f"| {row.n:,} | {row.delay_ms:.0f} ms | {_s(row.r53lb_s)} | {_s(row.bare_s)} | {row.vs_floor:.2f}× "
                   f"| {_s(row.smtplib_s)} | {row.vs_sequential:,.{0 if row.vs_sequential >= 10 else 1}f}× | {'yes' if row.ok else 'NO'} |")
    out.append("")
    delayed = [x for x in r.fanout if x.delay_ms > 0]
    at = next((x for x in delayed if x.n == 1000), None)
    if at is not None:
        v = r.verdict("fan-out vs sequential", at.vs_sequential >= 100,
                      f"{at.vs_sequential:,.0f}× at {at.n:,} nodes, 25 ms")
        out.append(f"- Budget ≥ 100× the sequential loop at 1,000 nodes with the delay: "
                   f"{at.vs_sequential:,.0f}× at {at.n:,} nodes: {v}.")
    worst = max(r.fanout, key=lambda x: x.vs_floor, default=None)
    if worst is not None:
        v = r.verdict("fan-out vs floor", worst.vs_floor <= 1.3, f"worst {worst.vs_floor:.2f}×")
        out.append(f"- Budget ≤ 1.3× the floor, with and without the delay: worst {worst.vs_floor:.2f}× "
                   f"({worst.n:,} nodes, {worst.delay_ms:.0f} ms): {v}.")
    return out + [""]


def route53_section(r: Report) -> list[str]:
    res = r.route53
    assert res is not None
    zones = res.zones
    out = ["## 2. Route 53 calls", "",
           f"{res.records:,} weighted record sets in {res.pools} pools over {zones} hosted zones on the strict moto "
           "server (its own process; the counts are its own per-operation request counters). Each cycle is one "
           "`r53lb sync` (a fresh controller on the same state file); the probes are replaced by a fixed health map "
           "because this section counts Route 53 requests. The alternative is what a script without batching "
           "does: one `UPSERT` request per record whose weight changes.", "",
           "| cycle | records changed | r53lb writes | one UPSERT per changed record | r53lb reads "
           "| pages, one name at a time | pages, names side by side | zone lookups |",
           "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for c in res.cycles:
        out.append(f"| {c.label} | {c.changed} | {c.writes} | {c.changed} | {c.reads} | {c.pages_needed} "
                   f"| {c.pages_min} | {c.zone_lookups} |")
    out.append("")
    writes_ok = all(c.writes <= zones for c in res.cycles)
    steady = [c for c in res.cycles if c.changed == 0]
    steady_ok = all(c.writes == 0 for c in steady)
    reads_ok = all(c.reads <= c.pages_needed for c in res.cycles)
    out.append(f"- Budget at most one write per zone per cycle (≤ {zones}): most "
               f"{max(c.writes for c in res.cycles)}: {r.verdict('route53 writes per zone per cycle', writes_ok, f'most {max(c.writes for c in res.cycles)} for {zones} zones')}.")
    out.append(f"- Budget zero writes in the steady state: {', '.join(str(c.writes) for c in steady)}: "
               f"{r.verdict('route53 writes in the steady state', steady_ok, ', '.join(str(c.writes) for c in steady))}.")
    out.append(f"- Budget reads ≤ the pages the pools' names need: most {max(c.reads for c in res.cycles)} reads "
               f"for {res.cycles[0].pages_needed} names of {max(1, res.records // res.pools)} sets "
               f"({res.cycles[0].pages_min} pages when names sit side by side): "
               f"{r.verdict('route53 reads per cycle', reads_ok, f'most {max(c.reads for c in res.cycles)}, pages needed {res.cycles[0].pages_needed}')}.")
    out.append("- Zone lookups (`ListHostedZonesByName`): one per zone per `r53lb sync` process when the config "
               "names zones; none when it gives zone ids (`zone: Z...`); `r53lb run` looks each up once.")
    return out + [""]


def ttd_section(r: Report) -> list[str]:
    out = ["## 3. Time to DNS", "",
           "A node is killed (its SMTP server stops listening: connection refused) at a random point of the probe "
           "schedule; the time is to its weight 0 in Route 53 (the moto server, polled every 20 ms). "
           "`r53lb run` runs as a subprocess, as systemd runs it. HAProxy watches the same kind of kill with "
           "the same inter, fastinter, fall and check timeout (`option smtpchk`); its time is to the DOWN state "
           "in its stats socket (detection only: nothing is written to DNS).", "",
           "| profile | tool | runs | median | min – max | budget | |",
           "|---|---|---:|---:|---:|---:|---|"]
    for m in r.ttd:
        budget = m.profile.budget
        if not m.seconds:
            out.append(f"| {m.profile.label} | {m.tool} | 0 | – | – | – | {m.note} |")
            continue
        if m.tool.startswith("r53lb"):
            v = r.verdict(f"time to DNS ({m.profile.name})", max(m.seconds) <= budget,
                          f"median {m.median:.2f}s, max {max(m.seconds):.2f}s, budget {budget:g}s")
            verdict = f"every run {v}" if max(m.seconds) <= budget else v
            out.append(f"| {m.profile.label} | {m.tool} | {len(m.seconds)} | {m.median:.2f} s "
                       f"| {min(m.seconds):.2f} – {max(m.seconds):.2f} s | ≤ {budget:g} s | {verdict} |")
        else:
            out.append(f"| {m.profile.label} | {m.tool} | {len(m.seconds)} | {m.median:.2f} s "
                       f"| {min(m.seconds):.2f} – {max(m.seconds):.2f} s | | {m.note}, detection only |")
    profiles = list(dict.fromkeys(m.profile for m in r.ttd))
    for p in profiles:
        cron = 60 + (p.fall - 1) * p.fastinter
        out.append(f"| {p.label} | `r53lb sync` from cron, every minute (model) | | ≈ {30 + cron - 60:.0f} s "
                   f"| {(p.fall - 1) * p.fastinter:g} – {cron:g} s | | computed: the next run, its confirmations "
                   "within the run, the write |")
    out.append("| Route 53 health check, fast (10 s interval, failure threshold 1) | Route 53 (documented, not "
               "measured) | | ≈ 5 s (model) | ≈ 0 – 10 s, plus aggregation across checker regions | | TCP or HTTP only: "
               "it cannot speak SMTP; no AWS account here |")
    return out + [""]


def scale_section(r: Report) -> list[str]:
    res = r.scale
    assert res is not None
    out = ["## 4. Scale", "",
           f"{res.nodes:,} nodes in {res.pools} pools over {res.zones} zones, all healthy, real `smtp` checks "
           f"against the farm ({res.nodes:,} loopback addresses, its own process) and the strict moto server "
           "(its own process, so neither is counted). Each row is one `r53lb sync --json` process as cron runs it: "
           "wall time with start-up included, peak RSS from `wait4`.", "",
           "| run | wall time | peak RSS | changes | writes | exit |", "|---|---:|---:|---:|---:|---:|"]
    for run in res.runs:
        out.append(f"| {run.label} | {run.wall_s:.2f} s | {run.peak_rss_mb:.0f} MB | {run.changes} | {run.writes} "
                   f"| {run.exit_code} |")
    out.append(f"| the floor: a bare asyncio process probing the same nodes once while it reads the same zones "
               f"with boto3 (start-up included) | {res.floor_s:.2f} s | | | | |")
    if res.floor_uv_s:
        out.append(f"| the same floor on uvloop (the loop r53lb runs on) | {res.floor_uv_s:.2f} s | | | | |")
    steady = res.runs[-1]
    out.append("")
    if res.nodes >= 10_000:
        out.append(f"- Budget one cycle with nothing to change ≤ 1.5× the floor: {res.vs_floor:.2f}×: "
                   f"{r.verdict('scale vs floor', res.vs_floor <= 1.5, f'{res.vs_floor:.2f}× ({steady.wall_s:.2f}s vs {res.floor_s:.2f}s)')}"
                   + (f" (÷ the floor on uvloop: {steady.wall_s / res.floor_uv_s:.2f}×)." if res.floor_uv_s else "."))
        out.append(f"- Budget peak RSS ≤ 150 MB: {steady.peak_rss_mb:.0f} MB: "
                   f"{r.verdict('scale RSS', steady.peak_rss_mb <= 150, f'{steady.peak_rss_mb:.0f} MB')}.")
    return out + [""]


def daemon_section(r: Report) -> list[str]:
    out = ["## 6. Daemon cost", "",
           "`r53lb run` as a subprocess in steady state against the SMTP farm (greeting, EHLO, QUIT, no delay, "
           "all healthy), measured over a window after its first full round: CPU seconds of its processes "
           "(/proc utime + stime of the main process and of its probe workers, when `defaults.probe_workers: auto` "
           "started some), probes made (its own `r53lb_probe_duration_seconds_count`), RSS (summed). The floor is "
           "a bare asyncio process probing the same addresses on the same schedule (each node every interval, "
           "starts spread evenly), measured the same way, on asyncio's own loop (the budgets' floor) and on uvloop "
           "(the loop r53lb runs on, r53lb/eventloop.py): the second ratio is what r53lb adds to the bare dialogue "
           "on the same loop. The farm shares the two cores.", "",
           "| profile | probes made / asked | CPU per probe | floor CPU per probe | ÷ floor | floor on uvloop | ÷ floor on uvloop "
           "| processes: share of a core each | RSS |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in r.daemon:
        each = " + ".join(f"{x:.0%}" for x in row.shares) if row.shares else f"{row.core_share:.0%}"
        out.append(f"| {row.label} | {row.made:,} / {row.asked:,} ({row.on_schedule:.1%}) | {row.cpu_per_probe_us:.0f} µs "
                   f"| {row.floor_per_probe_us:.0f} µs | {row.vs_floor:.2f}× | {row.floor_uv_per_probe_us:.0f} µs "
                   f"| {row.vs_floor_uv:.2f}× | {row.processes}: {each} | {row.rss_mb:.0f} MB |")
    out.append("")
    for row in r.daemon:
        if row.nodes == 2000:
            out.append(f"- {row.label}: CPU per probe ≤ 1.5× the floor: {row.vs_floor:.2f}×: "
                       f"{r.verdict(f'daemon CPU per probe ({row.label})', row.vs_floor <= 1.5, f'{row.vs_floor:.2f}×')}.")
            out.append(f"- {row.label}: ≥ 99% of the probes asked for: {row.on_schedule:.1%}: "
                       f"{r.verdict(f'daemon on schedule ({row.label})', row.on_schedule >= 0.99, f'{row.on_schedule:.1%}')}.")
        elif row.nodes == 4000:
            each = " + ".join(f"{x:.0%}" for x in row.shares)
            out.append(f"- {row.label}: ≥ 95% of the probes asked for: {row.on_schedule:.1%}: "
                       f"{r.verdict(f'daemon on schedule ({row.label})', row.on_schedule >= 0.95, f'{row.on_schedule:.1%}')}.")
            out.append(f"- {row.label}: on both cores (two processes, each ≥ 20% of a core): {each}: "
                       f"{r.verdict(f'daemon on both cores ({row.label})', row.both_cores, each)}.")
        else:
            out.append(f"- {row.label}: CPU per probe ≤ 2× the floor: {row.vs_floor:.2f}×: "
                       f"{r.verdict(f'daemon CPU per probe ({row.label})', row.vs_floor <= 2.0, f'{row.vs_floor:.2f}×')}.")
        if row.nodes >= 10_000:
            out.append(f"- {row.label}: under 40% of one core: {row.core_share:.0%}: "
                       f"{r.verdict(f'daemon core share ({row.label})', row.core_share < 0.40, f'{row.core_share:.0%}')}.")
            out.append(f"- {row.label}: RSS ≤ 250 MB: {row.rss_mb:.0f} MB: "
                       f"{r.verdict(f'daemon RSS ({row.label})', row.rss_mb <= 250, f'{row.rss_mb:.0f} MB')}.")
    return out + [""]


def blackbox_section(r: Report) -> list[str]:
    b = r.blackbox
    assert b is not None
    interval = b.nodes / b.rate
    out = ["## 8. Against blackbox_exporter", "",
           f"The same {b.nodes:,} loopback SMTP nodes (the farm), {b.rate:.0f} probes/s, {b.window:.0f} s windows, "
           "one side after the other in one run. blackbox_exporter (Debian's `prometheus-blackbox-exporter`: "
           f"{b.exporter_version}) runs a `tcp` module whose `query_response` does greeting, EHLO, QUIT; a driver "
           "process (not counted) asks its `/probe` for each node in turn over keep-alive connections, as a "
           "Prometheus scraping every node would. `r53lb run` probes each node every "
           f"{interval:g} s: the whole daemon (probe, decide, metrics). CPU is the process's utime + stime over the "
           f"window, divided by the probes that succeeded. Each side is measured in {b.n_rounds} "
           "rounds one after the other; the median round counts.", "",
           "| | probes | CPU per probe | RSS |", "|---|---:|---:|---:|",
           f"| blackbox_exporter, whole process, `/probe` answers included | {b.bb_made:,} | {b.bb_us:.0f} µs | {b.bb_rss_mb:.0f} MB |",
           f"| `r53lb run`, whole daemon | {b.r53lb_made:,} | {b.r53lb_us:.0f} µs | {b.r53lb_rss_mb:.0f} MB |",
           f"| bare asyncio dialogue on the same schedule (the floor) | {b.floor_made:,} | {b.floor_us:.0f} µs | |",
           f"| the same bare dialogue on uvloop (the loop r53lb runs on) | {b.floor_uv_made:,} | {b.floor_uv_us:.0f} µs | |",
           ""] + ([f"Each round's CPU per probe (µs): {b.rounds}.", ""] if b.rounds else [])
    if b.nodes < 1000:
        return out  # the smoke's sizes: no budget applies
    out += [
           f"- Budget r53lb's CPU per probe ≤ 0.6× blackbox_exporter's: {b.vs_blackbox:.2f}× "
           f"(floor {b.floor_us / b.bb_us if b.bb_us else 0:.2f}×): "
           f"{r.verdict('CPU per probe vs blackbox_exporter', b.vs_blackbox <= 0.6, f'{b.vs_blackbox:.2f}× (floor {b.floor_us / b.bb_us if b.bb_us else 0:.2f}×)')}.",
           f"- Budget RSS ≤ 60 MB at {b.nodes:,} nodes: {b.r53lb_rss_mb:.0f} MB (blackbox_exporter {b.bb_rss_mb:.0f} MB): "
           f"{r.verdict(f'RSS at {b.nodes:,} nodes', b.r53lb_rss_mb <= 60, f'{b.r53lb_rss_mb:.0f} MB')}.", ""]
    return out


# Measured once before the probe path was cut (the commit before "Probe hot path: one timer per
# SMTP probe"): bench/profile.py, 2,000 nodes every 1 s, on the same 2-core machine under load.
PROFILE_BEFORE = {
    "cpu_per_probe_us": 610,
    "shares": {
        "sockets and transports": 0.381, "scheduling (event loop, tasks, futures)": 0.304,
        "SMTP dialogue (probe, runner, result)": 0.167, "timers and deadlines": 0.065,
        "SMTP parsing (aiosmtplib)": 0.032, "folding results (engine)": 0.026,
        "other threads (HTTP server, scheduler)": 0.014, "metrics": 0.005, "state store (SQLite)": 0.003,
        "logging": 0.0, "TLS": 0.0, "other": 0.004,
    },
}


def profile_section(r: Report) -> list[str]:
    after = r.profile or {}
    shares_after = after.get("shares", {})
    names = list(PROFILE_BEFORE["shares"])
    names += [n for n in shares_after if n not in names]
    out = ["## 9. Where the daemon's CPU goes", "",
           "`python -m bench.profile`: `r53lb run` with 2,000 nodes every 1 s against the farm, sampled from "
           "outside by py-spy (200 Hz, 10 s); each sampled stack counts for the innermost frame that says what "
           "the work was for (bench/profile.py lists the rules). Shares of the busy samples. \"Before\" is the "
           "probe path before it was cut (fixed numbers, measured once); \"after\" is this run"
           + ("" if r.profile else " (not measured in this run: `--only profile`, with py-spy installed)") + ".", "",
           "| share | before | after |", "|---|---:|---:|"]
    for n in names:
        b = PROFILE_BEFORE["shares"].get(n)
        a = shares_after.get(n)
        out.append(f"| {n} | {'' if b is None else f'{b:.1%}'} | {'' if a is None else f'{a:.1%}'} |")
    if r.profile:
        out.append(f"| CPU per probe in the sampled window (py-spy attached) | {PROFILE_BEFORE['cpu_per_probe_us']} µs "
                   f"| {after['cpu_per_probe_us']} µs |")
    out += ["", "- Not in the per-probe path: logging (nothing is logged per probe in steady state) and TLS "
            "(the farm speaks plain SMTP; with STARTTLS the handshake dominates every other share).",
            "- aiosmtplib's reply parsing is about 3% of the samples: it is not the cost, so it stays. Before, the "
            "socket work (connect, write, read, close: kernel and asyncio transports) and the event loop's own "
            "scheduling were about two thirds, and the bare floor pays them too. After, the loop is uvloop: its "
            "work is native code, which py-spy sees as time in the frame that runs the loop (\"event loop and "
            "sockets (uvloop)\"). That share also holds the loop's waits in epoll (without `--native`, py-spy "
            "cannot tell a native wait from native work), so it is not all CPU: read the Python shares against "
            "each other, and the CPU per probe (from /proc) for the total.", ""]
    return out


def startup_section(r: Report) -> list[str]:
    res = r.startup
    assert res is not None
    v = r.verdict("start-up", res.help_s <= 0.3, f"{res.help_s * 1000:.0f} ms")
    return ["## 5. Start-up", "",
            f"| command | median of {res.runs} | budget | |", "|---|---:|---:|---|",
            f"| `r53lb --help` | {res.help_s * 1000:.0f} ms | ≤ 300 ms | {v} |",
            f"| `python -c pass` (the interpreter alone) | {res.python_s * 1000:.0f} ms | | |", ""]


def cluster_section(r: Report) -> list[str]:
    c = r.cluster
    assert c is not None
    n = len(cluster.REPLICAS)
    budget = c.lease + 2
    worst = max(c.handovers) if c.handovers else float("nan")
    v1 = r.verdict("cluster hand-over", bool(c.handovers) and worst <= budget, f"{worst:.2f}s (lease {c.lease:g}s)")
    per = c.writes_per_replica_heartbeat
    v2 = r.verdict("cluster writes", per <= 1.05, f"{per:.2f} per replica per heartbeat")
    month = 30 * 24
    rows = [f"| `{op}` | {v:,.0f} | {v * month / 1e6:.2f} M |" for op, v in sorted(c.requests_per_hour.items())]
    from r53lb.engine.signals import RESTAMP

    checks = (f"every node's HAProxy agent check every {c.agent_interval:g} s (signal checks on: each replica "
              f"keeps its check state in memory, read once at start, written when it changes)"
              if c.agent_interval else "no signal checks")
    # Not in a short window: an unchanged check result's stored time is refreshed every RESTAMP.
    restamp = c.nodes * 3600 / RESTAMP.total_seconds() if c.agent_interval else 0.0
    return [f"## 7. Several controllers ({n} replicas, {c.nodes:,} nodes)", "",
            f"Lease {c.lease:g} s, heartbeat {c.heartbeat:g} s, {checks}; requests counted by the replicas "
            f"over {c.window_s:g} s of steady state (no node changing)."
            + (f" Outside such a window each replica also refreshes the stored time of its unchanged "
               f"check results every {RESTAMP.total_seconds() / 60:g} min: {restamp:,.0f} `PutItem` per "
               f"replica per hour, not counted below." if restamp else ""), "",
            "| DynamoDB operation (all replicas) | per hour | per 30-day month |", "|---|---:|---:|", *rows,
            f"| writes | {c.writes_per_hour:,.0f} | {c.writes_per_hour * month / 1e6:.2f} M |",
            f"| reads | {c.reads_per_hour:,.0f} | {c.reads_per_hour * month / 1e6:.2f} M |", "",
            "| measure | result | budget | |", "|---|---:|---:|---|",
            f"| hand-over after SIGKILL of the leader (worst of {len(c.handovers)}; median "
            f"{c.handover_median:.2f} s) | {worst:.2f} s | ≤ lease + 2 s = {budget:g} s | {v1} |",
            f"| steady-state writes per replica per heartbeat | {per:.2f} | ≤ 1 | {v2} |", ""]


NOTES = """\
## Notes

- **Where a probe's CPU goes (section 9).** Profiled first (py-spy on `r53lb run`, 2,000 nodes
  every 1 s): two thirds of the CPU was the socket work and the event loop that every asyncio
  client pays (the floor too); aiosmtplib's reply parsing was ~3%, so it stays. Cut from the
  per-probe path, in this order: the SMTP probe's three timers are one, moved with `reschedule`,
  and the runner's backstop timer is skipped for it; a job's kind and spec, a node's signal
  intervals and whether its pool has DANE are worked out once per node loop, not per probe;
  metric children are bound once; a steady healthy result (the state would not change) skips
  the fold; a reply text that is already one clean line is not copied; the probe connects to an
  IP literal with the loop's `sock_connect` and hands the socket to `create_connection(sock=)`,
  skipping the resolution step and per-address bookkeeping of `create_connection(host, port)`.
- **The event loop.** Every r53lb process now runs on uvloop (r53lb/eventloop.py;
  `R53LB_EVENT_LOOP=asyncio` for asyncio's own loop). Since a probe is mostly the loop's work, it
  is the largest single cut: at 2,000 probes/s the daemon went from ~320 µs to ~250 µs per probe.
  The budgets' floor is the bare dialogue on asyncio's own loop, as DESIGN.md defines it; the
  tables show the same bare dialogue on uvloop beside it, and the ratio to that one is what r53lb
  adds to the bare dialogue on the loop it actually runs on (about 1.9x at 2,000 probes/s, 1.5x
  at 1,000 probes/s). The probe's polite TLS close no longer reaches into asyncio's private TLS
  state: on the server's close_notify it closes its socket, so no close_notify of its own goes
  out on either loop (tests/test_probe_manners.py runs on both).
- **Both cores.** `defaults.probe_workers: auto` starts one probe worker process per 2,500
  probes/s asked (at most one per core): the main process probes a small shard (one node for
  every three a worker probes, since it also schedules and folds every node); a worker only
  speaks SMTP for its shard and sends back each result as a tuple in batched, pickled frames on
  a pipe. A worker's death is an error, a counter and a restart; its probes in flight run again
  in the main process, so there is no gap. With one process, 4,000 nodes every second is past
  what one core can do: probes queue, time out and are confirmed at `fastinter`, and the
  process kept 933 probes/s at 1,071 µs each (measured once, `probe_workers: 1`).
- **RSS (missed).** `r53lb run` holds about 70 MB before its first node: the interpreter ~11 MB,
  click ~5, pydantic and the config models ~19, the engine's libraries (APScheduler,
  prometheus-client, aiosmtplib, uvloop, SQLite) ~10, boto3 with botocore ~9 and its Route 53
  client (the service model and the endpoint data botocore loads) ~5-12; 1,000 nodes add ~10 MB.
  blackbox_exporter is one static Go binary (~21 MB). httpx and dnspython now load only for a
  fleet with MTA-STS, TLS-RPT or DANE. The 60 MB budget needs the chosen libraries replaced
  (botocore's loaded service model, pydantic's schemas), not a smaller probe path.
- **Scale, what was fixed.** Before this harness the steady 10,000-node `r53lb sync` took 15.6 s
  on this machine: 10.4 s in 200 `ListResourceRecordSets` requests (now one page serves every
  wanted name it holds: 40), ~1.5 s recomputing every pool's record types per record read, ~1 s in
  PyYAML's pure-Python loader (now libyaml's). Then, for the floor that reads Route 53 too: the
  cyclic collector is off while a config is built (its passes over hundreds of thousands of
  new objects found nothing and were 40% of a 10,000-node load: 0.60 s to 0.35 s), `sync` and
  `plan` freeze what they loaded before probing (the collector's later passes skip it), an
  address is parsed once, and the probing runs on uvloop. The reads stay overlapped with the
  probing, on a thread.
- **Scale against the floor.** The floor is one bare process (start-up included) that probes
  every node with the bare dialogue on asyncio's loop while a thread pages through the same zones
  with boto3: what a hand-written script costs for the same network work. `r53lb sync` also
  validates the config, plans every pool with its safety rules, keeps its state file and
  writes its history; the same floor on uvloop is shown beside it.
- **Fan-out.** The farm shares the machine's two cores with the client, so with no delay both
  sides are partly bound by the farm; the ratio to the floor is what r53lb's dialogue costs
  beyond the bare one (aiosmtplib's reply parsing, the per-phase timings, the deadline and the
  result record), less what uvloop saves.
- **The farm** (bench/smtp_farm.py) answers on uvloop: it shares the two cores with what it
  measures, and the cheaper it answers, the less it disturbs the rows.
- **Time to DNS.** A killed node refuses connections at once, so `timeout` never comes into play;
  r53lb's time is the wait for the node's next probe (a random part of `interval`), `fall - 1`
  confirmations `fastinter` apart, the vantage sweep and the write. HAProxy's column is only its
  detection; Route 53's own health checks are listed from their documentation.
"""


def render(r: Report) -> str:
    m = r.machine
    head = ["# Benchmarks", "",
            f"- Machine: {m['cpus']} CPUs, {m['cpu']}, {m['os']}, Python {m['python']}",
            f"- Date: {r.date}",
            f"- Command: `{r.command}` ({r.seconds:.0f} s)",
            "- Every number is from that one run; each comparison was measured side by side in it.", ""]
    body: list[str] = []
    if r.fanout:
        body += fanout_section(r)
    if r.route53:
        body += route53_section(r)
    if r.ttd:
        body += ttd_section(r)
    if r.scale:
        body += scale_section(r)
    if r.startup:
        body += startup_section(r)
    if r.daemon:
        body += daemon_section(r)
    if r.cluster:
        body += cluster_section(r)
    if r.blackbox:
        body += blackbox_section(r)
    if r.daemon or r.profile:
        body += profile_section(r)
    summary = ["## Budgets", "", "| budget | result | |", "|---|---|---|"]
    summary += [f"| {b} | {d} | {OK if ok else MISSED} |" for b, ok, d in r.verdicts]
    return "\n".join(head + summary + [""] + body + [NOTES])


def as_dict(r: Report) -> dict[str, Any]:
    return {"verdicts": [{"budget": b, "met": ok, "detail": d} for b, ok, d in r.verdicts]}
