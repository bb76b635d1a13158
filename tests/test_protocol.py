"""Unit tests of the sans-I/O protocol layer (app/protocol.py): no sockets, no broker."""

from __future__ import annotations

import json
from typing import Any

import msgpack
import pytest

from app.causes import CloseCode
from app.data import MAX_DATA_DEPTH
from app.protocol import (
    DEFAULT_CHANNEL,
    SUBPROTOCOL_JSON,
    SUBPROTOCOL_MSGPACK,
    Event,
    EventId,
    FrameBatch,
    Framing,
    Position,
    ProtocolError,
    PublishError,
    encode_control,
    parse_channels,
    parse_control,
    parse_publish_body,
    ws_frame,
)
from tests.fakes import make_event


def bad_request(exc: pytest.ExceptionInfo[ProtocolError]) -> None:
    assert exc.value.code == CloseCode.BAD_REQUEST == 4400
    assert exc.value.reason
    assert len(exc.value.reason.encode()) <= 123  # fits a WebSocket close frame


def test_protocol_error_reason_is_truncated() -> None:
    err = ProtocolError(CloseCode.BAD_REQUEST, "x" * 500)
    assert len(err.reason) == 120


# ------------------------------------------------------------------------------------ ids
@pytest.mark.parametrize(
    "text", ["ab12cd34.1700000000123-0", "e.0-0", "EPOCH9.1-18446744073709551615", "0.123-45"]
)
def test_event_id_round_trips(text: str) -> None:
    parsed = EventId.parse(text)
    assert str(parsed) == text
    assert EventId.parse(str(parsed)) == parsed


def test_event_id_parts() -> None:
    parsed = EventId.parse("ab12cd34.1700000000123-7")
    assert parsed.epoch == "ab12cd34"
    assert parsed.position == Position(1700000000123, 7)
    assert str(EventId("ab12cd34", Position(5, 6))) == "ab12cd34.5-6"


def test_positions_order_like_stream_ids() -> None:
    assert Position(1, 9) < Position(2, 0) < Position(2, 1)
    assert Position.parse("10-2") == Position(10, 2)
    assert str(Position(10, 2)) == "10-2"
    assert sorted([Position(2, 0), Position(1, 10), Position(1, 2)]) == [
        Position(1, 2),
        Position(1, 10),
        Position(2, 0),
    ]


@pytest.mark.parametrize(
    "text",
    [
        "",
        "abc",
        "1700000000123-0",  # a bare stream id: no epoch
        ".1-0",
        "ep.",
        "ep.12",
        "ep.12-",
        "ep.-3",
        "ep.1-2-3",
        "ep.1-2.3",
        "ep.a-b",
        "ep.-1-2",
        "ep.1- 2",
        "e-p.1-2",
        "e p.1-2",
        " ep.1-2",
        "ep.1-2 ",
        "ep.1-²",
        "e" * 70 + ".1000000000000-0",  # too long
        "ep.1e3-0",
        "ep.0x1-0",
        "ep.1_000-0",
    ],
)
def test_bad_event_ids_are_refused_with_4400(text: str) -> None:
    with pytest.raises(ProtocolError) as exc:
        EventId.parse(text)
    bad_request(exc)


def test_position_parse_raises_value_error() -> None:
    for text in ("", "1", "1-", "-1", "a-1", "1-b"):
        with pytest.raises(ValueError):
            Position.parse(text)


# ------------------------------------------------------------------------------------ channels
@pytest.mark.parametrize("raw", [None, "", "   "])
def test_parse_channels_defaults(raw: str | None) -> None:
    assert parse_channels(raw) == [DEFAULT_CHANNEL] == ["default"]


def test_parse_channels_keeps_order_and_dedups() -> None:
    assert parse_channels("b,a,b,c,a") == ["b", "a", "c"]
    assert parse_channels(" a , b ") == ["a", "b"]
    assert parse_channels("orders:eu/1,user@x,a_b-c.d") == ["orders:eu/1", "user@x", "a_b-c.d"]
    assert parse_channels("x" * 200) == ["x" * 200]


@pytest.mark.parametrize(
    "raw", ["a b", "a,b c", "a#", "ch*", "ch?", "caf\u00e9", "x" * 201, "a,\u0000", "a;b", "a\nb"]
)
def test_parse_channels_rejects_invalid_names(raw: str) -> None:
    with pytest.raises(ProtocolError) as exc:
        parse_channels(raw)
    bad_request(exc)


# ------------------------------------------------------------------------------------ control
def test_parse_control_valid() -> None:
    msg = parse_control('{"op": "filter", "types": ["edge.*"], "where": {"n": 1}}', SUBPROTOCOL_JSON)
    assert msg == {"op": "filter", "types": ["edge.*"], "where": {"n": 1}}
    assert parse_control('{"op": "filter"}', SUBPROTOCOL_JSON)["op"] == "filter"
    assert parse_control(b'{"op": "ping"}', SUBPROTOCOL_JSON) == {"op": "ping"}
    packed = msgpack.packb({"op": "filter", "types": ["a"], "where": {}})
    assert parse_control(packed, SUBPROTOCOL_MSGPACK) == {"op": "filter", "types": ["a"], "where": {}}
    # A msgpack connection may still send a text (JSON) frame.
    assert parse_control('{"op": "ping"}', SUBPROTOCOL_MSGPACK) == {"op": "ping"}


@pytest.mark.parametrize(
    ("message", "subprotocol"),
    [
        ("", SUBPROTOCOL_JSON),
        ("{", SUBPROTOCOL_JSON),
        ("{'op': 'ping'}", SUBPROTOCOL_JSON),
        ("not json", SUBPROTOCOL_JSON),
        (b"\xff\xfe", SUBPROTOCOL_JSON),
        ("[" * 100_000, SUBPROTOCOL_JSON),
        (b"\xc1", SUBPROTOCOL_MSGPACK),
        (b"\x92\x01", SUBPROTOCOL_MSGPACK),  # truncated array
    ],
)
def test_parse_control_malformed(message: str | bytes, subprotocol: str) -> None:
    with pytest.raises(ProtocolError) as exc:
        parse_control(message, subprotocol)
    bad_request(exc)


@pytest.mark.parametrize("message", ["[]", '["filter"]', '"filter"', "5", "null", "true"])
def test_parse_control_non_object(message: str) -> None:
    with pytest.raises(ProtocolError) as exc:
        parse_control(message, SUBPROTOCOL_JSON)
    bad_request(exc)


@pytest.mark.parametrize(
    "message",
    ["{}", '{"op": "subscribe"}', '{"op": null}', '{"op": 1}', '{"op": "FILTER"}', '{"type": "filter"}'],
)
def test_parse_control_unknown_op(message: str) -> None:
    with pytest.raises(ProtocolError) as exc:
        parse_control(message, SUBPROTOCOL_JSON)
    bad_request(exc)


@pytest.mark.parametrize(
    "message",
    [
        '{"op": "filter", "types": "edge.*"}',
        '{"op": "filter", "types": {"a": 1}}',
        '{"op": "filter", "types": null}',
        '{"op": "filter", "where": ["n", 1]}',
        '{"op": "filter", "where": "n=1"}',
        '{"op": "filter", "where": null}',
    ],
)
def test_parse_control_bad_filter_shape(message: str) -> None:
    with pytest.raises(ProtocolError) as exc:
        parse_control(message, SUBPROTOCOL_JSON)
    bad_request(exc)


# ------------------------------------------------------------------------------------ publish
def publish_error(body: bytes, max_batch: int = 10) -> PublishError:
    with pytest.raises(PublishError) as exc:
        parse_publish_body(body, max_batch)
    assert exc.value.message
    return exc.value


def test_publish_single() -> None:
    [event] = parse_publish_body(b'{"channel": "a", "type": "t.x", "data": {"k": [1, "\\u00e9"]}}', 10)
    assert (event.channel, event.type, event.data) == ("a", "t.x", {"k": [1, "é"]})
    assert event.ts > 1.6e12  # milliseconds since the epoch


def test_publish_batch_keeps_order() -> None:
    body = json.dumps([{"channel": f"c{i % 3}", "type": "t", "data": i} for i in range(10)]).encode()
    events = parse_publish_body(body, 10)
    assert [e.data for e in events] == list(range(10))
    assert [e.channel for e in events] == [f"c{i % 3}" for i in range(10)]
    assert len({e.ts for e in events}) == 1


@pytest.mark.parametrize("data", ["null", "0", "false", '""', "[]", "{}"])
def test_publish_falsy_data_is_accepted(data: str) -> None:
    [event] = parse_publish_body(f'{{"channel": "a", "type": "t", "data": {data}}}'.encode(), 10)
    assert event.data == json.loads(data)


def test_publish_empty_batch_is_422() -> None:
    err = publish_error(b"[]")
    assert (err.status, err.code) == (422, "empty_batch")


def test_publish_too_many_is_413() -> None:
    body = json.dumps([{"channel": "a", "type": "t", "data": i} for i in range(11)]).encode()
    err = publish_error(body, max_batch=10)
    assert (err.status, err.code) == (413, "batch_too_large")
    assert len(parse_publish_body(body, 11)) == 11


@pytest.mark.parametrize("body", [b"", b"{", b"not json", b"{'channel': 'a'}", b"\xff\xfe\x00", b"[1,]"])
def test_publish_invalid_json_is_400(body: bytes) -> None:
    err = publish_error(body)
    assert (err.status, err.code) == (400, "invalid_json")


@pytest.mark.parametrize(
    "item",
    [
        {"channel": "a", "type": "t"},  # missing data
        {"channel": "a", "type": "t", "data": 1, "extra": 1},  # unknown field
        {"channel": "a", "type": "t", "data": 1, "id": "x"},
        {"type": "t", "data": 1},  # missing channel
        {"channel": "a", "data": 1},  # missing type
        {"channel": "a b", "type": "t", "data": 1},
        {"channel": "", "type": "t", "data": 1},
        {"channel": 5, "type": "t", "data": 1},
        {"channel": "x" * 201, "type": "t", "data": 1},
        {"channel": "a", "type": "bad type", "data": 1},
        {"channel": "a", "type": None, "data": 1},
    ],
)
def test_publish_invalid_event_is_422(item: dict[str, Any]) -> None:
    err = publish_error(json.dumps(item).encode())
    assert (err.status, err.code) == (422, "invalid_event")
    batch_err = publish_error(json.dumps([{"channel": "ok", "type": "t", "data": 1}, item]).encode())
    assert (batch_err.status, batch_err.code) == (422, "invalid_event")
    assert "event 1" in batch_err.message


@pytest.mark.parametrize("body", [b'"event"', b"5", b"null", b"true", b"[1]", b'[["a"]]'])
def test_publish_non_object_is_422(body: bytes) -> None:
    err = publish_error(body)
    assert (err.status, err.code) == (422, "invalid_event")


# ------------------------------------------------------------------------------------ frames
@pytest.mark.parametrize(
    "data",
    [
        {"n": 1},
        {"nested": {"list": [1, 2.5, None, True], "s": "héllo ✓ 🚀"}, "quote": 'a"b\\c\n'},
        "just a string",
        [1, "two"],
        None,
        0,
        -2.5,
    ],
)
def test_json_frame_is_valid_and_equals_as_dict(data: Any) -> None:
    event = make_event("edge.created", data)
    frame = event.frame(Framing.JSON)
    assert isinstance(frame, str)
    decoded = json.loads(frame)
    assert decoded == event.as_dict()
    assert decoded == {
        "id": event.id,
        "channel": "a",
        "type": "edge.created",
        "data": data,
        "ts": 1700000000123.5,
    }


def test_frames_are_cached_per_encoding() -> None:
    event = make_event()
    json_frame = event.frame(Framing.JSON)
    assert event.frame(Framing.JSON) is json_frame
    packed = event.frame(Framing.MSGPACK)
    assert isinstance(packed, bytes)
    assert event.frame(Framing.MSGPACK) is packed
    assert event.frame(Framing.JSON) is json_frame


@pytest.mark.parametrize("data", [{"n": 1, "s": "héllo ✓", "l": [None, True, 2.5]}, "text", None])
def test_msgpack_frame_decodes_to_the_same_dict(data: Any) -> None:
    event = make_event("t", data)
    assert msgpack.unpackb(event.frame(Framing.MSGPACK)) == event.as_dict()


def test_integer_ts_frame_is_valid_json() -> None:
    event = make_event(ts=1700000000123.0)
    assert json.loads(event.frame(Framing.JSON))["ts"] == 1700000000123


def test_ws_and_sse_frames_wrap_the_same_payload_once() -> None:
    event = make_event(data={"s": "line\nbreak"})
    payload = event.frame(Framing.JSON)
    assert isinstance(payload, str)
    wire = event.frame(Framing.WS_JSON)
    assert wire == ws_frame(payload) and event.frame(Framing.WS_JSON) is wire
    packed = event.frame(Framing.WS_MSGPACK)
    assert isinstance(packed, bytes) and packed[0] == 0x82  # a final binary frame
    sse = event.frame(Framing.SSE)
    assert sse == f"id: {event.id}\ndata: {payload}\n\n".encode()  # JSON escapes the newline


def test_sse_splits_raw_line_breaks_into_data_lines() -> None:
    event = Event("e1.1-0", Position(1, 0), "c", "t", '{"a":\n1}', 1.0)  # a direct producer's pretty JSON
    assert (
        event.frame(Framing.SSE)
        == b'id: e1.1-0\ndata: {"id":"e1.1-0","channel":"c","type":"t","data":{"a":\ndata: 1},"ts":1.0}\n\n'
    )


def test_a_batch_is_one_item_for_joinable_framings_and_one_per_event_otherwise() -> None:
    events = [make_event(data={"n": n}) for n in range(3)]
    batch = FrameBatch(events)
    (joined,), size = batch.items(Framing.WS_JSON)
    assert joined == b"".join(e.frame(Framing.WS_JSON) for e in events)  # type: ignore[misc]
    assert size == len(joined)
    assert batch.items(Framing.WS_JSON)[0][0] is joined  # framed once for every subscriber
    payloads, _ = batch.items(Framing.JSON)
    assert payloads == [e.frame(Framing.JSON) for e in events]


def test_an_event_msgpack_cannot_carry_is_skipped_for_msgpack_only() -> None:
    # An integer beyond 64 bits: validation keeps it out (app/data.py); this is the backstop behind it.
    event = Event("e1.1-0", Position(1, 0), "a", "t", "18446744073709551616", 1.0, _data=2**64)
    assert event.frame(Framing.MSGPACK) is None
    assert event.frame(Framing.WS_MSGPACK) is None
    assert FrameBatch([event, make_event()]).items(Framing.WS_MSGPACK)[0] != []
    assert event.frame(Framing.JSON) is not None


def test_sse_control_frames_are_named_events() -> None:
    welcome = encode_control({"type": "eventcast.welcome", "position": "e1.0-0"}, Framing.SSE)
    assert isinstance(welcome, bytes)
    assert welcome.startswith(b"event: eventcast.welcome\nid: e1.0-0\ndata: {")


def test_encode_control() -> None:
    message = {"type": "eventcast.welcome", "recovered": True, "connection": "c1"}
    text = encode_control(message, Framing.JSON)
    assert isinstance(text, str)
    assert json.loads(text) == message
    packed = encode_control(message, Framing.MSGPACK)
    assert isinstance(packed, bytes)
    assert msgpack.unpackb(packed) == message


@pytest.mark.parametrize("constant", [b"NaN", b"Infinity", b"-Infinity"])
def test_publish_refuses_non_json_number_constants(constant: bytes) -> None:
    # Python's json accepts them, but a frame carrying them would not be JSON for any subscriber.
    with pytest.raises(PublishError) as exc:
        parse_publish_body(b'{"channel": "a", "type": "t", "data": ' + constant + b"}", 10)
    assert (exc.value.status, exc.value.code) == (400, "invalid_json")


@pytest.mark.parametrize(
    "data",
    [b"123456789012345678901234567890", b"-9223372036854775809", b"[18446744073709551616, 1.5]"],
)
def test_publish_refuses_integers_beyond_64_bits(data: bytes) -> None:
    # MessagePack cannot carry them: a 202 would be a promise some subscribers never see kept.
    with pytest.raises(PublishError) as exc:
        parse_publish_body(b'{"channel": "a", "type": "t", "data": ' + data + b"}", 10)
    assert (exc.value.status, exc.value.code) == (422, "invalid_event")
    assert "integer" in exc.value.message


@pytest.mark.parametrize("data", [b"18446744073709551615", b"-9223372036854775808", b"[1234567890123456789]"])
def test_publish_keeps_64_bit_integers_exact(data: bytes) -> None:
    (event,) = parse_publish_body(b'{"channel": "a", "type": "t", "data": ' + data + b"}", 10)
    assert event.data == json.loads(data)
    assert json.loads(event.json) == json.loads(data)


@pytest.mark.parametrize("depth", [MAX_DATA_DEPTH + 1, 1000, 1023])
def test_publish_refuses_data_nested_past_the_limit_with_422(depth: int) -> None:
    data = b"[" * depth + b"]" * depth
    with pytest.raises(PublishError) as exc:
        parse_publish_body(b'{"channel": "a", "type": "t", "data": ' + data + b"}", 10)
    assert (exc.value.status, exc.value.code) == (422, "invalid_event")
    assert "nests deeper" in exc.value.message


def test_publish_accepts_data_nested_to_the_limit() -> None:
    data = b"[" * MAX_DATA_DEPTH + b"]" * MAX_DATA_DEPTH
    (event,) = parse_publish_body(b'{"channel": "a", "type": "t", "data": ' + data + b"}", 10)
    assert event.json == data.decode()


@pytest.mark.parametrize("name", ["a\n", "a\r\n", "\na", "a b", "a\u0000"])
@pytest.mark.parametrize("field", ["channel", "type"])
def test_publish_refuses_names_with_line_breaks_or_spaces(field: str, name: str) -> None:
    event = {"channel": "a", "type": "t", "data": 1, field: name}
    with pytest.raises(PublishError) as exc:
        parse_publish_body(json.dumps(event).encode(), 10)
    assert (exc.value.status, exc.value.code) == (422, "invalid_event")


@pytest.mark.parametrize(
    "data",
    [b"1e400", b'"\\ud800"', b"[" * 2000 + b"]" * 2000, b"[1,]", b"NaN", b"-Infinity", b'"\xff"'],
)
def test_publish_body_refuses_what_no_subscriber_could_parse(data: bytes) -> None:
    with pytest.raises(PublishError) as exc:
        parse_publish_body(b'{"channel": "a", "type": "t", "data": ' + data + b"}", 10)
    assert (exc.value.status, exc.value.code) == (400, "invalid_json")


def test_publish_body_may_start_with_a_byte_order_mark() -> None:
    (event,) = parse_publish_body(b'\xef\xbb\xbf{"channel": "a", "type": "t", "data": 1}', 10)
    assert event.data == 1
