"""Alarm messages checked once, where they enter the central; a bad one is refused alone.

``AlarmGate.admit`` takes one message from the broker (payload and topic) and either returns
the typed alarm with its site, or counts the message by reason and keeps it in the
dead-letter stream: ``too_large``, ``bad_topic``, ``bad_json``, ``bad_schema``, ``invalid``
(the alarm model refused it), ``unknown_zone`` (with ``known_zones`` configured). Nothing
after the gate parses or validates the alarm again: the partition stream carries the checked
payload and the incident worker only decodes it.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pydantic import ValidationError

from wire import topics
from zones.alarm import SCHEMA, Alarm

if TYPE_CHECKING:
    from central.metrics import CentralMetrics

log = logging.getLogger(__name__)

MAX_PAYLOAD = 64 * 1024

DeadLetter = Callable[[bytes, str, str], None]  # (payload, reason, topic)


@dataclass(frozen=True)
class Admitted:
    """An alarm that passed the gate, and the site whose topic it came on."""

    alarm: Alarm
    site: str


class AlarmGate:
    """Checks alarm messages; counts and dead-letters the ones it refuses.

    ``counts`` (shared with the aggregator, shown by ``/health``) gets ``rejected:<reason>``.
    """

    def __init__(self, dead_letter: DeadLetter, *, known_zones: Collection[str] | None = None,
                 counts: Counter[str] | None = None, metrics: CentralMetrics | None = None):
        self._dead_letter = dead_letter
        self.known_zones = set(known_zones) if known_zones else None
        self.counts: Counter[str] = counts if counts is not None else Counter()
        self.metrics = metrics

    def check(self, payload: bytes, topic: str) -> Admitted | str:
        """The alarm and its site, or the reason it is refused."""
        if len(payload) > MAX_PAYLOAD:
            return f"too_large: {len(payload)} bytes"
        parts = topics.parse_alarm(topic)
        if parts is None:
            return f"bad_topic: {topic[:200]}"
        try:
            data = json.loads(payload)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            return f"bad_json: {exc}"
        if not isinstance(data, dict):
            return "bad_json: not an object"
        if data.get("schema") != SCHEMA:
            return f"bad_schema: {str(data.get('schema'))[:100]}"
        try:
            alarm = Alarm.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            return f"invalid: {where}: {first['msg']}"[:500]
        if self.known_zones is not None and alarm.zone not in self.known_zones:
            return f"unknown_zone: {alarm.zone[:100]}"
        return Admitted(alarm, parts.site)

    def admit(self, payload: bytes, topic: str) -> Admitted | None:
        """The checked alarm, or None once a refused message is counted and dead-lettered."""
        checked = self.check(payload, topic)
        if isinstance(checked, str):
            self.reject(payload, topic, checked)
            return None
        return checked

    def reject(self, payload: bytes, topic: str, reason: str) -> None:
        """Count a bad message by reason and keep it in the dead-letter stream."""
        code = reason.split(":")[0]
        self.counts[f"rejected:{code}"] += 1
        m = self.metrics
        if m is not None:
            m.rejected(code)
        try:
            self._dead_letter(payload, reason, topic)
        except Exception:  # the dead-letter stream must never take the intake down
            log.exception("cannot write dead letter", extra={"reason": reason})
        else:
            if m is not None:
                m.dead_letters.labels(code).inc()
