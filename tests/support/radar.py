"""Helpers of the radar and fusion tests: a small ground site, messages at site positions,
a real paho publisher, and an alarm collector that is safe to call from the rules thread."""

from __future__ import annotations

import functools
import threading
import uuid
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from wire import topics
from zones.alarm import Alarm
from zones.profiles import Schedule
from zones.radar import RadarMessage
from zones.radar_config import (
    FusionConfig,
    GroundSite,
    GroundZoneConfig,
    RadarConfig,
    resolve_ground,
)
from zones.radar_rules import RadarRules

T0 = 1_700_000_000.0
SQUARE = [(10.0, 10.0), (20.0, 10.0), (20.0, 20.0), (10.0, 20.0)]  # site metres


def unique(tag: str) -> str:
    return f"{tag}-{uuid.uuid4().hex[:10]}"


def site(*, radar: dict[str, Any] | None = None, zones: list[dict[str, Any]] | None = None,
         site_id: str = "s1") -> GroundSite:
    """One radar ``r1`` at the origin looking up +y, and one high-risk cliff zone ``cliff``."""
    rc = RadarConfig.model_validate({"id": "r1", "position": (0.0, 0.0), **(radar or {})})
    zc = [GroundZoneConfig.model_validate(z) for z in (zones if zones is not None else [
        {"id": "cliff", "kind": "cliff", "risk": "high", "polygon": SQUARE}])]
    return resolve_ground(None, [rc], zc, functools.partial(topics.radar_tracks, site_id))


def rules(ground: GroundSite, fusion: FusionConfig | None = None) -> RadarRules:
    return RadarRules(ground.radars["r1"], ground.zones, Schedule([], "UTC"), None, fusion)


def at(ground: GroundSite, track: int, t: float, x: float, y: float,
       radar: str = "r1") -> RadarMessage:
    """The message radar ``radar`` sends for a target standing at site (x, y)."""
    (r,), (az,) = ground.radars["r1"].pose.to_polar([(x, y)])
    return RadarMessage(radar_id=radar, track_id=track, time=t, range_m=float(r),
                        azimuth_deg=float(az), speed_mps=1.2)




class Collector:
    """``emit`` for a RadarWorker: keeps every alarm, from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._alarms: list[Alarm] = []

    def __call__(self, alarm: Alarm) -> None:
        with self._lock:
            self._alarms.append(alarm)

    @property
    def alarms(self) -> list[Alarm]:
        with self._lock:
            return list(self._alarms)


class Publisher:
    """A real paho publisher (QoS 1: the broker keeps order and loses nothing)."""

    def __init__(self, host: str, port: int):
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=unique("pub"))
        self.client.max_inflight_messages_set(200)
        self.client.connect(host, port)
        self.client.loop_start()

    def send(self, topic: str, payload: str | bytes) -> mqtt.MQTTMessageInfo:
        return self.client.publish(topic, payload, qos=1)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
