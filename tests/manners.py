"""Servers that judge how a client ends a connection, one verdict per connection.

`SmtpManners` closes the way Postfix does: after its 221 it sends one TLS close_notify
(no waiting for the client's), half-closes, and from then on anything the client sends
is a fault: Postfix, having closed its socket, would answer it with a TCP reset. It reads
to EOF and records, per connection, "clean", "spoke after close (N bytes)" or "reset"
(the client's kernel reset the connection: it closed with our data unread, or aborted).

`HttpManners` serves one response with a Content-Length and waits for the client to close
first (HTTP/1.1 keep-alive): "clean" on EOF, "reset" on ECONNRESET.

TLS runs over ssl.SSLObject and memory BIOs, so each byte on the wire is seen and nothing
is sent that the test did not ask for. Blocking sockets in threads, loopback only.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from typing import Callable


class _Conn:
    """A blocking socket, optionally wrapped in TLS through memory BIOs."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.tls: ssl.SSLObject | None = None
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.buffer = b""

    def flush(self) -> None:
        data = self.outgoing.read()
        if data:
            self.sock.sendall(data)

    def start_tls(self, ctx: ssl.SSLContext) -> None:
        self.tls = ctx.wrap_bio(self.incoming, self.outgoing, server_side=True)
        while True:
            try:
                self.tls.do_handshake()
                self.flush()
                return
            except ssl.SSLWantReadError:
                self.flush()
                self._feed()

    def _feed(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise EOFError
        self.incoming.write(data)

    def send(self, data: bytes) -> None:
        if self.tls is None:
            self.sock.sendall(data)
        else:
            self.tls.write(data)
            self.flush()

    def _recv(self) -> bytes:
        if self.tls is None:
            data = self.sock.recv(65536)
            if not data:
                raise EOFError
            return data
        while True:
            try:
                return self.tls.read(65536)
            except ssl.SSLWantReadError:
                self._feed()
            except ssl.SSLZeroReturnError:
                raise EOFError from None

    def line(self) -> bytes:
        while b"\n" not in self.buffer:
            self.buffer += self._recv()
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line.rstrip(b"\r")

    def until(self, marker: bytes) -> bytes:
        while marker not in self.buffer:
            self.buffer += self._recv()
        head, _, self.buffer = self.buffer.partition(marker)
        return head

    def close_like_postfix(self) -> None:
        """One close_notify (not waiting for the peer's), then FIN."""
        if self.tls is not None:
            try:
                self.tls.unwrap()
            except ssl.SSLError:
                pass
            self.flush()
        self.sock.shutdown(socket.SHUT_WR)

    def rest(self) -> str:
        """Read the raw socket to EOF: what the client did after the server was done."""
        extra = len(self.incoming.read()) + len(self.buffer)
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    break
                extra += len(data)
        except ConnectionResetError:
            return "reset"
        except TimeoutError:
            return "no close"
        return "clean" if extra == 0 else f"spoke after close ({extra} bytes)"


class _Server:
    def __init__(self, host: str, handler: Callable[[_Conn], str]) -> None:
        self.listener = socket.create_server((host, 0))
        self.host, self.port = host, self.listener.getsockname()[1]
        self.outcomes: list[str] = []
        self._handler = handler
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, daemon=True, name=f"manners-{host}")
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        sock.settimeout(5)
        try:
            outcome = self._handler(_Conn(sock))
        except ConnectionResetError:
            outcome = "reset"
        except BrokenPipeError:  # the client had closed (and reset) before our data was read
            outcome = "reset (closed with our data unread)"
        except (EOFError, OSError, ssl.SSLError) as e:
            outcome = f"broken: {type(e).__name__}"
        finally:
            sock.close()
        with self._lock:
            self.outcomes.append(outcome)

    def stop(self) -> None:
        self.listener.close()


class SmtpManners(_Server):
    """tls: None, "starttls" or "implicit"; `linger`: seconds the server keeps the connection
    open after its 221 before it closes (a polite client waits for that close)."""

    def __init__(self, host: str, ctx: ssl.SSLContext, tls: str | None = None, linger: float = 0.0) -> None:
        self.ctx, self.tls, self.linger = ctx, tls, linger
        super().__init__(host, self._smtp)

    def _smtp(self, c: _Conn) -> str:
        if self.tls == "implicit":
            c.start_tls(self.ctx)
        c.send(b"220 manners.test ESMTP\r\n")
        while True:
            verb = c.line().split(b" ", 1)[0].upper()
            if verb == b"EHLO":
                offer = b"250-STARTTLS\r\n" if self.tls == "starttls" and c.tls is None else b""
                c.send(b"250-manners.test\r\n" + offer + b"250 8BITMIME\r\n")
            elif verb == b"STARTTLS":
                c.send(b"220 2.0.0 Ready to start TLS\r\n")
                c.start_tls(self.ctx)
            elif verb in (b"MAIL", b"RCPT", b"RSET"):
                c.send(b"250 2.0.0 Ok\r\n")
            elif verb == b"QUIT":
                c.send(b"221 2.0.0 Bye\r\n")
                if self.linger:
                    time.sleep(self.linger)
                c.close_like_postfix()
                return c.rest()
            else:
                c.send(b"502 5.5.2 Error: command not recognized\r\n")


class HttpManners(_Server):
    """`body_after` seconds between the headers and the body: a client that closes as soon as
    it has the status closes with the body on its way, and its kernel answers with a reset."""

    def __init__(self, host: str, ctx: ssl.SSLContext | None, body: bytes = b"ok\n", body_after: float = 0.0) -> None:
        self.ctx, self.body, self.body_after = ctx, body, body_after
        super().__init__(host, self._http)

    def _http(self, c: _Conn) -> str:
        if self.ctx is not None:
            c.start_tls(self.ctx)
        c.until(b"\r\n\r\n")
        c.send(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n" % len(self.body))
        if self.body_after:
            time.sleep(self.body_after)
        c.send(self.body)
        # Keep-alive: the client closes first. Its close_notify is fine here (our socket is open).
        try:
            while True:
                c._recv()
        except EOFError:
            pass
        c.sock.shutdown(socket.SHUT_WR)
        return c.rest()
