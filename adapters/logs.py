"""Structured JSON logs: one object per line, with the record's `extra` fields."""

from __future__ import annotations

import logging
import sys

import orjson

from operators.codec import record_fields

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}
_SECRET_HINTS = ("password", "secret", "sasl", "token", "key")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        body = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for name, value in vars(record).items():
            if name in _STANDARD:
                continue
            if any(hint in name.lower() for hint in _SECRET_HINTS) and name != "key":
                value = "***"
            body[name] = value
        if record.exc_info:
            body["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(
            body, default=_anything, option=orjson.OPT_PASSTHROUGH_DATACLASS
        ).decode()


def _anything(value: object) -> object:
    """A record by its fields (orjson's own reading of a compiled record can crash, see
    operators/codec.py), anything else as its text."""
    try:
        return record_fields(value)
    except TypeError:
        return str(value)


def configure(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger("stockshift")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False


class FirstOccurrences:
    """Says whether a kind of occurrence is new, for logging each kind once: a defect that
    fails every event of a SKU would otherwise write a traceback per event. Remembers at
    most `limit` kinds; past that, nothing is new (the metrics still count every one)."""

    def __init__(self, limit: int = 100) -> None:
        self.limit = limit
        self._seen: set[str] = set()

    def first(self, kind: str) -> bool:
        if kind in self._seen or len(self._seen) >= self.limit:
            return False
        self._seen.add(kind)
        return True
