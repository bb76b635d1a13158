"""The ASGI WebSocket path (EVENTCAST_WS_ENGINE=asgi, also used with permessage-deflate) keeps the contract.

`eventcast serve` normally serves subscribers with the native protocol (app/wsserver.py); these run the same
behaviours through uvicorn's WebSocket implementation and app/routes/ws.py.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from app.causes import CloseCode
from tests import test_delivery, test_filters, test_lifecycle
from tests import test_resume as resume_tests
from tests.clients import close_code
from tests.servers import Gateway

ASGI = {"EVENTCAST_WS_ENGINE": "asgi"}


@pytest.fixture
def asgi_gateway(gateway_factory: Callable[..., Gateway]) -> Gateway:
    return gateway_factory(env=ASGI)


async def test_delivery_in_order(asgi_gateway: Gateway) -> None:
    await test_delivery.check_everyone_gets_everything(asgi_gateway, 100)


async def test_resume_gap_then_live(asgi_gateway: Gateway) -> None:
    await resume_tests.test_resume_gives_the_gap_then_live_without_duplicates(asgi_gateway)


async def test_filters_replace(asgi_gateway: Gateway) -> None:
    await test_filters.test_filter_can_be_replaced_at_any_time(asgi_gateway)


async def test_bad_control_message(asgi_gateway: Gateway) -> None:
    code, reason = await close_code(f"{asgi_gateway.ws}/ws/events", send='{"op": "nope"}')
    assert (code, reason) == (CloseCode.BAD_REQUEST, "unknown op 'nope'")


async def test_shed(asgi_gateway: Gateway) -> None:
    await test_lifecycle.test_shed_closes_the_asked_fraction(asgi_gateway)


async def test_slow_consumer(gateway_factory: Callable[..., Gateway]) -> None:
    def with_asgi(**kwargs: object) -> Gateway:
        env = dict(kwargs.pop("env", {}))  # type: ignore[call-overload]
        return gateway_factory(env={**env, **ASGI}, **kwargs)

    await test_lifecycle.test_slow_consumer_is_closed_4008_while_fast_ones_get_everything(with_asgi)
