"""`python -m bench`: every comparison, one run, written to docs/benchmarks.md.

    python -m bench                 # the full run (make bench), ~5 minutes
    python -m bench --smoke         # a reduced run with generous sanity bounds (make bench-smoke)
    python -m bench --only fanout,scale --out /tmp/b.md
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from bench import blackbox, cluster, common, daemon, fanout, report, route53_calls, scale, startup, time_to_dns

SECTIONS = ("fanout", "route53", "ttd", "scale", "startup", "daemon", "cluster", "blackbox", "profile")
NOT_IN_SMOKE = {"ttd", "blackbox", "profile"}  # minutes, or a tool the smoke does not need


def full(r: report.Report, only: set[str]) -> None:
    if "fanout" in only:
        r.fanout = fanout.run([100, 1000, 2000], [0.0, 0.025], concurrency=512, repeat=3, seq_n=100)
    if "route53" in only:
        r.route53 = route53_calls.run(zones=10, pools_per_zone=5, nodes_per_pool=20, flip=0.05)
    if "ttd" in only:
        r.ttd = time_to_dns.run([(time_to_dns.DEFAULT, 3), (time_to_dns.FAST, 5)])
    if "scale" in only:
        r.scale = scale.run(nodes=10_000, pools=200, zones=10)
    if "startup" in only:
        r.startup = startup.run(runs=10)
    if "daemon" in only:
        r.daemon = daemon.run(daemon.FULL)
    if "cluster" in only:
        r.cluster = cluster.run(nodes=1000, handovers=3, window=60.0)
    if "blackbox" in only:
        r.blackbox = blackbox.run(nodes=1000, rate=500.0, window=10.0)
    if "profile" in only:
        from bench import profile

        r.profile = profile.profile(2000, 1.0, 10.0) if profile.available() else None


def smoke(r: report.Report, only: set[str]) -> list[str]:
    """Small sizes, a few seconds each; returns what is wrong (generous bounds: the harness works)."""
    wrong = []
    if "fanout" in only:
        r.fanout = fanout.run([50], [0.0, 0.025], concurrency=512, repeat=1, seq_n=10)
        for row in r.fanout:
            if not row.ok:
                wrong.append(f"fan-out: probes failed at {row.n} nodes, {row.delay_ms:.0f} ms")
            if row.vs_floor > 5:
                wrong.append(f"fan-out: r53lb {row.vs_floor:.1f}× the floor")
            if row.delay_ms and row.vs_sequential < 5:
                wrong.append(f"fan-out: only {row.vs_sequential:.1f}× the sequential loop")
    if "route53" in only:
        r.route53 = route53_calls.run(zones=2, pools_per_zone=2, nodes_per_pool=20, flip=0.05)
        for c in r.route53.cycles:
            if c.writes > r.route53.zones or (c.changed == 0 and c.writes) or c.reads > c.pages_needed:
                wrong.append(f"route53: {c}")
        if sum(c.changed for c in r.route53.cycles) == 0:
            wrong.append("route53: no cycle changed a weight")
    if "ttd" in only:
        r.ttd = time_to_dns.run([(time_to_dns.FAST, 1)])
    if "scale" in only:
        r.scale = scale.run(nodes=200, pools=4, zones=2, repeat=1)
        for run in r.scale.runs:
            if run.exit_code != 0 or run.changes or run.writes or run.peak_rss_mb > 1000 or run.wall_s > 60:
                wrong.append(f"scale: {run}")
    if "startup" in only:
        r.startup = startup.run(runs=3)
        if r.startup.help_s > 5:
            wrong.append(f"start-up: r53lb --help took {r.startup.help_s:.1f}s")
    if "daemon" in only:
        r.daemon = daemon.run(daemon.SMOKE)
        for row in r.daemon:
            if row.on_schedule < 0.5 or row.vs_floor > 5:
                wrong.append(f"daemon: {row}")
    if "cluster" in only:
        r.cluster = cluster.run(nodes=20, handovers=1, window=5.0, lease=3.0, heartbeat=0.5, interval=2.0)
        c = r.cluster
        if not c.handovers or max(c.handovers) > c.lease + 5:
            wrong.append(f"cluster: hand-over {c.handovers}")
        if not 0.5 <= c.writes_per_replica_heartbeat <= 1.5:
            wrong.append(f"cluster: {c.writes_per_replica_heartbeat:.2f} writes per replica per heartbeat")
    if "blackbox" in only:
        r.blackbox = blackbox.run(nodes=50, rate=50.0, window=2.0)
        if r.blackbox is not None and (not r.blackbox.bb_made or not r.blackbox.r53lb_made):
            wrong.append(f"blackbox: {r.blackbox}")
    return wrong


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="reduced sizes and sanity bounds only")
    ap.add_argument("--only", default=None, help=f"comma-separated sections: {','.join(SECTIONS)}")
    ap.add_argument("--out", type=Path, default=None,
                    help="where to write the Markdown (default: docs/benchmarks.md; --smoke: none)")
    args = ap.parse_args(argv)
    only = set(args.only.split(",")) if args.only else set(SECTIONS) - (NOT_IN_SMOKE if args.smoke else set())
    unknown = only - set(SECTIONS)
    if unknown:
        ap.error(f"unknown sections: {', '.join(sorted(unknown))}")
    out = args.out if args.out is not None else (None if args.smoke else common.ROOT / "docs" / "benchmarks.md")

    os.environ.update(common.FAKE_AWS_ENV)  # every Route 53 call goes to a local moto server
    common.raise_nofile(16384)
    command = "make bench-smoke" if args.smoke else "make bench"
    if args.only or args.out:
        command = "python -m bench" + " ".join(["", *(argv if argv is not None else sys.argv[1:])])
    r = report.Report(common.machine(), datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), command)
    started = time.monotonic()
    wrong = smoke(r, only) if args.smoke else (full(r, only) or [])
    r.seconds = time.monotonic() - started
    text = report.render(r)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        print(f"wrote {out}")
    else:
        print(text)
    for line in wrong:
        print(f"bench: {line}", file=sys.stderr)
    if not args.smoke:
        missed = [b for b, ok, _ in r.verdicts if not ok]
        print(f"budgets: {len(r.verdicts) - len(missed)} met, {len(missed)} missed {missed or ''}")
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
