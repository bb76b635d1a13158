"""Admin endpoints are closed by default: a token, the internal port, or an explicit (and loud) opening."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from tests.servers import Gateway, free_port, wait_for


def test_without_a_token_admin_refuses_on_the_public_port(gateway_factory: Callable[..., Gateway]) -> None:
    gw = gateway_factory(admin_token=None)
    for path, body in (("/admin/drain", {"seconds": 0}), ("/admin/shed", {"fraction": 1})):
        response = httpx.post(f"{gw.http}{path}", json=body)
        assert response.status_code == 403, response.text
        assert response.json()["error"]["code"] == "admin_closed"
        assert "EVENTCAST_ADMIN_TOKEN" in response.json()["error"]["message"]
    assert httpx.get(f"{gw.http}/readyz").status_code == 200  # nothing was drained


def test_without_a_token_admin_answers_on_the_internal_port(gateway_factory: Callable[..., Gateway]) -> None:
    internal_port = free_port()
    gw = gateway_factory(admin_token=None, env={"EVENTCAST_INTERNAL_PORT": str(internal_port)})
    response = httpx.post(f"http://127.0.0.1:{internal_port}/admin/shed", json={"fraction": 1})
    assert response.status_code == 202, response.text
    assert httpx.post(f"{gw.http}/admin/shed", json={"fraction": 1}).status_code == 404


def test_admin_open_serves_the_public_port_and_says_so(gateway_factory: Callable[..., Gateway]) -> None:
    gw = gateway_factory(
        admin_token=None, env={"EVENTCAST_ADMIN_OPEN": "true", "EVENTCAST_LOG_LEVEL": "info"}
    )
    assert httpx.post(f"{gw.http}/admin/shed", json={"fraction": 1}).status_code == 202
    wait_for(lambda: "admin.open" in gw.tail(200), 5, "the warning about open admin endpoints")


def test_a_token_is_required_when_set(gateway_factory: Callable[..., Gateway]) -> None:
    gw = gateway_factory(env={"EVENTCAST_ADMIN_OPEN": "true"})  # a token wins over the opening
    assert httpx.post(f"{gw.http}/admin/shed", json={"fraction": 1}).status_code == 401
    assert httpx.post(f"{gw.http}/admin/shed", json={"fraction": 1}, headers=gw.admin).status_code == 202
