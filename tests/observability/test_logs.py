"""Logs are JSON lines (one per event, with connection id and replica) and never contain a secret."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

import httpx

from app.causes import CloseCode
from app.logs import JsonFormatter
from tests.clients import Subscriber, batch, publish
from tests.servers import Gateway, wait_for

ADMIN_TOKEN = "s3cret-admin-token-do-not-log"


def read_lines(gw: Gateway) -> list[dict[str, Any]]:
    text = gw.log.read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]  # raises on a non-JSON line


async def test_logs_are_json_lines_without_secrets(gateway_factory: Callable[..., Gateway]) -> None:
    gw = gateway_factory(env={"EVENTCAST_LOG_LEVEL": "info", "EVENTCAST_ADMIN_TOKEN": ADMIN_TOKEN})
    # The secret shows up where a careless log would print it: a query string, a header.
    leaving = await Subscriber.open(f"{gw.ws}/ws/events?channels=l&token={ADMIN_TOKEN}")
    bad = await Subscriber.open(f"{gw.ws}/ws/events?channels=l")
    await bad.ws.send("not json")
    assert (await bad.closed())[0] == CloseCode.BAD_REQUEST
    await publish(gw.http, batch("l", 1), headers={"authorization": f"Bearer {ADMIN_TOKEN}"})
    await leaving.collect(1)
    await leaving.close()
    async with httpx.AsyncClient() as client:
        drained = await client.post(
            f"{gw.http}/admin/drain", json={"seconds": 0}, headers={"authorization": f"Bearer {ADMIN_TOKEN}"}
        )
    assert drained.status_code == 202
    wait_for(lambda: any(line.get("event") == "drain.done" for line in read_lines(gw)), 10, "drain log")
    await asyncio.sleep(0.2)

    assert ADMIN_TOKEN not in gw.log.read_text()
    lines = read_lines(gw)
    assert all({"ts", "level", "logger", "message", "replica", "pid"} <= line.keys() for line in lines)
    assert {line["replica"] for line in lines} == {f"gw-{gw.port}"}
    connects = [line for line in lines if line.get("event") == "connect"]
    closes = {line["connection"]: line for line in lines if line.get("event") == "close"}
    assert {c["connection"] for c in connects} == {leaving.welcome["connection"], bad.welcome["connection"]}
    assert closes[leaving.welcome["connection"]]["code"] == 1000
    assert closes[leaving.welcome["connection"]]["by"] == "client"
    assert closes[bad.welcome["connection"]]["code"] == CloseCode.BAD_REQUEST
    assert closes[bad.welcome["connection"]]["label"] == "bad_request"
    assert any(line.get("event") == "drain.start" for line in lines)


def test_formatter_masks_credentials_and_keeps_extras() -> None:
    formatter = JsonFormatter(replica="r1", secrets=["topsecretvalue"])
    record = logging.LogRecord(
        "eventcast.test",
        logging.INFO,
        __file__,
        1,
        "GET /ws?token=abc.def&x=1 key=%s",
        ("topsecretvalue",),
        None,
    )
    record.connection = "c1"
    record.event = "connect"
    line = json.loads(formatter.format(record))
    assert "topsecretvalue" not in json.dumps(line)
    assert line["connection"] == "c1" and line["event"] == "connect" and line["replica"] == "r1"
    url = logging.LogRecord("x", logging.INFO, __file__, 1, "broker redis://:hunter22@h:6379/0", None, None)
    assert "hunter22" not in formatter.format(url)
