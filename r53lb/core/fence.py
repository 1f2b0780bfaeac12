"""The zone's fence: a TXT record set r53lb owns in every zone it writes (pure: no I/O, no clock).

Every change batch DELETEs the fence exactly as read and CREATEs the next one, so Route 53
(which applies a batch all or nothing) refuses a batch planned from a zone version another
writer has since changed, whichever record sets the two batches touch: pool-wide rules
(never all zero, floor, blast radius) then hold against a zone version, not per record set.

The fence also carries each pool's recent drains for health with their age as the writer
measured it on its monotonic clock when it wrote: a reader adds the time since *it* first
read that fence version, a lower bound of each drain's age whatever the wall clocks say.
That is the drain budget of `run`'s interval, derived from what was written: a restart, a new
leader or a clock step can neither reset it nor block it for longer than one interval.

    "r53lb-fence v=1 epoch=7 seq=42 replica=ctl-eu-1 id=3f9c2a10"
    "r53lb-drains pool=smtp-inbound part=0 ms=1200,30450"
"""

from __future__ import annotations

import hashlib
import re
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

__all__ = ["FENCE_LABEL", "FENCE_TTL", "Fence", "FenceError", "aged", "carry", "fence_name", "first", "fit", "young"]

FENCE_LABEL = "_r53lb"
FENCE_TTL = 60
VERSION = 1
MAX_STRING = 255  # one TXT character-string, as Route 53 takes it
_HEAD = "r53lb-fence"
_DRAINS = "r53lb-drains"
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')
_SAFE = "-._~@:+"  # kept as they are in replica and pool names; anything else is %-escaped


class FenceError(ValueError):
    """The fence record set holds something r53lb does not read (another format, an edit by hand)."""


def fence_name(zone_name: str) -> str:
    """`_r53lb.example.com` for zone `example.com` (normalized: lowercase, no trailing dot)."""
    return f"{FENCE_LABEL}.{zone_name.rstrip('.').lower()}"


def _q(text: str) -> str:
    return urllib.parse.quote(text, safe=_SAFE)


MAX_NAME = 100  # escaped characters of a pool or replica name in a fence string


def fit(name: str) -> str:
    """How the fence names a pool or replica: the name itself, or `#` and a digest when its escaped
    form would not leave room in a 255-character TXT string (a long or non-ASCII name)."""
    if len(_q(name)) <= MAX_NAME:
        return name
    return "#" + hashlib.sha256(name.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Fence:
    """One version of a zone's fence."""

    epoch: int  # the writer's lease epoch (0: a writer without a cluster)
    seq: int  # one more at every batch
    replica: str
    token: str  # random per batch: a writer recognises its own batch after a lost answer
    drains: Mapping[str, tuple[int, ...]] = field(default_factory=dict)  # pool -> drain ages (ms) at write

    @property
    def label(self) -> str:
        return f"epoch {self.epoch}, seq {self.seq}, replica {self.replica}"

    def values(self) -> list[str]:
        """The record set's TXT values, each one quoted string of at most 255 characters."""
        out = [f'"{_HEAD} v={VERSION} epoch={self.epoch} seq={self.seq} replica={_q(fit(self.replica))} id={self.token}"']
        for pool in sorted(self.drains):
            ages = [str(a) for a in self.drains[pool]]
            if not ages:
                continue
            name = _q(fit(pool))
            prefix_len = len(f"{_DRAINS} pool={name} part=000 ms=")
            part, chunk = 0, []
            for a in ages:
                if chunk and prefix_len + len(",".join([*chunk, a])) > MAX_STRING:
                    out.append(f'"{_DRAINS} pool={name} part={part} ms={",".join(chunk)}"')
                    part, chunk = part + 1, []
                chunk.append(a)
            out.append(f'"{_DRAINS} pool={name} part={part} ms={",".join(chunk)}"')
        return out

    @classmethod
    def parse(cls, values: Iterable[str]) -> Fence:
        """The fence from its TXT values as Route 53 returns them; FenceError if r53lb cannot read it."""
        head: dict[str, str] | None = None
        drains: dict[str, list[tuple[int, list[int]]]] = {}
        for value in values:
            strings = _QUOTED.findall(value)
            text = "".join(strings) if strings else value
            words = text.split()
            if not words:
                raise FenceError("an empty TXT value")
            try:
                fields = dict(w.split("=", 1) for w in words[1:])
            except ValueError:
                raise FenceError(f"unreadable value {text[:60]!r}") from None
            if words[0] == _HEAD:
                if fields.get("v") != str(VERSION):
                    raise FenceError(f"fence version {fields.get('v')!r}; this r53lb reads version {VERSION}")
                head = fields
            elif words[0] == _DRAINS:
                try:
                    pool = urllib.parse.unquote(fields["pool"])
                    ages = [int(a) for a in fields["ms"].split(",") if a]
                    drains.setdefault(pool, []).append((int(fields.get("part", "0")), ages))
                except (KeyError, ValueError):
                    raise FenceError(f"unreadable value {text[:60]!r}") from None
            else:
                raise FenceError(f"unreadable value {text[:60]!r}")
        if head is None:
            raise FenceError("no r53lb-fence value")
        try:
            epoch, seq = int(head["epoch"]), int(head["seq"])
            replica, token = urllib.parse.unquote(head["replica"]), head["id"]
        except (KeyError, ValueError):
            raise FenceError("the r53lb-fence value lacks epoch, seq, replica or id") from None
        return cls(epoch, seq, replica, token,
                   {p: tuple(a for _, ages in sorted(parts) for a in ages) for p, parts in drains.items()})

    def next(self, epoch: int, replica: str, token: str, drains: Mapping[str, Sequence[int]]) -> Fence:
        """The version a batch written on top of this one CREATEs."""
        return Fence(epoch, self.seq + 1, replica, token, {p: tuple(a) for p, a in drains.items() if a})


def first(epoch: int, replica: str, token: str, drains: Mapping[str, Sequence[int]]) -> Fence:
    """The version the first batch to a zone without a fence CREATEs."""
    return Fence(epoch, 1, replica, token, {p: tuple(a) for p, a in drains.items() if a})


def aged(fence: Fence | None, since_seen: float) -> dict[str, list[float]]:
    """Each pool's drain ages (seconds), at least: age at write + time since this reader first read the version."""
    if fence is None:
        return {}
    extra = max(0.0, since_seen)
    return {p: [a / 1000 + extra for a in ages] for p, ages in fence.drains.items()}


def young(ages: Sequence[float], window: float) -> int:
    """How many drains are younger than the window (one interval of the pool): they spend its budget."""
    return sum(1 for a in ages if a < window)


def carry(ages: Mapping[str, Sequence[float]], new: Mapping[str, int], windows: Mapping[str, float],
          caps: Mapping[str, int]) -> dict[str, list[int]]:
    """The drains the next fence lists (ms, youngest first): the pools' young drains and `new` ones at age 0.

    Only pools in `windows` (the config's pools of the zone) and only drains inside the window
    are kept, at most `caps[pool]` (max_drain_per_cycle) per pool: once that many are younger
    than the window the budget is spent, and older ones leave the window before the kept ones,
    so the budget comes out the same from the youngest `cap` alone. The fence stays bounded.
    """
    out: dict[str, list[int]] = {}
    for pool, window in windows.items():
        keep = [0.0] * new.get(pool, 0) + sorted(a for a in ages.get(fit(pool), ()) if a < window)
        keep = keep[: max(1, caps.get(pool, 1))]
        if keep:
            out[pool] = [int(a * 1000) for a in keep]
    return out
