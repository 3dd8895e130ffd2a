"""Radar intake: track messages from MQTT through the ground fences, fused with the cameras.

``RadarWorker`` subscribes (paho-mqtt 2.x, QoS 1, clean session: a radar position from before
a reconnect is stale by definition) to every configured radar's topic. paho's network thread
only stamps the arrival time and puts the payload in a bounded queue (full: the message is
dropped and counted as ``overflow``, never blocking the link); one rules thread validates
each message (``zones.radar.RadarMessage``), admits it (late, out of order, duplicate, out of
coverage: ``zones.radar_rules``), steps the radar's ground-fence rules and hands the alarm
events to ``emit``. Nothing a radar sends can stop the thread: every message ends up counted
once, as ``accepted`` or under one drop reason (``counts``), and a bug in handling one message
is logged and counted as ``error``.

Fusion: the edge worker calls ``on_tracks`` with each camera's tracked people after every
frame. The foot points go through that camera's ground-plane calibration to site metres and
are kept as the camera's latest view (cameras without a calibration are skipped); when a
radar alarm rises, ``zones.fusion`` matches its track against those views, and a match makes
the alarm ``fused``.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from pydantic import ValidationError

from edge.config import LoadedConfig, mqtt_broker
from edge.radar.ground import load_ground
from edge.radar.metrics import RadarMetrics, default_radar_metrics
from wire.client import Broker, connect, disconnect, make_client
from zones.alarm import Alarm
from zones.calibration import GroundPlane
from zones.config import CalibrationConfig
from zones.fusion import CameraView
from zones.geometry import GeometryError, to_pixels
from zones.profiles import Schedule
from zones.radar import RadarMessage
from zones.radar_config import FusionConfig, GroundSite
from zones.radar_rules import Drop, RadarRules
from zones.tracks import Detections

log = logging.getLogger(__name__)

MAX_PAYLOAD = 4096  # bytes; a track update is ~200: anything bigger is not one
ACCEPTED = "accepted"
Emit = Callable[[Alarm], None]


class RadarWorker:
    """Radar messages in, radar and fused alarms out (see the module docstring)."""

    def __init__(self, site: GroundSite, *, schedule: Schedule,
                 fusion: FusionConfig | None = None,
                 calibrations: Mapping[str, CalibrationConfig] | None = None,
                 host: str = "127.0.0.1", port: int = 1883, username: str | None = None,
                 password: str | None = None, client_id: str | None = None,
                 metrics: RadarMetrics | None = None, clock: Callable[[], float] = time.time,
                 queue_size: int = 10_000, tick_s: float = 0.25, broker: Broker | None = None):
        self.site = site
        self.host, self.port = host, port
        self.clock = clock
        self.tick_s = tick_s
        self.metrics = metrics if metrics is not None else default_radar_metrics()
        self.rules = {rid: RadarRules(r, site.zones_of(rid), schedule, site.origin, fusion)
                      for rid, r in site.radars.items()}
        self._topics = {r.topic: rid for rid, r in site.radars.items()}
        self._calibrations = dict(calibrations or {})
        self._planes: dict[str, tuple[tuple[int, int], GroundPlane | None]] = {}
        self._views: dict[str, CameraView] = {}
        self._views_lock = threading.Lock()
        self._queue: queue.Queue[tuple[str, bytes, float, float]] = queue.Queue(queue_size)
        self._counts: Counter[str] = Counter()
        self._counts_lock = threading.Lock()
        self._received = 0
        self._stop = threading.Event()
        self._subscribed = threading.Event()
        self._thread: threading.Thread | None = None
        self._emit: Emit | None = None
        self.client_id = client_id or f"perimeter-radar-{os.getpid()}-{id(self):x}"
        # ``broker`` (TLS, credentials) replaces host, port, username and password
        self._broker = broker if broker is not None else Broker(host, port, username, password)
        self.host, self.port = self._broker.host, self._broker.port
        # clean session: a radar position from before a reconnect is stale by definition
        self._client = make_client(self._broker, self.client_id, persistent=False,
                                   logger=f"{__name__}.paho")
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message

    @classmethod
    def from_config(cls, loaded: LoadedConfig, **kwargs: Any) -> RadarWorker:
        """Everything from the edge config: radars, ground fences, fusion, cameras'
        calibrations and the broker (``mqtt.host``/``port``); ``kwargs`` override."""
        cfg = loaded.config
        opts: dict[str, Any] = {
            "schedule": Schedule(cfg.periods, cfg.site.timezone), "fusion": cfg.fusion,
            "calibrations": {c.id: c.calibration for c in cfg.cameras if c.calibration},
            "broker": mqtt_broker(loaded)}
        return cls(load_ground(loaded), **{**opts, **kwargs})

    # -- the edge worker's protocol ------------------------------------------------------------

    def start(self, emit: Emit) -> None:
        """Connect (in the background: a broker that is down is retried), subscribe, and start
        the rules thread. ``emit`` must be thread-safe."""
        self._emit = emit
        self._thread = threading.Thread(target=self._run, name="radar-rules", daemon=True)
        self._thread.start()
        connect(self._client, self._broker)
        log.info("radar intake started", extra={
            "host": self.host, "port": self.port, "topics": sorted(self._topics)})

    def on_tracks(self, tracks: Detections) -> None:
        """Keep one camera's latest tracked people on the ground (inference thread: cheap)."""
        plane = self._plane(tracks.camera, tracks.frame_size)
        if plane is None:
            return
        people = tracks.tracked
        try:
            xy = plane.to_world(people.foot_points)
        except GeometryError:
            return  # a foot point above the horizon: a bad box, not worth a frame's fusion
        view = CameraView(tracks.camera, tracks.time, people.track_ids, xy, people.scores)
        with self._views_lock:
            self._views[tracks.camera] = view

    def stop(self) -> None:
        """Stop the rules thread and leave the broker; open alarms stay as they are."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        disconnect(self._client)
        log.info("radar intake stopped", extra={"counts": self.counts()})

    # -- observability ---------------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        """``received``, ``accepted`` and each drop reason so far (they add up)."""
        with self._counts_lock:
            return {"received": self._received, **self._counts}

    def wait_subscribed(self, timeout: float) -> bool:
        return self._subscribed.wait(timeout)

    def idle(self) -> bool:
        """Every received message has been counted (accepted or dropped)."""
        with self._counts_lock:
            return sum(self._counts.values()) == self._received

    # -- paho callbacks (network thread) ---------------------------------------------------------

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: mqtt.ConnectFlags,
                    reason: ReasonCode, properties: Properties | None) -> None:
        if reason.is_failure:
            log.error("radar mqtt connect refused", extra={"reason": str(reason)})
            return
        if self._topics:
            client.subscribe([(t, 1) for t in sorted(self._topics)])
        else:
            self._subscribed.set()
        log.info("radar mqtt connected", extra={"host": self.host, "port": self.port})

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int,
                      reasons: list[ReasonCode], properties: Properties | None) -> None:
        bad = [str(r) for r in reasons if r.is_failure]
        if bad:
            log.error("radar topic subscription refused", extra={"reasons": bad})
        self._subscribed.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: mqtt.DisconnectFlags,
                       reason: ReasonCode, properties: Properties | None) -> None:
        self._subscribed.clear()
        if not self._stop.is_set():
            log.warning("radar mqtt disconnected, reconnecting", extra={"reason": str(reason)})

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        item = (msg.topic, bytes(msg.payload), self.clock(), time.perf_counter())
        with self._counts_lock:
            self._received += 1
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self._count(self._topics.get(msg.topic, "unknown"), Drop.OVERFLOW)

    # -- rules thread ----------------------------------------------------------------------------

    def _run(self) -> None:
        next_tick = time.perf_counter() + self.tick_s
        while not self._stop.is_set():
            try:
                item = self._queue.get(timeout=max(0.0, next_tick - time.perf_counter()))
            except queue.Empty:
                item = None
            if item is not None:
                self.handle(*item)
            if time.perf_counter() >= next_tick:
                self.metrics.queue_depth.set(self._queue.qsize())
                self._expire()
                next_tick = time.perf_counter() + self.tick_s

    def handle(self, topic: str, payload: bytes, arrived: float,
               arrived_perf: float | None = None) -> list[Alarm]:
        """Process one message (rules thread; tests call it directly): count it, emit its
        alarm events, return them."""
        radar = self._topics.get(topic, "unknown")
        try:
            alarms = self._handle(radar, payload, arrived)
        except Exception:
            log.exception("radar message broke the rules thread", extra={"radar": radar})
            self._count(radar, "error")
            return []
        for alarm in alarms:
            self._deliver(alarm, arrived_perf)
        return alarms

    def _handle(self, radar: str, payload: bytes, arrived: float) -> list[Alarm]:
        try:
            if len(payload) > MAX_PAYLOAD:
                raise ValueError(f"payload of {len(payload)} bytes")
            msg = RadarMessage.model_validate_json(payload)
        except (ValidationError, ValueError) as exc:
            self._count(radar, Drop.MALFORMED, str(exc).splitlines()[0])
            return []
        rules = self.rules.get(radar)
        if rules is None or msg.radar_id != radar:
            self._count(radar, Drop.UNKNOWN_RADAR, msg.radar_id)
            return []
        with self._views_lock:
            views = dict(self._views)
        drop, alarms = rules.step(msg, arrived, views)
        detail = f"track {msg.track_id}, {arrived - msg.time:+.3f} s old on arrival"
        if drop in (Drop.LATE, Drop.FUTURE):
            detail += " (check the radar's and this edge's clocks: NTP)"
        self._count(radar, drop if drop is not None else ACCEPTED, detail)
        return alarms

    def _expire(self) -> None:
        now = self.clock()
        for rules in self.rules.values():
            try:
                alarms = rules.expire(now)
            except Exception:
                log.exception("radar track expiry failed", extra={"radar": rules.id})
                continue
            for alarm in alarms:
                self._deliver(alarm, None)

    def _deliver(self, alarm: Alarm, arrived_perf: float | None) -> None:
        try:
            if self._emit is not None:
                self._emit(alarm)
        except Exception:
            log.exception("radar alarm sink failed", extra={"event_id": alarm.event_id})
            return
        if arrived_perf is not None:
            self.metrics.latency.labels(alarm.camera).observe(time.perf_counter() - arrived_perf)
        self.metrics.alarms.labels(alarm.camera, alarm.zone, alarm.kind.value,
                                   alarm.state.value, alarm.source).inc()
        log.info("radar alarm", extra={"event_id": alarm.event_id, "source": alarm.source,
                                       "zone": alarm.zone, "radar": alarm.camera})

    def _count(self, radar: str, outcome: str, detail: str = "") -> None:
        key = str(outcome)
        with self._counts_lock:
            self._counts[key] += 1
            first = self._counts[key] == 1
        self.metrics.messages.labels(radar, key).inc()
        if outcome != ACCEPTED and (first or log.isEnabledFor(logging.DEBUG)):
            log.log(logging.WARNING if first else logging.DEBUG, "radar message dropped",
                    extra={"radar": radar, "reason": key, "detail": detail[:200]})

    def _plane(self, camera: str, size: tuple[int, int]) -> GroundPlane | None:
        cached = self._planes.get(camera)
        if cached is not None and cached[0] == size:
            return cached[1]
        cal = self._calibrations.get(camera)
        plane: GroundPlane | None = None
        if cal is not None:
            try:
                plane = GroundPlane(to_pixels(cal.image, size, cal.coords), cal.world)
            except GeometryError as exc:
                log.warning("camera calibration unusable for fusion",
                            extra={"camera": camera, "error": str(exc)})
        self._planes[camera] = (size, plane)
        return plane
