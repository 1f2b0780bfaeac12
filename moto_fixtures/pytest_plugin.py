"""pytest fixtures for Route 53 on moto. Register from tests/conftest.py:

    from moto_fixtures.pytest_plugin import aws_env, mock_route53, moto_server, moto_server_session  # noqa: F401

- `aws_env`: fake credentials and us-east-1 in the environment, no ~/.aws files, no instance role.
- `mock_route53`: in-process moto (`mock_aws`) with the strict layer on; yields the Controls
  (counts, throttle, fail, before_change, pending). Make clients inside the test.
- `moto_server`: the session's in-process moto server (strict), emptied and with fresh
  counters for each test; `.endpoint_url`, `.counts`, `.throttle()`, ... (see server.MotoServer).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from moto_fixtures.server import MotoServer

FAKE_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "AWS_CONFIG_FILE": "/nonexistent/r53lb-tests/config",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/r53lb-tests/credentials",
    "AWS_EC2_METADATA_DISABLED": "true",
}


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for key, value in FAKE_ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return dict(FAKE_ENV)


@pytest.fixture
def mock_route53(aws_env: dict[str, str]) -> Iterator[object]:
    from moto import mock_aws

    from moto_fixtures.strict import layer

    with mock_aws(), layer() as controls:
        controls.reset()
        yield controls
        controls.reset()


@pytest.fixture(scope="session")
def moto_server_session() -> Iterator[MotoServer]:
    from moto_fixtures.server import start

    server = start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def moto_server(moto_server_session: MotoServer, aws_env: dict[str, str]) -> Iterator[MotoServer]:
    from moto_fixtures.strict import layer

    moto_server_session.reset()
    with layer():  # an in-process test before may have left the layer off
        yield moto_server_session
    moto_server_session.controls.reset()
