"""A separate process answering a minimal SMTP dialogue on many loopback addresses.

    python -m bench.smtp_farm N BLOCK PORT DELAY [LIFETIME [AGENT_PORT]]

Listens on 127.BLOCK.x.y:PORT for N addresses, waits DELAY seconds before each reply
(greeting included: loopback has no round-trip time, real mail servers are tens of
milliseconds away), prints one JSON line when ready and exits after LIFETIME seconds or
on SIGTERM. Greeting 220, EHLO answered with a short multi-line 250, QUIT with 221.
With AGENT_PORT each address also answers HAProxy's agent check there: `ready up 100%`.
"""

from __future__ import annotations

import asyncio
import json
import sys

from bench.common import addresses, raise_nofile

EHLO_REPLY = b"250-farm.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n"


class _Smtp(asyncio.Protocol):
    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.buf = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.send(b"220 farm.test ESMTP\r\n")

    def send(self, data: bytes, close: bool = False) -> None:
        def now() -> None:
            if self.transport is not None and not self.transport.is_closing():
                self.transport.write(data)
                if close:
                    self.transport.close()

        if self.delay:
            asyncio.get_running_loop().call_later(self.delay, now)
        else:
            now()

    def data_received(self, data: bytes) -> None:
        self.buf = (self.buf + data)[-4096:]
        while b"\n" in self.buf:
            line, _, self.buf = self.buf.partition(b"\n")
            verb = line[:4].upper()
            if verb == b"QUIT":
                self.send(b"221 2.0.0 bye\r\n", close=True)
            elif verb in (b"EHLO", b"HELO"):
                self.send(EHLO_REPLY if verb == b"EHLO" else b"250 farm.test\r\n")
            else:
                self.send(b"502 5.5.2 not here\r\n")

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


class _Agent(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.write(b"ready up 100%\n")  # type: ignore[attr-defined]
        transport.close()


async def main(n: int, block: int, port: int, delay: float, lifetime: float, agent_port: int = 0) -> None:
    raise_nofile(2 * n + 4096)
    loop = asyncio.get_running_loop()
    for addr in addresses(n, block):
        await loop.create_server(lambda: _Smtp(delay), addr, port, backlog=4096, reuse_address=True)
        if agent_port:
            await loop.create_server(_Agent, addr, agent_port, backlog=4096, reuse_address=True)
    print(json.dumps({"ready": n, "port": port}), flush=True)
    await asyncio.sleep(lifetime)


if __name__ == "__main__":
    n, block, port, delay = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    lifetime = float(sys.argv[5]) if len(sys.argv) > 5 else 900.0
    agent_port = int(sys.argv[6]) if len(sys.argv) > 6 else 0
    import uvloop  # the farm shares the two cores with what it measures: the cheaper it answers, the better

    uvloop.run(main(n, block, port, delay, lifetime, agent_port))
