"""Reusable Route 53 test pieces: zones built from a spec, a strict moto, an in-process moto server.

`spec` needs only a boto3 client; `strict` and `server` import moto, so they load on first use:

    from moto_fixtures import build, weights, start_server, strict_layer
"""

from __future__ import annotations

from typing import Any

from moto_fixtures.spec import build, change, record_sets, set_weight, weighted_set, weights

__all__ = [
    "build",
    "change",
    "record_sets",
    "set_weight",
    "weighted_set",
    "weights",
    "strict_layer",
    "controls",
    "start_server",
    "MotoServer",
]


def __getattr__(name: str) -> Any:
    if name in ("strict_layer", "controls"):
        from moto_fixtures import strict as _strict

        return _strict.layer if name == "strict_layer" else _strict.controls
    if name in ("start_server", "MotoServer"):
        from moto_fixtures import server as _server

        return _server.start if name == "start_server" else _server.MotoServer
    raise AttributeError(name)
