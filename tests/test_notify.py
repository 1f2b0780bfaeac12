"""Notifications: a webhook receiver and SNS (moto server, delivered to SQS) on loopback."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3
import pytest

from r53lb.config import AwsConfig, NotifyConfig, SnsConfig, WebhookConfig
from r53lb.engine.metrics import Metrics
from r53lb.notify import Message, Notifier

pytestmark = pytest.mark.timeout(60)


class WebhookReceiver:
    """A JSON webhook on 127.0.0.1: records every body; `fail_next(n, status)` answers errors first."""

    def __init__(self) -> None:
        owner = self
        self.bodies: list[dict[str, Any]] = []
        self.requests = 0
        self._fail: list[int] = []
        self._lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                with owner._lock:
                    owner.requests += 1
                    status = owner._fail.pop(0) if owner._fail else 200
                    if status == 200:
                        owner.bodies.append(json.loads(body))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self._srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._srv.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._srv.server_port}/hooks/secret-token"
        self._thread = threading.Thread(target=self._srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def fail_next(self, n: int, status: int = 500) -> None:
        with self._lock:
            self._fail.extend([status] * n)

    def wait_for(self, n: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.bodies) >= n:
                    return list(self.bodies)
            time.sleep(0.02)
        raise AssertionError(f"webhook got {len(self.bodies)} message(s), wanted {n}: {self.bodies}")

    def stop(self) -> None:
        self._srv.shutdown()
        self._srv.server_close()
        self._thread.join(5)


@pytest.fixture
def receiver():
    r = WebhookReceiver()
    yield r
    r.stop()


def dead_url() -> str:
    with socket.socket() as s:  # a port nobody listens on once this socket is closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/hook"


def sns_topic_with_queue(endpoint: str) -> tuple[str, str]:
    """A topic whose messages land in an SQS queue we can read back; (topic arn, queue url)."""
    sns = boto3.client("sns", endpoint_url=endpoint, region_name="us-east-1")
    sqs = boto3.client("sqs", endpoint_url=endpoint, region_name="us-east-1")
    arn = sns.create_topic(Name="r53lb-alerts")["TopicArn"]
    q = sqs.create_queue(QueueName="r53lb-alerts")["QueueUrl"]
    qarn = sqs.get_queue_attributes(QueueUrl=q, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=arn, Protocol="sqs", Endpoint=qarn)
    return arn, q


def sqs_messages(endpoint: str, queue_url: str, n: int, timeout: float = 10.0) -> list[dict[str, Any]]:
    sqs = boto3.client("sqs", endpoint_url=endpoint, region_name="us-east-1")
    got: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while len(got) < n and time.monotonic() < deadline:
        resp = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
        for m in resp.get("Messages", []):
            got.append(json.loads(m["Body"]))  # the SNS envelope: Subject, Message, TopicArn
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=m["ReceiptHandle"])
        if len(got) < n:
            time.sleep(0.05)
    return got


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_webhook_gets_json_with_slack_text(receiver):
    async def go() -> None:
        n = Notifier(NotifyConfig(webhooks=(WebhookConfig(url=receiver.url, headers={"X-Token": "t"}),)),
                     source="ctl-1").start()
        n("health", "mx/hlb-2 is down: smtp: connection refused", {"pool": "mx", "node": "hlb-2"})
        await n.close(timeout=5)

    run(go())
    (body,) = receiver.wait_for(1)
    assert body["text"] == "r53lb@ctl-1: mx/hlb-2 is down: smtp: connection refused"
    assert body["kind"] == "health" and body["details"] == {"pool": "mx", "node": "hlb-2"}
    assert body["source"] == "ctl-1" and body["at"]


def test_webhook_retries_a_5xx_then_delivers_once(receiver):
    metrics = Metrics()

    async def go() -> None:
        n = Notifier(NotifyConfig(webhooks=(WebhookConfig(url=receiver.url),)), metrics=metrics,
                     backoff=0.01, backoff_max=0.05).start()
        receiver.fail_next(2, 503)
        n("hold", "hold: every check of every node failed", {})
        await n.close(timeout=5)

    run(go())
    assert len(receiver.wait_for(1)) == 1
    assert receiver.requests == 3
    assert metrics.registry.get_sample_value("r53lb_notifications_total", {"channel": "webhook", "outcome": "sent"}) == 1


def test_webhook_4xx_is_not_retried(receiver, caplog):
    async def go() -> None:
        n = Notifier(NotifyConfig(webhooks=(WebhookConfig(url=receiver.url),)), backoff=0.01).start()
        receiver.fail_next(1, 404)
        n("panic", "pool mx: panic", {})
        await n.close(timeout=5)

    with caplog.at_level(logging.WARNING, logger="r53lb.notify"):
        run(go())
    assert receiver.requests == 1 and receiver.bodies == []
    assert any("HTTP 404" in r.getMessage() for r in caplog.records)


def test_dead_webhook_costs_a_log_line_and_never_blocks(caplog):
    url = dead_url()

    async def go() -> float:
        n = Notifier(NotifyConfig(webhooks=(WebhookConfig(url=url, timeout=0.5),)),
                     attempts=3, backoff=0.01, backoff_max=0.02).start()
        started = time.perf_counter()
        for i in range(5):
            n("health", f"change {i}", {})
        enqueue = time.perf_counter() - started
        await n.close(timeout=10)
        return enqueue

    with caplog.at_level(logging.WARNING, logger="r53lb.notify"):
        enqueue = run(go())
    assert enqueue < 0.05  # the caller (the probe loop) never waits for delivery
    lines = [r.getMessage() for r in caplog.records if r.name == "r53lb.notify"]
    assert len(lines) == 5, lines  # one line per message, nothing more
    assert all("not delivered after 3 attempts" in line for line in lines)
    assert all("secret" not in line and "/hook" not in line for line in lines)  # the URL's path is redacted


def test_full_queue_drops_the_oldest(receiver, caplog):
    async def go() -> None:
        n = Notifier(NotifyConfig(webhooks=(WebhookConfig(url=receiver.url),)), queue_size=2).start()
        for i in range(4):  # all enqueued before the worker runs once
            n("health", f"m{i}", {})
        await n.close(timeout=5)

    with caplog.at_level(logging.ERROR, logger="r53lb.notify"):
        run(go())
    assert [b["message"] for b in receiver.wait_for(2)] == ["m2", "m3"]
    assert sum("queue full" in r.getMessage() for r in caplog.records) == 2


def test_notifier_is_callable_from_another_thread(receiver):
    async def go() -> None:
        n = Notifier(NotifyConfig(webhooks=(WebhookConfig(url=receiver.url),)), source="x").start()
        await asyncio.get_running_loop().run_in_executor(None, n, "apply_failed", "from a thread", {})
        await asyncio.sleep(0)  # let the loop run the threadsafe callback before closing
        await n.close(timeout=5)

    run(go())
    assert receiver.wait_for(1)[0]["message"] == "from a thread"


def test_sns_publishes_land_in_moto(moto_server):
    arn, queue = sns_topic_with_queue(moto_server.endpoint_url)
    aws = AwsConfig(endpoint_url=moto_server.endpoint_url, region="us-east-1")

    async def go() -> None:
        n = Notifier(NotifyConfig(sns=SnsConfig(topic_arn=arn)), aws, source="ctl-1").start()
        n("health", "mx/hlb-2 is down: smtp: connection refused", {"pool": "mx", "node": "hlb-2"})
        n("recovery", "mx/hlb-2 is up", {"pool": "mx", "node": "hlb-2"})
        await n.close(timeout=10)

    run(go())
    got = sqs_messages(moto_server.endpoint_url, queue, 2)
    assert [g["Subject"] for g in got] == ["r53lb health: mx/hlb-2 is down: smtp: connection refused",
                                          "r53lb recovery: mx/hlb-2 is up"]
    assert json.loads(got[0]["Message"])["details"] == {"pool": "mx", "node": "hlb-2"}


def test_sns_unknown_topic_is_a_log_line(moto_server, caplog):
    aws = AwsConfig(endpoint_url=moto_server.endpoint_url, region="us-east-1")

    async def go() -> None:
        n = Notifier(NotifyConfig(sns=SnsConfig(topic_arn="arn:aws:sns:us-east-1:123456789012:nope")), aws,
                     backoff=0.01).start()
        n("hold", "hold", {})
        await n.close(timeout=10)

    with caplog.at_level(logging.WARNING, logger="r53lb.notify"):
        run(go())
    assert sum(r.name == "r53lb.notify" for r in caplog.records) == 1


def test_subject_is_short_ascii_one_line():
    from datetime import datetime, timezone

    m = Message("health", "pool mx: nœud ↓\n" + "x" * 200, {}, datetime.now(timezone.utc), "h")
    s = m.subject()
    assert len(s) < 100 and s.isascii() and "\n" not in s


def test_webhook_secret_from_the_environment(receiver, monkeypatch, caplog):
    """The URL (Slack puts the secret in it) and a token header may come from the environment."""
    seen: list[str] = []
    handler = receiver._srv.RequestHandlerClass
    original = handler.do_POST

    def do_post(self: Any) -> None:
        seen.append(self.headers.get("Authorization"))
        original(self)

    handler.do_POST = do_post
    monkeypatch.setenv("R53LB_TEST_HOOK", receiver.url)
    monkeypatch.setenv("R53LB_TEST_TOKEN", "Bearer s3cret")
    hook = WebhookConfig(url_env="R53LB_TEST_HOOK", headers_env={"Authorization": "R53LB_TEST_TOKEN"})

    async def go(h: WebhookConfig) -> None:
        n = Notifier(NotifyConfig(webhooks=(h,)), source="ctl-1").start()
        n("health", "mx/hlb-2 is down", {})
        await n.close(timeout=5)

    run(go(hook))
    receiver.wait_for(1)
    assert seen == ["Bearer s3cret"]
    monkeypatch.delenv("R53LB_TEST_TOKEN")
    with caplog.at_level("WARNING", logger="r53lb"):
        run(go(hook))
    assert "environment variable R53LB_TEST_TOKEN is not set" in caplog.text and "s3cret" not in caplog.text
    assert receiver.requests == 1  # nothing sent without its secret
