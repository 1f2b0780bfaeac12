"""`r53lb demo`: the whole loop against an embedded Route 53 and mail servers on loopback.

It starts a moto server in this process (made strict, as Route 53 is), builds the example
fleet's zone and weighted records, starts a real SMTP (STARTTLS) or HTTPS server for every
node on its own 127.0.0.x address, and drives the real controller (`Controller.cycle()`,
the code path of `r53lb sync`) while it kills a balancer, brings it back, fails the HA
pair over and back, and lets a node's own agent (HAProxy's agent-check protocol) drain it
and a metric rule quarantine another. The metric comes from a loopback stand-in for
Prometheus's query API (a real Prometheus and its exporter would make the demo heavy; the
tests use the real server). Every step asserts its outcome in Route 53 within a deadline, so
`make demo` is an end-to-end check: a step that does not happen is a non-zero exit.

No AWS account, no network beyond loopback: fake credentials live in this process's
environment only, the state file and certificates in a temporary directory removed at
the end (Ctrl-C included).

fleet.py: the pools, nodes and timeline, and the world they run in; story.py: the steps and
what each asserts; screen.py: what the terminal shows.
"""

from __future__ import annotations

from .fleet import (AGENT_POOL, DANE_POOL, DEFERRAL_LIMIT, FLEET, METRIC_POOL, ZONE, DemoFailed, DemoNode, DemoPool,
                    Timeline, World, at_rest)
from .screen import Reporter, Row
from .story import Demo, Stats, run

__all__ = ["DemoFailed", "run", "FLEET", "Timeline"]
