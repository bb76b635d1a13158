"""Property: random bytes and random JSON, as control frames or publish bodies, never crash the gateway nor
disturb another connected client. One gateway for all examples; a bystander watches throughout."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from app.causes import CloseCode
from app.protocol import SUBPROTOCOL_JSON, SUBPROTOCOL_MSGPACK
from tests.servers import Gateway

EXAMPLES = settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
#: Answers a gateway may give to nonsense; anything else (1011, 500, a dead process) is a failure.
CLOSE_CODES = {CloseCode.BAD_REQUEST, CloseCode.TOO_BIG}
PUBLISH_STATUSES = {202, 400, 413, 415, 422}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=20,
)
control_like = st.fixed_dictionaries(
    {"op": st.sampled_from(["filter", "ping", "subscribe", "", 1])},
    optional={"types": json_values, "where": json_values},
)
event_like = st.fixed_dictionaries(
    {"channel": json_values | st.text(max_size=30), "type": json_values, "data": json_values},
    optional={"extra": json_values},
)


class Bystander:
    """A quiet client on its own channel that must keep getting events whatever others send."""

    def __init__(self, gateway: Gateway, ws: ClientConnection) -> None:
        self.gateway = gateway
        self.ws = ws
        assert json.loads(self.ws.recv(timeout=10))["type"] == "eventcast.welcome"
        self.expected = 0

    def check(self) -> None:
        self.expected += 1
        response = httpx.post(
            f"{self.gateway.http}/events",
            json={"channel": "bystander", "type": "tick", "data": self.expected},
            timeout=10,
        )
        assert response.status_code == 202
        while True:
            message = json.loads(self.ws.recv(timeout=10))
            if "id" in message:
                assert message["data"] == self.expected
                return


@pytest.fixture
def bystander(gateway: Gateway) -> Iterator[Bystander]:
    with connect(f"{gateway.ws}/ws/events?channels=bystander", max_size=None) as ws:
        watcher = Bystander(gateway, ws)
        yield watcher
        watcher.check()  # still connected and served after every example
    assert gateway.process is not None and gateway.process.poll() is None


def send_control(gateway: Gateway, payload: str | bytes, subprotocol: str) -> None:
    ws: ClientConnection
    with connect(
        f"{gateway.ws}/ws/events/filtered?channels=fuzz",
        subprotocols=[subprotocol],  # type: ignore[list-item]
        max_size=None,
        open_timeout=10,
    ) as ws:
        ws.recv(timeout=10)  # welcome
        ws.send(payload)
        try:
            ws.send(b"\xc1" if subprotocol == SUBPROTOCOL_MSGPACK else "not json")  # ends it either way
            while True:
                ws.recv(timeout=10)
        except ConnectionClosed:
            pass
        assert ws.protocol.close_rcvd is not None, "the gateway must answer with a close frame"
        assert ws.protocol.close_rcvd.code in CLOSE_CODES, ws.protocol.close_rcvd


def post(gateway: Gateway, body: bytes) -> None:
    response = httpx.post(
        f"{gateway.http}/events", content=body, headers={"content-type": "application/json"}, timeout=10
    )
    assert response.status_code in PUBLISH_STATUSES, (response.status_code, response.text)
    if response.status_code != 202:
        assert set(response.json()["error"]) == {"code", "message"}


@EXAMPLES
@given(payload=st.binary(max_size=300) | st.text(max_size=300))
def test_random_control_frames(gateway: Gateway, bystander: Bystander, payload: str | bytes) -> None:
    send_control(gateway, payload, SUBPROTOCOL_JSON)
    bystander.check()
    send_control(gateway, payload if isinstance(payload, bytes) else payload.encode(), SUBPROTOCOL_MSGPACK)


@EXAMPLES
@given(message=control_like | json_values)
def test_random_json_control_frames(gateway: Gateway, bystander: Bystander, message: Any) -> None:
    send_control(gateway, json.dumps(message), SUBPROTOCOL_JSON)
    bystander.check()


@EXAMPLES
@given(body=st.binary(max_size=500))
def test_random_publish_bodies(gateway: Gateway, bystander: Bystander, body: bytes) -> None:
    post(gateway, body)
    bystander.check()


@EXAMPLES
@given(body=event_like | st.lists(event_like, max_size=4) | json_values)
def test_random_json_publish_bodies(gateway: Gateway, bystander: Bystander, body: Any) -> None:
    post(gateway, json.dumps(body).encode())
    bystander.check()
