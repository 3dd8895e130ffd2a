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
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import redis

from central.clock import RedisClock
from central.config import CentralConfig
from central.feedback import SpeakerFeedback
from central.incidents.aggregator import Aggregator
from central.incidents.book import Applied, IncidentBook, TimePolicy
from central.incidents.ops import IncidentOps
from central.incidents.store import RedisStore, event_fields
from central.incidents.worker import StreamWorker
from central.intake.mqtt import MqttIntake
from central.intake.streamer import StreamIntake
from central.intake.validate import AlarmGate
from central.metrics import CentralMetrics
from central.notify.notifiers import build_notifiers
from central.notify.webhook import WebhookNotifier
from central.plans import Notification, Planner, SpeakerCommand
from central.registry import Registry
from central.speakers import HttpSpeaker, command_payload
from central.streams import DEFAULT_PARTITIONS, FencedOut, PartitionKeys
from central.upkeep import Upkeep
from wire import topics
from wire.client import Broker, connect, disconnect, make_client
from wire.signing import CommandSigner

log = logging.getLogger(__name__)


class Central:
    """One aggregator process."""

    def __init__(self, config: CentralConfig, redis_url: str, broker: Broker,
                 *, ns: str = "perimeter", client_id: str = "perimeter-central",
                 share_group: str | None = None, metrics: CentralMetrics | None = None,
                 worker_id: str | None = None, partitions: int = DEFAULT_PARTITIONS,
                 lease_s: float = 10.0, signer: CommandSigner | None = None,
                 registry: Registry | None = None):
        """``signer`` signs speaker commands (``wire.signing``). ``registry``: the sites
        served; default: read from ``config.central.sites``. A central with neither a
        registry nor ``accept_any_site`` (nor the deprecated ``known_zones``) would take any
        alarm on trust: ``ValueError``."""
        settings = config.central
        self.signer = signer  # signs every speaker command (wire.signing); None: unsigned
        self.config = config
        self.redis = redis.Redis.from_url(redis_url)
        self.clock = RedisClock(self.redis)
        self.registry = registry if registry is not None else (
            Registry.load(settings.sites) if settings.sites else None)
        if self.registry is None and not settings.accept_any_site:
            if settings.known_zones is None:
                raise ValueError("no sites registered: name the sites' edge config files in "
                                 "central.sites (a lab may set accept_any_site: true)")
            log.warning("central.known_zones is deprecated: name the sites' edge configs in "
                        "central.sites (site and camera are not checked meanwhile)")
        self.store = RedisStore(self.redis, ns=ns, retention_s=settings.retention_days * 86400,
                                deadletter_max_entries=settings.deadletter.max_entries,
                                deadletter_payload_bytes=settings.deadletter.payload_bytes)
        clock = settings.clock
        book = IncidentBook(settings.merge_window_s, settings.neighbours,
                            TimePolicy(clock.late_s, clock.past_s, clock.future_s))
        self.metrics = metrics
        self.aggregator = Aggregator(self.store, book, metrics=metrics, clock=self.clock)
        self.gate = AlarmGate(self.store.dead_letter, registry=self.registry,
                              known_zones=settings.known_zones, counts=self.aggregator.counts,
                              metrics=metrics)
        self.planner = Planner(config)
        keys = PartitionKeys(ns, partitions)
        self.worker = StreamWorker(self.aggregator, keys, worker_id or client_id,
                                   lease_s=lease_s)
        self.stream_intake = StreamIntake(self.gate, self.redis, keys, book.group_of)
        self.ops = IncidentOps(self.aggregator, keys, self.worker)
        self.intake = MqttIntake(self.stream_intake, broker, clock=self.clock,
                                 client_id=client_id, share_group=share_group)
        self.broker = broker
        self.publisher = make_client(broker, f"{client_id}-out", persistent=True,
                                     logger=f"{__name__}.paho")
        self.upkeep = Upkeep(self.clock, self.redis, keys, self.publisher, self.registry,
                             publish_s=clock.publish_s, backlog_warn=settings.backlog_warn,
                             worker_id=worker_id or client_id)
        self.notifiers = build_notifiers(list(config.notifiers), self.redis, ns, broker,
                                         consumer=worker_id or client_id)
        self.http_speakers = {s.id: HttpSpeaker(s.id, s.http_url, signer=signer)
                              for s in config.speakers if s.http_url}
        self._http_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="http-speaker")
        self.aggregator.listeners.append(self._on_applied)
        self._stop = threading.Event()
        self._ticker = threading.Thread(target=self._tick_loop, name="central-ticker",
                                        daemon=True)
        self.commands_sent = 0
        self.mode_key = f"{ns}:mode"
        self.feedback = SpeakerFeedback(
            self._log_effect, (lambda spk, s: metrics.command_to_playback.labels(spk).observe(s))
            if metrics is not None else None)
        self.publisher.on_connect = lambda client, *_: self.feedback.subscribe(client)
        if metrics is not None:
            for n in self.notifiers.values():
                if isinstance(n, WebhookNotifier):
                    n.on_delivered = lambda nid, s: metrics.notification_delivery.labels(
                        nid).observe(s)
            metrics.attach(intake=self.intake, worker=self.worker, notifiers=self.notifiers,
                           upkeep=self.upkeep)

    def start(self) -> None:
        """Workers first (they load their partitions' incidents), then the intake."""
        try:
            self.clock.sync(force=True)
        except redis.RedisError as exc:  # the worker's start reports Redis down properly
            log.warning("central clock not set from redis yet", extra={"error": str(exc)})
        connect(self.publisher, self.broker)
        for n in self.notifiers.values():
            n.start()
        self._sync_mode()
        self.worker.start()
        log.info("central worker started", extra={
            "worker": self.worker.worker_id, "partitions": sorted(self.worker.owned),
            "incidents": len(self.aggregator.book.incidents)})
        self.intake.start()
        self._ticker.start()

    def stop(self) -> None:
        self._stop.set()
        self.intake.stop()
        self.worker.stop()
        for n in self.notifiers.values():
            n.stop()
        disconnect(self.publisher)
        self._ticker.join(timeout=5)
        self._http_pool.shutdown(wait=False, cancel_futures=True)

    def _on_applied(self, applied: Applied) -> None:
        """A new incident runs its plan's first step; so does a late incident that a timely
        alarm just joined (someone is there now, and it never spoke)."""
        if applied.new_incident or applied.now_timely:
            inc = applied.incident
            self.execute(inc.site, self.planner.on_incident(inc, self.clock()),
                         started=self.aggregator.apply_started())

    def execute(self, site: str, effects: list[SpeakerCommand | Notification], *,
                started: float | None = None) -> None:
        """Send speaker commands over MQTT and queue notifications in their outboxes.

        ``started``: ``time.perf_counter()`` when the triggering alarm's apply began (for
        the intake-to-speaker-command latency metric).
        """
        m = self.metrics
        for eff in effects:
            if isinstance(eff, SpeakerCommand):
                cid = str(uuid.uuid4())
                http = self.http_speakers.get(eff.speaker)
                if http is not None:
                    self._http_pool.submit(self._send_http, http, eff, cid, site)
                else:
                    self.feedback.sent(cid, eff.incident, eff.speaker)
                    body = command_payload(eff, cid, time.time(), site=site, signer=self.signer)
                    self.publisher.publish(topics.speaker_command(site, eff.speaker), body, qos=1)
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

    def _send_http(self, speaker: HttpSpeaker, cmd: SpeakerCommand, cid: str,
                   site: str) -> None:
        """POST to an IP speaker off the worker thread (it retries with backoff); the
        outcome goes to the incident's log, a failure also to the warning log."""
        try:
            ok = speaker.send(cmd, cid, site)
        except Exception:
            log.exception("http speaker send crashed", extra={"speaker": speaker.speaker_id})
            ok = False
        try:
            self._log_effect(cmd.incident, "speaker_http", {
                "speaker": speaker.speaker_id, "command_id": cid, "delivered": ok})
        except redis.RedisError:
            log.warning("cannot log http speaker outcome", extra={"command_id": cid})

    def _log_effect(self, incident_id: str, kind: str, data: dict[str, Any]) -> None:
        with self.aggregator.lock:
            inc = self.aggregator.book.incidents.get(incident_id)
            if inc is not None:
                self.store.record(kind, inc, data)

    def current_mode(self) -> str | None:
        return self.planner.mode

    def available_modes(self) -> list[str]:
        return sorted(self.config.modes)

    def switch_mode(self, mode: str | None, who: str) -> None:
        """Switch to an emergency plan set now; the other workers follow within a tick
        (they read ``{ns}:mode``). Logged in the event stream with who switched."""
        self.planner.set_mode(mode)
        pipe = self.redis.pipeline(transaction=True)
        if mode is None:
            pipe.delete(self.mode_key)
        else:
            pipe.set(self.mode_key, mode)
        pipe.xadd(self.store.events_key, event_fields("mode", "", {"mode": mode, "by": who}))
        pipe.execute()
        log.warning("emergency mode switched", extra={"mode": mode, "by": who})

    def _sync_mode(self) -> None:
        raw = self.redis.get(self.mode_key)
        mode = raw.decode() if isinstance(raw, bytes) else None
        if mode != self.planner.mode:
            try:
                self.planner.set_mode(mode)
            except KeyError:
                log.error("unknown emergency mode in redis; keeping the current plans",
                          extra={"mode": mode})
                return
            log.warning("emergency mode now in force", extra={"mode": mode})

    def tick(self, now: float) -> None:
        """Follow the shared emergency mode; escalate what nobody acknowledged in time (on
        the central's clock: ``now``)."""
        self._sync_mode()
        s = self.config.central
        escalated = []
        with self.aggregator.lock:
            due = self.aggregator.book.due_escalations(now, s.ack_timeout_s,
                                                       s.escalation_repeat_s)
            for inc in due:
                try:
                    self.store.record("escalated", inc, {"level": inc.escalation_level})
                except FencedOut:  # another worker owns it now; it escalates there
                    inc.escalation_level -= 1
                    inc.escalated_at = None
                    continue
                escalated.append(inc)
        for inc in escalated:
            if self.metrics is not None:
                self.metrics.escalations.labels(inc.risk).inc()
            self.execute(inc.site, self.planner.on_escalation(inc, now))

    def _tick_loop(self) -> None:
        """Escalations, retention, then the upkeep chores, each on its own so that one
        failing (Redis down, a bug) never holds up the others for good."""
        last_trim = 0.0
        while not self._stop.wait(1.0):
            for name, chore in (("tick", self._tick_once), ("upkeep", self.upkeep.run)):
                try:
                    chore()
                except redis.RedisError:
                    log.exception("central chore failed; retrying", extra={"chore": name})
                except Exception:  # a bug in one chore must not end escalations for good
                    log.exception("central chore failed unexpectedly; continuing",
                                  extra={"chore": name})
            now = self.clock()
            if now - last_trim > 3600:
                try:
                    with self.aggregator.lock:
                        self.store.trim(self.aggregator.book, now)
                    last_trim = now
                except redis.RedisError:
                    log.exception("retention trim failed; retrying")

    def _tick_once(self) -> None:
        self.tick(self.clock())
