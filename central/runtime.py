"""The running aggregator: intake, plans, speakers, notifiers, escalation, the HTTP API.

``Central`` wires the pure parts (incident book, planner) to the I/O (MQTT intake and
speaker commands, Redis store and outboxes, HTTP API). A new incident triggers its plan's
first step (alarms merged into it later do not speak again: that is what merging is for); a
ticker escalates incidents nobody acknowledged in time
and applies retention. Every effect is recorded in the incident's event log.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Any

import paho.mqtt.client as mqtt
import redis
from paho.mqtt.enums import CallbackAPIVersion

from central.config import CentralConfig
from central.incidents import Applied, IncidentBook
from central.intake import MqttIntake
from central.metrics import CentralMetrics
from central.notify import build_notifiers
from central.plans import Notification, Planner, SpeakerCommand
from central.service import Aggregator
from central.speaker import command_payload, command_topic
from central.store import RedisStore

log = logging.getLogger(__name__)


class Central:
    """One aggregator process."""

    def __init__(self, config: CentralConfig, redis_url: str, mqtt_host: str, mqtt_port: int,
                 *, ns: str = "perimeter", client_id: str = "perimeter-central",
                 share_group: str | None = None, metrics: CentralMetrics | None = None):
        settings = config.central
        self.config = config
        self.redis = redis.Redis.from_url(redis_url)
        self.store = RedisStore(self.redis, ns=ns, retention_s=settings.retention_days * 86400)
        book = IncidentBook(settings.merge_window_s, settings.neighbours)
        self.metrics = metrics
        self.aggregator = Aggregator(self.store, book, known_zones=settings.known_zones,
                                     metrics=metrics)
        self.planner = Planner(config)
        self.intake = MqttIntake(self.aggregator, mqtt_host, mqtt_port, client_id=client_id,
                                 share_group=share_group)
        self.publisher = mqtt.Client(CallbackAPIVersion.VERSION2,
                                     client_id=f"{client_id}-out", clean_session=False)
        self.mqtt_addr = (mqtt_host, mqtt_port)
        self.notifiers = build_notifiers(list(config.notifiers), self.redis, ns,
                                         mqtt_host, mqtt_port)
        self.aggregator.listeners.append(self._on_applied)
        self._stop = threading.Event()
        self._ticker = threading.Thread(target=self._tick_loop, name="central-ticker",
                                        daemon=True)
        self.commands_sent = 0
        if metrics is not None:
            metrics.attach(intake=self.intake, notifiers=self.notifiers)

    def start(self) -> None:
        restored = self.aggregator.restore()
        log.info("central restored incidents from redis", extra={"incidents": restored})
        self.publisher.connect_async(*self.mqtt_addr)
        self.publisher.loop_start()
        for n in self.notifiers.values():
            n.start()
        self.intake.start()
        self._ticker.start()

    def stop(self) -> None:
        self._stop.set()
        self.intake.stop()
        for n in self.notifiers.values():
            n.stop()
        self.publisher.disconnect()
        self.publisher.loop_stop()
        self._ticker.join(timeout=5)

    def _on_applied(self, applied: Applied) -> None:
        if applied.new_incident:
            inc = applied.incident
            self.execute(inc.site, self.planner.on_incident(inc, time.time()),
                         started=self.aggregator.ingest_started())

    def execute(self, site: str, effects: list[SpeakerCommand | Notification], *,
                started: float | None = None) -> None:
        """Send speaker commands over MQTT and queue notifications in their outboxes.

        ``started``: ``time.perf_counter()`` when the triggering message's ingest began (for
        the intake-to-speaker-command latency metric).
        """
        m = self.metrics
        for eff in effects:
            if isinstance(eff, SpeakerCommand):
                cid = str(uuid.uuid4())
                self.publisher.publish(command_topic(site, eff.speaker),
                                       command_payload(eff, cid, time.time()), qos=1)
                if m is not None:
                    if started is not None:
                        m.intake_to_command.observe(time.perf_counter() - started)
                    m.speaker_commands.labels(eff.speaker).inc()
                self.commands_sent += 1
                self._log_effect(eff.incident, "speaker_command",
                                 {"speaker": eff.speaker, "command_id": cid, "level": eff.level})
            else:
                key = f"{eff.incident}:{eff.payload['escalation_level']}:{eff.notifier}"
                self.notifiers[eff.notifier].enqueue(eff.payload, key)
                if m is not None:
                    m.notifications.labels(eff.notifier).inc()
                self._log_effect(eff.incident, "notification",
                                 {"notifier": eff.notifier, "idempotency_key": key})

    def _log_effect(self, incident_id: str, kind: str, data: dict[str, Any]) -> None:
        with self.aggregator.lock:
            inc = self.aggregator.book.incidents.get(incident_id)
            if inc is not None:
                self.store.record(kind, inc, data)

    def tick(self, now: float) -> None:
        """Escalate what nobody acknowledged in time; apply retention once an hour."""
        s = self.config.central
        with self.aggregator.lock:
            due = self.aggregator.book.due_escalations(now, s.ack_timeout_s,
                                                       s.escalation_repeat_s)
            for inc in due:
                self.store.record("escalated", inc, {"level": inc.escalation_level})
        for inc in due:
            if self.metrics is not None:
                self.metrics.escalations.labels(inc.risk).inc()
            self.execute(inc.site, self.planner.on_escalation(inc, now))

    def _tick_loop(self) -> None:
        last_trim = 0.0
        while not self._stop.wait(1.0):
            now = time.time()
            try:
                self.tick(now)
                if now - last_trim > 3600:
                    with self.aggregator.lock:
                        self.store.trim(self.aggregator.book, now)
                    last_trim = now
            except redis.RedisError:
                log.exception("central tick failed; retrying")
