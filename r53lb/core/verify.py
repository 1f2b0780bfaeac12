"""`r53lb verify`, the pure part: what one name server's sampled answers say against Route 53's weights.

No I/O here (the queries are in nameservers.py): answers and record sets in, a verdict out.

Route 53 answers a query for a weighted name with ONE record set of the (name, type) group,
chosen at random with probability weight / sum of weights; a set at weight 0 is never
chosen unless every set of the group is at 0, and then all are chosen equally. So from N
answers each set's share is a binomial estimate of its expected share, and a set at 0
must not appear at all.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .records import RecordSet, normalize_value

__all__ = ["NOT_ASKED", "TIMEOUT", "Answer", "NodeShare", "Tolerance", "Verdict", "compare", "expected_shares",
           "no_response"]


@dataclass(frozen=True)
class Tolerance:
    """How far a measured share may stray from the expected one: `sigmas` binomial standard
    deviations for the sample count, plus `floor`.

    Four sigmas make a false alarm about 1 in 15,000 per node and server; the floor absorbs a
    server's random generator being a little off and keeps tiny shares from a zero-width band.
    """

    sigmas: float = 4.0
    floor: float = 0.02

    def band(self, expected: float, samples: int) -> float:
        if samples <= 0:
            return 1.0
        return self.sigmas * math.sqrt(expected * (1 - expected) / samples) + self.floor

    def describe(self, samples: int) -> str:
        widest = self.band(0.5, samples)
        return (f"{self.sigmas:g} binomial sigmas + {self.floor:.0%} for {samples} answers per server "
                f"(at most ±{widest:.1%}, at a 50% share)")

    def to_json(self) -> dict[str, Any]:
        return {"sigmas": self.sigmas, "floor": self.floor}


@dataclass(frozen=True)
class Answer:
    """One response: the values of the record set it carried, or why it carried none."""

    values: frozenset[str] = frozenset()
    error: str | None = None  # "NXDOMAIN", "SERVFAIL", "no data", "timeout", NOT_ASKED, ...


# A query that got no response at all: the server may be down, the answer says nothing about DNS.
TIMEOUT = "timeout"
NOT_ASKED = "not asked"  # the deadline (--timeout) passed, or the server answered none of the first queries


def no_response(error: str) -> bool:
    return error == TIMEOUT or error.startswith(NOT_ASKED)


@dataclass(frozen=True)
class NodeShare:
    node: str  # the set identifier (joined with "+" when several sets hold the same values)
    weight: int
    expected: float
    count: int
    share: float
    band: float
    ok: bool

    def to_json(self) -> dict[str, Any]:
        return {"node": self.node, "weight": self.weight, "expected_share": round(self.expected, 4),
                "share": round(self.share, 4), "count": self.count, "tolerance": round(self.band, 4),
                "ok": self.ok}


@dataclass(frozen=True)
class Verdict:
    """What one name server hands out for one name and type, against Route 53's weights."""

    server: str
    record: str
    type: str
    samples: int  # queries asked
    answered: int  # of those, answers carrying a record set
    nodes: tuple[NodeShare, ...]
    unexpected: Mapping[str, int] = field(default_factory=dict)  # values no record set holds -> count
    errors: Mapping[str, int] = field(default_factory=dict)  # error -> count
    problems: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def silent(self) -> bool:
        """The server gave no response to any query: nothing is known of what it serves."""
        return self.samples > 0 and self.answered == 0 and bool(self.errors) and all(
            no_response(e) for e in self.errors)

    @property
    def outcome(self) -> str:
        return "ok" if self.ok else "no answer" if self.silent else "disagrees"

    def count(self, node: str) -> int:
        return sum(n.count for n in self.nodes if node in n.node.split("+"))

    def to_json(self) -> dict[str, Any]:
        return {"server": self.server, "record": self.record, "type": self.type, "ok": self.ok,
                "outcome": self.outcome, "samples": self.samples, "answered": self.answered,
                "nodes": [n.to_json() for n in self.nodes], "unexpected": dict(self.unexpected),
                "errors": dict(self.errors), "problems": list(self.problems)}


def expected_shares(weights: Mapping[str, int]) -> dict[str, float]:
    """Each set's probability of being the answer (Route 53's weighted routing)."""
    if not weights:
        return {}
    total = sum(weights.values())
    if total == 0:
        return {k: 1 / len(weights) for k in weights}
    return {k: w / total for k, w in weights.items()}


def _fmt_share(x: float) -> str:
    return f"{x:.1%}"


def compare(server: str, record: str, rtype: str, sets: Iterable[RecordSet], answers: Sequence[Answer],
            tolerance: Tolerance) -> Verdict:
    """Judge one server's sampled answers for `record`/`rtype` against the record sets Route 53 holds."""
    sets = [s for s in sets if s.type == rtype]
    # Sets holding the same values cannot be told apart in an answer: judge them as one.
    groups: dict[frozenset[str], list[RecordSet]] = {}
    for s in sorted(sets, key=lambda s: s.set_identifier):
        groups.setdefault(frozenset(normalize_value(rtype, v) for v in s.values), []).append(s)
    weights = {k: sum(s.weight for s in g) for k, g in groups.items()}
    shares = expected_shares(weights)
    all_zero = sum(weights.values()) == 0

    counts: Counter[frozenset[str]] = Counter()
    errors: Counter[str] = Counter()
    for a in answers:
        if a.error is not None:
            errors[a.error] += 1
        else:
            counts[frozenset(normalize_value(rtype, v) for v in a.values)] += 1
    answered = sum(counts.values())

    problems: list[str] = []
    if not sets:
        problems.append(f"Route 53 holds no weighted {rtype} record set at {record}")
    if errors:
        listed = ", ".join(f"{e} x{n}" for e, n in errors.most_common())
        if answered == 0 and all(no_response(e) for e in errors):
            first = sorted(errors.items(), key=lambda kv: (kv[0] != TIMEOUT, -kv[1]))  # the cause, then the rest
            problems.append(f"did not answer ({', '.join(f'{e} x{n}' for e, n in first)})")
        else:
            problems.append(f"{sum(errors.values())} of {len(answers)} queries got no record set ({listed})")
    unexpected = {", ".join(sorted(v)) or "(empty)": n for v, n in counts.items() if v not in groups}
    for values, n in sorted(unexpected.items()):
        problems.append(f"served {values} {n} times: no {rtype} record set at {record} holds it")

    nodes: list[NodeShare] = []
    for values, group in groups.items():
        name = "+".join(s.set_identifier for s in group)
        n = counts.get(values, 0)
        expected = shares[values]
        share = n / answered if answered else 0.0
        band = tolerance.band(expected, answered)
        if weights[values] == 0 and not all_zero:
            ok = n == 0
            if not ok:
                problems.append(f"{name} has weight 0 in Route 53 but was served {n} of {answered} times")
        else:
            ok = answered > 0 and abs(share - expected) <= band
            if answered and not ok:
                why = "the whole pool at weight 0 gives each" if all_zero else f"its weight {weights[values]} gives"
                problems.append(f"{name} served {_fmt_share(share)} of answers; {why} "
                                f"{_fmt_share(expected)} ± {_fmt_share(band)}")
        nodes.append(NodeShare(name, weights[values], expected, n, share, band, ok))
    return Verdict(server, record, rtype, len(answers), answered, tuple(nodes), unexpected, dict(errors),
                   tuple(problems))
