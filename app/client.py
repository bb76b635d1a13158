"""An async Python client for eventcast subscribers (backend services, ``eventcast subscribe``).

    from app.client import Client

    async with Client("ws://gateway:8000", channels=["graph"], on_resync=reload_state) as client:
        async for event in client:          # Event(id, channel, type, data, ts), in order, once
            handle(event)

It follows the same rules as the browser client (``clients/js``; docs/clients.md): it reads the welcome, tracks
the last id, reconnects with exponential backoff and jitter on 1001, 1005, 1006, 1011, 1012, 1013 (longer) and
4008 and resumes with ``since``; it calls ``on_resync`` when the welcome says ``recovered: false``; it never
retries 4400, 4401 or 4403 (iteration raises ``Stopped``), except that a 4401 "token expired" is retried with a
token from ``get_token``; and ``set_filter`` changes the server-side filter in-band.

Several URLs (replicas without a load balancer in front) are tried in turn, one per reconnect.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import enum
import inspect
import json
import logging
import random as random_module
import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal

import msgpack
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI
from websockets.typing import Subprotocol

from app.causes import CloseCode
from app.protocol import SUBPROTOCOL_JSON, SUBPROTOCOL_MSGPACK, WELCOME_TYPE

log = logging.getLogger("eventcast.client")

Scalar = str | int | float | bool | None

#: Closes after which the client reconnects and resumes (the same table as clients/js/src/backoff.ts).
RETRY_CODES = frozenset(
    {
        CloseCode.GOING_AWAY,
        CloseCode.NO_STATUS,
        CloseCode.ABNORMAL,
        CloseCode.INTERNAL_ERROR,
        CloseCode.SERVICE_RESTART,
        CloseCode.TRY_AGAIN_LATER,
        CloseCode.SLOW_CONSUMER,
    }
)

#: A token this close to its ``exp`` is replaced before a reconnect instead of being refused with 4401.
TOKEN_MARGIN_SECONDS = 5.0


class Action(enum.Enum):
    RETRY = "retry"
    REFRESH_TOKEN = "refresh-token"
    STOP = "stop"


def close_action(code: int, reason: str) -> Action:
    """What to do after a close: retry the codes of RETRY_CODES, replace an expired token, stop on the rest."""
    if code == CloseCode.UNAUTHENTICATED and "expired" in reason.lower():
        return Action.REFRESH_TOKEN
    return Action.RETRY if code in RETRY_CODES else Action.STOP


@dataclass(frozen=True, slots=True)
class Backoff:
    """Reconnect delays in seconds (docs/clients.md, "Reconnecting")."""

    initial: float = 0.5  # first delay after an ordinary failure; doubles with each failed attempt
    maximum: float = 30.0  # ceiling of every delay
    overload: float = 5.0  # first delay after 1013 (the gateway is overloaded); doubles likewise
    jitter: float = 0.5  # random share of each delay: it lies in [d * (1 - jitter), d]

    def delay(self, code: int, attempt: int, random: Callable[[], float]) -> float:
        """Delay before reconnect number ``attempt`` (0 after a welcomed connection); ``random()`` in [0, 1).

        The first reconnect after 1012 (drain, shed) is anywhere in [0, initial): the server spreads its closes
        already and another replica is ready.
        """
        if code == CloseCode.SERVICE_RESTART and attempt == 0:
            return random() * self.initial
        first = self.overload if code == CloseCode.TRY_AGAIN_LATER else self.initial
        ceiling = min(self.maximum, first * 2.0 ** min(attempt, 30))
        jitter = min(1.0, max(0.0, self.jitter))
        return ceiling * (1 - jitter * random())


@dataclass(frozen=True, slots=True)
class Event:
    """One event as the gateway sent it. ``id`` is opaque: compare it for equality or resume from it."""

    id: str
    channel: str
    type: str
    data: Any
    ts: float  # publish time, ms since the epoch

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "channel": self.channel, "type": self.type, "data": self.data, "ts": self.ts}


class Stopped(Exception):
    """The client gave up: the gateway refused it (4400, 4401, 4403, ...) and retrying would not help."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{code} {reason}".strip())
        self.code = code
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Disconnect:
    """Handed to ``on_disconnect``: how a connection ended and what the client does next."""

    code: int
    reason: str
    will_retry: bool
    delay: float | None


Callback = Callable[[Any], Awaitable[None] | None]


def token_expiry(token: str) -> float | None:
    """The ``exp`` of a JWT (seconds since the epoch), read without checking it; None when there is none."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, binascii.Error):
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    return float(exp) if isinstance(exp, int | float) and not isinstance(exp, bool) else None


@dataclass(slots=True)
class Target:
    """One gateway URL, split into what the client keeps (path, scheme, host) and the subscription query."""

    base: urllib.parse.SplitResult
    path: str
    query: dict[str, list[str]]

    @classmethod
    def parse(cls, url: str) -> Target:
        parts = urllib.parse.urlsplit(url)
        scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
        if scheme not in ("ws", "wss") or not parts.netloc:
            raise ValueError(f"not a gateway URL: {url!r} (use ws://, wss://, http:// or https://host:port)")
        path = parts.path.rstrip("/")
        if not path.endswith(("/ws/events", "/ws/events/filtered")):
            path += "/ws/events"
        query: dict[str, list[str]] = {}
        for key, value in urllib.parse.parse_qsl(parts.query, keep_blank_values=True):
            query.setdefault(key, []).append(value)
        return cls(parts._replace(scheme=scheme), path, query)

    def url(
        self,
        channels: Sequence[str],
        types: Sequence[str],
        where: Mapping[str, Scalar],
        since: str | None,
        token: str | None,
    ) -> str:
        path = self.path
        if (types or where) and path.endswith("/ws/events"):
            path += "/filtered"
        query = [(k, v) for k, values in self.query.items() if k not in _OURS for v in values]
        query.append(("channels", ",".join(channels)))
        if types:
            query.append(("types", ",".join(types)))
        query += [("where", f"{k}={v if isinstance(v, str) else json.dumps(v)}") for k, v in where.items()]
        if since:
            query.append(("since", since))
        if token and "token" in self.query:  # the URL carried its token in the query: keep it there
            query.append(("token", token))
        return urllib.parse.urlunsplit(self.base._replace(path=path, query=urllib.parse.urlencode(query)))


_OURS = frozenset({"channels", "types", "where", "since", "token"})


class Client:
    """One subscription that survives disconnects. Iterate it for events; see the module docstring."""

    def __init__(
        self,
        url: str | Sequence[str],
        *,
        channels: Sequence[str] | None = None,
        since: str | None = None,
        token: str | None = None,
        get_token: Callable[[], Awaitable[str] | str] | None = None,
        types: Sequence[str] | None = None,
        where: Mapping[str, Scalar] | None = None,
        encoding: Literal["json", "msgpack"] = "json",
        reconnect: bool = True,
        backoff: Backoff | None = None,
        on_welcome: Callback | None = None,
        on_resync: Callback | None = None,
        on_disconnect: Callback | None = None,
        open_timeout: float = 10.0,
        sleep: Callable[[float], Awaitable[None]] | None = None,
        random: Callable[[], float] = random_module.random,
        clock: Callable[[], float] = time.time,
    ) -> None:
        urls = [url] if isinstance(url, str) else list(url)
        if not urls:
            raise ValueError("give at least one gateway URL")
        self.targets = [Target.parse(u) for u in urls]
        first = self.targets[0].query
        self.channels = list(channels or _split(first.get("channels")) or ["default"])
        self.types = list(types if types is not None else _split(first.get("types")))
        self.where: dict[str, Scalar] = dict(where if where is not None else _where(first.get("where", [])))
        self.token: str | None = token or _first(first.get("token"))
        self.last_id: str | None = since or _first(first.get("since"))
        self.welcome: dict[str, Any] | None = None
        self.encoding = encoding
        self.reconnect = reconnect
        self.backoff = backoff or Backoff()
        self.get_token = get_token
        self.on_welcome, self.on_resync, self.on_disconnect = on_welcome, on_resync, on_disconnect
        self.open_timeout = open_timeout
        self._sleep, self._random, self._clock = sleep, random, clock
        self._ws: ClientConnection | None = None
        self._closed = False
        self._closing = asyncio.Event()  # wakes a reconnect pause when the application closes the client
        self._attempt = 0
        self._target = 0
        self._refresh_token = False
        self._refreshed_since_welcome = False
        self.connects = 0  # connection attempts so far (each reconnect counts)

    # ------------------------------------------------------------------------------------------ public
    def __aiter__(self) -> AsyncIterator[Event]:
        return self._events()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop for good; an ``async for`` over the client ends."""
        self._closed = True
        self._closing.set()
        if self._ws is not None:
            await self._ws.close()

    async def set_filter(
        self, types: Sequence[str] | None = None, where: Mapping[str, Scalar] | None = None
    ) -> None:
        """Replace the server-side filter: in-band on the open connection, and for every reconnect."""
        self.types, self.where = list(types or []), dict(where or {})
        if self._ws is not None and self.welcome is not None:
            await self._ws.send(json.dumps({"op": "filter", "types": self.types, "where": self.where}))

    # ------------------------------------------------------------------------------------------ the loop
    async def _events(self) -> AsyncIterator[Event]:
        while not self._closed:
            await self._replace_token_if_needed()
            code: int = CloseCode.ABNORMAL
            reason = ""
            try:
                self.connects += 1
                async with connect(
                    self._url(),
                    subprotocols=[Subprotocol(_subprotocol(self.encoding))],
                    additional_headers={"Authorization": f"Bearer {self.token}"}
                    if self.token and "token" not in self.targets[self._target].query
                    else None,
                    max_size=None,
                    open_timeout=self.open_timeout,
                ) as ws:
                    self._ws = ws
                    async for raw in ws:
                        message = _decode(raw)
                        if message.get("type") == WELCOME_TYPE and isinstance(message.get("position"), str):
                            await self._welcomed(message)
                        elif isinstance(message.get("id"), str):
                            self.last_id = message["id"]
                            yield Event(
                                message["id"],
                                message.get("channel", ""),
                                message.get("type", ""),
                                message.get("data"),
                                message.get("ts", 0.0),
                            )
                    code, reason = ws.close_code or CloseCode.NO_STATUS, ws.close_reason or ""
            except ConnectionClosed as exc:
                received = exc.rcvd
                code, reason = (
                    (received.code, received.reason) if received else (CloseCode.ABNORMAL, str(exc))
                )
            except InvalidStatus as exc:  # refused before the upgrade (an Origin, a proxy, a wrong path)
                code, reason = _code_for_status(exc.response.status_code), f"HTTP {exc.response.status_code}"
            except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
                code, reason = CloseCode.ABNORMAL, f"cannot connect: {exc}"
            finally:
                self._ws = None
            if self._closed:
                return
            delay = self._after_close(code, reason)
            await self._call(
                self.on_disconnect, Disconnect(code, reason, delay is not None and self.reconnect, delay)
            )
            if delay is None:
                raise Stopped(code, reason)
            if not self.reconnect:
                return
            self._target = (self._target + 1) % len(self.targets)
            await self._pause(delay)

    async def _pause(self, delay: float) -> None:
        """Wait before a reconnect: the injected ``sleep``, or until the delay passes or ``close()`` is called."""
        if self._sleep is not None:
            await self._sleep(delay)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closing.wait(), delay)

    def _url(self) -> str:
        return self.targets[self._target].url(self.channels, self.types, self.where, self.last_id, self.token)

    async def _welcomed(self, welcome: dict[str, Any]) -> None:
        asked = self.last_id
        self.welcome = welcome
        self._attempt = 0
        self._refreshed_since_welcome = False
        self.last_id = welcome["position"]  # resuming from it gives exactly what was not sent yet
        await self._call(self.on_welcome, welcome)
        if not welcome.get("recovered") and asked is not None:
            if self.on_resync is None:
                log.warning(
                    "eventcast: history could not cover the gap (%s): events may be missing; pass on_resync",
                    welcome.get("reason"),
                )
            await self._call(self.on_resync, welcome)

    def _after_close(self, code: int, reason: str) -> float | None:
        """The delay before reconnecting, or None to stop."""
        action = close_action(code, reason)
        if action is Action.REFRESH_TOKEN:
            if self.get_token is None or self._refreshed_since_welcome:
                return None  # no way to a new token, or a fresh one was refused as expired before any welcome
            self._refresh_token = self._refreshed_since_welcome = True
            return self.backoff.delay(CloseCode.SERVICE_RESTART, 0, self._random)
        if action is Action.STOP:
            return None
        delay = self.backoff.delay(code, self._attempt, self._random)
        self._attempt += 1
        return delay

    async def _replace_token_if_needed(self) -> None:
        if self.get_token is None:
            return
        expiry = token_expiry(self.token) if self.token else None
        due = expiry is not None and expiry <= self._clock() + TOKEN_MARGIN_SECONDS
        if self._refresh_token or self.token is None or due:
            try:
                token = self.get_token()
                self.token = await token if inspect.isawaitable(token) else token
            except Exception as exc:
                raise Stopped(CloseCode.UNAUTHENTICATED, f"get_token failed: {exc}") from exc
            self._refresh_token = False

    @staticmethod
    async def _call(callback: Callback | None, argument: Any) -> None:
        if callback is None:
            return
        result = callback(argument)
        if inspect.isawaitable(result):
            await result


def _subprotocol(encoding: str) -> str:
    return SUBPROTOCOL_MSGPACK if encoding == "msgpack" else SUBPROTOCOL_JSON


def _decode(raw: str | bytes) -> dict[str, Any]:
    try:
        decoded = json.loads(raw) if isinstance(raw, str) else msgpack.unpackb(raw)
    except Exception:  # json's ValueError, msgpack's own errors: not a frame of the protocol
        return {}
    return decoded if isinstance(decoded, dict) else {}


def _code_for_status(status: int) -> int:
    """The close code a refusal answered with HTTP instead would have had (as the JS client's SSE path)."""
    return {
        400: CloseCode.BAD_REQUEST,
        401: CloseCode.UNAUTHENTICATED,
        403: CloseCode.FORBIDDEN,
        429: CloseCode.TRY_AGAIN_LATER,
        503: CloseCode.TRY_AGAIN_LATER,
    }.get(status, CloseCode.INTERNAL_ERROR if status >= 500 else CloseCode.BAD_REQUEST)


def _first(values: list[str] | None) -> str | None:
    return values[0] if values else None


def _split(values: list[str] | None) -> list[str]:
    return [part.strip() for value in values or [] for part in value.split(",") if part.strip()]


def _where(items: list[str]) -> dict[str, Scalar]:
    """``where=k=v`` from a URL: numbers, booleans and null compare as such, anything else as text."""
    pairs: dict[str, Scalar] = {}
    for item in items:
        key, _, text = item.partition("=")
        try:
            value = json.loads(text)
        except ValueError:
            value = text
        pairs[key] = value if isinstance(value, int | float | bool) or value is None else text
    return pairs
