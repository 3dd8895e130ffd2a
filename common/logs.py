"""Structured logging for every ``perimeter`` command: the ``extra={...}`` fields reach the
journal.

The code logs an event and its context separately (``log.warning("notification
dead-lettered", extra={"key": key, "reason": why})``); the standard ``%(message)s`` formatter
prints the words and drops the context, which is what a technician needs at 3 a.m. Two
formats keep it: ``text`` (the default: the usual line, then ``key=value`` pairs, values with
spaces or quotes JSON-quoted, so ``journalctl`` stays readable and ``grep camera=gate``
works) and ``json`` (one object per line via python-json-logger, for a log shipper).
"""

from __future__ import annotations

import json
import logging
import re
import sys
from typing import Any, TextIO

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Attributes every LogRecord has (plus the ones formatters add): not context.
_STANDARD = set(vars(logging.LogRecord("n", logging.INFO, "p", 1, "m", None, None))) | {
    "message", "asctime", "taskName"}
_BARE = re.compile(r"^[^\s\"'=\\]+$")


def context(record: logging.LogRecord) -> dict[str, Any]:
    """The ``extra={...}`` fields of a record, in the order they were given."""
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


def _value(v: Any) -> str:
    if isinstance(v, str):
        return v if _BARE.match(v) else json.dumps(v, ensure_ascii=False)
    if isinstance(v, bool | int | float) or v is None:
        return json.dumps(v)
    try:
        return json.dumps(v, ensure_ascii=False, separators=(",", ":"), default=str)
    except ValueError:  # a circular structure
        return json.dumps(repr(v), ensure_ascii=False)


class KeyValueFormatter(logging.Formatter):
    """``2026-01-01 12:00:00,000 WARNING central.notify: dead-lettered key=inc-1 reason="HTTP
    500"``: the usual line, then every extra field as ``key=value``."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extra = context(record)
        if not extra:
            return line
        pairs = " ".join(f"{k}={_value(v)}" for k, v in extra.items())
        head, sep, rest = line.partition("\n")  # a traceback stays below the pairs
        return f"{head} {pairs}{sep}{rest}"


def json_formatter() -> logging.Formatter:
    """One JSON object per line: time, level, logger, message and every extra field."""
    from pythonjsonlogger.json import JsonFormatter

    return JsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s",
                         rename_fields={"levelname": "level", "name": "logger"},
                         json_ensure_ascii=False)


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """Ours, so a second ``setup`` replaces it rather than doubling every line."""


def setup(level: int = logging.WARNING, fmt: str = "text", stream: TextIO | None = None) -> bool:
    """Give the root logger one handler on ``stream`` (default stderr) in format ``fmt``.

    Like ``logging.basicConfig``, it leaves a root logger that someone else configured (a
    test runner, an embedding program) alone and returns False; a second call replaces the
    handler of the first."""
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    root = logging.getLogger()
    if any(not isinstance(h, _Handler) for h in root.handlers):
        return False
    for old in list(root.handlers):
        root.removeHandler(old)
    handler = _Handler(stream if stream is not None else sys.stderr)
    handler.setFormatter(KeyValueFormatter() if fmt == "text" else json_formatter())
    root.addHandler(handler)
    root.setLevel(level)
    return True
