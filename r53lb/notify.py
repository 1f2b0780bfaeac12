"""Notifications: a generic webhook (JSON; Slack-compatible `text`) and an SNS topic.

Sending never blocks the caller: a message goes onto each channel's bounded queue and a
worker per channel delivers it with bounded retries. A channel that stays down costs a
log line per message, nothing more; a full queue drops the oldest message, loudly.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Protocol

from .errors import R53lbError

if TYPE_CHECKING:
    from .config import AwsConfig, NotifyConfig, SnsConfig, WebhookConfig

__all__ = ["Notifier", "Message", "NotifyError"]

log = logging.getLogger("r53lb.notify")

# kinds: health (a node changed state), panic, hold, apply_failed, alert (fail open), recovery


class Counts(Protocol):
    """Where deliveries are counted: `notifications.labels(channel, outcome).inc()` (the engine's
    metrics are one; the notifier only calls them, it does not know the engine)."""

    notifications: Any


class NotifyError(R53lbError):
    """A delivery that must not be retried (the receiver refused it for good)."""


class _Retry(Exception):
    """A delivery that may succeed if tried again (connection, 5xx, 429, throttling)."""


@dataclass(frozen=True)
class Message:
    kind: str
    message: str
    details: dict[str, Any]
    at: datetime
    source: str

    def payload(self) -> dict[str, Any]:
        return {
            "text": f"r53lb@{self.source}: {self.message}",  # what Slack and most chat hooks show
            "kind": self.kind,
            "message": self.message,
            "details": self.details,
            "at": self.at.isoformat(),
            "source": self.source,
        }

    def subject(self) -> str:
        """An SNS subject: ASCII, one line, under 100 characters."""
        text = f"r53lb {self.kind}: {self.message}"
        text = "".join(ch if 32 <= ord(ch) < 127 else "?" for ch in text)
        return text if len(text) <= 99 else text[:98] + "~"


Send = Callable[[Message], Awaitable[None]]


class _Channel:
    def __init__(self, name: str, send: Send, notifier: "Notifier") -> None:
        self.name = name
        self.send = send
        self.n = notifier
        self.queue: asyncio.Queue[Message] = asyncio.Queue(maxsize=notifier.queue_size)
        self.task: asyncio.Task[None] | None = None

    def put(self, msg: Message) -> None:
        if self.queue.full():
            dropped = self.queue.get_nowait()
            self.queue.task_done()
            log.error("notify %s: queue full (%d); dropped: %s", self.name, self.n.queue_size, dropped.message)
            self.n._count(self.name, "dropped")
        self.queue.put_nowait(msg)

    async def run(self) -> None:
        while True:
            msg = await self.queue.get()
            try:
                await self.deliver(msg)
            finally:
                self.queue.task_done()

    async def deliver(self, msg: Message) -> None:
        from tenacity import (
            AsyncRetrying,
            RetryError,
            retry_if_exception_type,
            stop_after_attempt,
            stop_after_delay,
            wait_random_exponential,
        )

        retrying = AsyncRetrying(
            retry=retry_if_exception_type(_Retry),
            stop=stop_after_attempt(self.n.attempts) | stop_after_delay(self.n.deadline),
            wait=wait_random_exponential(multiplier=self.n.backoff, max=self.n.backoff_max),
            reraise=False,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    await self.send(msg)
        except RetryError as e:
            n = e.last_attempt.attempt_number
            log.warning("notify %s: not delivered after %d attempt%s: %s (message: %s)", self.name, n,
                        "s" if n > 1 else "", e.last_attempt.exception(), msg.message)
            self.n._count(self.name, "failed")
        except NotifyError as e:
            log.warning("notify %s: refused: %s (message: %s)", self.name, e, msg.message)
            self.n._count(self.name, "failed")
        except asyncio.CancelledError:
            raise
        except Exception as e:  # a notification must never take the controller down
            log.warning("notify %s: %s: %s (message: %s)", self.name, type(e).__name__, e, msg.message)
            self.n._count(self.name, "failed")
        else:
            self.n._count(self.name, "sent")


class Notifier:
    """`notifier(kind, message, details)` from any thread; delivery happens on the event loop."""

    def __init__(
        self,
        cfg: "NotifyConfig",
        aws: "AwsConfig | None" = None,
        metrics: Counts | None = None,
        *,
        attempts: int = 4,
        backoff: float = 0.5,
        backoff_max: float = 5.0,
        deadline: float = 30.0,
        queue_size: int = 1000,
        source: str | None = None,
    ) -> None:
        self.cfg = cfg
        self.aws = aws
        self.metrics = metrics
        self.attempts, self.backoff, self.backoff_max, self.deadline = attempts, backoff, backoff_max, deadline
        self.queue_size = queue_size
        self.source = source or socket.gethostname()
        self.channels: list[_Channel] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._http: Any = None
        self._sns: Any = None
        self._sns_lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return bool(self.cfg.webhooks or self.cfg.sns)

    def start(self) -> "Notifier":
        """Start one worker per channel on the running loop."""
        self._loop = asyncio.get_running_loop()
        for i, hook in enumerate(self.cfg.webhooks):
            self.channels.append(_Channel(f"webhook[{i}]", self._webhook_sender(hook), self))
        if self.cfg.sns is not None:
            self.channels.append(_Channel("sns", self._sns_sender(self.cfg.sns), self))
        for ch in self.channels:
            ch.task = self._loop.create_task(ch.run(), name=f"r53lb-notify-{ch.name}")
        return self

    def __call__(self, kind: str, message: str, details: dict[str, Any] | None = None) -> None:
        if not self.channels or self._loop is None:
            return
        msg = Message(kind, message, dict(details or {}), datetime.now(timezone.utc), self.source)
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            self._put(msg)
        elif not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._put, msg)

    def _put(self, msg: Message) -> None:
        for ch in self.channels:
            ch.put(msg)

    async def close(self, timeout: float = 5.0) -> None:
        """Deliver what is queued (at most `timeout` seconds), then stop the workers."""
        if self.channels:
            waits = [asyncio.ensure_future(ch.queue.join()) for ch in self.channels]
            done, pending = await asyncio.wait(waits, timeout=timeout)
            for w in pending:
                w.cancel()
            left = sum(ch.queue.qsize() for ch in self.channels)
            if left:
                log.warning("notify: stopping with %d message(s) undelivered", left)
            for ch in self.channels:
                if ch.task is not None:
                    ch.task.cancel()
            await asyncio.gather(*(ch.task for ch in self.channels if ch.task), return_exceptions=True)
        self.channels = []
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    def _count(self, channel: str, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.notifications.labels(channel.split("[")[0], outcome).inc()

    # --- webhook --------------------------------------------------------------------------

    def _webhook_sender(self, hook: "WebhookConfig") -> Send:
        async def send(msg: Message) -> None:
            import httpx

            if self._http is None:
                self._http = httpx.AsyncClient(follow_redirects=False)
            try:
                url, headers = hook.resolved()  # a secret from the environment is read when it is needed
            except KeyError as e:
                raise NotifyError(f"webhook: environment variable {e.args[0]} is not set (or holds a line break)") \
                    from None
            try:
                resp = await self._http.post(
                    url, content=json.dumps(msg.payload(), default=str).encode(),
                    headers={"Content-Type": "application/json", "User-Agent": "r53lb", **headers},
                    timeout=hook.timeout,
                )
            except httpx.HTTPError as e:
                raise _Retry(f"{_redact(url)}: {type(e).__name__}: {e}") from None
            if resp.status_code == 429 or resp.status_code >= 500:
                raise _Retry(f"{_redact(url)}: HTTP {resp.status_code}")
            if resp.status_code >= 400:
                raise NotifyError(f"{_redact(url)}: HTTP {resp.status_code}")

        return send

    # --- SNS ------------------------------------------------------------------------------

    def _sns_client(self, topic_arn: str) -> Any:
        from .aws.session import AwsError, client

        with self._sns_lock:
            if self._sns is None:
                parts = topic_arn.split(":")
                region = (self.aws.region if self.aws else None) or (parts[3] if len(parts) > 5 else None)
                try:
                    self._sns = client(self.aws, "sns", region=region, read_timeout=10.0, attempts=2)
                except AwsError as e:
                    raise NotifyError(f"SNS: {e}") from None
            return self._sns

    def _sns_sender(self, sns: "SnsConfig") -> Send:
        def publish(msg: Message) -> None:
            from .aws.session import read_error

            try:
                self._sns_client(sns.topic_arn).publish(
                    TopicArn=sns.topic_arn, Subject=msg.subject(),
                    Message=json.dumps(msg.payload(), default=str),
                )
            except Exception as e:
                f = read_error(e, "SNS Publish")
                if f is None:
                    raise
                raise (_Retry if f.transient else NotifyError)(f.message) from None

        async def send(msg: Message) -> None:
            # boto3 blocks: run it beside the loop, never on it.
            await asyncio.get_running_loop().run_in_executor(None, publish, msg)

        return send


def _redact(url: str) -> str:
    """A webhook URL for logs: Slack and friends put the secret in the path."""
    from urllib.parse import urlsplit

    u = urlsplit(url)
    return f"{u.scheme}://{u.hostname}{':' + str(u.port) if u.port else ''}/…"
