"""MQTT alarm sink: every alarm event to the broker, at least once, surviving outages.

One message per alarm event on ``wire.topics.alarm`` (``perimeter/v2/{site}/alarm/{edge}/
{camera}/{zone}/{kind}``: the broker's ACL lets an edge publish only under its own id), QoS 1,
not retained; the payload is ``Alarm.to_json()`` (schema ``perimeter.alarm/1``). Consumers
deduplicate on the payload's ``event_id``. The connection and the edge's availability status
are ``edge.uplink.session``'s; the optional outbox and its replay ``edge.uplink.backlog``'s.

Without an outbox, paho queues every publish in memory while the link is down and sends it
after the reconnect, so ``emit`` never drops an alarm; what is still pending when the
process exits is lost (``close`` waits up to ``publish_timeout_s`` and logs a warning). With
an outbox (``outbox=Path``) alarms survive the process: stored on disk first, deleted on
PUBACK, replayed in order after a restart. If the outbox refuses an alarm (full, disk error)
``emit`` logs an error and publishes it from memory, rather than stopping the pipeline.

Counters: ``pending`` alarms handed to paho and not yet acknowledged (replayed ones
included), ``published`` every PUBACK of an alarm in this process (replays of an earlier
run's included), ``backlog`` alarms stored and not yet acknowledged (in flight, waiting for
the link, or left by an earlier run). ``flush`` waits for ``pending`` and ``backlog`` to reach
0; ``close`` leaves what is not acknowledged in the outbox for the next start.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from paho.mqtt.enums import MQTTErrorCode

from edge.config import LoadedConfig, mqtt_broker
from edge.uplink.backlog import Backlog
from edge.uplink.outbox import DEFAULT_MAX_ENTRIES, Entry
from edge.uplink.session import PublishError, Session
from wire import topics
from wire.client import Broker
from zones.alarm import Alarm

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Flight:
    """An alarm publish handed to paho and not yet acknowledged."""

    event_id: str
    stored: bool  # in the outbox: delete it on PUBACK
    replayed: bool = False  # sent by the replay thread (counts against its window)


class MqttSink:
    """Publish alarms (QoS 1) and this edge's availability (retained) to an MQTT broker."""

    def __init__(self, host: str = "127.0.0.1", port: int = 1883, *, edge_id: str,
                 site: str = "default", qos: int = 1, username: str | None = None,
                 password: str | None = None, client_id: str | None = None,
                 connect_timeout_s: float = 10.0, publish_timeout_s: float = 10.0,
                 outbox: Path | None = None, outbox_max_entries: int = DEFAULT_MAX_ENTRIES,
                 require_connection: bool = True, broker: Broker | None = None):
        if qos not in (1, 2):
            raise ValueError(f"qos must be 1 or 2 for alarms (at least once), got {qos}")
        self.qos = qos
        self.require_connection = require_connection  # the default of ``open``
        self.publish_timeout_s = publish_timeout_s
        # ``broker`` (TLS, credentials) replaces host, port, username and password
        broker = broker if broker is not None else Broker(host, port, username, password)
        self.session = Session(broker, edge_id=edge_id,
                               site=site, client_id=client_id,
                               connect_timeout_s=connect_timeout_s,
                               publish_timeout_s=publish_timeout_s)
        self.session.on_acked = self._acked
        self.session.on_link = self._link
        self.site, self.edge_id = self.session.site, self.session.edge_id
        self.client_id, self.status_topic = self.session.client_id, self.session.status_topic
        self.outbox_path = Path(outbox) if outbox is not None else None
        self._backlog = (Backlog(self.outbox_path, outbox_max_entries, self._replay)
                         if self.outbox_path is not None else None)

    @classmethod
    def from_config(cls, loaded: LoadedConfig, *, require_connection: bool = True) -> MqttSink:
        """The sink the config's ``mqtt`` section describes (not opened)."""
        m = loaded.config.mqtt
        outbox = loaded.output_path(m.outbox) if m.outbox is not None else None
        return cls(edge_id=loaded.config.edge.id, site=loaded.config.site.id,
                   broker=mqtt_broker(loaded), outbox=outbox,
                   outbox_max_entries=m.outbox_max_entries,
                   require_connection=require_connection)

    # -- counters ------------------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Alarms handed to the client and not yet acknowledged by the broker."""
        return self.session.in_flight

    @property
    def published(self) -> int:
        """Alarms acknowledged by the broker (PUBACK) in this process, replays included."""
        return self.session.acked

    @property
    def backlog(self) -> int:
        """Alarms stored in the outbox and not yet acknowledged (0 without an open outbox)."""
        return len(self._backlog) if self._backlog is not None else 0

    @property
    def connected(self) -> bool:
        return self.session.connected

    def publish_retained(self, topic: str, payload: str) -> None:
        """A retained QoS 1 message on this sink's connection (a live camera's status): not
        an alarm, so not counted nor stored; paho queues it while the link is down."""
        self.session.publish_retained(topic, payload)

    # -- AlarmSink -----------------------------------------------------------------------------

    def open(self, *, require_connection: bool | None = None) -> None:
        """Open the outbox (if any), connect and start the network thread; ``ConnectionError``
        naming the broker when it refuses, or, with ``require_connection`` (the default for
        replays), does not answer within ``connect_timeout_s``. A 24/7 edge worker opens
        with ``require_connection=False``: alarms wait until the broker answers."""
        if require_connection is None:
            require_connection = self.require_connection
        if self._backlog is not None:
            self._backlog.open()
        try:
            self.session.open(require_connection=require_connection)
        except BaseException:
            if self._backlog is not None:
                self._backlog.close(self.publish_timeout_s)
            raise

    def emit(self, alarm: Alarm) -> None:
        """Publish one alarm; queued in memory (never dropped) while the broker is away.
        With an outbox: stored on disk first, then published unless the replay has to send
        it (link down, or older alarms still to go out)."""
        if not self.session.opened:
            raise RuntimeError("MqttSink not opened")
        topic = topics.alarm(self.site, alarm.camera, alarm.zone, alarm.kind.value,
                             edge=self.edge_id)
        payload = alarm.to_json().encode("utf-8")
        backlog = self._backlog
        stored = backlog is not None and backlog.store(alarm.event_id, topic, payload)
        if stored and backlog is not None and backlog.defer(alarm.event_id):
            level = logging.DEBUG if self.connected else logging.WARNING
            log.log(level, "alarm stored in the outbox, the replay sends it", extra={
                "event_id": alarm.event_id, "topic": topic, "backlog": self.backlog})
            return
        try:
            rc = self._publish(topic, payload, _Flight(alarm.event_id, stored))
        except PublishError:
            if not stored or backlog is None:
                raise
            log.error("mqtt publish of a stored alarm failed, left to the replay", exc_info=True,
                      extra={"event_id": alarm.event_id, "topic": topic})
            backlog.rescan()
            return
        if rc == MQTTErrorCode.MQTT_ERR_NO_CONN:
            log.warning("mqtt disconnected, alarm queued", extra={
                "event_id": alarm.event_id, "topic": topic, "pending": self.pending})
        else:
            log.debug("alarm published", extra={"event_id": alarm.event_id, "topic": topic})

    def _publish(self, topic: str, payload: bytes, flight: _Flight) -> MQTTErrorCode:
        """Hand one alarm to the session; a stored alarm's claim is released if that fails."""
        try:
            return self.session.publish(topic, payload, flight=flight, qos=self.qos).rc
        except BaseException:
            if flight.stored and self._backlog is not None:
                self._backlog.release(flight.event_id)
            raise

    def _replay(self, entry: Entry) -> None:
        """The backlog's way out: one stored alarm, claimed by the replay thread."""
        self._publish(entry.topic, entry.payload, _Flight(entry.event_id, True, replayed=True))

    def _acked(self, flight: _Flight) -> None:
        """The session's ``on_acked``: a stored alarm is deleted before the session counts
        it, so that a ``flush`` that sees the count also sees the outbox without it."""
        if flight.stored and self._backlog is not None:
            self._backlog.acked(flight.event_id, flight.replayed)

    def _link(self, up: bool) -> None:
        if self._backlog is not None:
            self._backlog.link(up)

    def flush(self, timeout_s: float | None = None) -> bool:
        """Wait until every emitted alarm is acknowledged; True if none is left pending (nor,
        with an outbox, stored: replays of an earlier run's alarms included)."""
        timeout = self.publish_timeout_s if timeout_s is None else timeout_s
        return self.session.wait_for(lambda: self.pending == 0 and self.backlog == 0, timeout)

    def close(self) -> None:
        """Deliver what is pending (bounded), announce offline, disconnect cleanly. With an
        outbox, what is not acknowledged stays stored and goes out after the next ``open``."""
        if not self.session.opened:
            return
        start = time.monotonic()
        if not self.flush():
            if self._backlog is not None:
                log.warning("mqtt close: alarms not acknowledged, kept in the outbox", extra={
                    "pending": self.pending, "backlog": self.backlog,
                    "path": str(self.outbox_path), "timeout_s": self.publish_timeout_s})
            else:
                log.warning("mqtt close: alarms not acknowledged, lost", extra={
                    "pending": self.pending, "timeout_s": self.publish_timeout_s})
        if self._backlog is not None:
            self._backlog.stop(self.publish_timeout_s)
        self.session.close(start)
        backlog = self.backlog
        if self._backlog is not None:
            self._backlog.close(self.publish_timeout_s)
        log.info("mqtt sink closed", extra={"published": self.published,
                                            "pending": self.pending, "backlog": backlog})
