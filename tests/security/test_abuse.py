"""What an attacker or a careless client can make a gateway spend: bounded, answered with a clear code, and
nobody else notices. Real sockets against real gateways; each case checks the gateway's memory and that
another subscriber keeps receiving.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Callable

import psutil
from websockets.frames import Frame, Opcode

from app.causes import CloseCode
from app.filters import MAX_GLOBS, MAX_WILDCARDS
from tests.clients import Subscriber, batch, close_code, publish, raw_subscriber, read_frame
from tests.servers import Gateway, free_port

GatewayMaker = Callable[..., Gateway]
#: How much a gateway's RSS may grow while it fends one abuse off (it grew by hundreds of MB before).
MEMORY_SLACK = 40 * 1024 * 1024


def rss(gateway: Gateway) -> int:
    assert gateway.process is not None
    return int(psutil.Process(gateway.process.pid).memory_info().rss)


async def still_delivers(gateway: Gateway, bystander: Subscriber) -> None:
    ids = (await publish(gateway.http, batch(bystander.welcome["channels"][0], 1))).json()["ids"]
    assert [e["id"] for e in await bystander.collect(len(bystander.events) + 1, timeout=10)][-1:] == ids


def masked(opcode: Opcode, data: bytes = b"") -> bytes:
    return Frame(opcode, data).serialize(mask=True, extensions=[])


async def send_until_closed(sock: socket.socket, chunks: int, chunk: bytes) -> tuple[int, bytes]:
    """Send ``chunk`` up to ``chunks`` times or until the server hangs up; (bytes sent, what it answered)."""
    loop = asyncio.get_running_loop()
    sock.setblocking(False)
    sent = 0
    for _ in range(chunks):
        try:
            await asyncio.wait_for(loop.sock_sendall(sock, chunk), 5)
            sent += len(chunk)
        except (OSError, TimeoutError):
            break
    answer = b""
    try:
        while data := await asyncio.wait_for(loop.sock_recv(sock, 65536), 5):
            answer += data
    except (OSError, TimeoutError):
        pass
    return sent, answer


# ------------------------------------------------------------------------------------ before the upgrade
async def test_header_lines_that_never_end_get_431_not_memory(gateway_factory: GatewayMaker) -> None:
    gateway = gateway_factory()
    bystander = await Subscriber.open(f"{gateway.ws}/ws/events?channels=calm")
    before = rss(gateway)
    with socket.create_connection((gateway.host, gateway.port)) as sock:
        sock.sendall(b"GET /ws/events HTTP/1.1\r\nHost: x\r\n")
        sent, answer = await send_until_closed(
            sock, 5000, b"X-Pad: " + b"a" * 10_000 + b"\r\n"
        )  # up to 50 MB
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:80]
    assert sent < 5_000_000, "the gateway hung up long before the client was done"
    with socket.create_connection((gateway.host, gateway.port)) as sock:  # one header that never ends
        sock.sendall(b"GET /ws/events HTTP/1.1\r\nHost: x\r\nX-Long: ")
        _, answer = await send_until_closed(sock, 5000, b"a" * 10_000)
    assert answer.startswith(b"HTTP/1.1 431 ")
    assert rss(gateway) - before < MEMORY_SLACK
    await still_delivers(gateway, bystander)


async def test_too_many_header_lines_and_a_huge_query_get_431(gateway_factory: GatewayMaker) -> None:
    gateway = gateway_factory()
    headers = "".join(f"X-H{n}: v\r\n" for n in range(150))
    with socket.create_connection((gateway.host, gateway.port), timeout=10) as sock:
        sock.sendall(f"GET /ws/events HTTP/1.1\r\nHost: x\r\n{headers}\r\n".encode())
        assert sock.recv(100).startswith(b"HTTP/1.1 431 ")
    globs = ",".join(f"t{n}.*a*b*c" for n in range(1000))  # a 201 KB query
    with socket.create_connection((gateway.host, gateway.port), timeout=10) as sock:
        sock.sendall(f"GET /ws/events/filtered?types={globs * 12} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert sock.recv(100).startswith(b"HTTP/1.1 431 ")
    # Within the head limit, a thousand globs are refused by the filter limit instead.
    code, reason = await close_code(
        f"{gateway.ws}/ws/events/filtered?types={','.join(f't{n}' for n in range(1000))}"
    )
    assert code == CloseCode.BAD_REQUEST and "too many type globs" in reason


async def test_a_request_head_that_trickles_or_never_comes_is_cut_at_the_deadline(
    gateway_factory: GatewayMaker,
) -> None:
    gateway = gateway_factory(env={"EVENTCAST_HANDSHAKE_TIMEOUT_SECONDS": "1"})
    bystander = await Subscriber.open(f"{gateway.ws}/ws/events?channels=calm")
    silent = socket.create_connection((gateway.host, gateway.port))
    trickle = socket.create_connection((gateway.host, gateway.port))
    started = time.monotonic()
    for byte in b"GET /ws/events HTTP/1.1\r\n":  # one byte every 0.2 s: 5 s for the line alone
        try:
            trickle.sendall(bytes([byte]))
        except OSError:
            break
        await asyncio.sleep(0.2)
        if time.monotonic() - started > 3:
            break
    for sock in (silent, trickle):
        sock.settimeout(5)
        assert sock.recv(100).startswith(b"HTTP/1.1 408 ")
        sock.close()
    assert time.monotonic() - started < 5
    await still_delivers(gateway, bystander)


async def test_sockets_that_are_not_subscribers_yet_count_against_the_limit(
    gateway_factory: GatewayMaker,
) -> None:
    # max_connections 1: one subscriber, plus a headroom of 32 sockets for probes and publishers.
    gateway = gateway_factory(
        env={"EVENTCAST_MAX_CONNECTIONS": "1", "EVENTCAST_HANDSHAKE_TIMEOUT_SECONDS": "3"}
    )
    bystander = await Subscriber.open(f"{gateway.ws}/ws/events?channels=calm")
    idle = [socket.create_connection((gateway.host, gateway.port)) for _ in range(32)]
    await asyncio.sleep(0.5)
    with socket.create_connection((gateway.host, gateway.port), timeout=5) as extra:
        assert extra.recv(100).startswith(b"HTTP/1.1 503 ")  # refused at once, nothing read
    for sock in idle:  # the deadline frees their places
        sock.settimeout(10)
        assert sock.recv(100).startswith(b"HTTP/1.1 408 ")
        sock.close()
    await still_delivers(gateway, bystander)


# ------------------------------------------------------------------------------------ after the upgrade
async def test_a_ping_flood_without_reading_is_cut_and_costs_no_memory(gateway_factory: GatewayMaker) -> None:
    gateway = gateway_factory()
    bystander = await Subscriber.open(f"{gateway.ws}/ws/events?channels=calm")
    before = rss(gateway)
    reader, writer = await raw_subscriber(gateway.host, gateway.port)
    pings = masked(Opcode.PING) * 10_000
    try:
        for _ in range(100):  # a million pings, never reading a pong
            writer.write(pings)
            await asyncio.wait_for(writer.drain(), 5)
    except (OSError, TimeoutError):
        pass  # the gateway hung up
    codes = []
    try:
        while True:
            opcode, payload = await asyncio.wait_for(read_frame(reader), 5)
            if opcode == 0x8:
                codes.append(int.from_bytes(payload[:2], "big"))
                break
    except (asyncio.IncompleteReadError, OSError, TimeoutError):
        pass
    writer.close()
    assert codes == [CloseCode.POLICY]
    assert rss(gateway) - before < MEMORY_SLACK
    await still_delivers(gateway, bystander)


async def test_filter_updates_of_the_worst_globs_cannot_stall_anyone(gateway_factory: GatewayMaker) -> None:
    gateway = gateway_factory()
    bystander = await Subscriber.open(f"{gateway.ws}/ws/events?channels=calm")
    worst = {"op": "filter", "types": [("a*" * MAX_WILDCARDS)[:-1] + f"b{n}" for n in range(MAX_GLOBS)]}
    frame = json.dumps(worst)
    abusers = [await Subscriber.open(f"{gateway.ws}/ws/events/filtered?channels=calm") for _ in range(5)]
    long_type = {"channel": "calm", "type": "a" * 200, "data": {}}
    lateness: list[float] = []

    async def watch() -> None:  # how late each event reaches a client that did nothing wrong
        while len(lateness) < 61:
            event = await bystander.next_event(timeout=20)
            lateness.append(time.time() - event["ts"] / 1000)

    watcher = asyncio.create_task(watch())
    for abuser in abusers:  # as fast as each can: the budget closes it after its burst
        for _ in range(60):
            try:
                await abuser.ws.send(frame)
            except Exception:
                break
    for _ in range(60):
        await publish(gateway.http, long_type)  # a type every glob must be tried against
    await publish(gateway.http, batch("calm", 1))
    await asyncio.wait_for(watcher, 30)
    # Before the bounds, one such update cost ~0.1 s of the gateway and every client waited seconds.
    assert max(lateness) < 2.0, lateness
    for abuser in abusers:
        code, _ = await abuser.closed(timeout=10)
        assert code == CloseCode.POLICY


async def test_resources_of_a_refused_socket_are_released(gateway_factory: GatewayMaker) -> None:
    """A thousand refusals of every kind in a row: the gateway neither grows nor stops serving."""
    gateway = gateway_factory(env={"EVENTCAST_HANDSHAKE_TIMEOUT_SECONDS": "2"})
    bystander = await Subscriber.open(f"{gateway.ws}/ws/events?channels=calm")
    before = rss(gateway)
    requests = [
        b"GET /ws/events HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        b"GET /ws/nowhere HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        b"\x16\x03\x01 not http at all\r\n\r\n",
    ]
    for n in range(1000):
        with socket.create_connection((gateway.host, gateway.port), timeout=5) as sock:
            sock.sendall(requests[n % len(requests)])
            assert sock.recv(20).startswith(b"HTTP/1.1 4")
    assert rss(gateway) - before < MEMORY_SLACK
    await still_delivers(gateway, bystander)
    assert free_port()  # the test process itself did not run out of sockets
