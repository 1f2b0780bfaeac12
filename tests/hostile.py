"""Broken and hostile servers on loopback, for the probe tests.

`Suite` runs every scenario in one background event loop, each on its own 127.0.x.y
address and all on one port, and records what each server received (so a test can
check that the probe never spoke before the greeting and always said QUIT).
Writers use `drain()`, so an endless server costs neither side more than a socket buffer.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import ssl
import struct
import threading
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from typing import Any, Awaitable, Callable, Iterator

from r53lb.demo.loopback import Certs, HttpServer, SmtpServer

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, list[bytes]], Awaitable[None]]


def has_ipv6_loopback() -> bool:
    """The kernel gives this machine ::1 (a container may run with IPv6 switched off)."""
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class Suite:
    """Scenario servers in a background loop; `add()` returns the address it listens on."""

    def __init__(self, prefix: str = "127.0.77.", port: int | None = None) -> None:
        self.prefix = prefix
        self.port = port or free_port(prefix + "1")
        self.received: dict[str, list[bytes]] = defaultdict(list)  # scenario -> lines received
        self.addresses: dict[str, str] = {}
        self._servers: list[asyncio.AbstractServer] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._next = 1
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="hostile")
        self._thread.start()

    def add(self, name: str, handler: Handler, tls: ssl.SSLContext | None = None) -> str:
        address = f"{self.prefix}{self._next}"
        self._next += 1
        self.addresses[name] = address
        asyncio.run_coroutine_threadsafe(self._listen(name, address, handler, tls), self.loop).result(10)
        return address

    def unused(self, name: str) -> str:
        """An address in the suite's range with nothing listening."""
        address = f"{self.prefix}{self._next}"
        self._next += 1
        self.addresses[name] = address
        return address

    async def _listen(self, name: str, address: str, handler: Handler, tls: ssl.SSLContext | None) -> None:
        log = self.received[name]

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            self._tasks.add(task)
            try:
                await handler(reader, writer, log)
            except (OSError, asyncio.IncompleteReadError, ssl.SSLError, asyncio.CancelledError):
                pass
            finally:
                self._tasks.discard(task)
                writer.transport.abort()

        self._servers.append(
            await asyncio.start_server(serve, address, self.port, ssl=tls, reuse_address=True)
        )

    def stop(self) -> None:
        async def close() -> None:
            for s in self._servers:
                s.close()
            for t in list(self._tasks):
                t.cancel()
            await asyncio.sleep(0)

        asyncio.run_coroutine_threadsafe(close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


# --- SMTP scenarios -----------------------------------------------------------------------


async def _lines(reader: asyncio.StreamReader, log: list[bytes]):
    while True:
        line = await reader.readline()
        if not line:
            return
        log.append(line.strip())
        yield line.strip().upper()


def dialogue(greeting: bytes, replies: dict[bytes, bytes]) -> Handler:
    """Greet, then answer each command by its verb; QUIT gets 221 and a close."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, log: list[bytes]) -> None:
        writer.write(greeting)
        await writer.drain()
        async for line in _lines(reader, log):
            verb = line.split(b" ", 1)[0]
            if verb == b"QUIT":
                writer.write(b"221 2.0.0 bye\r\n")
                await writer.drain()
                return
            writer.write(replies.get(verb, b"502 5.5.2 not implemented\r\n"))
            await writer.drain()

    return handler


async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, log: list[bytes]) -> None:
    """Accepts and never speaks; records anything the client says first."""
    async for _ in _lines(reader, log):
        pass


async def drip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, log: list[bytes]) -> None:
    for b in b"220 drip.test ESMTP slowly\r\n":
        writer.write(bytes([b]))
        await writer.drain()
        await asyncio.sleep(1.0)


async def endless_multiline(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, log: list[bytes]) -> None:
    line = b"220-endless.test still greeting you " + b"." * 60 + b"\r\n"
    chunk = line * 64
    while True:
        writer.write(chunk)
        await writer.drain()


async def megaline(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, log: list[bytes]) -> None:
    writer.write(b"220 ")
    chunk = b"x" * 65536
    for _ in range(8 * 16):  # 8 MB, no line ending
        writer.write(chunk)
        await writer.drain()
    await asyncio.sleep(30)


async def random_bytes(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, log: list[bytes]) -> None:
    data = random.Random(53).randbytes(4096)
    data = b"\x8f" + data  # no chance of a digit-led first line
    writer.write(data)
    await writer.drain()
    await asyncio.sleep(30)


async def reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, log: list[bytes]) -> None:
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def close_after_greeting(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, log: list[bytes]) -> None:
    writer.write(b"220 closer.test ESMTP\r\n")
    await writer.drain()
    writer.close()


async def http_server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, log: list[bytes]) -> None:
    """What a web server does: wait for a request, answer 400 to anything that is not HTTP."""
    async for _ in _lines(reader, log):
        writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        await writer.drain()
        return


def starttls_garbage() -> Handler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, log: list[bytes]) -> None:
        writer.write(b"220 garbage.test ESMTP\r\n")
        await writer.drain()
        async for line in _lines(reader, log):
            if line.startswith(b"EHLO"):
                writer.write(b"250-garbage.test\r\n250-PIPELINING\r\n250 STARTTLS\r\n")
            elif line == b"STARTTLS":
                writer.write(b"220 2.0.0 go ahead\r\n")
                await writer.drain()
                writer.write(b"this is not a TLS record at all\r\n" * 4)
            elif line == b"QUIT":
                writer.write(b"221 bye\r\n")
                await writer.drain()
                return
            else:
                writer.write(b"502 no\r\n")
            await writer.drain()

    return handler


# --- HTTP scenarios -----------------------------------------------------------------------


async def _request(reader: asyncio.StreamReader) -> tuple[str, str, dict[str, str]]:
    head = await reader.readuntil(b"\r\n\r\n")
    first, *lines = head.decode().split("\r\n")
    method, path, _ = first.split(" ", 2)
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines if ln)}
    return method, path, headers


def http_routes(routes: dict[str, Callable[[asyncio.StreamWriter], Awaitable[None]]]) -> Handler:
    """Logs 'METHOD path host=... x-probe=...' per request, then answers by path ('*' for any)."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, log: list[bytes]) -> None:
        method, path, headers = await _request(reader)
        log.append(f"{method} {path} host={headers.get('host')} x-probe={headers.get('x-probe')}".encode())
        await routes.get(path, routes.get("*", not_found))(writer)

    return handler


def respond(status: str, body: bytes = b"", headers: dict[str, str] | None = None):
    async def send(writer: asyncio.StreamWriter) -> None:
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        writer.write(
            f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n{extra}\r\n".encode() + body
        )
        await writer.drain()

    return send


not_found = respond("404 Not Found", b"no\n")


async def slow_body(writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nConnection: close\r\n\r\n")
    await writer.drain()
    for _ in range(1000):
        writer.write(b".")
        await writer.drain()
        await asyncio.sleep(0.2)


async def huge_body(writer: asyncio.StreamWriter) -> None:
    size = 10 * 1024 * 1024
    writer.write(f"HTTP/1.1 200 OK\r\nContent-Length: {size}\r\nConnection: close\r\n\r\n".encode())
    chunk = b"status: ok " + b"x" * (65536 - 11)
    sent = 0
    while sent < size:
        writer.write(chunk[: size - sent])
        sent += len(chunk)
        await writer.drain()


# --- the scenario sets the tests (and `r53lb probe` end to end) run against -----------------


@contextlib.contextmanager
def smtp_scenarios() -> Iterator[tuple[Certs, Suite]]:
    """Every SMTP scenario of the probe tests, each on its own 127.0.77.x; yields (certs, suite)."""
    certs = Certs()
    suite = Suite("127.0.77.")
    now = datetime.now(timezone.utc)
    smtp = []

    def loopback(name: str, **kw: Any) -> None:
        smtp.append(SmtpServer(suite.unused(name), suite.port, certs=certs, **kw).start())

    try:
        loopback("plain")
        loopback("starttls", tls="starttls")
        loopback("implicit", tls="implicit")
        loopback("greeting_421", mode="421")
        loopback("greeting_554", mode="554")
        loopback("expired", tls="starttls", cert_not_after=now - timedelta(days=2))
        loopback("expiring", tls="starttls", cert_not_after=now + timedelta(days=3, hours=12))
        suite.add("ehlo_refused", dialogue(
            b"220 old.test ESMTP\r\n", {b"EHLO": b"502 5.5.2 EHLO not supported\r\n", b"HELO": b"250 old.test\r\n"}))
        suite.add("helo_refused", dialogue(
            b"220 old.test ESMTP\r\n", {b"EHLO": b"500 5.5.1 what\r\n", b"HELO": b"501 5.5.4 go away\r\n"}))
        suite.add("ehlo_421", dialogue(b"220 busy.test ESMTP\r\n", {b"EHLO": b"421 4.7.0 slow down\r\n"}))
        suite.add("starttls_454", dialogue(
            b"220 t.test ESMTP\r\n",
            {b"EHLO": b"250-t.test\r\n250 STARTTLS\r\n", b"STARTTLS": b"454 4.7.0 TLS not available now\r\n"}))
        ehlo = b"250-env.test\r\n250 8BITMIME\r\n"

        def envelope(mail: bytes, rcpt: bytes) -> Handler:
            return dialogue(b"220 env.test ESMTP\r\n", {
                b"EHLO": ehlo, b"MAIL": mail, b"RCPT": rcpt, b"RSET": b"250 2.0.0 Ok\r\n",
                b"DATA": b"354 End data with <CR><LF>.<CR><LF>\r\n"})

        suite.add("envelope", envelope(b"250 2.1.0 Ok\r\n", b"250 2.1.5 Ok\r\n"))
        suite.add("rcpt_452", envelope(b"250 2.1.0 Ok\r\n", b"452 4.3.1 Insufficient system storage\r\n"))
        suite.add("rcpt_251", envelope(b"250 2.1.0 Ok\r\n", b"251 2.1.5 user not local; will forward\r\n"))
        suite.add("mail_553", envelope(b"553 5.1.8 sender address rejected\r\n", b"250 2.1.5 Ok\r\n"))
        suite.add("silent", silent)
        suite.add("drip", drip)
        suite.add("endless_multiline", endless_multiline)
        suite.add("megaline", megaline)
        suite.add("random_bytes", random_bytes)
        suite.add("reset", reset)
        suite.add("close_after_greeting", close_after_greeting)
        suite.add("http", http_server)
        suite.add("starttls_garbage", starttls_garbage())
        suite.unused("unused")
        yield certs, suite
    finally:
        for s in smtp:
            s.stop()
        suite.stop()


@contextlib.contextmanager
def http_scenarios() -> Iterator[tuple[Certs, Suite]]:
    """Every HTTP scenario of the probe tests, each on its own 127.0.78.x; yields (certs, suite)."""
    certs = Certs()
    suite = Suite("127.0.78.")
    web: list[HttpServer] = []
    try:
        web.append(HttpServer(suite.unused("healthy"), suite.port).start())
        web.append(HttpServer(suite.unused("unavailable"), suite.port, mode="503").start())
        web.append(HttpServer(suite.unused("hang"), suite.port, mode="hang").start())
        scripted = http_routes({
            "/slow": slow_body,
            "/huge": huge_body,
            "/old": respond("301 Moved Permanently", headers={"Location": "/new"}),
            "/new": respond("200 OK", b"moved here\n"),
            "/loop": respond("302 Found", headers={"Location": "/loop"}),
            # Redirects that leave the node, and one to the node's own name (nginx's absolute_redirect).
            "/away": respond("301 Moved Permanently", headers={"Location": "http://elsewhere.invalid/ok"}),
            "/to-other-node": respond(
                "302 Found", headers={"Location": f"http://{suite.addresses['healthy']}:{suite.port}/health"}),
            "/to-host": respond("301 Moved Permanently", headers={"Location": f"http://web.test:{suite.port}/new"}),
            "/bad-location": respond("302 Found", headers={"Location": "http://[::1"}),
            "/to-https": respond("301 Moved Permanently", headers={"Location": "https://web.test/new"}),
        })
        suite.add("scripted", scripted)
        suite.add("tls", http_routes({"*": respond("200 OK", b"secure\n")}),
                  tls=certs.server_context("web.test"))
        suite.unused("unused")
        yield certs, suite
    finally:
        for s in web:
            s.stop()
        suite.stop()
