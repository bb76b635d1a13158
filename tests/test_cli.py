"""The `eventcast` command as users run it: publish, and subscribe that resumes across a disconnect."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import httpx

from tests.clients import batch, publish
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


async def test_subscribe_prints_events_and_resumes_after_a_disconnect(gateway: Gateway) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "app.cli",
        "subscribe",
        f"{gateway.ws}/ws/events?channels=cli",
        "--max-events",
        "10",
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with httpx.AsyncClient() as client:
            for _ in range(100):  # wait until it is connected
                metrics = (await client.get(f"{gateway.http}/metrics")).text
                if 'eventcast_connections{transport="websocket"} 1.0' in metrics:
                    break
                await asyncio.sleep(0.1)
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
