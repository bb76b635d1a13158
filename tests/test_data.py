"""app/data.py: what every encoding can carry, at publish (encode_data, loads_body) and on read (check_log_data)."""

from __future__ import annotations

import json

import msgpack
import orjson
import pytest

from app.data import (
    MAX_DATA_DEPTH,
    MAX_INT,
    MIN_INT,
    REASON_DEPTH,
    REASON_INT,
    REASON_UTF8,
    UNPARSED,
    DataError,
    check_log_data,
    encode_data,
    loads_body,
)


def nested(depth: int) -> object:
    value: object = 1
    for _ in range(depth):
        value = [value]
    return value


def test_the_depth_limit_is_what_orjson_serialises() -> None:
    # If orjson ever changes its recursion limit, MAX_DATA_DEPTH must follow it.
    orjson.dumps(nested(MAX_DATA_DEPTH))
    with pytest.raises(TypeError):
        orjson.dumps(nested(MAX_DATA_DEPTH + 1))


def test_msgpack_carries_everything_the_limits_allow() -> None:
    envelope = {"id": "e.1-0", "data": [MIN_INT, MAX_INT, nested(MAX_DATA_DEPTH)]}
    assert msgpack.unpackb(msgpack.packb(envelope), strict_map_key=False) == envelope


@pytest.mark.parametrize("value", [MIN_INT, MAX_INT, 0, -1, 2**53 + 1])
def test_integers_in_range_encode_exactly(value: int) -> None:
    assert json.loads(encode_data({"n": value})) == {"n": value}


@pytest.mark.parametrize("value", [MIN_INT - 1, MAX_INT + 1, 10**40, -(10**40)])
def test_integers_out_of_range_are_refused(value: int) -> None:
    with pytest.raises(DataError) as exc:
        encode_data([1, {"n": value}])
    assert exc.value.reason == REASON_INT


def test_too_deep_is_refused() -> None:
    with pytest.raises(DataError) as exc:
        encode_data(nested(MAX_DATA_DEPTH + 1))
    assert exc.value.reason == REASON_DEPTH


def test_loads_body_keeps_big_integers_exact_so_they_can_be_refused() -> None:
    body = b'{"data": 18446744073709551616}'
    assert loads_body(body) == {"data": 2**64}
    assert loads_body(b'{"data": 12}') == {"data": 12}


@pytest.mark.parametrize(
    "body", [b"NaN", b"1e400", b'"\\ud800"', b"[1,]", b"\xff", b"[" * 1100 + b"]" * 1100]
)
def test_loads_body_refuses_what_is_not_json(body: bytes) -> None:
    with pytest.raises(ValueError):
        loads_body(body)


def test_loads_body_with_a_big_number_nested_past_pythons_recursion_limit_is_too_deep() -> None:
    body = b"[" * 1020 + b"12345678901234567890" + b"]" * 1020
    with pytest.raises(DataError) as exc:
        loads_body(body)
    assert exc.value.reason == REASON_DEPTH


# ------------------------------------------------------------------------------------ on read
def test_log_data_written_by_eventcast_passes_unchanged() -> None:
    text = encode_data({"a": [1, 2.5, None, "é"], "big": MAX_INT})
    assert check_log_data(text)[0] == text


def test_log_data_value_is_given_when_exact() -> None:
    assert check_log_data('{"a": 1}') == ('{"a": 1}', {"a": 1})
    text, value = check_log_data('["12345678901234567890123"]')  # many digits, but inside a string
    assert value is UNPARSED
    assert text == '["12345678901234567890123"]'


@pytest.mark.parametrize("text", ["not json {", "hello", "{'single': 'quotes'}", "[" * 2000 + "]" * 2000])
def test_log_text_that_is_not_json_is_delivered_as_a_json_string(text: str) -> None:
    delivered, value = check_log_data(text)
    assert json.loads(delivered) == text
    assert value == text


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("\udcff\udcfe", REASON_UTF8),  # how the reader keeps bytes that are not UTF-8
        ('{"a": "\udc80"}', REASON_UTF8),
        ("[" * (MAX_DATA_DEPTH + 1) + "]" * (MAX_DATA_DEPTH + 1), REASON_DEPTH),
        ("[" * 1000 + "]" * 1000, REASON_DEPTH),
        ("18446744073709551616", REASON_INT),
        ('{"n": -9223372036854775809}', REASON_INT),
    ],
)
def test_log_data_no_encoding_can_carry_is_refused(text: str, reason: str) -> None:
    with pytest.raises(DataError) as exc:
        check_log_data(text)
    assert exc.value.reason == reason
