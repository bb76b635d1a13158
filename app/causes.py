"""Why a subscriber is turned away or closed: one vocabulary, one table.

Every ending of a subscriber has a ``Cause``. The table maps each to what the client sees (a WebSocket close
code, or an HTTP status where no WebSocket exists yet: before the upgrade, and on SSE), the reason text, and
the ``reason`` label it is counted under: ``eventcast_connections_refused_total`` for refusals (before the
welcome frame), ``eventcast_connections_closed_total`` for closes (after it). Transports, the session, the
hub, metrics, the dashboards' builder and the tests all read it from here; nothing else names a close code.

Exceptions (``Refusal`` and its subclasses) carry a Cause from where the decision is made to the transport
that says it:

    Refusal(cause, reason)         a subscriber cannot be taken, or must be closed
      ProtocolError                 something the client sent (its query, a control message, a token)
        Throttled                   the connect rate per address (with ``retry_after``)
      Refused                       the server's side: full, draining
        BrokerRefused               the broker failed while attaching
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, IntEnum


class CloseCode(IntEnum):
    """Every WebSocket close code eventcast uses (DESIGN 5b). Never write the numbers elsewhere."""

    NORMAL = 1000
    GOING_AWAY = 1001  # the next three come from clients (or their libraries), never from us
    NO_STATUS = 1005
    ABNORMAL = 1006
    PROTOCOL_ERROR = 1002  # a frame that breaks RFC 6455 (the frame parser closes with it)
    INVALID_DATA = 1007  # a text frame that is not UTF-8 (RFC 6455 8.1)
    POLICY = 1008
    TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012  # drain or shed: reconnect elsewhere and resume
    TRY_AGAIN_LATER = 1013  # overload
    BAD_REQUEST = 4400
    UNAUTHENTICATED = 4401
    FORBIDDEN = 4403
    SLOW_CONSUMER = 4008


@dataclass(frozen=True, slots=True)
class Ending:
    """What one cause looks like to the client and in metrics."""

    code: CloseCode | None  # the WebSocket close code; None: only ever an HTTP answer
    status: int  # the HTTP status where the answer is HTTP (before an upgrade, SSE)
    reason: str  # the default reason text (a refusal may carry a more precise one)
    label: str  # the ``reason`` label of the counter it goes to
    refusal: bool  # True: before the welcome (refused_total); False: after it (closed_total)
    before_upgrade: bool = False  # True: a WebSocket client gets the HTTP status, not a close code


class Cause(Enum):
    """Why a subscriber ends. Refusals first (before the welcome), then closes (after it)."""

    # ---- refused before a WebSocket exists: HTTP on every transport
    MALFORMED_REQUEST = "malformed_request"
    UNSUPPORTED_VERSION = "unsupported_version"
    HEAD_TOO_LARGE = "head_too_large"
    HANDSHAKE_TIMEOUT = "handshake_timeout"
    SOCKETS_FULL = "sockets_full"
    ORIGIN = "origin"
    # ---- refused after the upgrade on WebSocket (close code), with an HTTP status on SSE
    BAD_QUERY = "bad_query"
    UNAUTHENTICATED = "unauthenticated"
    FORBIDDEN = "forbidden"
    RATE_LIMITED = "rate_limited"
    OVERLOAD = "overload"
    DRAINING = "draining"
    BROKER_UNAVAILABLE = "broker_unavailable"
    ATTACH_ERROR = "attach_error"
    # ---- closes after the welcome
    CLIENT = "client"
    CLIENT_ERROR = "client_error"
    DRAIN = "drain"
    SHED = "shed"
    SHUTDOWN = "shutdown"
    SLOW_CONSUMER = "slow_consumer"
    TOKEN_EXPIRED = "token_expired"
    KEEPALIVE = "keepalive"
    BAD_MESSAGE = "bad_message"
    TOO_MANY_MESSAGES = "too_many_messages"
    TOO_BIG = "too_big"
    PROTOCOL_ERROR = "protocol_error"
    INVALID_UTF8 = "invalid_utf8"
    INTERNAL_ERROR = "internal_error"

    @property
    def ending(self) -> Ending:
        return ENDINGS[self]

    @property
    def code(self) -> CloseCode | None:
        return ENDINGS[self].code

    @property
    def label(self) -> str:
        return ENDINGS[self].label


_C = CloseCode
#: The one table. Labels are public (dashboards, alerts): add values, never rename them.
ENDINGS: dict[Cause, Ending] = {
    Cause.MALFORMED_REQUEST: Ending(
        None, 400, "not a valid WebSocket upgrade (RFC 6455 4.2.1)", "bad_request", True, True
    ),
    Cause.UNSUPPORTED_VERSION: Ending(
        None, 426, "unsupported WebSocket version: use 13", "bad_request", True, True
    ),
    Cause.HEAD_TOO_LARGE: Ending(None, 431, "request head too large", "too_large", True, True),
    Cause.HANDSHAKE_TIMEOUT: Ending(None, 408, "request head not received in time", "timeout", True, True),
    Cause.SOCKETS_FULL: Ending(None, 503, "overloaded: try again later", "overload", True, True),
    Cause.ORIGIN: Ending(None, 403, "origin not allowed", "forbidden", True, True),
    Cause.BAD_QUERY: Ending(_C.BAD_REQUEST, 400, "bad request", "bad_request", True),
    Cause.UNAUTHENTICATED: Ending(_C.UNAUTHENTICATED, 401, "unauthenticated", "unauthenticated", True),
    Cause.FORBIDDEN: Ending(_C.FORBIDDEN, 403, "forbidden", "forbidden", True),
    Cause.RATE_LIMITED: Ending(
        _C.TRY_AGAIN_LATER,
        429,
        "too many connections from this address: try again later",
        "rate_limited",
        True,
    ),
    Cause.OVERLOAD: Ending(_C.TRY_AGAIN_LATER, 503, "overloaded: try again later", "overload", True),
    Cause.DRAINING: Ending(
        _C.SERVICE_RESTART, 503, "draining: reconnect to another replica", "draining", True
    ),
    Cause.BROKER_UNAVAILABLE: Ending(
        _C.TRY_AGAIN_LATER, 503, "broker unavailable: try again later", "broker_unavailable", True
    ),
    Cause.ATTACH_ERROR: Ending(_C.INTERNAL_ERROR, 500, "internal error", "error", True),
    Cause.CLIENT: Ending(None, 200, "client closed", "client", False),
    Cause.CLIENT_ERROR: Ending(None, 200, "client closed with an error", "client_error", False),
    Cause.DRAIN: Ending(_C.SERVICE_RESTART, 503, "service restart: drain", "drain", False),
    Cause.SHED: Ending(_C.SERVICE_RESTART, 503, "service restart: shed", "shed", False),
    Cause.SHUTDOWN: Ending(_C.SERVICE_RESTART, 503, "server shutdown", "drain", False),
    Cause.SLOW_CONSUMER: Ending(_C.SLOW_CONSUMER, 503, "slow consumer", "slow_consumer", False),
    Cause.TOKEN_EXPIRED: Ending(_C.UNAUTHENTICATED, 401, "token expired", "unauthenticated", False),
    Cause.KEEPALIVE: Ending(_C.INTERNAL_ERROR, 408, "keepalive ping timeout", "keepalive", False),
    Cause.BAD_MESSAGE: Ending(_C.BAD_REQUEST, 400, "bad control message", "bad_request", False),
    Cause.TOO_MANY_MESSAGES: Ending(_C.POLICY, 429, "too many messages: slow down", "policy", False),
    Cause.TOO_BIG: Ending(_C.TOO_BIG, 413, "message too big", "too_big", False),
    Cause.PROTOCOL_ERROR: Ending(_C.PROTOCOL_ERROR, 400, "protocol error", "bad_request", False),
    Cause.INVALID_UTF8: Ending(_C.INVALID_DATA, 400, "text frame is not valid UTF-8", "invalid_data", False),
    Cause.INTERNAL_ERROR: Ending(
        _C.INTERNAL_ERROR, 500, "internal error: reconnect and resume", "error", False
    ),
}

#: Every ``reason`` label of eventcast_connections_refused_total, in table order.
REFUSAL_LABELS: tuple[str, ...] = tuple(dict.fromkeys(e.label for e in ENDINGS.values() if e.refusal))
#: Every ``reason`` label of eventcast_connections_closed_total, in table order, plus "other" (a code
#: from a client library that means nothing to us never makes a new label).
CLOSE_LABELS: tuple[str, ...] = (*dict.fromkeys(e.label for e in ENDINGS.values() if not e.refusal), "other")

#: Close codes a client sends when it simply leaves.
_CLIENT_NORMAL = frozenset({None, _C.NORMAL, _C.GOING_AWAY, _C.NO_STATUS, _C.ABNORMAL})


def client_cause(code: int | None) -> Cause:
    """The cause of a close the client started, from the code it sent (None: it just went away)."""
    return Cause.CLIENT if code in _CLIENT_NORMAL else Cause.CLIENT_ERROR


class Refusal(Exception):
    """A subscriber is refused or closed for ``cause``; ``reason`` is the text it is told."""

    def __init__(self, cause: Cause, reason: str | None = None) -> None:
        text = (reason or cause.ending.reason)[:120]  # a close reason must fit in 123 bytes
        super().__init__(text)
        self.cause = cause
        self.reason = text

    @property
    def code(self) -> CloseCode:
        code = self.cause.code
        return code if code is not None else CloseCode.POLICY

    @property
    def status(self) -> int:
        return self.cause.ending.status


class ProtocolError(Refusal):
    """Something the client sent is refused (its query, a control message, its token)."""


class Throttled(ProtocolError):
    """The connect rate per address: 1013 on WebSocket, 429 with Retry-After on SSE."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(Cause.RATE_LIMITED)
        self.retry_after = retry_after


class Refused(Refusal):
    """The server cannot take a subscriber now (full, draining)."""


class BrokerRefused(Refused):
    """The broker failed while a subscriber was attaching."""

    def __init__(self) -> None:
        super().__init__(Cause.BROKER_UNAVAILABLE)
