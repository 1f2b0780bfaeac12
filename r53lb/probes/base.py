"""What a probe is given and what it returns. Every failure is a result with a reason, never an exception."""

from __future__ import annotations

import functools
import ssl
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from enum import Enum
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from ..core.signals import AgentReply

Status = Literal["ok", "fail", "unknown"]
# The agent's state in one word: an administrative state (ready, drain, maint) or an
# operational one (up, down; HAProxy's fail and stopped are kinds of down).
AgentWord = Literal["ready", "drain", "maint", "up", "down"]

# The most a probe reads from one server, whatever it sends (a hostile server costs a
# probe its deadline, never the controller's memory).
MAX_READ_BYTES = 64 * 1024


class Failure(str, Enum):
    """Why a check did not pass, as a class (metrics and alerts key on it; the reason says the rest)."""

    TIMEOUT = "timeout"
    REFUSED = "refused"
    UNREACHABLE = "unreachable"
    CLOSED = "connection_closed"  # reset or closed by the server
    TLS = "tls"
    CERTIFICATE = "certificate"
    PROTOCOL = "protocol"  # not the protocol spoken, too long, a missing extension
    REPLY = "reply_code"  # an SMTP reply that is not the one wanted
    STATUS = "status"  # an HTTP status outside the expected ones
    REDIRECT = "redirect"  # an HTTP redirect off the node
    BODY = "body"
    LISTED = "listed"  # dnsbl
    SIGNAL = "signal"  # an agent's maint/down, a metric out of bounds
    UNKNOWN = "unknown"  # a signal that could not be read (never changes a weight)
    ERROR = "error"


def failure_of(e: BaseException) -> Failure:
    """The class of an exception a probe met (by its type, never by its text)."""
    import socket
    import ssl

    if isinstance(e, (TimeoutError, socket.timeout)):
        return Failure.TIMEOUT
    if isinstance(e, ssl.SSLCertVerificationError):
        return Failure.CERTIFICATE
    if isinstance(e, ssl.SSLError):
        return Failure.TLS
    if isinstance(e, ConnectionRefusedError):
        return Failure.REFUSED
    if isinstance(e, (ConnectionResetError, ConnectionAbortedError, BrokenPipeError, EOFError)):
        return Failure.CLOSED
    if isinstance(e, socket.gaierror):
        return Failure.UNREACHABLE
    if isinstance(e, OSError) and e.errno in (101, 113, 99, 65):  # ENETUNREACH EHOSTUNREACH EADDRNOTAVAIL
        return Failure.UNREACHABLE
    cause = e.__cause__ or e.__context__
    if cause is not None and cause is not e and not isinstance(e, OSError):
        inner = failure_of(cause)
        if inner is not Failure.ERROR:
            return inner
    name = type(e).__name__
    if name in ("SMTPServerDisconnected", "RemoteProtocolError", "ReadError", "WriteError"):
        return Failure.CLOSED
    if name in ("ConnectError",):
        return Failure.REFUSED if "refused" in str(e).lower() else Failure.UNREACHABLE
    if name in ("SMTPResponseException", "SMTPReadTimeoutError") or "Protocol" in name:
        return Failure.PROTOCOL
    return Failure.ERROR


@dataclass(frozen=True)
class Target:
    """One node as a probe sees it."""

    pool: str
    node: str
    address: str  # where to connect: the node's probe_address, else its first address
    addresses: tuple[str, ...] = ()  # the published addresses (the dnsbl check looks these up)
    helo: str = "localhost"


@dataclass(frozen=True)
class ProbeResult:
    pool: str
    node: str
    check: str  # smtp | http | tcp | dnsbl | agent | prometheus
    status: Status
    latency_ms: float
    detail: str  # one line an operator can act on: 'greeting 421 "4.3.2 too busy"'
    phase: str = ""  # the last phase reached: connect, greeting, ehlo, starttls, ...
    code: int | None = None  # the server's reply code (SMTP) or status (HTTP)
    text: str | None = None  # the server's reply text, trimmed
    phases: dict[str, float] = field(default_factory=dict)  # phase -> ms
    cert_not_after: datetime | None = None
    listed_on: tuple[str, ...] = ()  # dnsbl: zones that list the IP
    failure: Failure | None = None  # why it did not pass (None when it did)
    # Signals that steer a weight rather than say up/down (applied by the engine):
    share: float | None = None  # 0.0-1.0 of the node's weight: the agent's `75%`, a prometheus `scale`
    agent_state: AgentWord | None = None  # the agent's word this time (drain, maint, down, ...), None if it gave none
    agent: "AgentReply | None" = None  # agent: the whole parsed line, for merge_agent()
    value: float | None = None  # prometheus: the query's value
    tls_chain: tuple[bytes, ...] = ()  # smtp with `dane`: the certificates the server presented (DER, leaf first)

    def __post_init__(self) -> None:
        # Every result that did not pass carries a class; a probe that knows better sets it.
        if self.failure is None and self.status != "ok":
            object.__setattr__(self, "failure", Failure.UNKNOWN if self.status == "unknown" else Failure.ERROR)
        elif self.status == "ok" and self.failure is not None:
            object.__setattr__(self, "failure", None)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        del d["tls_chain"]  # DER bytes: the DANE verdict is what gets shown
        d["ok"] = self.ok if self.status != "unknown" else None
        d["latency_ms"] = round(self.latency_ms, 3)
        d["phases"] = {k: round(v, 3) for k, v in self.phases.items()}
        d["cert_not_after"] = self.cert_not_after.isoformat() if self.cert_not_after else None
        d["listed_on"] = list(self.listed_on)
        d["failure"] = self.failure.value if self.failure else None
        return d


class PhaseClock:
    """Milliseconds per protocol phase; a phase entered twice (like tls) adds up.

    `finish()` ends the measured dialogue: what follows (an SMTP probe reading to the server's
    EOF after its 221) is manners, not latency, and no later `stop()` counts it.
    """

    def __init__(self, phase: str = "connect") -> None:
        self.started = self.mark = time.perf_counter()
        self.phase = phase
        self.phases: dict[str, float] = {}
        self.finished = False

    def enter(self, phase: str) -> None:
        self.stop()
        self.phase = phase

    def stop(self) -> None:
        if self.finished:
            return
        now = time.perf_counter()
        self.phases[self.phase] = self.phases.get(self.phase, 0.0) + (now - self.mark) * 1000
        self.mark = now

    def finish(self) -> None:
        self.stop()
        self.finished = True

    def elapsed_ms(self) -> float:
        """The dialogue's duration: up to `finish()` once called, else up to now."""
        return ((self.mark if self.finished else time.perf_counter()) - self.started) * 1000


def trim(text: str, limit: int = 160) -> str:
    """One printable line of at most `limit` characters, for reasons and logs."""
    if len(text) <= limit and text.isprintable() and "  " not in text and text[:1] != " " and text[-1:] != " ":
        return text  # the usual reply text: already one clean line (no copy per probe)
    line = " ".join(text.replace("\r", " ").replace("\n", " ").split())
    line = "".join(ch if ch.isprintable() else "?" for ch in line)
    return line if len(line) <= limit else line[: limit - 1] + "…"


def fmt_duration(seconds: float) -> str:
    """10.0 -> '10s', 0.25 -> '250ms', 2.99928 -> '3s', 1.5 -> '1.5s'.

    Rounded, so a reason that carries a duration reads the same every cycle (logs and
    alerts de-duplicate on the text): whole seconds from 10s, tenths below, whole ms under 1s.
    """
    ms = round(seconds * 1000)
    if ms < 1000:
        return f"{ms}ms"
    value = round(seconds) if seconds >= 9.95 else round(seconds, 1)
    return f"{value:g}s"


@functools.lru_cache(maxsize=64)
def tls_context(verify: bool, ca_file: str | None) -> ssl.SSLContext:
    """One client context per distinct option set: loading the trust store is the costly part."""
    if not verify:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    return ssl.create_default_context(cafile=ca_file)
