"""smtp: speak real SMTP to a node, politely, under one deadline.

The dialogue: connect (then the TLS handshake with `tls: true`), wait for the final line
of the greeting, EHLO (HELO after a 5xx), STARTTLS when asked (then the handshake and a
second EHLO), with `envelope` MAIL FROM and RCPT TO then RSET (never DATA), QUIT and wait
for 221, then read to the server's EOF before closing. The latency (and the phase timings)
end with the 221: the wait for the server's close is manners, not part of the verdict.

The close is the server's: after the 221 the probe sends nothing more, not even a TLS
close_notify, and closes its socket only once the server has closed its own (its FIN, or
under TLS its close_notify, after which nothing of the server's is left to read). A client
that closes first with data in flight, or writes to a socket the server has closed,
makes one side send a TCP reset (Postfix logs it, HAProxy counts a client abort `CD`).

aiosmtplib's `SMTPProtocol` does the reply parsing and the STARTTLS upgrade; its own cap
(32 KiB per reply) bounds an endless multi-line reply or one huge line. On top of that
this probe counts every byte received and gives up past MAX_READ_BYTES, so a server that
keeps answering cannot cost more than that over the whole dialogue.
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
from datetime import datetime, timezone

from aiosmtplib.errors import SMTPException, SMTPResponseException
from aiosmtplib.esmtp import parse_esmtp_extensions
from aiosmtplib.protocol import SMTPProtocol
from aiosmtplib.response import SMTPResponse

from ..config import SmtpCheck, record_type_of
from .base import MAX_READ_BYTES, Failure, PhaseClock, ProbeResult, Target, failure_of, fmt_duration, tls_context, trim

__all__ = ["probe", "tls_context"]

QUIT_GRACE = 1.0  # at most this much of what is left of the deadline is spent on a QUIT after a failure
CLOSE_GRACE = 1.0  # how long to wait for the server to close after its 221 (not part of the verdict)


_FAMILY = {"A": socket.AF_INET, "AAAA": socket.AF_INET6}


async def _open(loop: asyncio.AbstractEventLoop, protocol: asyncio.Protocol, address: str,
                port: int) -> asyncio.Transport:
    """The connection, `protocol` on it.

    An IP literal is connected with the loop's own `sock_connect` and handed over as a socket:
    `create_connection(host, port)`'s resolution step and per-address bookkeeping cost more than
    the rest of a probe's Python on a busy daemon. A hostname (a CNAME pool's node) goes the
    usual way, resolved by the loop.
    """
    family = _FAMILY.get(record_type_of(address))
    if family is None:
        transport, _ = await loop.create_connection(lambda: protocol, address, port)
        return transport  # type: ignore[return-value]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        await loop.sock_connect(sock, (address, port))
    except BaseException:
        sock.close()
        raise
    transport, _ = await loop.create_connection(lambda: protocol, sock=sock)
    return transport  # type: ignore[return-value]


class _TooMuch(SMTPException):
    pass


class _Protocol(SMTPProtocol):
    """aiosmtplib's protocol, counting what it receives and refusing more than `limit` bytes."""

    def __init__(self, loop: asyncio.AbstractEventLoop, limit: int = MAX_READ_BYTES) -> None:
        super().__init__(loop=loop)
        self.received = 0
        self.limit = limit
        self.closed: asyncio.Future[None] = loop.create_future()  # done once the socket is closed
        self.raw: asyncio.Transport | None = None  # under TLS: the socket's own transport

    def eof_received(self) -> bool:
        if self.raw is not None:
            # Under TLS this is the server's close_notify. The event loop's TLS layer would answer
            # it with its own, which reaches a socket the server has closed and draws a TCP reset:
            # close the socket now (nothing of the server's is left unread), so it never goes out.
            self.raw.abort()
        return super().eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        self.received += len(data)
        if self.received > self.limit:
            waiter = self._response_waiter
            if waiter is not None and not waiter.done():
                self._set_response_exception(waiter, _TooMuch(f"reply too long (more than {self.limit // 1024} KiB received)"))
            if self.transport is not None:
                self.transport.abort()  # type: ignore[attr-defined]
            return
        super().data_received(data)


class _Fail(Exception):
    """Ends the dialogue with a reason; `usable` says whether a QUIT can still be sent."""

    def __init__(self, detail: str, usable: bool, reply: SMTPResponse | None = None,
                 failure: Failure = Failure.REPLY) -> None:
        super().__init__(detail)
        self.detail = detail
        self.usable = usable
        self.reply = reply
        self.failure = failure


def _failure(e: BaseException) -> Failure:
    if isinstance(e, _TooMuch) or (isinstance(e, SMTPResponseException) and not isinstance(e.__cause__, OSError)):
        return Failure.PROTOCOL  # too long, too many lines, not SMTP
    return failure_of(e)


def _reply(resp: SMTPResponse) -> str:
    first = resp.message.split("\n", 1)[0]
    return f'{resp.code} "{trim(first, 120)}"'


def _error(e: BaseException) -> str:
    """An exception as a short phrase: 'connection refused', 'certificate verify failed: ...'."""
    if isinstance(e, ssl.SSLCertVerificationError):
        return f"certificate verify failed: {trim(e.verify_message or str(e), 120)}"
    if isinstance(e, ssl.SSLError):
        return f"TLS handshake failed: {trim(e.reason or str(e), 120)}"
    if isinstance(e, _TooMuch):
        return str(e)
    if isinstance(e, SMTPResponseException):
        msg = e.message
        if msg == "Response too long":
            return "reply too long"
        if msg.startswith("Malformed SMTP response line"):
            return f"not SMTP: {trim(repr(msg.partition(': ')[2].encode()[:40])[2:-1], 60)}"
        return trim(msg, 120)
    if isinstance(e, ConnectionResetError):
        return "connection reset"
    if isinstance(e, SMTPException):
        cause = e.__cause__
        if isinstance(cause, ConnectionResetError):
            return "connection reset"
        if isinstance(cause, ssl.SSLError):
            return _error(cause)
        return "connection closed"
    if isinstance(e, OSError):
        text = os.strerror(e.errno) if e.errno else (e.strerror or str(e) or type(e).__name__)
        return trim(text.lower(), 120)
    return trim(f"{type(e).__name__}: {e}", 120)


def _not_after(transport: asyncio.BaseTransport) -> datetime | None:
    """The leaf certificate's notAfter, verified or not."""
    sslobj = transport.get_extra_info("ssl_object")
    if sslobj is None:
        return None
    info = sslobj.getpeercert()
    if info and "notAfter" in info:
        return datetime.fromtimestamp(ssl.cert_time_to_seconds(info["notAfter"]), timezone.utc)
    der = sslobj.getpeercert(binary_form=True)
    if not der:
        return None
    try:  # unverified: only the DER is available; cryptography ships with trustme/moto
        from cryptography import x509
    except ImportError:  # pragma: no cover
        return None
    return x509.load_der_x509_certificate(der).not_valid_after_utc


def _chain(transport: asyncio.BaseTransport) -> tuple[bytes, ...]:
    """The certificates the server sent, leaf first, as DER (unverified: DANE judges them)."""
    sslobj = transport.get_extra_info("ssl_object")
    if sslobj is None:
        return ()
    get = getattr(sslobj, "get_unverified_chain", None)  # public from CPython 3.13
    if get is None:
        inner = getattr(sslobj, "_sslobj", None)
        get = getattr(inner, "get_unverified_chain", None)
    if get is None:  # pragma: no cover - every supported CPython has one of the two
        der = sslobj.getpeercert(binary_form=True)
        return (der,) if der else ()
    return tuple(c if isinstance(c, bytes) else c.public_bytes(ssl._ssl.ENCODING_DER) for c in get() or ())  # type: ignore[attr-defined]


class _Dialogue(PhaseClock):
    """One probe's state: phases reached, their latencies, the replies seen."""

    def __init__(self, target: Target, spec: SmtpCheck, timeout: float) -> None:
        super().__init__("connect")
        self.target = target
        self.spec = spec
        self.timeout = timeout
        self.proto: _Protocol | None = None
        self.greeting: SMTPResponse | None = None
        self.last: SMTPResponse | None = None  # the last reply seen before QUIT
        self.not_after: datetime | None = None
        self.chain: tuple[bytes, ...] = ()  # with `dane`: what the server presented, for core/dane.py
        self.extras: list[str] = []

    def server_name(self) -> str:
        return self.spec.server_name or self.target.address

    async def tls(self, transport: asyncio.BaseTransport) -> asyncio.BaseTransport:
        # A DANE sender does not apply PKIX when TLSA is usable (RFC 7672): the TLSA match is the check.
        verify = self.spec.verify and self.spec.dane is None
        ctx = tls_context(verify, str(self.spec.ca_file) if self.spec.ca_file else None)
        loop = asyncio.get_running_loop()
        try:
            tls_transport = await loop.start_tls(
                transport, self.proto, ctx, server_side=False,  # type: ignore[arg-type]
                server_hostname=self.server_name(),
            )
        except (OSError, EOFError) as e:
            raise _Fail(f"tls: {_error(e)}", usable=False, failure=_failure(e)) from None
        assert self.proto is not None
        self.proto.transport = tls_transport
        self.proto.raw = transport  # type: ignore[assignment]
        self.not_after = _not_after(tls_transport)
        if self.spec.dane is not None:
            self.chain = _chain(tls_transport)
        return tls_transport

    async def command(self, *args: bytes) -> SMTPResponse:
        assert self.proto is not None
        try:
            self.last = await self.proto.execute_command(*args)
        except (SMTPException, OSError) as e:
            raise _Fail(f"{self.phase_label()}: {_error(e)}", usable=False, failure=_failure(e)) from None
        return self.last

    def phase_label(self) -> str:
        return {"ehlo": "EHLO", "helo": "HELO", "starttls": "STARTTLS", "ehlo_tls": "EHLO after STARTTLS",
                "mail": "MAIL FROM", "rcpt": "RCPT TO", "rset": "RSET"}.get(self.phase, self.phase)

    async def run(self) -> None:
        spec, loop = self.spec, asyncio.get_running_loop()
        self.proto = _Protocol(loop)
        try:
            transport = await _open(loop, self.proto, self.target.address, spec.port)
        except OSError as e:
            raise _Fail(f"connect to port {spec.port}: {_error(e)}", usable=False, failure=_failure(e)) from None
        if spec.tls:
            self.enter("tls")
            transport = await self.tls(transport)

        self.enter("greeting")
        try:
            greeting = await self.proto.read_response()
        except (SMTPException, OSError) as e:
            raise _Fail(f"greeting: {_error(e)}", usable=False, failure=_failure(e)) from None
        self.greeting = self.last = greeting
        if greeting.code != 220:
            raise _Fail(f"greeting {_reply(greeting)}", usable=True, reply=greeting)

        helo = (spec.helo or self.target.helo).encode("ascii", "replace")
        self.enter("ehlo")
        resp = await self.command(b"EHLO", helo)
        extensions: dict[str, str] = {}
        if 500 <= resp.code <= 599:
            self.enter("helo")
            resp = await self.command(b"HELO", helo)
            if resp.code != 250:
                raise _Fail(f"HELO {_reply(resp)} (after EHLO refused)", usable=True, reply=resp)
            self.extras.append("HELO")
        elif resp.code != 250:
            raise _Fail(f"EHLO {_reply(resp)}", usable=True, reply=resp)
        else:
            extensions, _ = parse_esmtp_extensions(resp.message)

        if spec.starttls:
            if "starttls" not in extensions:
                raise _Fail("STARTTLS required but not offered", usable=True, reply=resp, failure=Failure.PROTOCOL)
            self.enter("starttls")
            resp = await self.command(b"STARTTLS")
            if resp.code != 220:
                raise _Fail(f"STARTTLS {_reply(resp)}", usable=True, reply=resp)
            # RFC 3207: anything the server sent after its 220 is not to be trusted.
            del self.proto._buffer[:]
            self.enter("tls")
            transport = await self.tls(transport)
            self.enter("ehlo_tls")
            resp = await self.command(b"EHLO", helo)
            if resp.code != 250:
                raise _Fail(f"EHLO after STARTTLS {_reply(resp)}", usable=True, reply=resp)
            self.extras.append("STARTTLS")

        if spec.cert_min_days is not None and (spec.tls or spec.starttls) and self.not_after:
            days = (self.not_after - datetime.now(timezone.utc)).total_seconds() / 86400
            if days < 0:
                ago = f"{int(-days)} days ago" if -days >= 1 else "less than a day ago"
                raise _Fail(f"certificate expired {ago}", usable=True, failure=Failure.CERTIFICATE)
            if days < spec.cert_min_days:
                raise _Fail(f"certificate expires in {int(days)} days (< {spec.cert_min_days})", usable=True, failure=Failure.CERTIFICATE)

        if spec.envelope is not None:
            await self.envelope()

    async def envelope(self) -> None:
        """MAIL FROM and RCPT TO, then RSET: what postscreen, client restrictions and a full
        disk only show at this stage. Never DATA: nothing is ever delivered."""
        env = self.spec.envelope
        assert env is not None
        sender = b"<>" if env.sender == "<>" else b"<" + env.sender.encode("ascii") + b">"
        self.enter("mail")
        resp = await self.command(b"MAIL", b"FROM:" + sender)
        if resp.code not in env.expect:
            raise _Fail(f"mail {_reply(resp)}", usable=True, reply=resp)
        self.enter("rcpt")
        resp = await self.command(b"RCPT", b"TO:<" + env.to.encode("ascii") + b">")
        if resp.code not in env.expect:
            raise _Fail(f"rcpt {_reply(resp)}", usable=True, reply=resp)
        self.enter("rset")
        resp = await self.command(b"RSET")
        if resp.code != 250:
            raise _Fail(f"rset {_reply(resp)}", usable=True, reply=resp)
        self.extras.append("envelope")

    async def quit(self) -> str | None:
        """QUIT and wait for 221; a note when the server did not close politely."""
        assert self.proto is not None
        self.enter("quit")
        try:
            resp = await self.proto.execute_command(b"QUIT")
        except (SMTPException, OSError) as e:
            return f"QUIT: {_error(e)}"
        if resp.code != 221:
            return f"QUIT {_reply(resp)}"
        return None

    async def wait_closed(self, limit: float) -> None:
        """Read to the server's EOF (what it still sends is discarded), at most `limit` seconds."""
        if self.proto is None or self.proto.closed.done() or limit <= 0:
            return
        try:
            async with asyncio.timeout(limit):
                await asyncio.shield(self.proto.closed)
        except TimeoutError:
            pass

    def close(self) -> None:
        # Only when the server has not closed (a failure, a timeout): then nothing is owed.
        if self.proto is not None and self.proto.transport is not None:
            self.proto.transport.abort()  # type: ignore[attr-defined]


async def probe(target: Target, spec: SmtpCheck, timeout: float) -> ProbeResult:
    d = _Dialogue(target, spec, timeout)
    status, detail, reply, failure = "ok", "", None, None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    ran, note = False, None
    try:
        try:
            # One timer for the whole probe: the dialogue, QUIT and the polite close share it.
            async with asyncio.timeout_at(deadline) as within:
                await d.run()
                ran = True
                note = await d.quit()
                d.finish()  # the dialogue ends with the 221: reading to the server's EOF is not measured
                if note is None and d.proto is not None and not d.proto.closed.done():
                    # Read to the server's EOF (what it still sends is discarded), at most CLOSE_GRACE.
                    within.reschedule(min(deadline, loop.time() + CLOSE_GRACE))
                    await d.proto.closed
        except _Fail as f:
            status, detail, reply, failure = "fail", f.detail, f.reply, f.failure
            reached = d.phase
            if f.usable:
                # Polite even after a refusal: QUIT, briefly, within what is left of the deadline.
                left = deadline - loop.time()
                if left > 0:
                    try:
                        async with asyncio.timeout(min(left, QUIT_GRACE)):
                            if await d.quit() is None:
                                d.finish()  # the close below is manners, not latency
                                await d.wait_closed(deadline - loop.time())
                    except TimeoutError:
                        pass
            d.stop()
            d.phase = reached
        except TimeoutError:
            if ran:  # after the dialogue passed: QUIT went unanswered, or the close took its grace
                if not d.finished:
                    note = f"QUIT: no reply within {fmt_duration(timeout)}"
                    d.finish()
            else:
                status, failure = "fail", Failure.TIMEOUT
                got = d.proto.received if d.proto else 0
                within_s = fmt_duration(timeout)
                if d.phase == "greeting":
                    detail = f"no greeting within {within_s}" + (f" ({got} byte{'s' if got > 1 else ''}, no complete reply)" if got else "")
                elif d.phase == "connect":
                    detail = f"connect to port {spec.port}: no answer within {within_s}"
                elif d.phase == "tls":
                    detail = f"tls: no handshake within {within_s}"
                else:
                    detail = f"{d.phase_label()}: no reply within {within_s}"
                d.stop()
        except Exception as e:  # a probe never raises: an unforeseen error is a failure too
            status, detail, failure = "fail", f"{d.phase_label()}: {type(e).__name__}: {trim(str(e), 120)}", _failure(e)
            d.stop()
        if status == "ok":
            d.finish()
            parts = [f"smtp ok in {d.elapsed_ms():.0f} ms"] + d.extras
            if d.not_after is not None:
                days = (d.not_after - datetime.now(timezone.utc)).total_seconds() / 86400
                parts.append(f"certificate valid {int(days)} more days")
            if note:
                parts.append(note)
            detail = ", ".join(parts)
    finally:
        d.close()
    ms = d.elapsed_ms()
    shown = d.greeting if status == "ok" else (reply or d.last)
    return ProbeResult(
        pool=target.pool,
        node=target.node,
        check="smtp",
        status=status,  # type: ignore[arg-type]
        latency_ms=ms,
        detail=detail,
        phase=d.phase,
        code=shown.code if shown else None,
        text=trim(shown.message, 160) if shown else None,
        phases=d.phases,
        cert_not_after=d.not_after,
        failure=failure,
        tls_chain=d.chain,
    )
