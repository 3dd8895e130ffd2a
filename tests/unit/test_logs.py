"""Structured logs: every ``extra={...}`` field reaches the line, in text and in JSON."""

from __future__ import annotations

import io
import json
import logging
import sys

import pytest

from common.logs import KeyValueFormatter, json_formatter


def record(msg: str = "notification dead-lettered", exc: bool = False,
           **extra: object) -> logging.LogRecord:
    logger = logging.getLogger("central.notify.test")
    info = None
    if exc:
        try:
            raise ValueError("boom")
        except ValueError:
            info = sys.exc_info()
    return logger.makeRecord(logger.name, logging.WARNING, __file__, 1, msg, (), info,
                             extra=extra)


@pytest.mark.parametrize(("extra", "expected"), [
    ({"key": "inc-1:0:gov", "reason": "HTTP 500"}, 'key=inc-1:0:gov reason="HTTP 500"'),
    ({"camera": "gate", "retry_in_s": 1.5, "ok": False}, "camera=gate retry_in_s=1.5 ok=false"),
    ({"partitions": [0, 3], "uri": "rtsp://u:***@h/x"},
     'partitions=[0,3] uri=rtsp://u:***@h/x'),
    ({"zone": "河岸", "note": 'say "hi"'}, 'zone=河岸 note="say \\"hi\\""'),
    ({"user": None}, "user=null"),
])
def test_text_lines_carry_every_extra_field(extra: dict[str, object], expected: str) -> None:
    line = KeyValueFormatter().format(record(**extra))
    assert line.endswith(f"WARNING central.notify.test: notification dead-lettered {expected}")


def test_a_traceback_stays_below_the_fields() -> None:
    line = KeyValueFormatter().format(record(exc=True, key="k"))
    first, rest = line.split("\n", 1)
    assert first.endswith("dead-lettered key=k") and "ValueError: boom" in rest


def test_json_lines_carry_every_extra_field() -> None:
    out = json.loads(json_formatter().format(record(key="k", attempts=3)))
    assert out["message"] == "notification dead-lettered" and out["level"] == "WARNING"
    assert out["logger"] == "central.notify.test" and out["key"] == "k" and out["attempts"] == 3


def test_a_second_setup_replaces_its_own_handler() -> None:
    from common import logs

    root = logging.getLogger()
    saved = root.handlers[:]
    level = root.level
    try:
        root.handlers = []
        first, second = io.StringIO(), io.StringIO()
        assert logs.setup(logging.INFO, "text", first)
        assert logs.setup(logging.INFO, "json", second)
        logging.getLogger("x").info("hello", extra={"camera": "gate"})
        assert first.getvalue() == "" and json.loads(second.getvalue())["camera"] == "gate"
        root.handlers = [logging.NullHandler()]  # someone else's: left alone
        assert not logs.setup(logging.INFO, "text", first)
    finally:
        root.handlers = saved
        root.setLevel(level)
