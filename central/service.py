"""The aggregator: validates alarm messages, merges them into incidents, persists every change.

Transport-agnostic: the MQTT intake hands it raw payloads with their topic, the HTTP API
calls ``acknowledge``/``resolve``. A bad message never raises out of ``ingest``: it is counted
by reason and kept in the dead-letter stream. One lock serialises changes to the book, so the
broker's network thread and the API's threads never interleave half an update.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import redis
from pydantic import ValidationError

from central.incidents import Applied, Incident, IncidentBook
from central.store import RedisStore
from zones.alarm import Alarm

if TYPE_CHECKING:
    from central.metrics import CentralMetrics

log = logging.getLogger(__name__)

MAX_PAYLOAD = 64 * 1024


@dataclass(frozen=True)
class IngestResult:
    accepted: bool
    reason: str = ""
    applied: Applied | None = None


def site_from_topic(topic: str, prefix: str = "perimeter/v1") -> str | None:
    """``{prefix}/{site}/alarm/{camera}/{zone}/{kind}`` -> site, or None if not that shape."""
    if not topic.startswith(prefix + "/"):
        return None
    parts = topic[len(prefix) + 1:].split("/")
    if len(parts) != 5 or parts[1] != "alarm":
        return None
    return parts[0]


class Aggregator:
    """Incident book + Redis store behind one lock."""

    def __init__(self, store: RedisStore, book: IncidentBook | None = None, *,
                 known_zones: Collection[str] | None = None, prefix: str = "perimeter/v1",
                 clock: Callable[[], float] = time.time,
                 metrics: CentralMetrics | None = None, store_retry_s: float = 30.0):
        self.store = store
        self.store_retry_s = store_retry_s
        self.book = book or IncidentBook()
        self.known_zones = set(known_zones) if known_zones else None
        self.prefix = prefix
        self.clock = clock
        self.lock = threading.Lock()
        self.counts: Counter[str] = Counter()  # accepted, duplicate, and rejection reasons
        self.listeners: list[Callable[[Applied], None]] = []
        self.metrics = metrics
        self._ingesting = threading.local()
        self._batch_events = threading.local()  # perf_counter at the start of this thread's ingest
        if metrics is not None:
            metrics.attach(aggregator=self)

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Apply several messages with one Redis write at the end (``RedisStore.batch``).
        If that write fails, the events of the batch are forgotten by the book, so their
        redelivery (the stream entries stay unacknowledged) applies and stores them again."""
        events: list[str] = []
        self._batch_events.events = events
        try:
            with self.store.batch():
                yield
        except BaseException:
            with self.lock:
                for event_id in events:
                    self.book.unsee(event_id)
            raise
        finally:
            self._batch_events.events = None

    def restore(self) -> int:
        with self.lock:
            return self.store.load(self.book)

    def reject(self, payload: bytes, topic: str, reason: str) -> IngestResult:
        """Count a bad message by reason and keep it in the dead-letter stream."""
        code = reason.split(":")[0]
        self.counts[f"rejected:{code}"] += 1
        m = self.metrics
        if m is not None:
            m.rejected(code)
        try:
            self.store.dead_letter(payload, reason, topic)
        except Exception:  # the dead-letter stream must never take the intake down
            log.exception("cannot write dead letter", extra={"reason": reason})
        else:
            if m is not None:
                m.dead_letters.labels(code).inc()
        return IngestResult(False, reason)

    def parse(self, payload: bytes, topic: str) -> tuple[Alarm, str] | str:
        """The alarm and its site, or the reason it is rejected."""
        if len(payload) > MAX_PAYLOAD:
            return f"too_large: {len(payload)} bytes"
        site = site_from_topic(topic, self.prefix)
        if site is None:
            return f"bad_topic: {topic[:200]}"
        try:
            data = json.loads(payload)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            return f"bad_json: {exc}"
        if not isinstance(data, dict):
            return "bad_json: not an object"
        if data.get("schema") != "perimeter.alarm/1":
            return f"bad_schema: {str(data.get('schema'))[:100]}"
        try:
            alarm = Alarm.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            return f"invalid: {where}: {first['msg']}"[:500]
        if self.known_zones is not None and alarm.zone not in self.known_zones:
            return f"unknown_zone: {alarm.zone[:100]}"
        return alarm, site

    def ingest(self, payload: bytes, topic: str) -> IngestResult:
        """One message from an edge worker; never raises for bad input."""
        if self.metrics is None:
            return self._ingest(payload, topic, None)
        self._ingesting.started = time.perf_counter()
        try:
            return self._ingest(payload, topic, self.metrics)
        finally:
            self._ingesting.started = None

    def ingest_started(self) -> float | None:
        """``time.perf_counter()`` at the start of the ``ingest`` running in this thread
        (listeners use it to time their effects); None outside one or without metrics."""
        return getattr(self._ingesting, "started", None)

    def _ingest(self, payload: bytes, topic: str, m: CentralMetrics | None) -> IngestResult:
        received = self.clock() if m is not None else 0.0
        parsed = self.parse(payload, topic)
        if isinstance(parsed, str):
            return self.reject(payload, topic, parsed)
        alarm, site = parsed
        with self.lock:
            applied = self.book.apply(alarm, site, incident_id=str(uuid.uuid4()))
            if applied is None:
                self.counts["orphan_clear"] += 1
                if m is not None:
                    m.orphan_clear.inc()
                return IngestResult(False, "orphan_clear")
            if applied.duplicate:
                self.counts["duplicate"] += 1
                if m is not None:
                    m.duplicate.inc()
                return IngestResult(True, "duplicate", applied)
            batch_events: list[str] | None = getattr(self._batch_events, "events", None)
            if batch_events is not None:
                batch_events.append(alarm.event_id)
            try:
                self.record("alarm", applied.incident, json.loads(alarm.to_json()))
            except Exception:
                # Not stored: forget the event so the broker's redelivery is applied again.
                self.book.unsee(alarm.event_id)
                if m is not None:
                    m.error.inc()
                raise
            self.counts["accepted"] += 1
        if m is not None:
            m.accepted.inc()
            m.alarms.labels(alarm.kind.value, alarm.zone).inc()
            m.edge_to_intake.observe(max(0.0, received - alarm.time))
            if applied.new_incident:
                m.incidents_opened.labels(site, applied.incident.zone).inc()
        for listener in self.listeners:
            listener(applied)
        return IngestResult(True, "", applied)

    def record(self, kind: str, inc: Incident, data: dict[str, Any]) -> None:
        """Persist one change, riding out a Redis restart (call with the lock held).

        Retries for up to ``store_retry_s``; after an outage every incident in memory is
        written again, so a Redis that came back empty (no persistence, or a failover to a
        fresh replica) holds the whole book again without restarting the aggregator.
        """
        deadline = time.monotonic() + self.store_retry_s
        delay, failed = 0.05, False
        while True:
            try:
                if failed:
                    n = self.store.resync(self.book)
                    log.warning("redis back: incidents written again", extra={"incidents": n})
                self.store.record(kind, inc, data)
                return
            except (redis.ConnectionError, redis.TimeoutError):
                if time.monotonic() + delay > deadline:
                    raise
                failed = True
                log.warning("redis unavailable, retrying", extra={"in_s": delay})
                time.sleep(delay)
                delay = min(delay * 2, 2.0)

    def acknowledge(self, incident_id: str, who: str) -> Incident:
        with self.lock:
            inc = self.book.acknowledge(incident_id, who, self.clock())
            self.record("acknowledged", inc, {"by": who})
            return inc

    def resolve(self, incident_id: str, who: str, note: str) -> Incident:
        with self.lock:
            inc = self.book.resolve(incident_id, who, note, self.clock())
            self.record("resolved", inc, {"by": who, "note": note})
            return inc

    def incidents(self) -> list[Incident]:
        with self.lock:
            return sorted(self.book.incidents.values(), key=lambda i: -i.opened_at)
