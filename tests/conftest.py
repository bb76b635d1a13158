from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.servers import Gateway, RedisServer


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def gateway_factory() -> Iterator[Callable[..., Gateway]]:
    started: list[Gateway] = []

    def make(**kwargs: Any) -> Gateway:
        wait_ready = kwargs.pop("wait_ready", True)
        gateway = Gateway(**kwargs)
        started.append(gateway)
        return gateway.start(wait_ready=wait_ready)

    yield make
    for gateway in started:
        gateway.stop()


@pytest.fixture
def gateway(gateway_factory: Callable[..., Gateway]) -> Gateway:
    """One gateway on the in-process broker."""
    return gateway_factory()
