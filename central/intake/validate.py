"""Alarm messages checked once, where they enter the central; a bad one is refused alone.

``AlarmGate.admit`` takes one message from the broker (payload and topic) and either returns
the typed alarm with its site, or counts the message by reason and keeps it in the dead-letter
stream. Reasons (the code before ``:``; the text after says what was wrong):

``retained``        a retained message (an old or planted alarm the broker replays to every
                    new subscriber), refused by the MQTT intake before the gate;
``too_large``       over ``MAX_PAYLOAD`` bytes;
``bad_topic``       not an alarm topic (``wire.topics.parse_alarm``);
``bad_json``        not UTF-8 JSON, too deeply nested, an integer too long to parse, not an
                    object;
``bad_schema``      not ``perimeter.alarm/1``;
``invalid``         the alarm model refused it (``zones.alarm``: wrong types, NaN or absurd
                    times, ``event_id`` not ``id:state``, ...);
``topic_mismatch``  the topic's camera, zone or kind is not the payload's;
``unknown_site``, ``unknown_camera``, ``wrong_edge``, ``unknown_zone``
                    not in the registry of the sites' edge configs (``central.registry``), or
                    (``unknown_zone`` only) not in the deprecated ``known_zones`` list;
``error``           anything else that went wrong with this one message (a bug): it is
                    logged with its traceback and refused alone.

Nothing a message contains can raise out of ``admit``: one poison message must never cost its
batch. Nothing after the gate parses or validates the alarm again: the partition stream
carries the checked payload and the incident worker only decodes it.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from wire import topics
from zones.alarm import SCHEMA, Alarm

if TYPE_CHECKING:
    from central.metrics import CentralMetrics
    from central.registry import Registry

log = logging.getLogger(__name__)

MAX_PAYLOAD = 64 * 1024

DeadLetter = Callable[[bytes, str, str], None]  # (payload, reason, topic)


@dataclass(frozen=True)
class Admitted:
    """An alarm that passed the gate, and the site whose topic it came on."""

    alarm: Alarm
    site: str


def _parse(payload: bytes) -> dict[str, Any] | str:
    """The JSON object, or why not. ``json`` raises ValueError for bad UTF-8, bad syntax and
    integers over 4300 digits, and RecursionError for deep nesting: all are bad input."""
    try:
        data = json.loads(payload)
    except (ValueError, RecursionError) as exc:
        return f"bad_json: {type(exc).__name__}: {str(exc)[:200]}"
    if not isinstance(data, dict):
        return "bad_json: not an object"
    return data


def _mismatch(parts: topics.AlarmTopic, alarm: Alarm) -> str | None:
    """Why the topic does not agree with the payload, if it does not (the edge builds the
    topic from the payload, ``wire.topics.alarm``, so a real alarm always agrees)."""
    wanted = (topics.sanitize(alarm.camera), topics.sanitize(alarm.zone), alarm.kind.value)
    got = (parts.camera, parts.zone, parts.kind)
    if got == wanted:
        return None
    return f"topic_mismatch: topic says {'/'.join(got)}, payload {'/'.join(wanted)}"[:500]


class AlarmGate:
    """Checks alarm messages; counts and dead-letters the ones it refuses.

    ``counts`` (shared with the aggregator, shown by ``/health``) gets ``rejected:<reason>``.
    ``registry``: the sites' edge configs; None (a lab's ``accept_any_site``) checks no names,
    ``known_zones`` (deprecated) only zones.
    """

    def __init__(self, dead_letter: DeadLetter, *, registry: Registry | None = None,
                 known_zones: Collection[str] | None = None,
                 counts: Counter[str] | None = None, metrics: CentralMetrics | None = None):
        self._dead_letter = dead_letter
        self.registry = registry
        self.known_zones = set(known_zones) if known_zones else None
        self.counts: Counter[str] = counts if counts is not None else Counter()
        self.metrics = metrics

    def check(self, payload: bytes, topic: str) -> Admitted | str:
        """The alarm and its site, or the reason it is refused; never raises for anything in
        the message (a bug it trips is logged and refuses that message alone)."""
        try:
            return self._check(payload, topic)
        except Exception as exc:
            log.exception("alarm check failed; message refused alone",
                          extra={"topic": topic[:200], "size": len(payload)})
            return f"error: {type(exc).__name__}"

    def _check(self, payload: bytes, topic: str) -> Admitted | str:
        if len(payload) > MAX_PAYLOAD:
            return f"too_large: {len(payload)} bytes"
        parts = topics.parse_alarm(topic)
        if parts is None:
            return f"bad_topic: {topic[:200]}"
        data = _parse(payload)
        if isinstance(data, str):
            return data
        if data.get("schema") != SCHEMA:
            return f"bad_schema: {str(data.get('schema'))[:100]}"
        try:
            alarm = Alarm.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            return f"invalid: {where}: {first['msg']}"[:500]
        mismatch = _mismatch(parts, alarm)
        if mismatch is not None:
            return mismatch
        if self.registry is not None:
            # a topic that names the edge (a later wire version) is checked against it too
            edge = getattr(parts, "edge", None)
            unknown = self.registry.check(parts.site, alarm.camera, alarm.zone,
                                          edge if isinstance(edge, str) else None)
            if unknown is not None:
                return unknown
        if self.known_zones is not None and alarm.zone not in self.known_zones:
            return f"unknown_zone: {alarm.zone[:100]}"
        return Admitted(alarm, parts.site)

    def admit(self, payload: bytes, topic: str) -> Admitted | None:
        """The checked alarm, or None once a refused message is counted and dead-lettered.
        Never raises for anything in the message."""
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
            log.exception("cannot write dead letter", extra={"reason": reason[:200]})
        else:
            if m is not None:
                m.dead_letters.labels(code).inc()
