"""Sans-I/O protocol: event envelopes, ids, frames per transport, control messages, publish bodies.

Nothing here touches a socket or a broker, so all of it is testable without a network. Close codes and the
refusal exceptions live in app/causes.py; filters in app/filters.py; what event data may hold in app/data.py.

Errors raised to callers:
    ProtocolError(cause, reason)   a client sent something we refuse (app/causes.py).
    PublishError(status, code, message)   a publish request is refused; ``status`` is the HTTP status.
"""

from __future__ import annotations

import json
import re
import struct
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import msgpack
import orjson

from app import quarantine
from app.causes import Cause, ProtocolError
from app.data import UNPARSED, DataError, encode_data, loads_body

#: Cached in place of a frame that an encoding could not build (Event.frame).
_UNENCODABLE = b""

SUBPROTOCOL_JSON = "eventcast.v1.json"
SUBPROTOCOL_MSGPACK = "eventcast.v1.msgpack"
SUBPROTOCOLS = (SUBPROTOCOL_JSON, SUBPROTOCOL_MSGPACK)

#: A frame as a transport takes it: bytes (WebSocket frames, SSE, MessagePack payloads) or text.
Frame = bytes | str


class Framing(Enum):
    """How a transport wants its frames. Each event is framed once per framing, for all subscribers."""

    WS_JSON = "ws.json"  # whole WebSocket text frames: the native transport writes them as they are
    WS_MSGPACK = "ws.msgpack"  # whole WebSocket binary frames
    WS_JSON_DEFLATE = "ws.json.deflate"  # the same, compressed (permessage-deflate, no context takeover)
    WS_MSGPACK_DEFLATE = "ws.msgpack.deflate"
    JSON = "json"  # message payloads, one ASGI send each
    MSGPACK = "msgpack"
    SSE = "sse"  # Server-Sent Events: ``id:`` and ``data:`` lines, JSON payload

    @property
    def joinable(self) -> bool:
        """Frames of this framing can be concatenated and written at once."""
        return self not in (Framing.JSON, Framing.MSGPACK)

    @property
    def payload(self) -> Framing:
        """The payload framing inside this one (JSON or MSGPACK)."""
        return Framing.MSGPACK if self in _MSGPACK_FRAMINGS else Framing.JSON

    @property
    def websocket(self) -> bool:
        """Whole WebSocket frames (the native transport)."""
        return self in _WEBSOCKET_FRAMINGS

    @property
    def deflated(self) -> bool:
        return self in (Framing.WS_JSON_DEFLATE, Framing.WS_MSGPACK_DEFLATE)

    @classmethod
    def for_websocket(cls, subprotocol: str, deflate: bool) -> Framing:
        """The native transport's framing for a subprotocol, compressed or not."""
        if subprotocol == SUBPROTOCOL_MSGPACK:
            return cls.WS_MSGPACK_DEFLATE if deflate else cls.WS_MSGPACK
        return cls.WS_JSON_DEFLATE if deflate else cls.WS_JSON

    @property
    def subprotocol(self) -> str:
        return SUBPROTOCOL_MSGPACK if self.payload is Framing.MSGPACK else SUBPROTOCOL_JSON


_MSGPACK_FRAMINGS = frozenset((Framing.MSGPACK, Framing.WS_MSGPACK, Framing.WS_MSGPACK_DEFLATE))
_WEBSOCKET_FRAMINGS = frozenset(
    (Framing.WS_JSON, Framing.WS_MSGPACK, Framing.WS_JSON_DEFLATE, Framing.WS_MSGPACK_DEFLATE)
)

WELCOME_TYPE = "eventcast.welcome"
DEFAULT_CHANNEL = "default"

# Matched with ``fullmatch``: ``$`` would also match before a trailing newline.
_NAME_RE = re.compile(r"[A-Za-z0-9_.:/@-]{1,200}")
#: Where the workers of one ``eventcast serve`` tell each other to shed or drain (Hub.request_shed): '#' is
#: not allowed in channel names, so no client can subscribe or publish to it.
CONTROL_CHANNEL = "#eventcast.control"


class PublishError(Exception):
    """A publish request is refused with an HTTP ``status`` and a JSON error body."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


# --------------------------------------------------------------------------- event ids
@dataclass(frozen=True, order=True, slots=True)
class Position:
    """A place in the broker's single ordered log: (milliseconds, sequence), like a Redis stream id."""

    ms: int
    seq: int

    def __str__(self) -> str:
        return f"{self.ms}-{self.seq}"

    @classmethod
    def parse(cls, text: str) -> Position:
        ms, _, seq = text.partition("-")
        if not ms.isdigit() or not seq.isdigit():
            raise ValueError(f"not a log position: {text!r}")
        return cls(int(ms), int(seq))


ZERO = Position(0, 0)


@dataclass(frozen=True, slots=True)
class EventId:
    """An event id as clients see it: ``<epoch>.<ms>-<seq>``.

    All channels share one log per broker, so one id resumes every channel of a connection. The epoch
    changes whenever the broker's history is lost (a memory broker restarted, Redis restarted empty); an id
    from another epoch can never be resumed, and the client is told so with ``recovered: false``.
    """

    epoch: str
    position: Position

    def __str__(self) -> str:
        return f"{self.epoch}.{self.position}"

    @classmethod
    def parse(cls, text: str) -> EventId:
        epoch, dot, pos = text.partition(".")
        if not dot or not epoch or len(text) > 80 or not epoch.isalnum():
            raise ProtocolError(Cause.BAD_QUERY, "bad since: not an eventcast event id")
        try:
            return cls(epoch, Position.parse(pos))
        except ValueError:
            raise ProtocolError(Cause.BAD_QUERY, "bad since: not an eventcast event id") from None


# --------------------------------------------------------------------------- events
@dataclass(slots=True)
class EventIn:
    """A validated event a producer asked to publish."""

    channel: str
    type: str
    data: Any
    ts: float = 0.0  # publish-accepted time, ms since the epoch
    trace: dict[str, str] | None = None  # W3C trace context carried through the broker
    data_json: str = ""  # ``data`` as JSON text, once validated (parse_publish_body); see ``json``

    @property
    def json(self) -> str:
        """``data`` as JSON text: serialised at validation, or now for events built in the code."""
        return self.data_json or encode_data(self.data)


@dataclass(slots=True)
class Event:
    """An event from the broker's log, with its frames encoded once and shared by every subscriber."""

    id: str
    position: Position
    channel: str
    type: str
    data_json: str  # the ``data`` field as JSON text, exactly as published
    ts: float
    trace: dict[str, str] | None = None
    _frames: dict[Framing, Frame] = field(default_factory=dict)
    _data: Any = field(default=UNPARSED)

    @property
    def data(self) -> Any:
        """``data`` decoded, once per event (every ``where`` filter and msgpack frame reads it)."""
        if self._data is UNPARSED:
            self._data = orjson.loads(self.data_json)
        return self._data

    def frame(self, framing: Framing) -> Frame | None:
        """This event's frame for one framing, built on first use and shared by every other subscriber.

        None when the framing cannot carry the event: validation (app/data.py) keeps such events out, so
        this is the last line of defence. The event is quarantined for that framing (logged once, counted)
        and skipped for its subscribers; everyone else still gets it.
        """
        cached = self._frames.get(framing)
        if cached is None:
            try:
                cached = self._build(framing)
            except Exception as exc:  # msgpack's limits, a lone surrogate that got past every check
                cached = _UNENCODABLE
                quarantine.report(self.id, "encode_error", f"{framing.value}: {exc!r}")
            self._frames[framing] = cached
        return None if cached is _UNENCODABLE else cached

    def _build(self, framing: Framing) -> Frame:
        if framing is Framing.JSON:
            # Splice the already-encoded data in: no re-serialisation of the payload.
            return (
                f'{{"id":{json.dumps(self.id)},"channel":{json.dumps(self.channel)},'
                f'"type":{json.dumps(self.type)},"data":{self.data_json},"ts":{self.ts}}}'
            )
        if framing is Framing.MSGPACK:
            packed: bytes = msgpack.packb(
                {"id": self.id, "channel": self.channel, "type": self.type, "data": self.data, "ts": self.ts}
            )
            return packed
        payload = self.frame(framing.payload)
        if payload is None:
            return _UNENCODABLE
        if framing is Framing.SSE:
            assert isinstance(payload, str)
            return f"id: {self.id}\n{sse_data(payload)}".encode()
        if framing.deflated:
            return ws_frame(payload, compress=True)
        return ws_frame(payload)

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "channel": self.channel, "type": self.type, "data": self.data, "ts": self.ts}


class FrameBatch:
    """Consecutive events of one channel, encoded once per framing for every subscriber of that channel.

    For a joinable framing the batch is one bytes object (every event's frame, concatenated): a connection
    queues it as one item, and the same object is written to every client.
    """

    __slots__ = ("_items", "events")

    def __init__(self, events: list[Event]) -> None:
        self.events = events
        self._items: dict[Framing, tuple[list[Frame], int]] = {}

    def items(self, framing: Framing) -> tuple[list[Frame], int]:
        """What a connection queues for this batch, and its size; events the framing cannot carry are left
        out (``Event.frame``)."""
        cached = self._items.get(framing)
        if cached is None:
            frames = [f for f in (event.frame(framing) for event in self.events) if f is not None]
            if framing.joinable and len(frames) > 1:  # joinable framings are bytes
                frames = [b"".join(f for f in frames if isinstance(f, bytes))]
            cached = self._items[framing] = (frames, sum(len(f) for f in frames))
        return cached


def ws_frame(payload: bytes | str, *, compress: bool = False) -> bytes:
    """A final, unmasked server-to-client WebSocket frame: text for str, binary for bytes (RFC 6455 5.2).

    ``compress``: a permessage-deflate message on its own (RFC 7692 7.2.1, no context takeover), RSV1 set.
    """
    if isinstance(payload, str):
        data, first = payload.encode(), 0x81
    else:
        data, first = payload, 0x82
    if compress:
        data, first = deflate_message(data), first | 0x40
    size = len(data)
    if size < 126:
        header = bytes((first, size))
    elif size < 65536:
        header = struct.pack("!BBH", first, 126, size)
    else:
        header = struct.pack("!BBQ", first, 127, size)
    return header + data


#: One compressor for every message of this process: a full flush after each leaves nothing for the next
#: to refer to, which is what ``server_no_context_takeover`` asks, without a new zlib state per event.
_DEFLATER = zlib.compressobj(wbits=-15)


def deflate_message(data: bytes) -> bytes:
    """A message compressed on its own, the trailing 00 00 ff ff removed (RFC 7692 7.2.1)."""
    out = _DEFLATER.compress(data) + _DEFLATER.flush(zlib.Z_FULL_FLUSH)
    return out[:-4] if out.endswith(b"\x00\x00\xff\xff") else out


def sse_data(text: str) -> str:
    """``data:`` lines of a Server-Sent Event and its end: SSE ends a field at any line break."""
    if "\n" in text or "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\n", "\ndata: ")
    return f"data: {text}\n\n"


def now_ms() -> float:
    return round(time.time() * 1000.0, 3)


def encode_control(message: Mapping[str, Any], framing: Framing) -> Frame:
    """A server control frame (welcome, pong, filter answer, close notice) in a connection's framing.

    On SSE it is a named event (``event: <type>``); the welcome also carries its position as ``id:`` so
    that ``EventSource`` resumes from it even before the first event.
    """
    payload: Frame
    if framing.payload is Framing.MSGPACK:
        payload = msgpack.packb(dict(message))
    else:
        payload = orjson.dumps(message if isinstance(message, dict) else dict(message)).decode()
    if framing is Framing.SSE:
        head = f"event: {message.get('type', 'eventcast.control')}\n"
        if message.get("type") == WELCOME_TYPE and message.get("position"):
            head += f"id: {message['position']}\n"
        return (head + sse_data(str(payload))).encode()
    if framing.websocket:
        return ws_frame(payload)  # control frames go uncompressed (RSV1 unset is allowed per message)
    return payload


# --------------------------------------------------------------------------- names and filters
def check_channel(name: Any) -> str:
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise ValueError(f"invalid channel name {name!r}: use 1-200 of A-Z a-z 0-9 _ . : / @ -")
    return name


def check_type(name: Any) -> str:
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise ValueError(f"invalid event type {name!r}: use 1-200 of A-Z a-z 0-9 _ . : / @ -")
    return name


def parse_channels(raw: str | None) -> list[str]:
    """``channels=a,b`` -> ["a", "b"] (deduplicated, order kept); empty means ``default``."""
    if raw is None or raw.strip() == "":
        return [DEFAULT_CHANNEL]
    out: list[str] = []
    for part in raw.split(","):
        try:
            name = check_channel(part.strip())
        except ValueError as exc:
            raise ProtocolError(Cause.BAD_QUERY, f"bad channels: {exc}") from None
        if name not in out:
            out.append(name)
    return out


# --------------------------------------------------------------------------- control messages
def parse_control(message: str | bytes, subprotocol: str) -> dict[str, Any]:
    """Decode one client control frame and check its shape. Raises ProtocolError with 4400."""
    try:
        if subprotocol == SUBPROTOCOL_MSGPACK and isinstance(message, bytes):
            decoded = msgpack.unpackb(message)
        else:
            decoded = json.loads(message)
    except Exception:
        raise ProtocolError(Cause.BAD_MESSAGE, "malformed control message: not valid JSON") from None
    if not isinstance(decoded, dict):
        raise ProtocolError(Cause.BAD_MESSAGE, "control message must be an object with an op")
    op = decoded.get("op")
    if op not in ("filter", "ping"):
        raise ProtocolError(Cause.BAD_MESSAGE, f"unknown op {str(op)[:40]!r}")
    if op == "filter":
        types, where = decoded.get("types", []), decoded.get("where", {})
        if not isinstance(types, list) or not isinstance(where, dict):
            raise ProtocolError(Cause.BAD_MESSAGE, "filter needs types: [globs] and where: {field: value}")
    return decoded


# --------------------------------------------------------------------------- admin commands
MAX_ADMIN_SECONDS = 3600


def admin_seconds(value: Any) -> float:
    """The ``seconds`` of a drain or shed (how long its closes are spread over); ValueError when not one."""
    if not isinstance(value, int | float) or isinstance(value, bool) or not 0 <= value <= MAX_ADMIN_SECONDS:
        raise ValueError(f"seconds must be a number from 0 to {MAX_ADMIN_SECONDS}")
    return float(value)


def admin_fraction(value: Any) -> float:
    """The share of clients a shed closes; ValueError when not one."""
    if not isinstance(value, int | float) or isinstance(value, bool) or not 0 < value <= 1:
        raise ValueError("fraction must be a number in (0, 1]")
    return float(value)


# --------------------------------------------------------------------------- publishing
def parse_publish_body(body: bytes, max_batch: int) -> list[EventIn]:
    """Validate a ``POST /events`` body: one event object or a non-empty array of them.

    Each event's data is serialised here, once (``EventIn.data_json``): what some encoding could not carry
    (app/data.py) is refused with 422 and nothing of the request is published.
    """
    try:
        decoded = loads_body(body)
    except DataError as exc:
        raise PublishError(422, "invalid_event", str(exc)) from None
    except ValueError:
        raise PublishError(400, "invalid_json", "request body is not valid JSON") from None
    batch = decoded if isinstance(decoded, list) else [decoded]
    if not batch:
        raise PublishError(422, "empty_batch", "a batch needs at least one event")
    if len(batch) > max_batch:
        raise PublishError(413, "batch_too_large", f"a batch may hold at most {max_batch} events")
    ts = now_ms()
    listed = isinstance(decoded, list)
    events: list[EventIn] = []
    # A batch mostly repeats one channel and one type: each distinct name is checked once in a row.
    checked_channel: Any = _UNCHECKED
    checked_type: Any = _UNCHECKED
    for index, item in enumerate(batch):
        if not isinstance(item, dict) or not item.keys() <= _EVENT_FIELDS or "data" not in item:
            raise _invalid_event(item, index if listed else None)
        channel, type_ = item.get("channel"), item.get("type")
        try:
            if channel != checked_channel:
                checked_channel = check_channel(channel)
            if type_ != checked_type:
                checked_type = check_type(type_)
            data = item["data"]
            events.append(EventIn(checked_channel, checked_type, data, ts, data_json=encode_data(data)))
        except ValueError as exc:  # DataError too
            where = f"event {index}: " if listed else ""
            raise PublishError(422, "invalid_event", f"{where}{exc}") from None
    return events


_UNCHECKED: Any = object()


def _invalid_event(item: Any, index: int | None) -> PublishError:
    where = "" if index is None else f"event {index}: "
    if not isinstance(item, dict):
        return PublishError(422, "invalid_event", f"{where}an event is an object with channel, type, data")
    unknown = sorted(set(item) - _EVENT_FIELDS)
    if unknown:
        return PublishError(422, "invalid_event", f"{where}unknown fields {unknown}")
    return PublishError(422, "invalid_event", f"{where}missing field 'data'")


_EVENT_FIELDS = frozenset(("channel", "type", "data"))
