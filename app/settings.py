"""Settings: the only reader of the environment. Every field is ``EVENTCAST_<NAME>`` in the environment."""

from __future__ import annotations

import socket

from pydantic import Field, field_validator, model_validator
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
    max_replay_events: int = Field(100_000, ge=1, description="Most events replayed on one resume.")

    # --- publishing ---------------------------------------------------------------------------------
    max_publish_bytes: int = Field(1 << 20, ge=128, description="Largest POST /events body; bigger gets 413.")
    max_batch_events: int = Field(1000, ge=1, description="Most events in one POST /events batch.")

    # --- lifecycle ----------------------------------------------------------------------------------
    drain_seconds: float = Field(20.0, ge=0, description="Spread of 1012 closes on SIGTERM or /admin/drain.")
    admin_token: str | None = Field(None, description="Bearer token for /admin/*; unset leaves them open.")

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
