"""Process logging: one JSON object per line on stderr (or readable text for `tripwire up`).

Fields passed with `extra={...}` become top-level keys, so `log.info("sent", extra={"receiver": r})` is
searchable without parsing the message. Secrets never reach a log line: config objects hold them as
SecretStr, which prints as '**********'.
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import Any

import orjson

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


class TextFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__("%(asctime)s %(levelname)-7s " + service + " %(name)s: %(message)s", "%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        extras = {k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")}
        if extras:
            text += " " + " ".join(f"{k}={v}" for k, v in extras.items())
        return text


def configure_logging(service: str, level: str = "info", fmt: str = "json") -> None:
    """Route all logging (ours, FastStream's, aiohttp's) to stderr in the chosen format."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service) if fmt == "json" else TextFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Per-request access logs are noise at ingest rates; errors still surface through our own handlers.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    # FastStream logs task bookkeeping at INFO ("callback for Task-N is being executed") and resets its
    # logger's level itself, so a filter (which it cannot reset) keeps only its warnings and errors (fetch
    # errors, NOGROUP) unless we are debugging.
    broker_logger = logging.getLogger("tripwire.faststream")
    broker_logger.filters[:] = []
    if level.lower() != "debug":
        broker_logger.addFilter(lambda record: record.levelno >= logging.WARNING)
