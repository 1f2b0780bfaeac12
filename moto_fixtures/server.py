"""An in-process moto server on the loopback interface, strict Route 53 on, with counters and faults.

    server = start()                      # 127.0.0.1, a free port
    aws = AwsConfig(endpoint_url=server.endpoint_url, region="us-east-1")
    server.throttle("ChangeResourceRecordSets", 2)
    ...
    server.counts["ChangeResourceRecordSets"]
    server.stop()

One per process at a time: moto keeps its state in module globals, so the counters and
faults (`server.controls`) are the same object `strict.layer()` yields in-process.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from moto.server import ThreadedMotoServer

from moto_fixtures.dynamodb import DynamoControls, dynamodb_controls
from moto_fixtures.dynamodb import install as install_dynamodb
from moto_fixtures.strict import Controls, controls, install

__all__ = ["MotoServer", "start", "reset_backends"]


def reset_backends() -> None:
    """Forget every moto resource (zones, records, topics) in this process."""
    from moto.moto_api._internal.models import moto_api_backend

    moto_api_backend.reset()


class MotoServer:
    """A running ThreadedMotoServer: `endpoint_url`, `stop()`, `reset()`, counters and faults."""

    def __init__(self, server: ThreadedMotoServer, strict_before: bool) -> None:
        self._server = server
        self._strict_before = strict_before
        host, port = server.get_host_and_port()
        self.host, self.port = host, port
        self.endpoint_url = f"http://{host}:{port}"
        self.controls: Controls = controls
        self.dynamodb: DynamoControls = dynamodb_controls  # DynamoDB counts and throttles
        self._stopped = False

    @property
    def counts(self) -> Any:
        """Requests per Route 53 operation ('ChangeResourceRecordSets': 1, ...)."""
        return self.controls.counts

    def throttle(self, operation: str, n: int = 1) -> None:
        self.controls.throttle(operation, n)

    def fail(self, operation: str, n: int = 1, **kwargs: Any) -> None:
        self.controls.fail(operation, n, **kwargs)

    def before_change(self, callback: Callable[[], Any]) -> None:
        self.controls.before_change(callback)

    def lose_answer(self, operation: str, n: int = 1) -> None:
        self.controls.lose_answer(operation, n)

    def pending(self, n: int) -> None:
        self.controls.pending(n)

    def reset(self) -> None:
        """Empty moto and clear counters and faults (between tests)."""
        reset_backends()
        self.controls.reset()
        self.dynamodb.reset()

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self._server.stop()
        self.controls.strict = self._strict_before

    def __enter__(self) -> "MotoServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start(host: str = "127.0.0.1", port: int = 0, *, strict: bool = True, quiet: bool = True) -> MotoServer:
    """Start moto on host:port (0: a free port) in a daemon thread; returns once it listens."""
    if quiet:  # werkzeug logs every request to stderr otherwise
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
    install()
    install_dynamodb()
    before = controls.strict
    controls.strict = strict
    server = ThreadedMotoServer(ip_address=host, port=port, verbose=False)
    server.start()
    return MotoServer(server, before)
