"""Mail and web servers on the loopback interface, for the demo and the end-to-end tests.

Each server binds one address and port (give every node its own 127.0.0.x and they can
all share a port) and runs in a background thread with its own event loop, so tests and
the demo drive it from ordinary synchronous code::

    certs = Certs()                                   # a trustme CA; certs.ca_file is its PEM
    mx = SmtpServer("127.0.0.11", 2525, tls="starttls", certs=certs).start()
    web = HttpServer("127.0.0.11", 8080).start()
    mx.set_mode("421")     # greet with 421 (any 3-digit code works)
    mx.set_mode("refuse")  # close the listening socket: connections are refused
    mx.set_mode("ok")      # listen again, same address, healthy
    mx.stop(); web.stop()  # also usable as context managers

Public API:

- ``Certs(names=("localhost", "mx.test", "127.0.0.1"))``: ``.ca`` (trustme.CA),
  ``.ca_file`` (Path of the CA's PEM), ``.server_context(*names, not_after=None)``,
  ``.client_context()`` (an SSLContext that trusts the CA).
- ``SmtpServer(host="127.0.0.1", port=2525, *, hostname="mx.test", tls=None | "starttls"
  | "implicit", certs=None, delay=0.0, mode="ok")`` (an aiosmtpd server; ``delay``
  seconds before every reply, greeting included, to stand in for WAN distance). With
  TLS its certificate covers ``certs.names`` and ``host``, issued by ``certs``
  (a fresh ``Certs()`` when not given: read it back as ``server.certs``);
  ``cert_not_after`` (a datetime) sets its expiry, to show an expiring certificate.
- ``HttpServer(host="127.0.0.1", port=8080, *, tls=False, certs=None, status=200,
  body=b"ok\\n", mode="ok", cert_not_after=None)`` (stdlib http.server; answers every
  path and method).
- Both: ``start() -> self``, ``stop()``, ``set_mode(mode)``, ``.mode``, ``.host``,
  ``.port``, ``.accepted`` (connections accepted so far), ``with server: ...``.
  Modes: ``"ok"`` healthy; ``"refuse"`` nothing listening; ``"hang"`` accept and never
  answer; ``"NNN"`` (three digits) the SMTP greeting code, or the HTTP status.

- ``AgentServer(host="127.0.0.1", port=5555, line="ready up 100%")``: an HAProxy agent
  (agent-check protocol): every connection gets ``line`` and a newline, then a close.
  ``set_line(text)`` changes the answer; ``set_line(None)`` accepts and never answers
  (the check's timeout makes it unknown); ``stop()`` stops listening (refused).
- ``PromApiServer(host="127.0.0.1", port=0)``: answers Prometheus's ``/api/v1/query``
  with a one-sample vector per node, from ``values`` (node id -> value) matched against
  the query's ``node="..."`` label. The demo uses it in place of a real Prometheus and its
  exporter; the tests use the real server (tests/prom.py).

Everything is loopback only: a non-loopback host is refused.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import ssl
import tempfile
import threading
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socketserver import BaseRequestHandler, ThreadingTCPServer
from pathlib import Path
from typing import Any

__all__ = ["Certs", "SmtpServer", "HttpServer", "AgentServer", "PromApiServer"]

# aiosmtpd logs a traceback whenever a client drops a TLS handshake, which probes of
# broken configurations do on purpose; keep the demo's and the tests' output readable.
logging.getLogger("mail.log").setLevel(logging.CRITICAL)

_MODE = re.compile(r"^(ok|refuse|hang|[1-5]\d\d)$")


def _check_loopback(host: str) -> None:
    if not ipaddress.ip_address(host).is_loopback:
        raise ValueError(f"{host} is not a loopback address (127.0.0.0/8 or ::1)")


def _check_mode(mode: str) -> str:
    if not _MODE.match(mode):
        raise ValueError(f"unknown mode {mode!r} (ok, refuse, hang, or a 3-digit code)")
    return mode


class Certs:
    """A throwaway certificate authority (trustme) and certificates it issues."""

    def __init__(self, names: tuple[str, ...] = ("localhost", "mx.test", "127.0.0.1")) -> None:
        import trustme

        self.ca = trustme.CA()
        self.names = names
        self._dir = tempfile.TemporaryDirectory(prefix="r53lb-certs-")
        self.ca_file = Path(self._dir.name) / "ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))

    def server_context(self, *names: str, not_after: datetime | None = None) -> ssl.SSLContext:
        """A server-side context with a certificate for `names` (default: self.names)."""
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ca.issue_cert(*(names or self.names), not_after=not_after).configure_cert(ctx)
        return ctx

    def client_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context()
        self.ca.configure_trust(ctx)
        return ctx


class _LoopThread:
    """An event loop running in a daemon thread; `call(coro)` runs a coroutine there."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()
        self.loop.close()

    def call(self, coro: Any, timeout: float = 10.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


class _Handler:
    """aiosmtpd handler: accept every message, keep none."""

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        return "250 2.0.0 OK queued"


class _Canned(asyncio.Protocol):
    """Greets with a fixed code ('421 4.3.2 too busy'); answers QUIT with 221, anything else 503."""

    def __init__(self, code: str, hostname: str) -> None:
        self.code = code
        self.hostname = hostname
        self.buf = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        text = {"421": "4.3.2 too busy, try later", "554": "5.7.1 no SMTP service here"}.get(
            self.code, "canned greeting"
        )
        transport.write(f"{self.code} {self.hostname} {text}\r\n".encode())  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        self.buf = (self.buf + data)[-4096:]
        while b"\n" in self.buf:
            line, _, self.buf = self.buf.partition(b"\n")
            if line.strip().upper() == b"QUIT":
                self.transport.write(b"221 2.0.0 bye\r\n")  # type: ignore[attr-defined]
                self.transport.close()
                return
            self.transport.write(b"503 5.5.1 go away\r\n")  # type: ignore[attr-defined]


class _Silent(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport


class SmtpServer:
    """A healthy aiosmtpd mail server on one loopback address, switchable into failure modes."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 2525,
        *,
        hostname: str = "mx.test",
        tls: str | None = None,
        certs: Certs | None = None,
        delay: float = 0.0,
        mode: str = "ok",
        cert_not_after: datetime | None = None,
    ) -> None:
        _check_loopback(host)
        if tls not in (None, "starttls", "implicit"):
            raise ValueError(f"tls must be None, 'starttls' or 'implicit', not {tls!r}")
        self.host, self.port, self.hostname = host, port, hostname
        self.tls, self.delay = tls, delay
        self.mode = _check_mode(mode)
        self.accepted = 0
        self.certs = certs if certs is not None or tls is None else Certs()
        self._cert_not_after = cert_not_after
        self._ctx: ssl.SSLContext | None = None
        self.cert_der = b""  # the certificate served (DER), for a DANE record of it
        if self.certs and tls:
            self.rekey()
        self._loop: _LoopThread | None = None
        self._server: asyncio.AbstractServer | None = None
        self._transports: set[asyncio.BaseTransport] = set()

    def rekey(self) -> None:
        """A new key and certificate for connections from now on (a key rollover)."""
        assert self.certs is not None
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        leaf = self.certs.ca.issue_cert(*self.certs.names, self.host, not_after=self._cert_not_after)
        leaf.configure_cert(ctx)
        self.cert_der = ssl.PEM_cert_to_DER_cert(leaf.cert_chain_pems[0].bytes().decode())
        self._ctx = ctx

    # -- lifecycle

    def start(self) -> "SmtpServer":
        if self._loop is None:
            self._loop = _LoopThread(f"smtp-{self.host}:{self.port}")
            self._loop.call(self._apply())
        return self

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call(self._close(listening=True, clients=True))
            self._loop.close()
            self._loop = None

    def set_mode(self, mode: str) -> None:
        """Switch behaviour for new connections; 'refuse' closes the socket, others reopen it."""
        self.mode = _check_mode(mode)
        if self._loop is not None:
            self._loop.call(self._apply())

    def __enter__(self) -> "SmtpServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- inside the loop

    async def _apply(self) -> None:
        if self.mode == "refuse":
            await self._close(listening=True, clients=True)
        elif self._server is None:
            self._server = await asyncio.get_running_loop().create_server(
                self._factory,
                self.host,
                self.port,
                ssl=self._ctx if self.tls == "implicit" else None,
                reuse_address=True,
            )

    async def _close(self, listening: bool, clients: bool) -> None:
        if listening and self._server is not None:
            self._server.close()
            self._server = None
        if clients:
            for t in list(self._transports):
                t.abort() if hasattr(t, "abort") else t.close()  # type: ignore[attr-defined]
            self._transports.clear()
            await asyncio.sleep(0)

    def _factory(self) -> asyncio.BaseProtocol:
        self.accepted += 1
        proto: asyncio.BaseProtocol
        if self.mode == "ok":
            proto = _make_smtp(self)
        elif self.mode == "hang":
            proto = _Silent()
        else:
            proto = _Canned(self.mode, self.hostname)
        orig = proto.connection_made
        transports = self._transports

        def connection_made(transport: asyncio.BaseTransport) -> None:
            transports.add(transport)
            orig(transport)

        proto.connection_made = connection_made  # type: ignore[method-assign]
        return proto


def _make_smtp(srv: SmtpServer) -> asyncio.BaseProtocol:
    from aiosmtpd.smtp import SMTP

    delay = srv.delay

    class _Slow(SMTP):
        async def push(self, status: Any) -> None:
            await asyncio.sleep(delay)
            await super().push(status)

    cls = _Slow if delay > 0 else SMTP
    return cls(
        _Handler(),
        hostname=srv.hostname,
        ident="r53lb loopback",
        tls_context=srv._ctx if srv.tls == "starttls" else None,
        timeout=30,
        loop=asyncio.get_running_loop(),
    )


# --- HTTP ---------------------------------------------------------------------------------


class _HttpHandler(BaseHTTPRequestHandler):
    server: "_HttpListener"
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet in tests
        pass

    def _answer(self) -> None:
        owner = self.server.owner
        length = int(self.headers.get("Content-Length") or 0)
        if 0 < length <= 1 << 20:
            self.rfile.read(length)
        if owner.mode == "hang":
            owner._release.wait(60)
            return
        status = owner.status if owner.mode == "ok" else int(owner.mode)
        body = owner.body if owner.mode == "ok" else f"status {status}\n".encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self.close_connection = True

    do_GET = do_POST = do_HEAD = do_PUT = do_DELETE = do_OPTIONS = _answer


class _HttpListener(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    owner: "HttpServer"

    def get_request(self) -> tuple[Any, Any]:
        sock, addr = super().get_request()
        self.owner.accepted += 1
        if self.owner._ctx is not None:
            sock.settimeout(10)
            sock = self.owner._ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, addr

    def finish_request(self, request: Any, client_address: Any) -> None:
        try:
            if isinstance(request, ssl.SSLSocket):
                request.do_handshake()
            super().finish_request(request, client_address)
        except (OSError, ssl.SSLError):
            pass


class HttpServer:
    """A small HTTP(S) server on one loopback address: every request gets `status` and `body`."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 8080,
        *,
        tls: bool = False,
        certs: Certs | None = None,
        status: int = 200,
        body: bytes = b"ok\n",
        mode: str = "ok",
        cert_not_after: datetime | None = None,
    ) -> None:
        _check_loopback(host)
        self.host, self.port, self.status, self.body = host, port, status, body
        self.mode = _check_mode(mode)
        self.accepted = 0
        self.certs = certs if certs is not None or not tls else Certs()
        self._ctx = (
            self.certs.server_context(*self.certs.names, host, not_after=cert_not_after)
            if tls and self.certs else None
        )
        self._srv: _HttpListener | None = None
        self._thread: threading.Thread | None = None
        self._release = threading.Event()
        self._running = False

    def start(self) -> "HttpServer":
        self._running = True
        self._apply()
        return self

    def stop(self) -> None:
        self._running = False
        self._close()

    def set_mode(self, mode: str) -> None:
        self.mode = _check_mode(mode)
        if self._running:
            self._apply()

    def __enter__(self) -> "HttpServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _apply(self) -> None:
        if self.mode == "refuse":
            self._close()
        elif self._srv is None:
            self._release.clear()
            family_v6 = ":" in self.host
            cls = type("_L", (_HttpListener,), {"address_family": 10 if family_v6 else 2})
            self._srv = cls((self.host, self.port), _HttpHandler)
            self._srv.owner = self
            self._thread = threading.Thread(
                target=self._srv.serve_forever, kwargs={"poll_interval": 0.05},
                name=f"http-{self.host}:{self.port}", daemon=True,
            )
            self._thread.start()

    def _close(self) -> None:
        _stop_threaded(self)


def _stop_threaded(server: Any) -> None:
    """Stop a socketserver run in a thread of its own (HttpServer, AgentServer): release, shut, join."""
    server._release.set()
    if server._srv is not None:
        server._srv.shutdown()
        server._srv.server_close()
        server._srv = None
    if server._thread is not None:
        server._thread.join(10)
        server._thread = None


# --- HAProxy agent ------------------------------------------------------------------------


class AgentServer:
    """An HAProxy agent on one loopback address: each connection reads `line` and a newline."""

    def __init__(self, host: str = "127.0.0.1", port: int = 5555, line: str | None = "ready up 100%") -> None:
        _check_loopback(host)
        self.host, self.port, self.line = host, port, line
        self.accepted = 0
        self._release = threading.Event()
        self._srv: ThreadingTCPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> "AgentServer":
        owner = self

        class Handler(BaseRequestHandler):
            def handle(self) -> None:
                owner.accepted += 1
                line = owner.line
                if line is None:
                    owner._release.wait(30)  # silent: the check's own deadline ends this
                    return
                try:
                    self.request.sendall(line.encode() + b"\n")
                except OSError:
                    pass

        cls = type("_A", (ThreadingTCPServer,), {"daemon_threads": True, "allow_reuse_address": True,
                                                  "address_family": 10 if ":" in self.host else 2})
        self._srv = cls((self.host, self.port), Handler)
        self.port = self._srv.server_address[1]
        self._thread = threading.Thread(target=self._srv.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"agent-{self.host}:{self.port}", daemon=True)
        self._thread.start()
        return self

    def set_line(self, line: str | None) -> None:
        self.line = line
        if line is not None:
            self._release.set()
            self._release = threading.Event()

    def stop(self) -> None:
        _stop_threaded(self)

    def __enter__(self) -> "AgentServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --- a Prometheus query API stand-in (the demo's) ----------------------------------------

_NODE_LABEL = re.compile(r'node="([^"]*)"')


class PromApiServer:
    """Answers GET /api/v1/query like Prometheus: a one-sample vector for the node the query names."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        _check_loopback(host)
        self.host, self.port = host, port
        self.values: dict[str, float] = {}
        self.queries: list[str] = []  # every query asked, in order
        self._srv: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> "PromApiServer":
        import json
        from urllib.parse import parse_qs, urlsplit

        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                url = urlsplit(self.path)
                query = (parse_qs(url.query).get("query") or [""])[0]
                owner.queries.append(query)
                m = _NODE_LABEL.search(query)
                value = owner.values.get(m.group(1)) if m else None
                result = [] if value is None else [{"metric": {"node": m.group(1)},  # type: ignore[union-attr]
                                                    "value": [0, repr(float(value))]}]
                body = json.dumps({"status": "success",
                                   "data": {"resultType": "vector", "result": result}}).encode()
                self.send_response(200 if url.path == "/api/v1/query" else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._srv = type("_P", (ThreadingHTTPServer,), {"daemon_threads": True})((self.host, self.port), Handler)
        self.port = self._srv.server_address[1]
        threading.Thread(target=self._srv.serve_forever, kwargs={"poll_interval": 0.05},
                         name="prom-api", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._srv is not None:
            self._srv.shutdown()
            self._srv.server_close()
            self._srv = None
