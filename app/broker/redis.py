"""The Redis engine: one stream holds the ordered log of every channel; every process reads it.

Layout (``prefix`` defaults to ``eventcast``):
    {prefix}:log     a Redis stream; one entry per event with fields
                     channel, type, data (JSON text), ts (ms, optional), trace (JSON, optional)
    {prefix}:epoch   a random token created with the log; a Redis that lost its data gets a new one

Producers may XADD to ``{prefix}:log`` directly with ``*`` as the id (see README). History is trimmed by
count (``XADD MAXLEN ~``) and age (``XTRIM MINID ~``); resume detects trimming through the stream's
the stream's first entry and ``max-deleted-entry-id``, and Redis data loss through the epoch.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import secrets
from collections import deque
from collections.abc import Sequence
from typing import Any, cast

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from app import metrics, quarantine
from app.broker.base import BrokerUnavailable, Listener, Replay, StateListener
from app.data import DataError, check_log_data
from app.protocol import ZERO, Event, EventId, EventIn, Position, check_type

log = logging.getLogger("eventcast.broker")

# KEYS: log, epoch. ARGV: new epoch, maxlen, max age ms, the batch as JSON: [[channel, type, data, ts, trace]].
# One argument for the whole batch: packing five arguments per event cost more in redis-py than the XADDs.
_PUBLISH_LUA = """
local epoch = redis.call('GET', KEYS[2])
if not epoch then
  epoch = ARGV[1]
  redis.call('SET', KEYS[2], epoch)
end
local ids = {}
for _, e in ipairs(cjson.decode(ARGV[4])) do
  local fields = {'channel', e[1], 'type', e[2], 'data', e[3], 'ts', e[4]}
  if e[5] ~= '' then
    table.insert(fields, 'trace')
    table.insert(fields, e[5])
  end
  ids[#ids + 1] = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', unpack(fields))
end
local now = redis.call('TIME')
local oldest = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) - tonumber(ARGV[3])
if oldest > 0 then
  redis.call('XTRIM', KEYS[1], 'MINID', '~', string.format('%d', oldest))
end
return {epoch, ids}
"""

Entries = list[tuple[str, dict[str, str]]]
#: Stream entries as Redis sends them: the fields flat, ``[name, value, name, value, ...]``.
RawEntries = list[tuple[str, list[str]]]

# Group commit (see RedisBroker.publish): script calls in flight at once, and events per call at most.
_MAX_IN_FLIGHT = 1
_MAX_GROUP_EVENTS = 5000

_NETWORK_ERRORS = (RedisError, OSError, asyncio.TimeoutError)


def _unparsed(response: Any, **kwargs: Any) -> Any:
    return response


def _stream_entries(reply: Any) -> RawEntries:
    """The entries of a one-stream XREAD reply: a map under RESP3, ``[[key, entries]]`` under RESP2."""
    if isinstance(reply, dict):
        return cast(RawEntries, next(iter(reply.values())))
    return cast(RawEntries, reply[0][1])


def _trace(text: str | None) -> dict[str, str] | None:
    """The W3C trace context of an entry, when it is a JSON object of strings (anything else is ignored)."""
    if not text:
        return None
    with contextlib.suppress(Exception):  # ValueError, RecursionError: a producer's, never fatal
        trace = json.loads(text)
        if isinstance(trace, dict) and all(isinstance(v, str) for v in trace.values()):
            return trace
    return None


def _field(flat: list[str], name: str) -> str | None:
    for index in range(0, len(flat) - 1, 2):
        if flat[index] == name:
            return flat[index + 1]
    return None


class RedisBroker:
    def __init__(
        self, url: str, *, prefix: str, max_events: int, max_age_seconds: float, retry_seconds: float
    ) -> None:
        self._url = url
        self._log_key = f"{prefix}:log"
        self._epoch_key = f"{prefix}:epoch"
        self._max_events = max_events
        self._max_age_ms = int(max_age_seconds * 1000)
        self._retry_seconds = retry_seconds
        self._epoch = ""
        self._cursor = ZERO
        self._channels: set[str] = set()
        self._listener: Listener | None = None
        self._on_state: StateListener | None = None
        self._up = False
        self._reader_task: asyncio.Task[None] | None = None
        # Commands and the blocking reader use separate clients so a blocked XREAD never delays a publish.
        # Bytes that are not UTF-8 (a direct producer's) must not fail a whole reply: they are kept as lone
        # surrogates, and the entry that holds them is quarantined when it would be delivered.
        self._client: aioredis.Redis = aioredis.Redis.from_url(
            url,
            decode_responses=True,
            encoding_errors="surrogateescape",
            socket_connect_timeout=2,
            socket_timeout=5,
            retry_on_timeout=False,
        )
        self._reader: aioredis.Redis = aioredis.Redis.from_url(
            url,
            decode_responses=True,
            encoding_errors="surrogateescape",
            socket_connect_timeout=2,
            socket_timeout=None,
        )
        # The reader parses XREAD replies itself: redis-py's field dicts cost ~10% of a publish (profiled),
        # for entries of channels nobody here subscribes to, too.
        self._reader.set_response_callback("XREAD", _unparsed)
        self._publish_script = self._client.register_script(_PUBLISH_LUA)
        self._waiting: deque[tuple[list[list[str]], asyncio.Future[list[str]]]] = deque()
        self._in_flight = 0
        self._commits: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------------------------ state
    @property
    def epoch(self) -> str:
        return self._epoch

    @property
    def is_up(self) -> bool:
        """Redis answers and the log reader runs: a reader that died (and is restarting) is not up."""
        task = self._reader_task
        return self._up and (task is None or not task.done())

    @property
    def position(self) -> Position:
        return self._cursor

    def _set_up(self, up: bool) -> None:
        if up != self._up:
            self._up = up
            log.info(
                "broker %s", "up" if up else "down", extra={"event": "broker.up" if up else "broker.down"}
            )
            if self._on_state is not None:
                self._on_state(up)

    async def start(self, listener: Listener, on_state: StateListener | None = None) -> None:
        self._listener = listener
        self._on_state = on_state
        try:
            await self._sync(first=True)
            self._set_up(True)
        except _NETWORK_ERRORS as exc:
            # Start anyway: readiness says 503 and the reader keeps trying.
            log.warning("redis unreachable at start: %s", exc, extra={"event": "broker.down"})
        self._reader_task = asyncio.create_task(self._supervise_reader(), name="eventcast-redis-reader")

    async def stop(self) -> None:
        if self._commits:  # publishes already sent finish; their callers get their ids
            await asyncio.wait(set(self._commits), timeout=5)
        if self._reader_task is not None:
            self._reader_task.cancel()
            await asyncio.gather(self._reader_task, return_exceptions=True)
        await self._reader.aclose()
        await self._client.aclose()

    async def ping(self) -> bool:
        try:
            await self._client.ping()
        except _NETWORK_ERRORS:
            self._set_up(False)
            return False
        return self._up

    async def subscribe(self, channel: str) -> None:
        self._channels.add(channel)

    async def unsubscribe(self, channel: str) -> None:
        self._channels.discard(channel)

    # ------------------------------------------------------------------------------------ publish
    async def publish(self, events: Sequence[EventIn]) -> list[str]:
        """Append ``events`` to the log; their ids, once Redis has them all.

        Group commit: at most ``_MAX_IN_FLIGHT`` script calls run at once, and the publishes that arrive
        while they do are sent together in the next call. One call per waiting group instead of one per
        request saves a round trip, a command encoding and a Lua invocation per request under load, and
        costs nothing to a lone publisher (its call goes out at once). Each request still gets only its
        own ids; a failure fails every request of the group, and none of their events was accepted.
        """
        rows = [
            [
                item.channel,
                item.type,
                item.json,
                repr(item.ts),
                orjson.dumps(item.trace).decode() if item.trace else "",
            ]
            for item in events
        ]
        waiter: asyncio.Future[list[str]] = asyncio.get_running_loop().create_future()
        self._waiting.append((rows, waiter))
        if self._in_flight < _MAX_IN_FLIGHT:
            self._send_waiting()
        return await waiter

    def _send_waiting(self) -> None:
        group: list[tuple[list[list[str]], asyncio.Future[list[str]]]] = []
        size = 0
        while self._waiting and (not group or size + len(self._waiting[0][0]) <= _MAX_GROUP_EVENTS):
            rows, waiter = self._waiting.popleft()
            if waiter.done():  # its request went away before anything was sent: nothing to accept
                continue
            group.append((rows, waiter))
            size += len(rows)
        if group:
            self._in_flight += 1
            self._commits.add(asyncio.create_task(self._commit(group), name="eventcast-redis-publish"))

    async def _commit(self, group: list[tuple[list[list[str]], asyncio.Future[list[str]]]]) -> None:
        try:
            batch = [row for rows, _ in group for row in rows]
            args: list[str | int | bytes] = [
                secrets.token_hex(4),
                self._max_events,
                self._max_age_ms,
                orjson.dumps(batch),
            ]
            try:
                epoch, ids = await self._publish_script(keys=[self._log_key, self._epoch_key], args=args)
            except _NETWORK_ERRORS as exc:
                self._set_up(False)
                failure = BrokerUnavailable(f"redis unavailable: {exc}")
                for _, waiter in group:
                    if not waiter.done():
                        waiter.set_exception(failure)
                return
            start = 0
            for rows, waiter in group:
                end = start + len(rows)
                if not waiter.done():
                    waiter.set_result([f"{epoch}.{entry_id}" for entry_id in ids[start:end]])
                start = end
        except BaseException as exc:  # cancelled at shutdown, or a bug: never leave a request hanging
            for _, waiter in group:
                if not waiter.done():
                    waiter.set_exception(exc if isinstance(exc, Exception) else BrokerUnavailable("stopped"))
            raise
        finally:
            self._in_flight -= 1
            self._commits.discard(asyncio.current_task())  # type: ignore[arg-type]
            if self._waiting:
                self._send_waiting()

    # ------------------------------------------------------------------------------------ fan-out
    async def _sync(self, *, first: bool) -> None:
        """After (re)connecting: learn the epoch and decide where reading resumes."""
        candidate = secrets.token_hex(4)
        await self._reader.set(self._epoch_key, candidate, nx=True)
        epoch = cast(str, await self._reader.get(self._epoch_key))
        if first:
            last = cast(Entries, await self._reader.xrevrange(self._log_key, count=1))
            self._cursor = Position.parse(last[0][0]) if last else ZERO
        elif epoch != self._epoch:
            # Redis lost its data: every entry of the new log is new to us.
            log.warning(
                "redis history lost: epoch %s -> %s", self._epoch, epoch, extra={"event": "broker.epoch"}
            )
            self._cursor = ZERO
        self._epoch = epoch

    async def _supervise_reader(self) -> None:
        """Run the log reader for good: no entry and no bug may end it.

        An unexpected error is logged with its traceback and counted, the broker reads as down (``/readyz``
        503, ``eventcast_broker_up`` 0) until the reader has resynchronised, and reading goes on after the
        batch that failed.
        """
        while True:
            try:
                await self._read_forever()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception(
                    "redis log reader failed; restarting it", extra={"event": "broker.reader_failed"}
                )
                metrics.BROKER_READER_RESTARTS.inc()
                self._set_up(False)
                await asyncio.sleep(self._retry_seconds)

    async def _read_forever(self) -> None:
        need_sync = not self._up
        while True:
            try:
                if need_sync:
                    await self._sync(first=self._epoch == "")
                    need_sync = False
                self._set_up(True)
                reply = await self._reader.execute_command(  # type: ignore[no-untyped-call]
                    "XREAD", "COUNT", 1000, "BLOCK", 1000, "STREAMS", self._log_key, str(self._cursor)
                )
                if reply:
                    self._dispatch(_stream_entries(reply))
            except asyncio.CancelledError:
                raise
            except _NETWORK_ERRORS as exc:
                self._set_up(False)
                need_sync = True
                log.debug("redis read failed: %s", exc)
                await asyncio.sleep(self._retry_seconds)

    def _dispatch(self, entries: RawEntries) -> None:
        # The cursor moves first: whatever happens to this batch, the reader never reads it twice.
        self._cursor = Position.parse(entries[-1][0])
        wanted: list[Event] = []
        channels = self._channels
        for entry_id, flat in entries:
            # eventcast writes ``channel`` first; a direct producer may put it anywhere.
            channel = flat[1] if flat and flat[0] == "channel" else _field(flat, "channel")
            if channel in channels:
                event = self._to_event(entry_id, dict(zip(flat[::2], flat[1::2], strict=False)))
                if event is not None:
                    wanted.append(event)
        if wanted and self._listener is not None:
            self._listener(wanted)

    def _to_event(self, entry_id: str, fields: dict[str, str], *, report: bool = True) -> Event | None:
        """The event of one log entry, or None when it cannot be delivered (quarantined when ``report``:
        the live reader reports each entry once; a replay skips what the reader already reported)."""
        event_id = f"{self._epoch}.{entry_id}"
        type_ = fields.get("type", "message")
        try:
            check_type(type_)
            data, value = check_log_data(fields.get("data", "null"))
        except DataError as exc:
            if report:
                quarantine.report(event_id, exc.reason, f"channel {fields.get('channel')!r}")
            return None
        except ValueError:
            if report:
                quarantine.report(event_id, "invalid_type", f"type {type_[:80]!r}")
            return None
        position = Position.parse(entry_id)
        try:
            ts = float(fields["ts"])
        except (KeyError, ValueError):
            ts = float(position.ms)
        if not math.isfinite(ts):  # a direct producer wrote nan/inf: not valid in a JSON frame
            ts = float(position.ms)
        return Event(
            id=event_id,
            position=position,
            channel=fields.get("channel", ""),
            type=type_,
            data_json=data,
            ts=ts,
            trace=_trace(fields.get("trace")),
            _data=value,
        )

    # ------------------------------------------------------------------------------------ resume
    async def replay(self, channels: Sequence[str], since: EventId, limit: int) -> Replay:
        try:
            return await self._replay(set(channels), since, limit)
        except _NETWORK_ERRORS as exc:
            self._set_up(False)
            raise BrokerUnavailable(f"redis unavailable: {exc}") from exc

    async def _stream_state(self) -> tuple[str | None, Position, Position] | None:
        """(epoch, last generated id, lost-before id), or None when the log does not exist yet.

        A resume from a position below ``lost-before`` may have a gap: entries after it were trimmed or deleted.
        Trimming does not move ``max-deleted-entry-id``, so when anything was ever removed the first entry
        counts too (conservative by one entry at the trim boundary).
        """
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.get(self._epoch_key)
            pipe.xinfo_stream(self._log_key)
            try:
                epoch, info = await pipe.execute()
            except ResponseError:
                return None
        lost_before = Position.parse(info["max-deleted-entry-id"])
        if int(info["entries-added"]) > int(info["length"]) and info.get("first-entry"):
            lost_before = max(lost_before, Position.parse(info["first-entry"][0]))
        return epoch, Position.parse(info["last-generated-id"]), lost_before

    async def _replay(self, channels: set[str], since: EventId, limit: int) -> Replay:
        state = await self._stream_state()
        if state is None:
            epoch = await self._client.get(self._epoch_key)
            if epoch != since.epoch:
                return Replay(False, reason="epoch_changed")
            return Replay(since.position == ZERO, reason="" if since.position == ZERO else "unknown_position")
        epoch, last, deleted = state
        if epoch != since.epoch:
            return Replay(False, reason="epoch_changed")
        if since.position > last:
            return Replay(False, reason="unknown_position")
        if since.position < deleted:
            return Replay(False, reason="trimmed")
        events: list[Event] = []
        start = f"({since.position}"
        while True:
            page = cast(Entries, await self._client.xrange(self._log_key, min=start, max="+", count=1000))
            for entry_id, fields in page:
                if fields.get("channel") in channels:
                    event = self._to_event_in_epoch(epoch, entry_id, fields)
                    if event is not None:  # quarantined: skipped, as the live reader skipped it
                        events.append(event)
            if len(events) > limit:
                return Replay(False, reason="too_many")
            if len(page) < 1000:
                break
            start = f"({page[-1][0]}"
        # Entries trimmed while we paged would be a silent gap: check once more.
        again = await self._stream_state()
        if again is None or again[0] != since.epoch or since.position < again[2]:
            return Replay(False, reason="trimmed")
        return Replay(True, events)

    def _to_event_in_epoch(self, epoch: str, entry_id: str, fields: dict[str, str]) -> Event | None:
        event = self._to_event(entry_id, fields, report=False)
        if event is not None and epoch != self._epoch:
            event.id = f"{epoch}.{entry_id}"
        return event
