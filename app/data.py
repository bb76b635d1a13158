"""Event data: exactly what every encoding can carry, checked when it is published and when it is read.

An event's ``data`` goes out as JSON (WebSocket text frames and SSE) and as MessagePack. What one of them
cannot carry would fail for some subscriber long after the producer was told 202, so the same rules hold
everywhere, decided here once:

- valid JSON, as orjson reads it: no NaN or Infinity, no lone surrogates, valid UTF-8;
- integers from -2**63 to 2**64 - 1 (MessagePack's range, and orjson's);
- at most ``MAX_DATA_DEPTH`` nested arrays and objects (the most orjson serialises).

``POST /events`` refuses anything else with 422 (``encode_data``). Entries that producers append to the
Redis log directly bypass that check, so the reader checks each one it would deliver (``check_log_data``)
and quarantines what breaks a rule (``app.quarantine``) instead of delivering it.

Nothing here does I/O.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

#: Most levels of nested arrays and objects inside ``data``: orjson refuses to serialise a 255th.
MAX_DATA_DEPTH = 254
#: The integer range every encoding carries exactly (MessagePack: int64 and uint64).
MIN_INT = -(2**63)
MAX_INT = 2**64 - 1

#: Why an event's data was refused or quarantined: the ``reason`` label of eventcast_events_quarantined_total.
REASON_UTF8 = "invalid_utf8"
REASON_JSON = "invalid_json"
REASON_DEPTH = "too_deep"
REASON_INT = "integer_range"

_MESSAGES = {
    REASON_UTF8: "data is not valid UTF-8",
    REASON_JSON: "data is not valid JSON",
    REASON_DEPTH: f"data nests deeper than {MAX_DATA_DEPTH} levels of arrays and objects",
    REASON_INT: f"data holds an integer outside {MIN_INT}..{MAX_INT}",
}

# 19+ digits in a row may be an integer beyond 64 bits, which orjson would turn into an inexact float.
# Found by mapping every digit to "0" and the rest to " ": 13x faster than the regex [0-9]{19} on bytes.
_DIGITS_TO_ZERO = bytes(0x30 if 0x30 <= byte <= 0x39 else 0x20 for byte in range(256))
_NINETEEN_DIGITS = b"0" * 19
_NINETEEN_DIGITS_RE = re.compile(r"[0-9]{19}")


class DataError(ValueError):
    """``data`` breaks one of the rules above; ``reason`` is one of the REASON_* labels."""

    def __init__(self, reason: str) -> None:
        super().__init__(_MESSAGES[reason])
        self.reason = reason


def encode_data(data: Any) -> str:
    """Compact JSON text of ``data`` (parsed JSON), or DataError when some encoding could not carry it."""
    try:
        return orjson.dumps(data).decode()
    except TypeError as exc:  # orjson.JSONEncodeError
        text = str(exc)
        if "Recursion" in text:
            raise DataError(REASON_DEPTH) from None
        if "Integer" in text:
            raise DataError(REASON_INT) from None
        raise DataError(REASON_JSON) from None


def loads_body(body: bytes) -> Any:
    """Decode a JSON request body exactly (integers beyond 64 bits stay integers, so that
    ``encode_data`` can refuse them). Raises ValueError when the body is not valid JSON.

    orjson is the judge of valid JSON: it refuses what Python's json lets through and no subscriber could
    parse back (NaN and Infinity, numbers that overflow to infinity, lone surrogates), and is 4-5x faster.
    Integers beyond 64 bits it turns into inexact floats, so a body that may hold one (19+ digits in a row)
    is decoded again by json, which keeps them exact.
    """
    if body.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte order mark: RFC 8259 lets parsers ignore it
        body = body[3:]
    decoded = orjson.loads(body)  # orjson.JSONDecodeError is a ValueError
    if _NINETEEN_DIGITS in body.translate(_DIGITS_TO_ZERO):
        try:
            return json.loads(body)
        except RecursionError:  # orjson took it (at most 1,024 levels): far past MAX_DATA_DEPTH anyway
            raise DataError(REASON_DEPTH) from None
    return decoded


_UNPARSED: Any = object()


def check_log_data(text: str) -> tuple[str, Any]:
    """The ``data`` field of a log entry as (JSON text to deliver, its value or ``UNPARSED``).

    Entries written by eventcast pass unchanged. A direct producer's text that is not JSON is delivered as
    a JSON string, as documented; text that is not UTF-8 (the reader keeps undecodable bytes as lone
    surrogates) and JSON that breaks a limit (too deep, integers beyond 64 bits) raise DataError.
    """
    if not text.isascii():
        try:
            text.encode()
        except UnicodeEncodeError:
            raise DataError(REASON_UTF8) from None
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:  # plain text (or JSON nested past 1,024 levels): a JSON string
        return encode_data(text), text
    exact = _NINETEEN_DIGITS_RE.search(text) is None
    if not exact or text.count("[") + text.count("{") > MAX_DATA_DEPTH:
        try:
            encode_data(value if exact else json.loads(text))
        except RecursionError:
            raise DataError(REASON_DEPTH) from None
    return text, value if exact else UNPARSED


UNPARSED = _UNPARSED
