"""Shared fixtures. Route 53 on moto: see moto_fixtures/pytest_plugin.py."""

from moto_fixtures.pytest_plugin import (  # noqa: F401
    aws_env,
    mock_route53,
    moto_server,
    moto_server_session,
)
