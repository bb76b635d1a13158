"""The gate in front of every endpoint: Origin, connect and publish rates, authentication, channel rights.

Endpoints call one method each (``admit_subscriber``, ``admit_publisher``, ``check_publish``) and turn the
exception into their own answer: a close code on a WebSocket, an HTTP status on SSE and ``POST /events``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from app.auth import Authenticator, AuthError, Principal, install_log_redaction
from app.causes import Cause, ProtocolError, Throttled
from app.limits import OriginPolicy, RateLimiter, retry_after_header
from app.protocol import EventIn, PublishError
from app.settings import Settings


class QueryValues(Protocol):
    def get(self, name: str, default: str | None = None) -> str | None: ...


class RateLimited(PublishError):
    """A publish refused by the rate limit: 429 with ``Retry-After``."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(429, "rate_limited", "too many publish requests for this key: slow down")
        self.headers = {"Retry-After": retry_after_header(retry_after)}


class Security:
    """Built once per app (``app.state.security``) from the settings."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.auth = Authenticator(settings)
        self.origins = OriginPolicy(settings.allowed_origins)
        self.publish_rate = RateLimiter(settings.publish_rate, settings.publish_burst)
        self.connect_rate = RateLimiter(settings.connect_rate, settings.connect_burst)
        install_log_redaction(self.auth)

    # ------------------------------------------------------------------------------ subscribers
    def admit_subscriber(
        self, headers: Mapping[str, str], query: QueryValues, client_ip: str, channels: Sequence[str]
    ) -> Principal | None:
        """Check a new subscriber (after its channels parsed). Raises ProtocolError: 1013, 4401, 4400, 4403."""
        wait = self.connect_rate.acquire(client_ip)
        if wait:
            raise Throttled(wait)
        try:
            principal = self.auth.subscriber(headers.get("authorization"), query.get("token"))
        except AuthError as exc:
            raise ProtocolError(Cause.UNAUTHENTICATED, exc.message) from None
        limit = self.settings.max_subscriptions
        if len(channels) > limit:
            raise ProtocolError(Cause.BAD_QUERY, f"too many channels: at most {limit} per connection")
        if principal is not None:
            for channel in channels:
                if not principal.can_read(channel):
                    raise ProtocolError(Cause.FORBIDDEN, f"forbidden: this token may not read {channel!r}")
        return principal

    # ------------------------------------------------------------------------------ publishers
    def admit_publisher(self, headers: Mapping[str, str], client_ip: str) -> Principal | None:
        """Check a publish request before reading its body. Raises PublishError: 403, 401, 429."""
        if not self.origins.allows(headers.get("origin")):
            raise PublishError(403, "origin_not_allowed", "this Origin may not use the gateway")
        try:
            principal = self.auth.publisher(headers.get("authorization"), headers.get("x-api-key"))
        except AuthError as exc:
            raise PublishError(exc.status, exc.code, exc.message) from None
        wait = self.publish_rate.acquire(principal.name if principal is not None else f"ip:{client_ip}")
        if wait:
            raise RateLimited(wait)
        return principal

    @staticmethod
    def check_publish(principal: Principal | None, events: Sequence[EventIn]) -> None:
        """Every event's channel must be allowed to the publisher, or nothing is published (403)."""
        if principal is None:
            return
        for event in events:
            if not principal.can_publish(event.channel):
                raise PublishError(
                    403, "forbidden", f"these credentials may not publish to channel {event.channel!r}"
                )
