"""The aggregator: merges checked alarms into incidents and persists every change.

Transport-agnostic: the incident worker hands it alarms the intake's gate already checked
(``central.intake.validate``), the HTTP API calls ``acknowledge``/``resolve``. One lock
serialises changes to the book, so the worker thread and the API's threads never interleave
half an update.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import redis

from central.incidents.book import Applied, Incident, IncidentBook
from central.incidents.store import Ack, RedisStore
from zones.alarm import Alarm

if TYPE_CHECKING:
    from central.metrics import CentralMetrics

log = logging.getLogger(__name__)

FLAG_LOG_S = 300.0


@dataclass(frozen=True)
class IngestResult:
    accepted: bool
    reason: str = ""
    applied: Applied | None = None


class Aggregator:
    """Incident book + Redis store behind one lock."""

    def __init__(self, store: RedisStore, book: IncidentBook | None = None, *,
                 clock: Callable[[], float] = time.time,
                 metrics: CentralMetrics | None = None, store_retry_s: float = 30.0):
        self.store = store
        self.store_retry_s = store_retry_s
        self.book = book or IncidentBook()
        self.clock = clock
        self.lock = threading.Lock()
        # accepted, duplicate, orphan_clear, time:<flag>; the gate adds its rejections here
        self.counts: Counter[str] = Counter()
        self.listeners: list[Callable[[Applied], None]] = []
        self.metrics = metrics
        self._applying = threading.local()
        self._batch_events = threading.local()  # event ids applied in this thread's batch
        self._flag_logged: dict[tuple[str, str, str], float] = {}
        if metrics is not None:
            metrics.attach(aggregator=self)

    @contextmanager
    def batch(self, ack: Ack | None = None) -> Iterator[None]:
        """Apply several messages with one Redis write at the end (``RedisStore.batch``),
        which also acknowledges ``ack``'s stream entries. If that write fails (Redis down, or
        fenced out), the events of the batch are forgotten by the book, so their redelivery
        (the stream entries stay unacknowledged) applies and stores them again."""
        events: list[str] = []
        self._batch_events.events = events
        try:
            with self.store.batch(ack):
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

    def apply(self, alarm: Alarm, site: str, arrived: float | None = None) -> IngestResult:
        """One checked alarm from an edge of ``site`` that reached the central at ``arrived``
        (its clock; default: now): merged, stored, listeners told."""
        when = self.clock() if arrived is None else arrived
        if self.metrics is None:
            return self._apply(alarm, site, when, None)
        self._applying.started = time.perf_counter()
        try:
            return self._apply(alarm, site, when, self.metrics)
        finally:
            self._applying.started = None

    def apply_started(self) -> float | None:
        """``time.perf_counter()`` at the start of the ``apply`` running in this thread
        (listeners use it to time their effects); None outside one or without metrics."""
        return getattr(self._applying, "started", None)

    def _apply(self, alarm: Alarm, site: str, arrived: float,
               m: CentralMetrics | None) -> IngestResult:
        with self.lock:
            applied = self.book.apply(alarm, site, incident_id=str(uuid.uuid4()),
                                      arrived=arrived)
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
            if applied.flag is not None:
                self.counts[f"time:{applied.flag}"] += 1
        if applied.flag is not None:
            self._log_flag(applied.flag, alarm, site, arrived)
        if m is not None:
            m.accepted.inc()
            m.alarms.labels(alarm.kind.value, alarm.zone).inc()
            m.edge_to_intake.observe(max(0.0, arrived - alarm.time))
            if applied.flag is not None:
                m.time_flags.labels(applied.flag).inc()
            if applied.new_incident:
                m.incidents_opened.labels(site, applied.incident.zone).inc()
        for listener in self.listeners:
            listener(applied)
        return IngestResult(True, "", applied)

    def _log_flag(self, flag: str, alarm: Alarm, site: str, arrived: float) -> None:
        """Log a flagged alarm time, once per site, camera and flag every ``FLAG_LOG_S`` (an
        outbox emptying after an outage delivers thousands of late alarms at once)."""
        key = (site, alarm.camera, flag)
        now = time.monotonic()
        last = self._flag_logged.get(key)
        if last is not None and now - last < FLAG_LOG_S:
            return
        if len(self._flag_logged) > 10_000:
            self._flag_logged.clear()
        self._flag_logged[key] = now
        log.warning("alarm time far from its arrival (edge clock or a late delivery)", extra={
            "flag": flag, "site": site, "camera": alarm.camera, "zone": alarm.zone,
            "event_id": alarm.event_id, "alarm_time": alarm.time,
            "arrived": round(arrived, 3), "skew_s": round(alarm.time - arrived, 3)})

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
