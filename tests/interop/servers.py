"""Real Debian programs as the interop tests' own instances: Postfix, HAProxy, nginx, rbldnsd.

Each one runs from a private directory under the test's tmp path, listens on a loopback
address and a high port, logs to a file the test reads, and is stopped by the test
(`stop()` waits, with a deadline, until the process is gone and the port is closed).
Nothing here touches the system's own instances or their files.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import threading
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Callable

import pytest

from programs import require
from r53lb.demo.process import stop_process

STOP_DEADLINE = 10.0


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def world_readable_dir(prefix: str) -> Iterator[Path]:
    """A fresh directory under /tmp that the servers' own users (postfix, www-data) can search."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def wait_for(what: str, ok: Callable[[], bool], deadline: float = 10.0, every: float = 0.02) -> None:
    """Poll `ok` until it holds; fail naming `what` after `deadline` seconds."""
    end = time.monotonic() + deadline
    while not ok():
        if time.monotonic() > end:
            raise AssertionError(f"{what}: not within {deadline:g}s")
        time.sleep(every)


def listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def answers_smtp(host: str, port: int, tls: bool = False) -> bool:
    """A greeting arrives (postscreen and smtpd take a moment to start); then QUIT politely."""
    try:
        with socket.create_connection((host, port), timeout=2) as raw:
            s = raw
            if tls:
                ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
                s = ctx.wrap_socket(raw)
            f = s.makefile("rb")
            line = f.readline()
            while line[3:4] == b"-":
                line = f.readline()
            s.sendall(b"QUIT\r\n")
            f.readline()
            return line.startswith(b"220")
    except OSError:
        return False


# --- Postfix ------------------------------------------------------------------------------

_MASTER_CF = """\
# service type  private unpriv  chroot  wakeup  maxproc command
{listen}
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""

_SUPPORT = """\
smtpd     pass  -       -       n       -       -       smtpd -o syslog_name=postfix/behind-postscreen
dnsblog   unix  -       -       n       -       0       dnsblog
tlsproxy  unix  -       -       n       -       0       tlsproxy
"""


class Postfix:
    """A Postfix instance with its own config_directory, queue and maillog_file.

    `listeners` maps a name to a master.cf service on this instance's address: the command
    (`smtpd` or `postscreen`) and its `-o` overrides. Each listener gets its own port and
    its own syslog_name (postfix/NAME), so one log tells the listeners apart.
    """

    def __init__(
        self,
        root: Path,
        host: str,
        listeners: dict[str, tuple[str, dict[str, str]]],
        *,
        cert: tuple[Path, Path] | None = None,
        main: dict[str, str] | None = None,
    ) -> None:
        self.postfix = require("postfix")
        self.host, self.listeners = host, listeners
        self.ports = {name: free_port(host) for name in listeners}
        self.dir = root / f"postfix-{host}"
        self.queue = self.dir / "queue"
        self.maillog = self.dir / "maillog"
        settings = {
            "compatibility_level": "3.6",
            "queue_directory": str(self.queue),
            "data_directory": str(self.dir / "data"),
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "myhostname": "mx.interop.test",
            "mydestination": "$myhostname",
            "inet_interfaces": "loopback-only",  # Postfix wants an interface address; lo has 127.0.0.1
            "inet_protocols": "ipv4",
            "mynetworks": "192.0.2.0/24",  # not the probe: restrictions must apply to it
            "maillog_file": str(self.maillog),
            "maillog_file_prefixes": str(self.dir),
            "smtpd_peername_lookup": "no",  # no reverse DNS on a loopback address
            "alias_maps": "",
            "alias_database": "",
            "local_recipient_maps": "",
            "smtputf8_enable": "no",
            "smtpd_helo_required": "yes",
            "smtpd_helo_restrictions": "reject_non_fqdn_helo_hostname",
            "smtpd_relay_restrictions": "permit_mynetworks, reject_unauth_destination",
            "smtpd_tls_loglevel": "1",
            "postscreen_greet_wait": "1s",  # the pregreet test's pause before the 220 (default 6s)
        }
        if cert is not None:
            settings.update({
                "smtpd_tls_cert_file": str(cert[0]),
                "smtpd_tls_key_file": str(cert[1]),
                "smtpd_tls_security_level": "may",
            })
        settings.update(main or {})
        services = []
        for name, (command, options) in listeners.items():
            maxproc = "1" if command == "postscreen" else "-"
            opts = {"syslog_name": f"postfix/{name}", **options}
            services.append(f"{host}:{self.ports[name]} inet n - n - {maxproc} {command} "
                            + " ".join(f"-o {k}={v}" for k, v in opts.items()))
        if any(command == "postscreen" for command, _ in listeners.values()):
            services.append(_SUPPORT)
        self.dir.mkdir(parents=True, exist_ok=True)
        # Postfix runs as its own user: the path down to the queue must be searchable by it
        # (pytest's own tmp_path is not: see `world_readable_dir`).
        closed = [d for d in (root, *root.parents) if d.stat().st_mode & 0o005 != 0o005]
        if closed:
            raise AssertionError(f"{closed[0]}: not searchable by the postfix user; use world_readable_dir()")
        self.queue.mkdir(mode=0o755, exist_ok=True)  # root-owned; `postfix start` creates the rest
        (self.dir / "main.cf").write_text("".join(f"{k} = {v}\n" for k, v in settings.items()))
        (self.dir / "master.cf").write_text(_MASTER_CF.format(listen="\n".join(services)))
        self.running = False

    def _run(self, *args: str) -> None:
        cmd = [self.postfix, "-c", str(self.dir), *args]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        if out.returncode != 0:
            why = (out.stderr or out.stdout).strip()
            if not why and shutil.which("script"):
                # Postfix writes its fatal errors to stderr only when that is a terminal.
                check = [self.postfix, "-c", str(self.dir), "check"]
                tty = subprocess.run(["script", "-qc", shlex.join(check), "/dev/null"],
                                     capture_output=True, text=True, timeout=60)
                why = tty.stdout.strip().splitlines()[-1] if tty.stdout.strip() else ""
            raise AssertionError(f"postfix {' '.join(args)}: {why or 'failed'}")

    def start(self) -> "Postfix":
        self._run("start")
        self.running = True
        for name, port in self.ports.items():
            tls = self.listeners[name][1].get("smtpd_tls_wrappermode") == "yes"
            wait_for(f"Postfix {name} on {self.host}:{port}", lambda: answers_smtp(self.host, port, tls), deadline=20)
        return self

    def stop(self) -> None:
        if not self.running:
            return
        self.running = False
        pid = self.master_pid()
        self._run("stop")
        for name, port in self.ports.items():
            wait_for(f"Postfix {name} on {self.host}:{port} to close", lambda: not listening(self.host, port))
        if pid:
            wait_for("Postfix master to exit", lambda: not _alive(pid), deadline=STOP_DEADLINE)

    def master_pid(self) -> int | None:
        pidfile = self.queue / "pid" / "master.pid"
        try:
            return int(pidfile.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def log(self) -> str:
        try:
            return self.maillog.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_log(self, needle: str, deadline: float = 10.0) -> str:
        """The log once it holds `needle` (postlogd writes asynchronously)."""
        wait_for(f"{needle!r} in {self.maillog}", lambda: needle in self.log(), deadline=deadline)
        return self.log()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _terminate(proc: subprocess.Popen[bytes]) -> None:
    stop_process(proc, STOP_DEADLINE)


# --- TCP resets on one port, seen on the wire -----------------------------------------------


class ResetWatch:
    """Counts TCP segments with RST set to or from one port on the loopback interface.

    Per connection and exact: the port belongs to the test's own server, so the count is
    not disturbed by anything else on the host (host-wide counters such as TcpOutRsts are).
    Needs root (an AF_PACKET socket), as the interop suite does anyway.
    """

    def __init__(self, port: int) -> None:
        self.port = port
        self.resets: list[tuple[int, int]] = []  # (source port, destination port)
        self.segments = 0
        try:
            self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.ntohs(0x0003))
        except PermissionError:
            pytest.fail("counting TCP resets needs root (an AF_PACKET socket on lo); CI and make test run as root",
                        pytrace=False)
        self._sock.bind(("lo", 0))
        self._sock.settimeout(0.1)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True, name=f"rst-{port}")
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                frame, addr = self._sock.recvfrom(65535)
            except (TimeoutError, OSError):
                continue
            if addr[2] == socket.PACKET_OUTGOING:
                continue  # lo shows every segment twice: count it once, as it arrives
            ip = frame[14:]  # lo frames carry an Ethernet header
            if len(ip) < 40 or ip[0] >> 4 != 4 or ip[9] != 6:
                continue
            tcp = ip[(ip[0] & 0x0F) * 4:]
            sport, dport = struct.unpack("!HH", tcp[:4])
            if self.port not in (sport, dport):
                continue
            self.segments += 1
            if tcp[13] & 0x04:
                self.resets.append((sport, dport))

    def stop(self) -> list[tuple[int, int]]:
        self._stop.set()
        self._thread.join(2)
        self._sock.close()
        return list(self.resets)


# --- HAProxy, nginx, rbldnsd: one foreground process each -----------------------------------


class _Foreground:
    """A program run in the foreground with its output in `log_file`; stop() sends SIGTERM."""

    def __init__(self, what: str, argv: list[str], log_file: Path, ready: Callable[[], bool]) -> None:
        self.what, self.argv, self.log_file, self._ready = what, argv, log_file, ready
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> "_Foreground":
        with open(self.log_file, "ab") as out:
            self.proc = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

        def ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.what} exited {self.proc.returncode}: {self.log()[-500:]}")
            return self._ready()

        wait_for(f"{self.what} to start", ready, deadline=15)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            _terminate(self.proc)
            self.proc = None

    def log(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")
        except FileNotFoundError:
            return ""


class HAProxy(_Foreground):
    """HAProxy in TCP mode in front of `backends`, checking each with `option smtpchk`."""

    def __init__(self, root: Path, host: str, backends: list[tuple[str, int]]) -> None:
        self.host, self.port = host, free_port(host)
        self.dir = root / f"haproxy-{host}"
        self.dir.mkdir(parents=True, exist_ok=True)
        servers = "\n".join(
            f"    server mta{i} {h}:{p} check inter 200ms fall 1 rise 1" for i, (h, p) in enumerate(backends, 1))
        cfg = self.dir / "haproxy.cfg"
        cfg.write_text(f"""\
global
    log stdout format raw daemon
defaults
    mode tcp
    log global
    option tcplog
    timeout connect 1s
    timeout client 5s
    timeout server 5s
frontend smtp
    bind {host}:{self.port}
    default_backend mta
backend mta
    option smtpchk EHLO lb.interop.test
{servers}
""")
        haproxy = require("haproxy")
        super().__init__("HAProxy", [haproxy, "-db", "-f", str(cfg)], self.dir / "haproxy.log",
                         lambda: listening_quietly(host, self.port))


class Nginx(_Foreground):
    """nginx with one TLS listener: `server_blocks` is the http{} body after the paths."""

    def __init__(self, root: Path, host: str, server_blocks: str) -> None:
        self.host, self.port = host, free_port(host)
        self.dir = root / f"nginx-{host}"
        self.dir.mkdir(parents=True, exist_ok=True)
        d = self.dir
        cfg = d / "nginx.conf"
        cfg.write_text(f"""\
daemon off;
master_process on;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 64; }}
http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    default_type text/plain;
{server_blocks.replace("LISTEN", f"{host}:{self.port}")}
}}
""")
        nginx = require("nginx")
        super().__init__("nginx", [nginx, "-c", str(cfg), "-e", str(d / "error.log")], d / "stdout.log",
                         lambda: listening_quietly(host, self.port))


class Rbldnsd(_Foreground):
    """rbldnsd serving `zone` as an ip4set from `listed` (one address a line), on UDP host:port."""

    def __init__(self, root: Path, host: str, zone: str) -> None:
        self.host, self.port, self.zone = host, free_udp_port(host), zone
        self.dir = root / f"rbldnsd-{host}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o755)
        self.data = self.dir / "listed.txt"
        self.proc = None
        self.set_listed([])
        rbldnsd = require("rbldnsd")
        super().__init__("rbldnsd", [rbldnsd, "-n", "-u", "rbldns", "-w", str(self.dir), "-b", f"{host}/{self.port}",
                                     "-c", "1", f"{zone}:ip4set:listed.txt"], self.dir / "rbldnsd.log",
                         lambda: self.lookup("127.0.0.2") is not None)

    def lookup(self, ip: str) -> str | None:
        """The A answer for `ip` in the zone, None when not listed (or no answer yet)."""
        import dns.exception
        import dns.message
        import dns.query
        import dns.rcode

        name = ".".join(reversed(ip.split("."))) + "." + self.zone
        try:
            reply = dns.query.udp(dns.message.make_query(name, "A"), self.host, timeout=0.5, port=self.port)
        except (dns.exception.DNSException, OSError):
            return None
        if reply.rcode() != dns.rcode.NOERROR:
            return None
        return next((r.address for rrset in reply.answer for r in rrset if hasattr(r, "address")), None)

    @property
    def nameserver(self) -> str:
        return f"{self.host}:{self.port}"

    def set_listed(self, addresses: list[str]) -> None:
        """Rewrite the list (RFC 5782's 127.0.0.2 test entry always in) and make rbldnsd reload it."""
        lines = [":127.0.0.2:Listed, see https://lists.interop.test/$", "127.0.0.2", *addresses]
        tmp = self.data.with_suffix(".new")
        tmp.write_text("\n".join(lines) + "\n")
        tmp.chmod(0o644)
        tmp.replace(self.data)
        if self.proc is not None:
            self.proc.send_signal(signal.SIGHUP)


def free_udp_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def listening_quietly(host: str, port: int) -> bool:
    """Is something bound to host:port? Asked of the kernel (ss), not by connecting: a test
    connection would show in the server's log as a client that hung up."""
    out = subprocess.run([require("ss", "iproute2"), "-Htln", f"src {host}:{port}"],
                         capture_output=True, text=True, timeout=10)
    return bool(out.stdout.strip())
