"""Structured logs: one JSON object per line, with the replica and pid on every line and no secrets.

Configured once, by ``eventcast serve``, through uvicorn's ``log_config`` (so the supervisor and every worker
use it). Every field passed as ``extra={...}`` becomes a top-level key; eventcast's own lines carry ``event``
(``connect``, ``close``, ``drain.start``, ``broker.down``, ...) and ``connection`` where one is concerned.
Messages and string fields have every configured secret value (admin token, JWT secret, API keys) and URL
passwords masked; pattern-based masking (token query parameters, bearer values, JWT-shaped strings) is the
job of the redacting filter the security layer (app/auth.py) attaches to the same handler.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from app.settings import Settings

#: Attributes every LogRecord has; anything else on a record came from ``extra``.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "color_message",  # uvicorn's colourised copy of the message
    "taskName",
}
_URL_PASSWORD = re.compile(r"(://[^:/@\s]*:)[^@\s]+@")
_ACCESS_LOGGER = "uvicorn.access"


class JsonFormatter(logging.Formatter):
    def __init__(self, replica: str = "", secrets: Sequence[str] = ()) -> None:
        super().__init__()
        self.replica = replica
        self.secrets = tuple(s for s in secrets if s)

    def clean(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, "[redacted]")
        return _URL_PASSWORD.sub(r"\1[redacted]@", text)

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": self.clean(record.getMessage()),
            "replica": self.replica,
            "pid": record.process,
        }
        if record.name == _ACCESS_LOGGER and isinstance(record.args, tuple) and len(record.args) == 5:
            client, method, path, _version, status = record.args
            entry.update(
                event="http.access", client=client, method=method, path=str(path).split("?")[0], status=status
            )
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = self.clean(value) if isinstance(value, str) else value
        if record.exc_info:
            entry["exception"] = self.clean(self.formatException(record.exc_info))
        return json.dumps(entry, default=str, separators=(",", ":"))


def secret_values(settings: Settings) -> list[str]:
    """Every configured credential (admin token, JWT secret, API keys): never to appear in a log line."""
    found: list[str] = []
    for name, value in settings.model_dump().items():
        if isinstance(value, str) and any(w in name for w in ("token", "secret", "password", "api_key")):
            found += [part.strip() for part in value.split(",") if len(part.strip()) >= 4]
    return found


def log_config(settings: Settings) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` (and uvicorn ``log_config``) for JSON lines on stderr."""
    level = settings.log_level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "json": {
                "()": "app.logs.JsonFormatter",
                "replica": settings.replica,
                "secrets": secret_values(settings),
            }
        },
        "handlers": {
            "default": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}
        },
        "loggers": {
            "": {"handlers": ["default"], "level": level},
            "uvicorn": {"handlers": [], "level": level, "propagate": True},
            "uvicorn.error": {"handlers": [], "level": level, "propagate": True},
            "uvicorn.access": {"handlers": [], "level": level, "propagate": True},
        },
    }
