"""Settings: the only reader of the environment. Every field is ``EVENTCAST_<NAME>`` in the environment."""

from __future__ import annotations

import secrets
import socket
from typing import Literal

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EVENTCAST_", extra="ignore")

    # --- server -------------------------------------------------------------------------------------
    host: str = Field("127.0.0.1", description="Address to bind.")
    port: int = Field(8000, ge=0, le=65535, description="Port to bind (0 picks a free one).")
    workers: int = Field(1, ge=1, le=64, description="uvicorn worker processes; >1 needs a redis:// broker.")
    replica: str = Field(
        default_factory=socket.gethostname, description="Name reported in welcome frames (pod name on k8s)."
    )
    log_level: str = Field("info", description="debug, info, warning or error.")
    instance_id: str = Field(
        default_factory=lambda: secrets.token_hex(8),
        description="One `eventcast serve` and all its workers (set by serve for them): scopes /admin/shed "
        "and /admin/drain to this pod's workers on a shared Redis.",
    )

    supervisor_pid: int | None = Field(
        None,
        description="Set by `eventcast serve --workers N` for its workers: they drain and exit when that "
        "process dies.",
    )

    # --- broker -------------------------------------------------------------------------------------
    broker_url: str = Field("memory://", description="memory:// (in-process) or redis://host:port/db.")
    redis_prefix: str = Field("eventcast", description="Prefix of every Redis key eventcast uses.")
    history_max_events: int = Field(100_000, ge=1, description="History kept for resume: event count.")
    history_max_age_seconds: float = Field(3600.0, gt=0, description="History kept for resume: age.")
    broker_retry_seconds: float = Field(0.5, gt=0, description="Pause between Redis reconnect attempts.")

    # --- connections --------------------------------------------------------------------------------
    max_connections: int = Field(20_000, ge=1, description="Per worker; past it new clients get 1013.")
    send_queue_bytes: int = Field(
        1 << 20, ge=1024, description="Per-connection outbound queue bound; overflow closes with 4008."
    )
    idle_timeout_seconds: float = Field(30.0, gt=0, description="Silent clients are closed after this.")
    max_control_bytes: int = Field(64 * 1024, ge=128, description="Largest client frame; bigger gets 1009.")
    max_request_head_bytes: int = Field(
        16 * 1024, ge=1024, le=1 << 20, description="Largest request head (URL and headers); bigger gets 431."
    )
    max_request_headers: int = Field(100, ge=10, le=1000, description="Most header lines; more gets 431.")
    handshake_timeout_seconds: float = Field(
        10.0, gt=0, le=300, description="Time for a request head to arrive after the accept; then 408."
    )
    max_replay_events: int = Field(100_000, ge=1, description="Most events replayed on one resume.")

    # --- publishing ---------------------------------------------------------------------------------
    max_publish_bytes: int = Field(1 << 20, ge=128, description="Largest POST /events body; bigger gets 413.")
    max_batch_events: int = Field(1000, ge=1, description="Most events in one POST /events batch.")

    # --- lifecycle ----------------------------------------------------------------------------------
    drain_seconds: float = Field(20.0, ge=0, description="Spread of 1012 closes on SIGTERM or /admin/drain.")
    admin_token: str | None = Field(
        None,
        description="Bearer token for /admin/*. Unset: they answer only on the internal port, or on the "
        "public port when admin_open is set.",
    )
    admin_open: bool = Field(
        False,
        description="Serve /admin/* without a token on the public port (anyone who reaches it can drain "
        "the gateway; a warning is logged at startup). For local trials only.",
    )

    # --- security and limits (docs/security.md) ------------------------------------------------------
    # Subscriber auth is on once a JWT key is set; publisher auth once an API key or a JWT key is set.
    jwt_secret: str | None = Field(None, description="HS256 secret for JWTs; enables auth.")
    jwt_public_key_file: str | None = Field(None, description="PEM public key (RS256/ES256); enables auth.")
    jwt_jwks_file: str | None = Field(None, description="JWKS JSON file (keys picked by kid); enables auth.")
    jwt_audience: str | None = Field(None, description="Required 'aud' claim, when set.")
    jwt_issuer: str | None = Field(None, description="Required 'iss' claim, when set.")
    jwt_require_exp: bool = Field(True, description="Refuse JWTs without an 'exp' claim.")
    jwt_leeway_seconds: float = Field(0.0, ge=0, le=300, description="Clock skew allowed on exp/nbf.")
    api_keys: str | None = Field(None, description="Publisher API keys, comma-separated.")
    api_keys_file: str | None = Field(None, description="Publisher API keys, one a line; re-read on change.")
    allowed_origins: str = Field("", description="Comma list of Origin globs for browsers; empty allows all.")
    max_subscriptions: int = Field(100, ge=1, description="Most channels per connection; more gets 4400.")
    publish_rate: float = Field(0.0, ge=0, description="POST /events per second per key (0 = unlimited).")
    publish_burst: int = Field(0, ge=0, description="Publish bucket size (0 = max(1, publish_rate)).")
    connect_rate: float = Field(0.0, ge=0, description="New connections per second per IP (0 = unlimited).")
    connect_burst: int = Field(0, ge=0, description="Connect bucket size (0 = max(1, connect_rate)).")
    client_frame_rate: float = Field(
        20.0,
        gt=0,
        description="Frames a subscriber may send per second (pings, pongs, control messages; a filter "
        "update counts as 5); past the burst it is closed with 1008.",
    )
    client_frame_burst: int = Field(
        100, ge=5, description="Client frame bucket size (see client_frame_rate)."
    )
    sse_heartbeat_seconds: float = Field(15.0, gt=0, description="Interval of SSE keep-alive comments.")
    sse_retry_ms: int = Field(
        1000, ge=0, description="SSE 'retry:' hint sent when the server closes a stream."
    )
    ws_per_message_deflate: bool = Field(
        False,
        description="Accept permessage-deflate: each event is compressed once and the same bytes go to every "
        "client that asked for it (native engine; the asgi engine compresses per client).",
    )
    ws_engine: Literal["native", "asgi"] = Field(
        "native",
        description="native: subscribers served by app/transports/native_ws.py (fast, no task per client); "
        "asgi: through uvicorn's WebSocket implementation (app/transports/asgi_ws.py).",
    )

    # --- clients (docs/clients.md) ------------------------------------------------------------------------
    console: bool = Field(
        True,
        description="Serve the live console at /console (and its counts at /console/stats); false answers "
        "404 there. /client.js is served either way.",
    )

    # --- observability (docs/observability.md) --------------------------------------------------------
    internal_port: int | None = Field(
        None, ge=1, le=65535, description="Serve /metrics and /admin/* only here (the public port 404s them)."
    )
    internal_host: str | None = Field(None, description="Address of the internal port (default: host).")
    metrics_dir: str | None = Field(
        None, description="Multi-worker metric files (wiped at start); default a fresh temp dir per serve."
    )
    metrics_refresh_seconds: float = Field(
        1.0, gt=0, le=60, description="Multi-worker: how often each worker republishes its live gauges."
    )
    latency_sample_every: int = Field(
        8, ge=1, le=1_000_000, description="Observe broadcast latency for 1 in N live frames per connection."
    )
    otel_enabled: bool = Field(False, description="Turn tracing on without any OTEL_* variable (OTLP/http).")
    # The standard OpenTelemetry variables, read here so this stays the only reader of the environment.
    otel_traces_exporter: str | None = Field(
        None, validation_alias="OTEL_TRACES_EXPORTER", description="otlp, console or none."
    )
    otel_endpoint: str | None = Field(
        None,
        validation_alias=AliasChoices("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"),
        description="OTLP collector URL; setting it turns tracing on.",
    )
    otel_sdk_disabled: bool = Field(
        False, validation_alias="OTEL_SDK_DISABLED", description="Force tracing off."
    )
    otel_service_name: str = Field(
        "eventcast", validation_alias="OTEL_SERVICE_NAME", description="service.name of the spans."
    )

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        if value.lower() not in ("debug", "info", "warning", "error", "critical"):
            raise ValueError("log_level must be debug, info, warning, error or critical")
        return value.lower()

    @field_validator("broker_url")
    @classmethod
    def _scheme(cls, value: str) -> str:
        if value.split("://", 1)[0] not in ("memory", "redis", "rediss", "unix"):
            raise ValueError("broker_url must start with memory://, redis://, rediss:// or unix://")
        return value

    @model_validator(mode="after")
    def _workers_need_shared_broker(self) -> Settings:
        if self.workers > 1 and self.broker_scheme == "memory":
            raise ValueError(
                "--workers > 1 needs a shared broker: with memory:// each worker would only see its own "
                "events. Use --broker redis://HOST:PORT/0 (or run one worker)."
            )
        return self

    @property
    def broker_scheme(self) -> str:
        return self.broker_url.split("://", 1)[0]
