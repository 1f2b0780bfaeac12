"""The small HTTP/1.1 server behind /metrics, /healthz and the status page: bounded whatever the clients do.

One thread reads requests for every connection with a selector; a complete request is answered
by one of a few worker threads (a status document may take a second to build for 10,000
nodes), then the connection closes. So 300 idle clients cost 300 buffers, never 300 threads:

- a request must arrive whole (request line and headers) within HEADER_TIMEOUT of the
  connection, and within HEADER_LIMIT bytes (else 408 / 431, as nginx answers them);
- at most MAX_CONNECTIONS are open; a new one pushes out the oldest that has not finished its
  request yet (a slow or idle client loses its place, a quick request always gets in), and
  when the process runs out of descriptors the oldest go the same way instead of `accept()`
  spinning;
- only the Host values in `allowed_hosts` are answered (DNS rebinding: a page in the
  operator's browser naming its own domain gets 421), plus IP literals, which no DNS can rebind.
"""

from __future__ import annotations

import errno
import io
import ipaddress
import logging
import selectors
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

__all__ = ["HEADER_LIMIT", "HEADER_TIMEOUT", "MAX_CONNECTIONS", "WORKERS", "HttpServer", "host_allowed"]

log = logging.getLogger("r53lb.engine.httpserver")

HEADER_LIMIT = 16 * 1024  # request line and headers; a browser sends ~1 KB, Prometheus ~300 bytes
HEADER_TIMEOUT = 10.0  # seconds from accept to the end of the headers
WRITE_TIMEOUT = 10.0  # seconds a worker waits for a client to take its answer
MAX_CONNECTIONS = 64
WORKERS = 4
LOCAL_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def _hostname(value: str) -> str:
    """The host part of a Host header: 'a.example:9464' -> 'a.example', '[::1]:9464' -> '::1'."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def host_allowed(header: str | None, allowed: frozenset[str]) -> bool:
    """No Host (an HTTP/1.0 client: no browser), an IP literal, a localhost name or a listed name."""
    if header is None:
        return True
    name = _hostname(header).rstrip(".")
    if not name:
        return False
    try:
        ipaddress.ip_address(name.split("%", 1)[0])
        return True
    except ValueError:
        pass
    return name in LOCAL_NAMES or name in allowed


@dataclass(eq=False)
class _Conn:
    sock: socket.socket
    peer: Any
    deadline: float
    buf: bytearray = field(default_factory=bytearray)


class HttpServer:
    """A WSGI app on HOST:PORT, served by one selector thread and WORKERS threads."""

    def __init__(self, app: WsgiApp, host: str, port: int, allowed_hosts: Iterable[str] = (),
                 max_connections: int = MAX_CONNECTIONS, header_timeout: float = HEADER_TIMEOUT) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._listener = socket.socket(family, socket.SOCK_STREAM)
        try:
            self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._listener.bind((host, port))
            self._listener.listen(128)
        except OSError:
            self._listener.close()
            raise
        self._listener.setblocking(False)
        self.app = app
        self.host, self.port = host, self._listener.getsockname()[1]
        self.allowed = frozenset(h.lower().rstrip(".") for h in (*allowed_hosts, host))
        self.max_connections, self.header_timeout = max_connections, header_timeout
        self._sel = selectors.DefaultSelector()
        self._sel.register(self._listener, selectors.EVENT_READ)
        self._reading: dict[socket.socket, _Conn] = {}  # insertion order: the oldest first
        self._answering = 0  # handed to a worker, not closed yet
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(WORKERS, thread_name_prefix="r53lb-http")
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._sel.register(self._wake_r, selectors.EVENT_READ)
        self._stop = False
        self._paused_until = 0.0
        self._thread = threading.Thread(target=self._loop, name="r53lb-http-loop", daemon=True)

    # --- life -------------------------------------------------------------------------------

    def start(self) -> "HttpServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop = True
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass
        self._thread.join(5)
        self._pool.shutdown(wait=True, cancel_futures=True)
        for c in list(self._reading.values()):
            c.sock.close()
        self._reading.clear()
        self._sel.close()
        self._listener.close()
        self._wake_r.close()
        self._wake_w.close()

    def open_connections(self) -> int:
        with self._lock:
            return len(self._reading) + self._answering

    # --- the loop ---------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop:
            now = time.monotonic()
            if self._paused_until and now >= self._paused_until:
                self._paused_until = 0.0
                self._sel.register(self._listener, selectors.EVENT_READ)
            for key, _ in self._sel.select(timeout=0.25):
                if key.fileobj is self._listener:
                    self._accept()
                elif key.fileobj is self._wake_r:
                    try:
                        self._wake_r.recv(64)
                    except OSError:
                        pass
                else:
                    self._read(self._reading.get(key.fileobj))  # type: ignore[arg-type]
            now = time.monotonic()
            for c in [c for c in self._reading.values() if c.deadline <= now]:
                self._refuse(c, "408 Request Timeout", "the request did not arrive within "
                             f"{self.header_timeout:.0f}s")

    def _accept(self) -> None:
        for _ in range(64):  # a burst at a time, then the readers get their turn
            try:
                sock, peer = self._listener.accept()
            except BlockingIOError:
                return
            except OSError as e:
                if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    # Out of descriptors: make room from the oldest unfinished request, or stop
                    # accepting for a moment (the kernel's backlog holds the rest) rather than spin.
                    if not self._evict_oldest():
                        self._sel.unregister(self._listener)
                        self._paused_until = time.monotonic() + 0.1
                        return
                    continue
                return
            sock.setblocking(False)
            c = _Conn(sock, peer, time.monotonic() + self.header_timeout)
            if self.open_connections() >= self.max_connections and not self._evict_oldest():
                self._refuse(c, "503 Service Unavailable", "every connection is busy; try again")
                continue
            self._reading[sock] = c
            self._sel.register(sock, selectors.EVENT_READ)

    def _evict_oldest(self) -> bool:
        if not self._reading:
            return False
        self._close(next(iter(self._reading.values())))
        return True

    def _close(self, c: _Conn) -> None:
        self._reading.pop(c.sock, None)
        try:
            self._sel.unregister(c.sock)
        except (KeyError, ValueError):
            pass
        c.sock.close()

    def _read(self, c: _Conn | None) -> None:
        if c is None:
            return
        try:
            data = c.sock.recv(8192)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._close(c)
            return
        c.buf += data
        end = c.buf.find(b"\r\n\r\n")
        if end < 0:
            end = c.buf.find(b"\n\n")  # a bare-LF client (printf | nc)
        if end < 0 or end > HEADER_LIMIT:
            if len(c.buf) > HEADER_LIMIT:
                self._refuse(c, "431 Request Header Fields Too Large",
                             f"request line and headers above {HEADER_LIMIT} bytes")
            return
        self._reading.pop(c.sock, None)
        self._sel.unregister(c.sock)
        with self._lock:
            self._answering += 1
        self._pool.submit(self._answer, c, bytes(c.buf[:end]))

    def _refuse(self, c: _Conn, status: str, why: str) -> None:
        """A short answer from the loop itself: it fits any socket buffer, so send never waits."""
        body = f"{why}\n".encode()
        try:
            c.sock.send(_head(status, [("Content-Type", "text/plain; charset=utf-8"),
                                       ("Content-Length", str(len(body)))]) + body)
        except OSError:
            pass
        self._close(c)

    # --- a worker ---------------------------------------------------------------------------

    def _answer(self, c: _Conn, head: bytes) -> None:
        try:
            c.sock.setblocking(True)
            c.sock.settimeout(WRITE_TIMEOUT)
            c.sock.sendall(self._respond(head, c.peer))
        except OSError:
            pass
        except Exception:  # never lose a worker to one request
            log.exception("status server: cannot answer a request")
        finally:
            try:
                c.sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            c.sock.close()
            with self._lock:
                self._answering -= 1

    def _respond(self, head: bytes, peer: Any) -> bytes:
        lines = head.decode("latin-1").replace("\r\n", "\n").split("\n")
        parts = lines[0].split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            return _plain("400 Bad Request", "not an HTTP request")
        method, target, version = parts
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep or not name or name != name.strip():
                return _plain("400 Bad Request", "malformed header line")
            key = name.strip().lower()
            if key == "host" and key in headers:
                return _plain("400 Bad Request", "two Host headers")
            headers[key] = value.strip()
        if not host_allowed(headers.get("host"), self.allowed):
            return _plain("421 Misdirected Request",
                          "this r53lb does not answer for that Host name; list it with "
                          "`r53lb run --allowed-host NAME` or status_page.hosts in the config")
        path, _, query = target.partition("?")
        if path.startswith(("http://", "https://")):  # absolute form
            path = "/" + path.split("/", 3)[3] if path.count("/") >= 3 else "/"
        environ: dict[str, Any] = {
            "REQUEST_METHOD": method, "PATH_INFO": unquote(path, "latin-1"), "QUERY_STRING": query,
            "SCRIPT_NAME": "", "SERVER_NAME": self.host, "SERVER_PORT": str(self.port),
            "SERVER_PROTOCOL": version, "REMOTE_ADDR": str(peer[0]) if peer else "",
            "wsgi.version": (1, 0), "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(b""),
            "wsgi.errors": sys.stderr, "wsgi.multithread": True, "wsgi.multiprocess": False,
            "wsgi.run_once": False,
        }
        for k, v in headers.items():
            if k == "content-type":
                environ["CONTENT_TYPE"] = v
            elif k == "content-length":
                environ["CONTENT_LENGTH"] = v
            else:
                environ["HTTP_" + k.upper().replace("-", "_")] = v
        answer: list[Any] = []

        def start_response(status: str, response_headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            answer[:] = [status, response_headers]
            return lambda _data: None

        chunks = self.app(environ, start_response)
        try:
            body = b"".join(chunks)
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
        status, response_headers = answer
        names = {k.lower() for k, _ in response_headers}
        if "content-length" not in names:
            response_headers = [*response_headers, ("Content-Length", str(len(body)))]
        return _head(status, response_headers) + (b"" if method == "HEAD" else body)


def _head(status: str, headers: Iterable[tuple[str, str]]) -> bytes:
    lines = [f"HTTP/1.1 {status}", *(f"{k}: {v}" for k, v in headers), "Connection: close", "", ""]
    return "\r\n".join(lines).encode("latin-1")


def _plain(status: str, why: str) -> bytes:
    body = f"{why}\n".encode()
    return _head(status, [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))]) + body
