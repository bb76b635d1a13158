"""The `eventcast` command as users run it: publish, and subscribe that resumes across a disconnect."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Callable

import httpx

from tests.clients import batch, publish
from tests.security.helpers import SECRET, make_token
from tests.servers import ROOT, Gateway


async def test_publish_prints_the_id_and_fails_clearly(gateway: Gateway) -> None:
    ok = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "app.cli", "publish", "c", "node.created", '{"n": 1}', "--url", gateway.http],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert ok.returncode == 0 and ok.stdout.strip().count(".") == 1
    bad = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "app.cli", "publish", "c", "t", "{not json", "--url", gateway.http],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert bad.returncode == 2 and "not valid JSON" in bad.stderr


async def start_subscribe(*args: str) -> asyncio.subprocess.Process:
    """`eventcast subscribe ARGS` as a process with its stdout and stderr piped."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "app.cli",
        "subscribe",
        *args,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def connected(gateway: Gateway) -> None:
    """Wait until the subscriber process is connected."""
    async with httpx.AsyncClient() as client:
        for _ in range(100):
            metrics = (await client.get(f"{gateway.http}/metrics")).text
            if 'eventcast_connections{transport="websocket"} 1.0' in metrics:
                return
            await asyncio.sleep(0.1)
    raise AssertionError("the subscriber did not connect")


async def test_subscribe_prints_events_and_resumes_after_a_disconnect(gateway: Gateway) -> None:
    process = await start_subscribe(f"{gateway.ws}/ws/events?channels=cli", "--max-events", "10")
    try:
        await connected(gateway)
        async with httpx.AsyncClient() as client:
            ids = (await publish(gateway.http, batch("cli", 4))).json()["ids"]
            await asyncio.sleep(0.5)
            shed = await client.post(
                f"{gateway.http}/admin/shed", json={"fraction": 1}, headers=gateway.admin
            )
            assert shed.json()["shed"] == 1
            ids += (await publish(gateway.http, batch("cli", 6, 4))).json()["ids"]  # while it reconnects
        stdout, stderr = await asyncio.wait_for(process.communicate(), 30)
    finally:
        if process.returncode is None:
            process.kill()
    assert process.returncode == 0, stderr.decode()
    printed = [json.loads(line) for line in stdout.decode().splitlines()]
    assert [e["id"] for e in printed] == ids  # every event once, in order, across the reconnect
    assert "closed: 1012" in stderr.decode()


async def test_subscribe_stops_with_a_clear_message_when_refused(
    gateway_factory: Callable[..., Gateway],
) -> None:
    guarded = gateway_factory(env={"EVENTCAST_JWT_SECRET": SECRET})
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "app.cli", "subscribe", f"{guarded.ws}/ws/events?channels=secret"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "EVENTCAST_TOKEN": make_token(["public.*"])},
    )
    assert result.returncode == 1  # 4403 is never retried: it exits instead of looping
    assert "eventcast: stopped: 4403 forbidden: this token may not read 'secret'" in result.stderr
    for args, message in (
        (["ftp://nowhere"], "not a gateway URL"),
        ([guarded.ws, "--where", "novalue"], "use --where FIELD=VALUE"),
    ):
        bad = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "app.cli", "subscribe", *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert bad.returncode == 2 and message in bad.stderr, bad.stderr


async def test_subscribe_filters(gateway: Gateway) -> None:
    url = f"{gateway.ws}/ws/events?channels=cf"
    process = await start_subscribe(url, "--types", "keep.*", "--where", "n=2", "--max-events", "1")
    try:
        await connected(gateway)
        await publish(gateway.http, batch("cf", 3, 0, "keep.x") + batch("cf", 3, 0, "drop.x"))
        stdout, stderr = await asyncio.wait_for(process.communicate(), 30)
    finally:
        if process.returncode is None:
            process.kill()
    assert process.returncode == 0, stderr.decode()
    printed = [json.loads(line) for line in stdout.decode().splitlines()]
    assert [(e["type"], e["data"]["n"]) for e in printed] == [("keep.x", 2)]
